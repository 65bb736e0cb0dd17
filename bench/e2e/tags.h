// How the end-to-end benchmark recognises its own events wherever they turn up: every event
// carries three string variables in data.vars, which Herald copies into the webhook body and
// the inbox row, and which the baseline relay copies into its jobs:
//   "n"       the event's number within its phase
//   "ph"      the phase (each measurement has its own, so late arrivals are never miscounted)
//   "sent_us" when the load generator published it, microseconds since the epoch (system clock)
// The same values travel as AMQP headers x-bench-n, x-bench-ph, x-bench-sent-us, so the relay
// needs no JSON parser; x-bench-fanout tells it how many recipients the event stands for.
#pragma once

#include <cstdint>
#include <string_view>

namespace herald::bench {

inline constexpr const char* kHeaderN = "x-bench-n";
inline constexpr const char* kHeaderPhase = "x-bench-ph";
inline constexpr const char* kHeaderSent = "x-bench-sent-us";
inline constexpr const char* kHeaderFanout = "x-bench-fanout";

// Finds "key":"<digits>" in `text` (compact JSON, as every writer here produces) at or after `from`.
inline bool FindTag(std::string_view text, std::string_view key, int64_t& out, size_t from = 0) {
  for (size_t at = text.find(key, from); at != std::string_view::npos; at = text.find(key, at + 1)) {
    if (at == 0 || text[at - 1] != '"') continue;
    size_t p = at + key.size();
    if (text.substr(p, 3) != "\":\"") continue;
    p += 3;
    int64_t v = 0;
    size_t start = p;
    while (p < text.size() && text[p] >= '0' && text[p] <= '9') v = v * 10 + (text[p++] - '0');
    if (p == start || p >= text.size() || text[p] != '"') continue;
    out = v;
    return true;
  }
  return false;
}

// The three tags of one delivery; false if any is missing.
struct Tags {
  int64_t n = 0, phase = 0, sent_us = 0;
};
inline bool ReadTags(std::string_view text, Tags& t) {
  size_t data = text.find("\"data\":{");
  size_t from = data == std::string_view::npos ? 0 : data;
  return FindTag(text, "n", t.n, from) && FindTag(text, "ph", t.phase, from) && FindTag(text, "sent_us", t.sent_us, from);
}

}  // namespace herald::bench
