// Restarts the test broker under running consumers and publishers. Runs alone (RUN_SERIAL).
#include <catch2/catch.hpp>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <mutex>
#include <set>

#include "broker/options.h"
#include "broker/topology.h"
#include "engine/intake.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;

namespace {

class CollectingEngine final : public Engine {
 public:
  void Handle(Event event, Done done) override {
    {
      std::lock_guard l(mu_);
      ids_.insert(event.id);
    }
    done(Status::Ok());
  }
  std::set<std::string> Ids() {
    std::lock_guard l(mu_);
    return ids_;
  }

 private:
  std::mutex mu_;
  std::set<std::string> ids_;
};

void Broker(const std::string& action) {
  std::string out;
  int rc = Run({SourceDir() + "/scripts/broker.sh", "ctl", BrokerDir(), action}, {}, &out, 120s);
  INFO(out);
  REQUIRE(rc == 0);
}

}  // namespace

TEST_CASE("Restart: with the broker restarted mid-stream, every confirmed event reaches the engine") {
  Vhost vhost("restart");
  Config config = vhost.MakeConfig();
  broker::Publisher publisher(broker::PublisherOptionsFor(config, "restart publisher"));
  publisher.Start();
  CollectingEngine engine;
  Intake intake(config, engine, publisher, SystemClock::Instance());
  intake.Start();
  REQUIRE(WaitFor([&] { return intake.Consuming(); }, 15s));

  // heraldd as a process on a second vhost, to see the shipped daemon recover by itself.
  Vhost daemon_vhost("restart-daemon");
  Process d({BinaryDir() + "/heraldd", "--config", SourceDir() + "/config/herald.yaml", "--roles", "engine"},
            {"HERALD_BROKER_URL=" + daemon_vhost.url(), "HERALD_BROKER_RECONNECT_MAX=1s",
             "HERALD_BROKER_HEARTBEAT=5s", "HERALD_STORE_URL=sqlite://" + TempFile("restart", "") + ".d/herald.db"},
            "heraldd-restart");
  REQUIRE(WaitFor([&] { return d.OutputContains("started"); }, 15s));

  std::mutex mu;
  std::set<std::string> confirmed;
  std::atomic<int> settled{0}, failed{0};
  const int n = 3000;
  std::thread producer([&] {
    for (int i = 0; i < n; ++i) {
      std::string id = "evt-" + std::to_string(i);
      broker::Message m;
      m.exchange = broker::kEventsExchange;
      m.routing_key = "a.b";
      m.body = nlohmann::json{{"specversion", "1.0"}, {"id", id}, {"source", "/t"}, {"type", "a.b"},
                              {"data", {{"recipients", {"u-1"}}}}}
                   .dump();
      publisher.Publish(std::move(m), [&, id](const Status& s) {
        if (s.ok()) {
          std::lock_guard l(mu);
          confirmed.insert(id);
        } else {
          ++failed;
        }
        ++settled;
      });
      std::this_thread::sleep_for(2ms);
    }
  });
  REQUIRE(WaitFor([&] { return settled > 500; }, 30s));
  Broker("stop_app");
  std::this_thread::sleep_for(1s);
  Broker("start_app");
  producer.join();
  REQUIRE(WaitFor([&] { return settled == n; }, 90s));
  CHECK(failed == 0);
  CHECK(publisher.Connects() >= 2);
  CHECK(intake.Connects() >= 2);
  std::set<std::string> want;
  {
    std::lock_guard l(mu);
    want = confirmed;
  }
  CHECK(want.size() == n);
  REQUIRE(WaitFor([&] {
    auto got = engine.Ids();
    return std::includes(got.begin(), got.end(), want.begin(), want.end());
  }, 60s));

  // The daemon reconnected on its own: an invalid event sent now is moved aside by it.
  std::string out;
  REQUIRE(PikaPublish(daemon_vhost.url(), "herald.events", "x", "{}", &out) == 0);
  Peek peek(daemon_vhost.url());
  auto m = peek.WaitGet("herald.events.invalid", 30s);
  REQUIRE(m);
  CHECK(m->headers["x-herald-reason"] == "specversion: required");
  d.Signal(SIGTERM);
  CHECK(d.Wait(30s) == std::optional<int>(0));
  intake.Stop(1s);
  publisher.Stop(1s);
}
