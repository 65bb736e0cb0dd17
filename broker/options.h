// Broker settings for one of Herald's connections, derived from the configuration, so every
// role connects, backs off and declares the topology the same way.
#pragma once

#include <string>

#include "broker/consumer.h"
#include "broker/publisher.h"
#include "core/config.h"

namespace herald::broker {

// `purpose` names the connection in the broker's UI ("heraldd engine intake (pid 42)").
ConnectOptions ConnectOptionsFor(const Config& config, const std::string& purpose);

// A publisher that declares the whole topology after every (re)connect.
Publisher::Options PublisherOptionsFor(const Config& config, const std::string& purpose);

// A consumer of `queue` that declares the whole topology after every (re)connect.
Consumer::Options ConsumerOptionsFor(const Config& config, const std::string& purpose, const std::string& queue);

}  // namespace herald::broker
