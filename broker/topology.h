// The broker names of DESIGN.md and their idempotent declaration.
#pragma once

#include <string>
#include <vector>

#include "broker/amqp.h"
#include "core/config.h"

namespace herald::broker {

inline constexpr const char* kEventsExchange = "herald.events";   // topic; routing key = event type
inline constexpr const char* kEngineQueue = "herald.engine";      // bound "#"
inline constexpr const char* kInvalidQueue = "herald.events.invalid";
inline constexpr const char* kDeliverExchange = "herald.deliver"; // direct; routing key = channel
inline constexpr const char* kDeadLetterQueue = "herald.dlq";
inline constexpr const char* kControlExchange = "herald.control"; // fanout

std::string DeliverQueue(const std::string& channel);             // herald.deliver.<channel>
std::string RetryQueue(const std::string& channel, Millis delay); // herald.retry.<channel>.<4s|1500ms>

struct TopologySpec {
  std::string queue_type = "quorum";
  std::vector<std::string> channels;  // enabled channels
  std::vector<Millis> retry_tiers;

  static TopologySpec FromConfig(const Config& config);
};

// Declares every exchange, queue and binding of the spec. Idempotent; a queue that exists with
// other arguments (say classic instead of quorum) fails with the broker's explanation.
// REQUIRES: `conn` is open and owned by the calling thread.
Status DeclareTopology(Connection& conn, const TopologySpec& spec);

}  // namespace herald::broker
