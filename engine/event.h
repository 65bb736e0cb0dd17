// The event publishers send: CloudEvents 1.0 in structured JSON mode (DESIGN.md, "Event").
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"

namespace herald {

enum class Priority { kLow, kNormal, kHigh, kCritical };
const char* PriorityName(Priority p);

struct Event {
  std::string id;      // idempotency key, 1..128 characters
  std::string source;
  std::string type;    // [a-z0-9._-]{1,128}
  SystemTime time;     // the event's "time", or when Herald received it
  Priority priority = Priority::kNormal;
  std::optional<SystemTime> expires_at;
  std::vector<std::string> recipients;  // distinct user ids, in the order first given; or
  std::string topic;                    // a topic whose subscribers are the recipients
  nlohmann::json vars = nlohmann::json::object();
  std::vector<std::string> channels;    // restriction to these channels; empty = none
};

// Why an event is invalid. `field` is a stable path ("data.recipients[3]" is reported as
// field "data.recipients") suitable as a metric label; `message` says what is wrong.
struct Invalid {
  std::string field;
  std::string message;
  std::string ToString() const { return field + ": " + message; }
};

struct EventLimits {
  size_t max_body_bytes = 1024 * 1024;
  size_t max_recipients = 10000;
  size_t max_depth = 32;                 // JSON nesting; deeper input is refused before parsing
  std::vector<std::string> channels;     // names allowed in data.channels
};

// Parses and validates one event body. On success fills `out` and returns nullopt; otherwise
// returns the first problem found. Never throws, whatever the input.
std::optional<Invalid> ParseEvent(std::string_view body, const EventLimits& limits, SystemTime received_at,
                                  Event& out);

// The allowed shape of user ids and topic names: 1..128 bytes, no whitespace, control
// characters or '/'. Returns an empty string if `id` is fine, else what is wrong.
std::string CheckUserId(std::string_view id);

// "a string", "an array", "null"...: for messages that say what a value was instead.
const char* JsonTypeName(const nlohmann::json& v);

// Builds the CloudEvents JSON for an event (used by `herald publish` and tests).
nlohmann::json EventToJson(const Event& e);

}  // namespace herald
