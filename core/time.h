// Parsing and formatting of RFC 3339 timestamps and of human durations ("250ms", "30s", "24h").
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "core/clock.h"

namespace herald {

using Millis = std::chrono::milliseconds;

// Parses an RFC 3339 date-time ("2026-11-22T10:00:00Z", "2026-11-22T11:00:00.250+01:00").
// Returns nullopt for anything else, including impossible dates (Feb 30) and missing offsets.
std::optional<SystemTime> ParseRfc3339(std::string_view s);

// Formats as UTC with millisecond precision: "2026-11-22T10:00:00.000Z".
std::string FormatRfc3339(SystemTime t);

// Parses "<int><unit>" with unit ms, s, m, h or d ("0" alone is allowed). Returns nullopt otherwise.
std::optional<Millis> ParseDuration(std::string_view s);

// The shortest exact form: 1500 -> "1500ms", 4000 -> "4s", 120000 -> "2m", 86400000 -> "1d".
std::string FormatDuration(Millis d);

}  // namespace herald
