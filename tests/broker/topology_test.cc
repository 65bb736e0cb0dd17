#include <catch2/catch.hpp>

#include "broker/topology.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;

TEST_CASE("Topology: declares every DESIGN.md name, idempotently") {
  Vhost vhost("topo");
  Config config = vhost.MakeConfig();
  auto spec = broker::TopologySpec::FromConfig(config);
  broker::Connection conn({vhost.url(), 0s, 5s, "topology test"});
  REQUIRE(conn.Open().ok());
  REQUIRE(broker::DeclareTopology(conn, spec).ok());
  REQUIRE(broker::DeclareTopology(conn, spec).ok());
  Peek peek(vhost.url());
  for (const char* q : {"herald.engine", "herald.events.invalid", "herald.dlq", "herald.deliver.email",
                        "herald.deliver.in_app", "herald.deliver.push", "herald.deliver.webhook",
                        "herald.retry.email.1s", "herald.retry.webhook.2s"}) {
    INFO(q);
    CHECK(peek.Exists(q));
  }
  std::string body;
  Management("GET", "/api/queues/" + vhost.name() + "/herald.retry.push.2s", "", &body);
  auto q = nlohmann::json::parse(body);
  CHECK(q["durable"] == true);
  CHECK(q["arguments"]["x-queue-type"] == "quorum");
  CHECK(q["arguments"]["x-message-ttl"] == 2000);
  CHECK(q["arguments"]["x-dead-letter-exchange"] == "herald.deliver");
  CHECK(q["arguments"]["x-dead-letter-routing-key"] == "push");
  Management("GET", "/api/exchanges/" + vhost.name() + "/herald.events", "", &body);
  CHECK(nlohmann::json::parse(body)["type"] == "topic");
  Management("GET", "/api/exchanges/" + vhost.name() + "/herald.control", "", &body);
  CHECK(nlohmann::json::parse(body)["type"] == "fanout");
}

TEST_CASE("Topology: retry tiers dead-letter back to the channel queue") {
  Vhost vhost("topo-retry");
  Config config = vhost.MakeConfig("classic");
  config.retry.tiers = {Millis(200)};
  broker::Connection conn({vhost.url(), 0s, 5s, "topology test"});
  REQUIRE(conn.Open().ok());
  REQUIRE(broker::DeclareTopology(conn, broker::TopologySpec::FromConfig(config)).ok());
  Peek peek(vhost.url());
  peek.Publish("", "herald.retry.email.200ms", "job-1");
  auto m = peek.WaitGet("herald.deliver.email", 10s);
  REQUIRE(m);
  CHECK(m->body == "job-1");
  CHECK(m->headers.contains("x-death"));
}

TEST_CASE("Topology: a queue of another type is reported with the way out") {
  Vhost vhost("topo-conflict");
  broker::Connection conn({vhost.url(), 0s, 5s, "topology test"});
  REQUIRE(conn.Open().ok());
  REQUIRE(broker::DeclareTopology(conn, broker::TopologySpec::FromConfig(vhost.MakeConfig("classic"))).ok());
  Status s = broker::DeclareTopology(conn, broker::TopologySpec::FromConfig(vhost.MakeConfig("quorum")));
  CHECK(s.code() == Status::Code::kRejected);
  CHECK_THAT(s.message(), Catch::Matchers::Contains("inequivalent arg 'x-queue-type'") &&
                              Catch::Matchers::Contains("broker.queue_type"));
}

TEST_CASE("Connection: bad credentials and unknown vhosts are explained") {
  broker::Connection bad({"amqp://guest:wrong@127.0.0.1:" + std::to_string(BrokerPort()) + "/", 0s, 5s, "t"});
  Status s = bad.Open();
  CHECK_FALSE(s.ok());
  CHECK_THAT(s.message(), Catch::Matchers::Contains("login") && Catch::Matchers::Contains("\"guest\""));
  CHECK_THAT(s.message(), !Catch::Matchers::Contains("wrong"));
  broker::Connection novhost({"amqp://guest:guest@127.0.0.1:" + std::to_string(BrokerPort()) + "/nope", 0s, 5s, "t"});
  s = novhost.Open();
  CHECK_THAT(s.message(), Catch::Matchers::Contains("vhost \"nope\""));
  broker::ParsedUrl url;
  CHECK(broker::ParseAmqpUrl("amqp://u:p@h:1234/", url).ok());
  CHECK(url.vhost == "/");
  CHECK(url.port == 1234);
  CHECK_FALSE(broker::ParseAmqpUrl("http://h/", url).ok());
}
