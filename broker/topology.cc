#include "broker/topology.h"

namespace herald::broker {

std::string DeliverQueue(const std::string& channel) { return "herald.deliver." + channel; }

std::string RetryQueue(const std::string& channel, Millis delay) {
  return "herald.retry." + channel + "." + FormatDuration(delay);
}

TopologySpec TopologySpec::FromConfig(const Config& config) {
  TopologySpec spec;
  spec.queue_type = config.broker.queue_type;
  spec.channels = config.EnabledChannels();
  spec.retry_tiers = config.retry.tiers;
  return spec;
}

namespace {

Status DeclareExchange(Connection& conn, const char* name, const char* type) {
  amqp_exchange_declare(conn.state(), Connection::kChannel, amqp_cstring_bytes(name), amqp_cstring_bytes(type),
                        /*passive=*/0, /*durable=*/1, /*auto_delete=*/0, /*internal=*/0, amqp_empty_table);
  return conn.CheckRpc(("declare exchange " + std::string(name)).c_str());
}

Status DeclareQueue(Connection& conn, const std::string& name, const nlohmann::json& args) {
  amqp_pool_t pool;
  init_amqp_pool(&pool, 1024);
  amqp_table_t table = JsonToTable(args, &pool);
  amqp_queue_declare(conn.state(), Connection::kChannel, Bytes(name), /*passive=*/0, /*durable=*/1,
                     /*exclusive=*/0, /*auto_delete=*/0, table);
  empty_amqp_pool(&pool);
  Status s = conn.CheckRpc(("declare queue " + name).c_str());
  if (!s.ok() && s.message().find("inequivalent arg") != std::string::npos) {
    return Status::Rejected(s.message() +
                            " (the queue exists with other settings: set broker.queue_type to match, or delete the "
                            "queue once it is drained)");
  }
  return s;
}

Status Bind(Connection& conn, const std::string& queue, const char* exchange, const std::string& key) {
  amqp_queue_bind(conn.state(), Connection::kChannel, Bytes(queue), amqp_cstring_bytes(exchange), Bytes(key),
                  amqp_empty_table);
  return conn.CheckRpc(("bind " + queue + " to " + exchange).c_str());
}

}  // namespace

Status DeclareTopology(Connection& conn, const TopologySpec& spec) {
  const nlohmann::json base = {{"x-queue-type", spec.queue_type}};
  Status s;
  if (!(s = DeclareExchange(conn, kEventsExchange, "topic")).ok()) return s;
  if (!(s = DeclareExchange(conn, kDeliverExchange, "direct")).ok()) return s;
  if (!(s = DeclareExchange(conn, kControlExchange, "fanout")).ok()) return s;
  if (!(s = DeclareQueue(conn, kEngineQueue, base)).ok()) return s;
  if (!(s = Bind(conn, kEngineQueue, kEventsExchange, "#")).ok()) return s;
  if (!(s = DeclareQueue(conn, kInvalidQueue, base)).ok()) return s;
  if (!(s = DeclareQueue(conn, kDeadLetterQueue, base)).ok()) return s;
  for (const std::string& channel : spec.channels) {
    const std::string queue = DeliverQueue(channel);
    if (!(s = DeclareQueue(conn, queue, base)).ok()) return s;
    if (!(s = Bind(conn, queue, kDeliverExchange, channel)).ok()) return s;
    for (Millis delay : spec.retry_tiers) {
      nlohmann::json args = base;
      args["x-message-ttl"] = static_cast<int64_t>(delay.count());
      args["x-dead-letter-exchange"] = kDeliverExchange;
      args["x-dead-letter-routing-key"] = channel;
      if (!(s = DeclareQueue(conn, RetryQueue(channel, delay), args)).ok()) return s;
    }
  }
  return Status::Ok();
}

}  // namespace herald::broker
