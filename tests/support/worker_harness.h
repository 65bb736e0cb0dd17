// A worker for one channel against a fresh vhost and store, for tests through the real broker.
#pragma once

#include <catch2/catch.hpp>
#include <unistd.h>

#include "broker/options.h"
#include "broker/topology.h"
#include "tests/support/test_env.h"
#include "workers/worker.h"

namespace herald::test {

struct WorkerHarness {
  explicit WorkerHarness(const std::string& name, std::vector<Millis> tiers = {Millis(300), Millis(600)}) : vhost(name) {
    config = vhost.MakeConfig();
    config.retry.tiers = std::move(tiers);
    config.retry.max_attempts = 3;
    dir = "/tmp/herald-test-" + std::to_string(::getpid()) + "-" + name;
    REQUIRE(OpenStore("sqlite://" + dir + "/herald.db", store).ok());
    publisher = std::make_unique<broker::Publisher>(broker::PublisherOptionsFor(config, "worker test"));
    publisher->Start();
    broker::Connection c(broker::ConnectOptionsFor(config, "declare"));
    REQUIRE(c.Open().ok());
    REQUIRE(broker::DeclareTopology(c, broker::TopologySpec::FromConfig(config)).ok());
  }
  std::unique_ptr<ChannelWorker> Worker(const std::string& channel, Channel& impl) {
    auto w = std::make_unique<ChannelWorker>(config, channel, impl, *store, *publisher, SystemClock::Instance());
    w->Start();
    REQUIRE(WaitFor([&] { return w->Consuming(); }, 15s));
    return w;
  }
  void PublishJob(const std::string& channel, const nlohmann::json& job) {
    REQUIRE(publisher->PublishAndWait({broker::kDeliverExchange, channel, job.dump(), nlohmann::json::object(), "application/json",
                                       job.value("delivery_id", ""), true, true},
                                      10s)
                .ok());
  }
  Vhost vhost;
  Config config;
  std::string dir;
  std::unique_ptr<Store> store;
  std::unique_ptr<broker::Publisher> publisher;
};

}  // namespace herald::test
