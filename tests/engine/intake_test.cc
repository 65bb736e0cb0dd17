#include <catch2/catch.hpp>
#include <atomic>
#include <mutex>

#include "broker/options.h"
#include "core/metrics.h"
#include "engine/intake.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;
using Catch::Matchers::Contains;

namespace {

// Records what the intake hands over; settles at once with `result`, or holds events when told.
class RecordingEngine final : public Engine {
 public:
  void Handle(Event event, Done done) override {
    std::lock_guard l(mu_);
    events_.push_back(event);
    if (hold_) held_.push_back(std::move(done));
    else done(fail_next_ > 0 && fail_next_-- ? Status::Unavailable("test failure") : Status::Ok());
  }
  size_t Count() {
    std::lock_guard l(mu_);
    return events_.size();
  }
  std::vector<Event> Events() {
    std::lock_guard l(mu_);
    return events_;
  }
  void Hold(bool h) { hold_ = h; }
  void ReleaseAll() {
    std::vector<Done> held;
    {
      std::lock_guard l(mu_);
      held.swap(held_);
    }
    for (auto& d : held) d(Status::Ok());
  }
  void FailNext(int n) { fail_next_ = n; }

 private:
  std::mutex mu_;
  std::vector<Event> events_;
  std::vector<Done> held_;
  std::atomic<bool> hold_{false};
  int fail_next_ = 0;
};

struct Harness {
  explicit Harness(const std::string& name) : vhost(name), config(vhost.MakeConfig()) {
    publisher = std::make_unique<broker::Publisher>(broker::PublisherOptionsFor(config, "test publisher"));
    publisher->Start();
    intake = std::make_unique<Intake>(config, engine, *publisher, SystemClock::Instance());
    intake->Start();
    REQUIRE(WaitFor([&] { return intake->Consuming(); }, 15s));
  }
  ~Harness() {
    intake->Stop(1s);
    publisher->Stop(1s);
  }
  Vhost vhost;
  Config config;
  RecordingEngine engine;
  std::unique_ptr<broker::Publisher> publisher;
  std::unique_ptr<Intake> intake;
};

std::string ValidEvent(const std::string& id, const std::string& type = "social.post.liked") {
  return nlohmann::json{{"specversion", "1.0"}, {"id", id}, {"source", "/social"}, {"type", type},
                        {"data", {{"recipients", {"u-1", "u-2"}}, {"vars", {{"who", "Ada"}}}}}}
      .dump();
}

}  // namespace

TEST_CASE("Intake: a valid event from a foreign client (pika) reaches the engine and is acked") {
  Harness h("intake-valid");
  std::string out;
  REQUIRE(PikaPublish(h.vhost.url(), "herald.events", "social.post.liked", ValidEvent("evt-pika-1"), &out) == 0);
  REQUIRE(WaitFor([&] { return h.engine.Count() == 1; }, 10s));
  Event e = h.engine.Events()[0];
  CHECK(e.id == "evt-pika-1");
  CHECK(e.type == "social.post.liked");
  CHECK(e.recipients == std::vector<std::string>{"u-1", "u-2"});
  CHECK(e.vars["who"] == "Ada");
  Peek peek(h.vhost.url());
  CHECK(WaitFor([&] { return peek.Depth("herald.engine") == 0; }, 5s));
  CHECK(peek.Depth("herald.events.invalid") == 0);
}

TEST_CASE("Intake: invalid events from a foreign client land in herald.events.invalid with the reason") {
  Harness h("intake-invalid");
  double before = Metrics::Global().Counters("herald_events_invalid_total", "", {"reason"}).Value({"type"});
  struct Case {
    std::string body;
    std::string reason;
  };
  std::vector<Case> cases = {
      {"not json at all", "body: not valid JSON"},
      {std::string("{\"id\":\"\xc3\x28\"}"), "body: not valid UTF-8 (byte offset 7)"},
      {R"({"specversion":"1.0","id":"e","source":"/s","type":"Bad.Type","data":{"recipients":["u"]}})",
       "type: must match [a-z0-9._-]{1,128} (got \"Bad.Type\")"},
      {R"({"specversion":"1.0","id":"e","source":"/s","type":"a.b","data":{"recipients":[]}})",
       "data.recipients: must name at least one user"},
  };
  for (const Case& c : cases) REQUIRE(PikaPublish(h.vhost.url(), "herald.events", "some.key", c.body) == 0);
  Peek peek(h.vhost.url());
  for (const Case& c : cases) {
    INFO(c.reason);
    auto m = peek.WaitGet("herald.events.invalid", 10s);
    REQUIRE(m);
    CHECK(m->body == c.body);  // the exact bytes, for inspection and replay
    CHECK_THAT(m->headers["x-herald-reason"].get<std::string>(), Catch::Matchers::StartsWith(c.reason));
    CHECK(m->headers["x-herald-routing-key"] == "some.key");
    CHECK(m->headers["x-sender"] == "pika");  // the publisher's own headers are kept
    CHECK(m->headers.contains("x-herald-received-at"));
  }
  CHECK(h.engine.Count() == 0);
  CHECK(WaitFor([&] { return peek.Depth("herald.engine") == 0; }, 5s));
  CHECK(Metrics::Global().Counters("herald_events_invalid_total", "", {"reason"}).Value({"type"}) == before + 1);
}

TEST_CASE("Intake: an event the engine fails on returns to the queue and is handled again") {
  Harness h("intake-retry");
  h.engine.FailNext(1);
  Peek peek(h.vhost.url());
  peek.Publish("herald.events", "social.post.liked", ValidEvent("evt-retry"));
  REQUIRE(WaitFor([&] { return h.engine.Count() == 2; }, 10s));
  auto events = h.engine.Events();
  CHECK(events[0].id == "evt-retry");
  CHECK(events[1].id == "evt-retry");
  CHECK(WaitFor([&] { return peek.Depth("herald.engine") == 0; }, 5s));
}

TEST_CASE("Intake: stopping waits for events in the engine, then acks them") {
  Harness h("intake-stop");
  h.engine.Hold(true);
  Peek peek(h.vhost.url());
  for (int i = 0; i < 20; ++i) peek.Publish("herald.events", "a.b", ValidEvent("evt-" + std::to_string(i), "a.b"));
  REQUIRE(WaitFor([&] { return h.engine.Count() == 20; }, 10s));
  std::thread release([&] {
    std::this_thread::sleep_for(300ms);
    h.engine.ReleaseAll();
  });
  h.intake->Stop(10s);
  release.join();
  // All 20 were acked before the connection closed: nothing is left or redelivered.
  std::string body;
  CHECK(WaitFor([&] {
    Management("GET", "/api/queues/" + h.vhost.name() + "/herald.engine", "", &body);
    auto j = nlohmann::json::parse(body, nullptr, false);
    return j.is_object() && j.value("messages", -1) == 0;
  }, 10s));
}
