// A worker for one channel against a fresh vhost and store, for tests through the real broker.
#pragma once

#include <catch2/catch.hpp>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

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

// ScriptedChannel's answers given asynchronously, as a channel on a libcurl multi handle gives
// them: SendAsync() returns at once and each send completes `delay` later on the channel's own
// thread. Counts the sends in flight (started, not completed) and the most there were at once.
class AsyncScriptedChannel final : public Channel {
 public:
  using Steady = std::chrono::steady_clock;
  explicit AsyncScriptedChannel(std::vector<SendResult> script, SendResult then = SendResult::Ok(),
                                Millis delay = Millis(0))
      : script_(std::move(script), std::move(then)), delay_(delay), thread_([this] { Run(); }) {}
  ~AsyncScriptedChannel() override {
    {
      std::lock_guard l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  SendResult Send(const DeliveryJob& job) override { return script_.Send(job); }
  bool SendsAsync() const override { return true; }
  void SendAsync(const DeliveryJob& job, SendDone done) override {
    SendResult r = script_.Send(job);
    std::lock_guard l(mu_);
    most_ = std::max(most_, ++in_flight_);
    pending_.push_back({Steady::now() + delay_, std::move(r), std::move(done)});
    cv_.notify_all();
  }
  std::vector<ScriptedChannel::Call> Calls() { return script_.Calls(); }
  int InFlight() {
    std::lock_guard l(mu_);
    return in_flight_;
  }
  int MostInFlight() {
    std::lock_guard l(mu_);
    return most_;
  }

 private:
  struct Pending {
    Steady::time_point due;
    SendResult result;
    SendDone done;
  };
  // Completes sends in the order they started, each at its time (what is left at once on stop).
  void Run() {
    std::unique_lock l(mu_);
    for (;;) {
      cv_.wait(l, [&] { return stop_ || !pending_.empty(); });
      if (pending_.empty()) return;
      if (!stop_ && Steady::now() < pending_.front().due) {
        cv_.wait_until(l, pending_.front().due);
        continue;
      }
      Pending p = std::move(pending_.front());
      pending_.pop_front();
      --in_flight_;
      l.unlock();
      p.done(std::move(p.result));
      l.lock();
    }
  }

  ScriptedChannel script_;
  const Millis delay_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  int in_flight_ = 0;
  int most_ = 0;
  bool stop_ = false;
  std::thread thread_;
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
  void PublishRaw(const std::string& channel, const std::string& body) {
    REQUIRE(publisher->PublishAndWait({broker::kDeliverExchange, channel, body, nlohmann::json::object(), "application/json",
                                       "d-raw", true, true},
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
