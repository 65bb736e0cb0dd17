#include "broker/options.h"

#include <unistd.h>

#include "broker/topology.h"

namespace herald::broker {

ConnectOptions ConnectOptionsFor(const Config& config, const std::string& purpose) {
  ConnectOptions o;
  o.url = config.broker.url;
  o.heartbeat = config.broker.heartbeat;
  o.connect_timeout = config.broker.connect_timeout;
  o.connection_name = purpose + " (pid " + std::to_string(::getpid()) + ")";
  return o;
}

Publisher::Options PublisherOptionsFor(const Config& config, const std::string& purpose) {
  Publisher::Options o;
  o.connect = ConnectOptionsFor(config, purpose);
  o.window = config.broker.publish_window;
  o.reconnect_min = config.broker.reconnect_min;
  o.reconnect_max = config.broker.reconnect_max;
  auto spec = TopologySpec::FromConfig(config);
  o.on_connect = [spec](Connection& c) { return DeclareTopology(c, spec); };
  return o;
}

Consumer::Options ConsumerOptionsFor(const Config& config, const std::string& purpose, const std::string& queue) {
  Consumer::Options o;
  o.connect = ConnectOptionsFor(config, purpose);
  o.queue = queue;
  o.prefetch = config.broker.prefetch;
  o.reconnect_min = config.broker.reconnect_min;
  o.reconnect_max = config.broker.reconnect_max;
  auto spec = TopologySpec::FromConfig(config);
  o.on_connect = [spec](Connection& c) { return DeclareTopology(c, spec); };
  return o;
}

}  // namespace herald::broker
