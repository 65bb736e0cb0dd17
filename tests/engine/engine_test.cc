// The engine through the real broker: events in (also from pika), delivery jobs out, read back
// from the herald.deliver.<channel> queues.
#include <catch2/catch.hpp>
#include <set>

#include <functional>
#include <future>

#include "broker/options.h"
#include "core/json_parse.h"
#include "core/metrics.h"
#include "core/time.h"
#include "engine/intake.h"
#include "engine/notification_engine.h"
#include "engine/templates.h"
#include "tests/support/ids.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;
using nlohmann::json;

namespace {

std::string Dir(const std::string& name) {
  return "/tmp/herald-test-" + std::to_string(::getpid()) + "-" + name;
}

struct Harness {
  Harness(const Vhost& vhost, const std::string& store_dir, const std::function<void(Config&)>& adjust = {}) {
    config = LoadConfig(SourceDir() + "/config/herald.yaml", {});
    if (adjust) adjust(config);
    config.broker.url = vhost.url();
    config.broker.reconnect_min = Millis(50);
    config.broker.reconnect_max = Millis(500);
    config.retry.tiers = {Millis(1000)};
    CheckTemplates(config);
    REQUIRE(OpenStore("sqlite://" + store_dir + "/herald.db", store, KnownChannels()).ok());
    cache = std::make_unique<PreferenceCache>(*store, 1000, Millis(60000), SystemClock::Instance());
    publisher = std::make_unique<broker::Publisher>(broker::PublisherOptionsFor(config, "engine test"));
    publisher->Start();
    engine = std::make_unique<NotificationEngine>(config, *store, *cache, presence, *publisher, SystemClock::Instance());
    engine->Start();
    intake = std::make_unique<Intake>(config, *engine, *publisher, SystemClock::Instance());
    intake->Start();
    REQUIRE(WaitFor([&] { return intake->Consuming(); }, 15s));
  }
  ~Harness() {
    intake->Stop(2s);
    engine->Stop();
    publisher->Stop(2s);
    store->DrainWrites();  // the last event marks call back into the intake: before it is destroyed
  }
  Config config;
  std::unique_ptr<Store> store;
  LocalPresence presence{Millis(60000)};
  std::unique_ptr<PreferenceCache> cache;
  std::unique_ptr<broker::Publisher> publisher;
  std::unique_ptr<NotificationEngine> engine;
  std::unique_ptr<Intake> intake;
};

void PutPrefs(Store& store, const std::string& user, const json& doc) {
  Preferences p;
  Status s = ParsePreferences(doc, user, KnownChannels(), p);
  INFO(s.ToString());
  REQUIRE(s.ok());
  REQUIRE(store.PutPreferences(p).ok());
}

std::string MakeEvent(const std::string& id, const std::string& type, const json& recipients, const json& vars) {
  return json{{"specversion", "1.0"}, {"id", id}, {"source", "/test"}, {"type", type},
              {"data", {{"recipients", recipients}, {"vars", vars}}}}
      .dump();
}

// Every job on the channel queues, by channel; waits until `total` jobs arrived.
std::map<std::string, std::vector<json>> Jobs(const Vhost& vhost, size_t total) {
  Peek peek(vhost.url());
  std::map<std::string, std::vector<json>> out;
  size_t n = 0;
  WaitFor([&] {
    for (const char* ch : {"in_app", "push", "email", "webhook"}) {
      for (auto& drained : peek.Drain(std::string("herald.deliver.") + ch, 100ms)) {
        auto m = std::optional<broker::Message>(std::move(drained));
        out[ch].push_back(json::parse(m->body));
        CHECK(m->message_id == out[ch].back()["delivery_id"]);
        ++n;
      }
    }
    return n >= total;
  }, 20s, 50ms);
  return out;
}

}  // namespace

TEST_CASE("Engine: each recipient gets exactly the jobs the rules choose, rendered in their locale") {
  Vhost vhost("engine-basic");
  Harness e(vhost, Dir("engine-basic"));
  PutPrefs(*e.store, "u-de", {{"locale", "de"}, {"timezone", "Europe/Berlin"},
                              {"contacts", {{"email", "de@example.org"}, {"push", {{{"kind", "fcm"}, {"token", "tok"}}}}}}});
  PutPrefs(*e.store, "u-active", {{"contacts", {{"email", "a@example.org"}}}});
  e.presence.Heartbeat("u-active", true, SystemClock::Instance().Now());
  const SystemTime test_started = SystemClock::Instance().Now();
  std::string out;
  REQUIRE(PikaPublish(vhost.url(), "herald.events", "billing.invoice.paid",
                      MakeEvent("evt-1", "billing.invoice.paid", {"u-de", "u-active", "u-unknown"}, {{"amount", "12 €"}}),
                      &out) == 0);
  auto jobs = Jobs(vhost, 4);
  REQUIRE(jobs["in_app"].size() == 3);
  REQUIRE(jobs["push"].size() == 1);
  CHECK(jobs["email"].empty());
  CHECK(jobs["webhook"].empty());
  const json& push = jobs["push"][0];
  CHECK(push["user_id"] == "u-de");
  CHECK(IsDeliveryOf(push["delivery_id"], "evt-1", "u-de", "push"));
  // The ids carry when the event's processing began, so the sent records of recent events are
  // appended to their index: within this test, and the same for every job of the event.
  const long long begun = DeliveryBegunMs(push["delivery_id"]);
  CHECK(begun >= ToMillisForTest(test_started));
  CHECK(begun <= ToMillisForTest(SystemClock::Instance().Now()));
  for (const json& j : jobs["in_app"]) CHECK(DeliveryBegunMs(j["delivery_id"]) == begun);
  CHECK(IsNotificationOf(push["notification_id"], "evt-1", "u-de"));
  CHECK(push["locale"] == "de");
  CHECK(push["content"]["title"] == "Rechnung bezahlt");
  CHECK(push["content"]["body"] == "12 € erhalten. Danke!");
  CHECK(push["contact"]["push"][0]["token"] == "tok");
  REQUIRE(push["fallback"].size() == 1);
  CHECK(push["fallback"][0]["channel"] == "email");
  CHECK(push["fallback"][0]["contact"]["email"] == "de@example.org");
  CHECK(push["fallback"][0]["content"]["subject"] == "Ihre Rechnung über 12 € wurde bezahlt");
  std::set<std::string> in_app_users;
  for (const json& j : jobs["in_app"]) in_app_users.insert(j["user_id"]);
  CHECK(in_app_users == std::set<std::string>{"u-de", "u-active", "u-unknown"});

  // Every recipient's decision is traced.
  TraceRecord trace;
  REQUIRE(e.store->GetTraceByEvent("evt-1", "u-active", trace).ok());
  json decision = json::parse(trace.decision_json);
  CHECK(decision["channels"] == json::array({"in_app"}));
  CHECK(decision["active"] == true);
  CHECK(trace.decision_json.find("user is active: in-app only") != std::string::npos);
}

TEST_CASE("Engine: a duplicate event id sends nothing new, also after a restart") {
  Vhost vhost("engine-dedup");
  std::string dir = Dir("engine-dedup");
  std::string body = MakeEvent("evt-dup", "social.post.liked", {"u-1"}, {{"who", "Ada"}});
  {
    Harness e(vhost, dir);
    Peek peek(vhost.url());
    peek.Publish("herald.events", "social.post.liked", body);
    REQUIRE(Jobs(vhost, 1)["in_app"].size() == 1);
    peek.Publish("herald.events", "social.post.liked", body);
    REQUIRE(WaitFor([&] { return peek.Depth("herald.engine") == 0; }, 10s));
  }
  Harness again(vhost, dir);
  Peek peek(vhost.url());
  peek.Publish("herald.events", "social.post.liked", body);
  REQUIRE(WaitFor([&] { return peek.Depth("herald.engine") == 0; }, 10s));
  std::this_thread::sleep_for(500ms);
  CHECK(peek.Depth("herald.deliver.in_app") == 0);
}

TEST_CASE("Engine: the hourly push budget counts notifications that went out, and a duplicate event uses none") {
  Vhost vhost("engine-budget");
  Harness e(vhost, Dir("engine-budget"), [](Config& c) { c.engine.budget_per_hour = 2; });
  PutPrefs(*e.store, "u-b", {{"contacts", {{"push", {{{"kind", "fcm"}, {"token", "tok"}}}}}}});
  Peek peek(vhost.url());
  std::map<std::string, std::vector<json>> all;
  // One at a time: each is decided after the one before it was written.
  auto send = [&](const std::string& id, size_t jobs) {
    peek.Publish("herald.events", "billing.invoice.paid",
                 MakeEvent(id, "billing.invoice.paid", {"u-b"}, {{"amount", "1 €"}}));
    REQUIRE(WaitFor([&] { return peek.Depth("herald.engine") == 0; }, 10s));
    for (auto& [ch, list] : Jobs(vhost, jobs)) all[ch].insert(all[ch].end(), list.begin(), list.end());
  };
  send("evt-b1", 2);  // in-app + push: 1 of 2
  auto duplicates = [] { return Metrics::Global().Counters("herald_events_duplicate_total", "", {}).Value({}); };
  const double before = duplicates();
  send("evt-b1", 0);  // the same event again: ignored, and its decision's budget taken back
  REQUIRE(WaitFor([&] { return duplicates() == before + 1; }, 10s));
  send("evt-b2", 2);  // in-app + push: 2 of 2
  send("evt-b3", 1);  // budget used: in-app only
  REQUIRE(all["push"].size() == 2);
  CHECK(IsDeliveryOf(all["push"][0]["delivery_id"], "evt-b1", "u-b", "push"));
  CHECK(IsDeliveryOf(all["push"][1]["delivery_id"], "evt-b2", "u-b", "push"));
  CHECK(all["in_app"].size() == 3);
  TraceRecord trace;
  REQUIRE(e.store->GetTraceByEvent("evt-b3", "u-b", trace).ok());
  CHECK(trace.decision_json.find("hourly budget of 2") != std::string::npos);
}

TEST_CASE("Engine: an event found half done gets the notification and delivery ids of its first processing") {
  Vhost vhost("engine-half");
  Harness e(vhost, Dir("engine-half"));
  PutPrefs(*e.store, "u-h", {{"contacts", {{"email", "h@example.org"}, {"push", {{{"kind", "fcm"}, {"token", "tok"}}}}}}});
  // As a crash would leave it: begun an hour ago, never finished. Its jobs may have gone out then.
  const SystemTime first =
      std::chrono::time_point_cast<std::chrono::milliseconds>(SystemClock::Instance().Now() - std::chrono::hours(1));
  Store::DedupState state;
  REQUIRE(e.store->BeginEvent("evt-half", first, first + std::chrono::hours(24), state).ok());
  REQUIRE(state == Store::DedupState::kNew);
  Peek peek(vhost.url());
  peek.Publish("herald.events", "billing.invoice.paid",
               MakeEvent("evt-half", "billing.invoice.paid", {"u-h"}, {{"amount", "3 €"}}));
  auto jobs = Jobs(vhost, 2);  // Jobs() also checks each message id against its delivery id
  REQUIRE(jobs["push"].size() == 1);
  REQUIRE(jobs["in_app"].size() == 1);
  CHECK(jobs["push"][0]["delivery_id"] == DeliveryId("evt-half", "u-h", "push", first));
  CHECK(jobs["in_app"][0]["delivery_id"] == DeliveryId("evt-half", "u-h", "in_app", first));
  REQUIRE(jobs["push"][0]["fallback"].size() == 1);
  CHECK(jobs["push"][0]["fallback"][0]["delivery_id"] == DeliveryId("evt-half", "u-h", "email", first));
  CHECK(jobs["push"][0]["content"]["title"] == "Invoice paid");  // the rest of the job is intact
  // And the notification id of then, in the jobs and in the trace written with them.
  const std::string nid = NotificationId("evt-half", "u-h", first);
  CHECK(jobs["push"][0]["notification_id"] == nid);
  CHECK(jobs["in_app"][0]["notification_id"] == nid);
  TraceRecord trace;
  REQUIRE(e.store->GetTraceByEvent("evt-half", "u-h", trace).ok());
  CHECK(trace.notification_id == nid);
  CHECK(e.store->GetTrace(nid, trace).ok());
}

TEST_CASE("Engine: unknown types and missing required variables are invalid events") {
  Vhost vhost("engine-invalid");
  Harness e(vhost, Dir("engine-invalid"));
  Peek peek(vhost.url());
  peek.Publish("herald.events", "x", MakeEvent("e1", "no.such.type", {"u-1"}, json::object()));
  peek.Publish("herald.events", "x", MakeEvent("e2", "billing.invoice.paid", {"u-1"}, json::object()));
  auto m = peek.WaitGet("herald.events.invalid", 10s);
  REQUIRE(m);
  CHECK(m->headers["x-herald-reason"] == "type: no event type \"no.such.type\" is configured (see event_types)");
  m = peek.WaitGet("herald.events.invalid", 10s);
  REQUIRE(m);
  CHECK(m->headers["x-herald-reason"] ==
        "data.vars: missing \"amount\", required by event type billing.invoice.paid");
  CHECK(peek.Depth("herald.deliver.in_app") == 0);
}

TEST_CASE("Engine: a topic fans out to every subscriber, page by page") {
  Vhost vhost("engine-topic");
  Harness e(vhost, Dir("engine-topic"));
  for (int i = 0; i < 1234; ++i) REQUIRE(e.store->Subscribe("followers-of-u-9", "f-" + std::to_string(i)).ok());
  Peek peek(vhost.url());
  peek.Publish("herald.events", "social.post.liked",
               json{{"specversion", "1.0"}, {"id", "evt-topic"}, {"source", "/t"}, {"type", "social.post.liked"},
                    {"data", {{"topic", "followers-of-u-9"}, {"vars", {{"who", "u-9"}}}}}}
                   .dump());
  auto jobs = Jobs(vhost, 1234);
  REQUIRE(jobs["in_app"].size() == 1234);
  std::set<std::string> users;
  for (const json& j : jobs["in_app"]) users.insert(j["user_id"]);
  CHECK(users.size() == 1234);
  CHECK(jobs["in_app"][0]["content"]["body"] == "u-9 liked your post.");
}

TEST_CASE("Engine: expired event ids are purged, and an id may then be used again") {
  // No broker needed: the type's only channel is impossible, so no job is published.
  Config config = LoadConfigText("{}", "t", {});
  config.events.dedup_window = Millis(60000);
  EventTypeConfig t;
  t.name = "t.silent";
  t.channels = {"webhook"};
  config.event_types[t.name] = t;
  std::unique_ptr<Store> store;
  REQUIRE(OpenStore("sqlite://" + Dir("engine-purge") + "/herald.db", store).ok());
  ManualClock clock(*ParseRfc3339("2026-11-22T10:00:00Z"));
  PreferenceCache cache(*store, 10, Millis(60000), clock);
  LocalPresence presence(Millis(60000));
  broker::Publisher unused(broker::PublisherOptionsFor(config, "never started"));
  NotificationEngine engine(config, *store, cache, presence, unused, clock);
  engine.Start();
  auto handle = [&](const std::string& id) {
    herald::Event e;
    e.id = id;
    e.type = "t.silent";
    e.recipients = {"u-1"};
    std::promise<Status> p;
    engine.Handle(e, [&](const Status& s) { p.set_value(s); });
    return p.get_future().get();
  };
  auto purged = [] {
    return Metrics::Global().Counters("herald_dedup_purged_total", "", {}).Value({});
  };
  REQUIRE(handle("evt-a").ok());
  Store::DedupState state;
  REQUIRE(store->BeginEvent("evt-a", clock.Now(), clock.Now() + std::chrono::minutes(1), state).ok());
  CHECK(state == Store::DedupState::kDone);  // remembered within the window
  double before = purged();
  clock.Advance(std::chrono::minutes(11));   // past the window and the purge interval
  REQUIRE(handle("evt-b").ok());
  CHECK(purged() == before + 1);
  REQUIRE(store->BeginEvent("evt-a", clock.Now(), clock.Now() + std::chrono::minutes(1), state).ok());
  CHECK(state == Store::DedupState::kNew);
  engine.Stop();
}

TEST_CASE("Engine: a job's event and content are written as nlohmann writes their values, control characters and all") {
  // (No broker: BuildBatch only; the publisher is never started.)
  Config config = LoadConfig(SourceDir() + "/config/herald.yaml", {});
  CheckTemplates(config);
  TempDir dir("herald-engine-bytes");
  std::unique_ptr<Store> store;
  REQUIRE(OpenStore("sqlite://" + dir.path + "/herald.db", store, KnownChannels()).ok());
  PutPrefs(*store, "u-1", {{"contacts", {{"email", "u1@example.org"}, {"webhook", "https://hooks.example.org/u-1"}}}});
  PreferenceCache cache(*store, 100, Millis(60000), SystemClock::Instance());
  LocalPresence presence{Millis(60000)};
  broker::Publisher unused(broker::PublisherOptionsFor(config, "engine bytes test"));
  NotificationEngine engine(config, *store, cache, presence, unused, SystemClock::Instance());

  Event event;
  event.id = "evt-\b\f\x01\"\\caf\xc3\xa9";
  event.source = "/src\t\n\x1f/\xe2\x82\xac";
  event.type = "billing.invoice.paid";
  event.time = SystemClock::Instance().Now();
  event.expires_at = event.time + std::chrono::hours(1);
  event.vars = {{"amount", "12\b EUR\f \"\\ \x7f"}};
  NotificationEngine::Batch batch;
  REQUIRE(engine.BuildBatch(event, {"u-1"}, event.time, batch).ok());
  std::set<std::string> channels;
  for (const broker::Message& m : batch.jobs) {
    json job;
    JsonMemberTexts texts;
    REQUIRE(ParseJson(m.body, job, kJsonMaxDepth, &texts));
    channels.insert(job["channel"].get<std::string>());
    INFO(m.body);
    CHECK(texts.Find("event") == job["event"].dump());
    CHECK(texts.Find("content") == job["content"].dump());
    CHECK(job["event"]["id"] == event.id);
    CHECK(job["event"]["source"] == event.source);
    CHECK(job["event"]["type"] == event.type);
    CHECK(job["event"]["time"] == FormatRfc3339(event.time));
    CHECK(job["event"]["expires_at"] == FormatRfc3339(*event.expires_at));
    CHECK(job["event"]["category"] == "billing");
    CHECK(job["event"]["critical"] == false);
    CHECK(job["event"]["priority"] == "normal");
  }
  CHECK(channels == std::set<std::string>{"in_app", "email", "webhook"});
}
