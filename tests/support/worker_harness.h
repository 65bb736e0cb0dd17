// A worker for one channel against a fresh vhost and store, for tests through the real broker.
#pragma once

#include <catch2/catch.hpp>
#include <unistd.h>

#include <mutex>

#include "broker/options.h"
#include "broker/topology.h"
#include "engine/notification_engine.h"
#include "tests/support/test_env.h"
#include "workers/worker.h"

namespace herald::test {

// A channel that answers from a script: the i-th Send gets script[i], every later one `then`.
// Records every call. Thread-safe.
class ScriptedChannel final : public Channel {
 public:
  using Steady = std::chrono::steady_clock;
  explicit ScriptedChannel(std::vector<SendResult> script, SendResult then = SendResult::Ok())
      : script_(std::move(script)), then_(std::move(then)) {}
  SendResult Send(const DeliveryJob& job) override {
    std::lock_guard l(mu_);
    calls_.push_back({Steady::now(), job.delivery_id, job.attempt});
    return calls_.size() <= script_.size() ? script_[calls_.size() - 1] : then_;
  }
  struct Call {
    Steady::time_point at;
    std::string delivery_id;
    long long attempt;
  };
  std::vector<Call> Calls() {
    std::lock_guard l(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::vector<SendResult> script_;
  SendResult then_;
  std::vector<Call> calls_;
};

// A delivery job of event "evt-w" for `user` on `channel`, as the engine writes it.
inline nlohmann::json Job(const std::string& channel, const std::string& user,
                          nlohmann::json fallback = nlohmann::json::array()) {
  const std::string id = DeliveryId("evt-w", user, channel, SystemTime{});
  return {{"v", 1},           {"delivery_id", id},
          {"notification_id", NotificationId("evt-w", user, SystemTime{})},
          {"event", {{"id", "evt-w"}, {"type", "billing.invoice.paid"}}},
          {"user_id", user},  {"locale", "en"},
          {"channel", channel}, {"contact", {{"url", "https://hooks.example.org/x"}}},
          {"content", {{"title", "T"}, {"body", "B"}}}, {"data", {{"amount", "1"}}},
          {"attempt", 1},     {"fallback", fallback}};
}

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
