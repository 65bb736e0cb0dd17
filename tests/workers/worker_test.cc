// The worker through the real broker. The channel is a scripted implementation of the Channel
// interface: these tests are about what the worker does with each kind of result (tiers,
// fallback, dead letters, rate, idempotency), not about a provider.
#include <catch2/catch.hpp>
#include <sqlite3.h>
#include <algorithm>
#include <fstream>
#include <atomic>
#include <mutex>

#include "broker/options.h"
#include "broker/topology.h"
#include "channels/in_app/in_app.h"
#include "channels/webhook/webhook.h"
#include "core/metrics.h"
#include "engine/notification_engine.h"
#include "tests/support/test_env.h"
#include "tests/support/worker_harness.h"
#include "workers/worker.h"

using namespace herald;
using namespace herald::test;
using nlohmann::json;
using Steady = std::chrono::steady_clock;

namespace {

double Seconds(Steady::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

namespace {

// The retry test with either kind of channel: one that sends on the worker's threads, or one that
// completes its sends later on its own thread.
template <typename ScriptedKind>
void CheckRetriesThenSentOnce(const std::string& name) {
  WorkerHarness h(name, {Millis(300), Millis(900)});
  ScriptedKind ch({SendResult::Retryable("HTTP 503"), SendResult::Retryable("HTTP 503")});
  auto w = h.Worker("webhook", ch);
  h.PublishJob("webhook", Job("webhook", "u-1"));
  REQUIRE(WaitFor([&] { return ch.Calls().size() == 3; }, 20s));
  auto calls = ch.Calls();
  CHECK(calls[0].attempt == 1);
  CHECK(calls[1].attempt == 2);
  CHECK(calls[2].attempt == 3);
  double gap1 = Seconds(calls[1].at - calls[0].at), gap2 = Seconds(calls[2].at - calls[1].at);
  INFO("gaps " << gap1 << " s, " << gap2 << " s");
  CHECK(gap1 >= 0.3);
  CHECK(gap1 < 0.3 + 0.5);
  CHECK(gap2 >= 0.9);
  CHECK(gap2 < 0.9 + 0.5);
  bool sent = false;
  REQUIRE(WaitFor([&] { return h.store->WasSent(calls[0].delivery_id, sent).ok() && sent; }, 5s));
  std::this_thread::sleep_for(300ms);
  CHECK(ch.Calls().size() == 3);  // nothing more
  std::vector<DeliveryAttempt> attempts;
  REQUIRE(h.store->ListAttempts(Job("webhook", "u-1")["notification_id"], attempts).ok());
  REQUIRE(attempts.size() == 3);
  CHECK(attempts[0].outcome == "retried");
  CHECK(attempts[2].outcome == "sent");
}

}  // namespace

TEST_CASE("Worker: retryable failures wait for the configured tiers, then the job is sent once") {
  SECTION("a channel that sends on the worker's threads") { CheckRetriesThenSentOnce<ScriptedChannel>("worker-retry"); }
  SECTION("an asynchronous channel") { CheckRetriesThenSentOnce<AsyncScriptedChannel>("worker-retry-async"); }
}

TEST_CASE("Worker: a Retry-After picks the smallest tier not shorter than it") {
  CHECK(RetryDelay({Millis(1000), Millis(2000), Millis(4000)}, 1, std::nullopt) == Millis(1000));
  CHECK(RetryDelay({Millis(1000), Millis(2000), Millis(4000)}, 3, std::nullopt) == Millis(4000));
  CHECK(RetryDelay({Millis(1000), Millis(2000), Millis(4000)}, 9, std::nullopt) == Millis(4000));
  CHECK(RetryDelay({Millis(1000), Millis(2000), Millis(4000)}, 1, Millis(1500)) == Millis(2000));
  CHECK(RetryDelay({Millis(1000), Millis(2000), Millis(4000)}, 3, Millis(10)) == Millis(1000));
  CHECK(RetryDelay({Millis(1000), Millis(2000), Millis(4000)}, 1, Millis(60000)) == Millis(4000));
}

TEST_CASE("Worker: a permanent failure goes to the next channel of the fallback chain") {
  WorkerHarness h("worker-fallback");
  ScriptedChannel ch({}, SendResult::Permanent("HTTP 400: bad token"));
  auto w = h.Worker("push", ch);
  json fallback = json::array({{{"channel", "email"}, {"delivery_id", DeliveryId("evt-w", "u-1", "email", SystemTime{})},
                                {"locale", "en"}, {"contact", {{"email", "a@example.org"}}},
                                {"content", {{"subject", "S"}, {"text", "T"}}}}});
  h.PublishJob("push", Job("push", "u-1", fallback));
  Peek peek(h.vhost.url());
  auto m = peek.WaitGet("herald.deliver.email", 10s);
  REQUIRE(m);
  json job = json::parse(m->body);
  CHECK(job["channel"] == "email");
  CHECK(job["delivery_id"] == DeliveryId("evt-w", "u-1", "email", SystemTime{}));
  CHECK(job["contact"]["email"] == "a@example.org");
  CHECK(job["fallback"].empty());
  CHECK(job["attempt"] == 1);
  CHECK(job["fallback_from"]["reason"] == "permanent");
  CHECK(job["fallback_from"]["error"] == "HTTP 400: bad token");
  CHECK(m->message_id == job["delivery_id"]);
  CHECK(ch.Calls().size() == 1);
  CHECK(peek.Depth("herald.dlq") == 0);
}

TEST_CASE("Worker: exhausted attempts without fallback are dead-lettered with the x-herald headers, then stored") {
  WorkerHarness h("worker-dlq", {Millis(200)});
  ScriptedChannel ch({}, SendResult::Retryable("HTTP 503: maintenance"));
  auto w = h.Worker("webhook", ch);
  DeadLetterDrain drain(h.config, *h.store, SystemClock::Instance());
  drain.Start();
  h.PublishJob("webhook", Job("webhook", "u-dead"));
  std::vector<DeadLetter> rows;
  REQUIRE(WaitFor([&] { return h.store->ListDeadLetters({}, rows).ok() && rows.size() == 1; }, 20s));
  // The trace has every attempt by the time the dead letter exists: each failed attempt is
  // recorded before the job goes on.
  std::vector<DeliveryAttempt> attempts;
  REQUIRE(h.store->ListAttempts(Job("webhook", "u-dead")["notification_id"], attempts).ok());
  REQUIRE(attempts.size() == 3);
  CHECK(attempts[0].outcome == "retried");
  CHECK(attempts[1].outcome == "retried");
  CHECK(attempts[2].outcome == "dead");
  CHECK_THAT(attempts[2].error, Catch::Matchers::StartsWith("attempts_exhausted: HTTP 503"));
  const DeadLetter& d = rows[0];
  CHECK(d.delivery_id == DeliveryId("evt-w", "u-dead", "webhook", SystemTime{}));
  CHECK(d.reason == "attempts_exhausted");
  CHECK(d.error == "HTTP 503: maintenance");
  CHECK(d.attempts == 3);
  CHECK(d.channel == "webhook");
  CHECK(d.event_type == "billing.invoice.paid");
  CHECK(d.user_id == "u-dead");
  CHECK(d.first_failed_at <= d.dead_at);
  json headers = json::parse(d.headers_json);
  CHECK(headers.contains("x-herald-first-failed-at"));
  CHECK(json::parse(d.job_json)["attempt"] == 3);
  CHECK(ch.Calls().size() == 3);
  Peek peek(h.vhost.url());
  CHECK(WaitFor([&] { return peek.Depth("herald.dlq") == 0; }, 5s));
  drain.Stop(1s);
}

TEST_CASE("Worker: event fields of the wrong type neither stop a delivery nor the worker") {
  WorkerHarness h("worker-odd-event");
  AsyncScriptedChannel ch({SendResult::Ok()}, SendResult::Permanent("HTTP 400"));
  auto w = h.Worker("webhook", ch);
  DeadLetterDrain drain(h.config, *h.store, SystemClock::Instance());
  drain.Start();
  json sent = Job("webhook", "u-odd-1");
  sent["event"] = {{"id", 7}, {"time", 5}, {"type", {"x"}}};
  h.PublishJob("webhook", sent);
  bool done = false;
  REQUIRE(WaitFor([&] { return h.store->WasSent(sent["delivery_id"], done).ok() && done; }, 10s));
  json dead = Job("webhook", "u-odd-2");
  dead["event"] = "not an object";
  h.PublishJob("webhook", dead);
  std::vector<DeadLetter> rows;
  REQUIRE(WaitFor([&] { return h.store->ListDeadLetters({}, rows).ok() && rows.size() == 1; }, 10s));
  CHECK(rows[0].delivery_id == dead["delivery_id"]);
  CHECK(rows[0].reason == "permanent");
  CHECK(rows[0].event_id.empty());
  CHECK(rows[0].user_id == "u-odd-2");
  drain.Stop(1s);
}

TEST_CASE("Worker: a delivery id recorded as sent is never sent again") {
  WorkerHarness h("worker-idem");
  ScriptedChannel ch({});
  json job = Job("webhook", "u-1");
  REQUIRE(h.store->RecordSent(job["delivery_id"], "webhook", SystemClock::Instance().Now()).ok());
  auto w = h.Worker("webhook", ch);
  h.PublishJob("webhook", job);
  h.PublishJob("webhook", Job("webhook", "u-2"));
  REQUIRE(WaitFor([&] { return ch.Calls().size() == 1; }, 10s));
  Peek peek(h.vhost.url());
  CHECK(WaitFor([&] { return peek.Depth("herald.deliver.webhook") == 0; }, 5s));
  std::this_thread::sleep_for(300ms);
  REQUIRE(ch.Calls().size() == 1);
  CHECK(ch.Calls()[0].delivery_id == DeliveryId("evt-w", "u-2", "webhook", SystemTime{}));
}

TEST_CASE("Worker: jobs taken as a batch are checked together: the ones recorded as sent are not sent again") {
  // Queued before the worker starts, so its consumer reads them in batches (one sent check each).
  WorkerHarness h("worker-idem-batch");
  h.config.channels["webhook"].prefetch = 100;
  AsyncScriptedChannel ch({});
  std::vector<std::string> expected;
  for (int i = 0; i < 30; ++i) {
    json job = Job("webhook", "u-" + std::to_string(i));
    if (i % 3 == 0) {
      REQUIRE(h.store->RecordSent(job["delivery_id"], "webhook", SystemClock::Instance().Now()).ok());
    } else {
      expected.push_back(job["delivery_id"]);
    }
    h.PublishJob("webhook", job);
    if (i == 10) h.PublishRaw("webhook", "{not json");  // refused alone; the rest of its batch goes on
  }
  auto w = h.Worker("webhook", ch);
  REQUIRE(WaitFor([&] { return ch.Calls().size() == expected.size(); }, 10s));
  Peek peek(h.vhost.url());
  CHECK(WaitFor([&] { return peek.Depth("herald.deliver.webhook") == 0; }, 5s));
  std::this_thread::sleep_for(300ms);
  std::vector<std::string> called;
  for (const auto& c : ch.Calls()) called.push_back(c.delivery_id);
  std::sort(called.begin(), called.end());
  std::sort(expected.begin(), expected.end());
  CHECK(called == expected);  // each unsent job once, none of the sent ones
  CHECK(WaitFor([&] { return peek.Depth("herald.dlq") == 1; }, 5s));  // the broken one, dead-lettered
}

namespace {

template <typename ScriptedKind>
void CheckRate(const std::string& name) {
  WorkerHarness h(name);
  h.config.channels["webhook"].rate = 30;
  h.config.channels["webhook"].burst = 5;
  h.config.channels["webhook"].concurrency = 8;
  ScriptedKind ch({});
  for (int i = 0; i < 100; ++i) h.PublishJob("webhook", Job("webhook", "u-" + std::to_string(i)));
  auto w = h.Worker("webhook", ch);
  REQUIRE(WaitFor([&] { return ch.Calls().size() == 100; }, 20s));
  std::vector<Steady::time_point> at;
  for (const auto& c : ch.Calls()) at.push_back(c.at);
  std::sort(at.begin(), at.end());
  size_t most = 0, lo = 0;
  for (size_t hi = 0; hi < at.size(); ++hi) {
    while (at[hi] - at[lo] >= std::chrono::seconds(1)) ++lo;
    most = std::max(most, hi - lo + 1);
  }
  INFO("most sends in one second: " << most << ", total time " << Seconds(at.back() - at.front()) << " s");
  CHECK(most <= 35);
  CHECK(Seconds(at.back() - at.front()) >= (100 - 5) / 30.0 - 0.1);
}

}  // namespace

TEST_CASE("Worker: 100 jobs at once to a 30/s provider are all sent, never above 30 + burst in a second") {
  SECTION("a channel that sends on the worker's threads") { CheckRate<ScriptedChannel>("worker-rate"); }
  SECTION("an asynchronous channel, paced by one thread") { CheckRate<AsyncScriptedChannel>("worker-rate-async"); }
}

TEST_CASE("Worker: an asynchronous channel has exactly `concurrency` sends in flight and sends every job once") {
  WorkerHarness h("worker-async-limit");
  h.config.channels["webhook"].concurrency = 4;
  h.config.channels["webhook"].prefetch = 50;
  AsyncScriptedChannel ch({}, SendResult::Ok(), Millis(40));
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    json job = Job("webhook", "u-" + std::to_string(i));
    ids.push_back(job["delivery_id"]);
    h.PublishJob("webhook", job);
  }
  auto w = h.Worker("webhook", ch);
  REQUIRE(WaitFor([&] {
    return std::all_of(ids.begin(), ids.end(), [&](const std::string& id) {
      bool sent = false;
      return h.store->WasSent(id, sent).ok() && sent;
    });
  }, 20s));
  CHECK(ch.MostInFlight() == 4);  // more: the limit is not kept; fewer: the sends did not overlap
  std::vector<std::string> called;
  for (const auto& c : ch.Calls()) called.push_back(c.delivery_id);
  std::sort(called.begin(), called.end());
  std::sort(ids.begin(), ids.end());
  CHECK(called == ids);
  Peek peek(h.vhost.url());
  CHECK(WaitFor([&] { return peek.Depth("herald.deliver.webhook") == 0; }, 5s));
}

TEST_CASE("Worker: stopping waits for an asynchronous channel's sends in flight, the unsent jobs stay queued") {
  WorkerHarness h("worker-async-stop");
  h.config.channels["webhook"].concurrency = 2;
  AsyncScriptedChannel ch({}, SendResult::Ok(), Millis(700));
  for (int i = 0; i < 5; ++i) h.PublishJob("webhook", Job("webhook", "u-" + std::to_string(i)));
  auto w = h.Worker("webhook", ch);
  REQUIRE(WaitFor([&] { return ch.InFlight() == 2; }, 10s));
  const auto stop_at = Steady::now();
  w->Stop(Millis(0));
  INFO("Stop took " << Seconds(Steady::now() - stop_at) << " s");
  CHECK(ch.InFlight() == 0);  // their completions ran before Stop returned
  CHECK(Seconds(Steady::now() - stop_at) >= 0.3);
  CHECK(ch.Calls().size() == 2);  // nothing started after the stop
  w.reset();
  // Every job not acked goes back to the queue: the two sent ones may or may not have been acked
  // before the connection closed, the other three were never taken from it.
  Peek peek(h.vhost.url());
  CHECK(WaitFor([&] { auto n = peek.Depth("herald.deliver.webhook"); return n >= 3 && n <= 5; }, 10s));
}

TEST_CASE("Worker: an invalid contact is removed from the user's preferences, then the job is dead-lettered") {
  WorkerHarness h("worker-contact");
  Preferences p = DefaultPreferences("u-1");
  p.contacts.webhook = "https://hooks.example.org/u-1";
  p.contacts.email = "a@example.org";
  REQUIRE(h.store->PutPreferences(p).ok());
  ScriptedChannel ch({}, SendResult::InvalidContact("HTTP 410: gone"));
  auto w = h.Worker("webhook", ch);
  h.PublishJob("webhook", Job("webhook", "u-1"));
  Peek peek(h.vhost.url());
  auto m = peek.WaitGet("herald.dlq", 10s);
  REQUIRE(m);
  CHECK(m->headers["x-herald-reason"] == "invalid_contact");
  Preferences after;
  REQUIRE(h.store->GetPreferences("u-1", after).ok());
  CHECK(after.contacts.webhook.empty());
  CHECK(after.contacts.email == "a@example.org");
}

TEST_CASE("Worker: push subscriptions the channel reports gone are removed even when the job was sent") {
  WorkerHarness h("worker-push-gone");
  Preferences p = DefaultPreferences("u-1");
  p.contacts.push = {{"fcm", "", "", "", "token-live"}, {"apns", "", "", "", "token-gone"},
                     {"webpush", "https://push.example.org/gone", "BAAA", "AAAA", ""}};
  REQUIRE(h.store->PutPreferences(p).ok());
  SendResult ok = SendResult::Ok();
  ok.invalid_contacts = {"token-gone", "https://push.example.org/gone"};
  ScriptedChannel ch({}, ok);
  auto w = h.Worker("push", ch);
  json job = Job("push", "u-1");
  h.PublishJob("push", job);
  bool sent = false;
  REQUIRE(WaitFor([&] { return h.store->WasSent(job["delivery_id"], sent).ok() && sent; }, 10s));
  Preferences after;
  REQUIRE(WaitFor([&] { return h.store->GetPreferences("u-1", after).ok() && after.contacts.push.size() == 1; }, 10s));
  CHECK(after.contacts.push[0].token == "token-live");
  Peek peek(h.vhost.url());
  CHECK(peek.Depth("herald.dlq") == 0);
}

TEST_CASE("Worker: the in-app channel writes the inbox once and tells the hub once") {
  WorkerHarness h("worker-inapp");
  InAppHub hub;
  std::atomic<int> heard{0};
  std::string title;
  hub.Subscribe("u-1", [&](const InboxEntry& e) {
    title = e.title;
    ++heard;
  });
  InAppChannel channel(*h.store, hub, SystemClock::Instance());
  auto w = h.Worker("in_app", channel);
  json job = Job("in_app", "u-1");
  h.PublishJob("in_app", job);
  REQUIRE(WaitFor([&] { return heard == 1; }, 10s));
  CHECK(title == "T");
  auto skipped = [] {
    return Metrics::Global().Counters("herald_deliveries_total", "", {"channel", "outcome"}).Value({"in_app", "skipped"});
  };
  const double skipped_before = skipped();
  // The same job again (a redelivery), and the same notification under another delivery id (a
  // repeat): no second entry, no second attempt in the trace, both counted as skipped.
  h.PublishJob("in_app", job);
  job["delivery_id"] = "d-other";
  h.PublishJob("in_app", job);
  REQUIRE(WaitFor([&] { return skipped() == skipped_before + 2; }, 10s));
  Peek peek(h.vhost.url());
  REQUIRE(WaitFor([&] { return peek.Depth("herald.deliver.in_app") == 0; }, 10s));
  std::vector<InboxEntry> inbox;
  REQUIRE(h.store->ListInbox("u-1", 0, 10, inbox).ok());
  CHECK(inbox.size() == 1);
  CHECK(heard == 1);
  std::vector<DeliveryAttempt> attempts;
  REQUIRE(h.store->ListAttempts(job["notification_id"], attempts).ok());
  REQUIRE(attempts.size() == 1);
  CHECK(attempts[0].outcome == "sent");
}

TEST_CASE("Worker: an in-app inbox write that fails is retried and never acked as sent") {
  WorkerHarness h("worker-inapp-fail", {Millis(300)});
  // A trigger stands in for a store that cannot write (a full disk) until the test lets it.
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open((h.dir + "/herald.db").c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "CREATE TABLE refuse_inbox (x);"
                         "INSERT INTO refuse_inbox VALUES (1);"
                         "CREATE TRIGGER refuse BEFORE INSERT ON inbox WHEN EXISTS (SELECT 1 FROM refuse_inbox) "
                         "BEGIN SELECT RAISE(ABORT, 'no space left (test)'); END",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  InAppHub hub;
  std::atomic<int> heard{0};
  hub.Subscribe("u-1", [&](const InboxEntry&) { ++heard; });
  InAppChannel channel(*h.store, hub, SystemClock::Instance());
  auto w = h.Worker("in_app", channel);
  const json job = Job("in_app", "u-1");
  h.PublishJob("in_app", job);
  const std::string nid = job["notification_id"];
  std::vector<DeliveryAttempt> attempts;
  REQUIRE(WaitFor([&] { return h.store->ListAttempts(nid, attempts).ok() && !attempts.empty(); }, 10s));
  CHECK(attempts[0].outcome == "retried");
  CHECK_THAT(attempts[0].error, Catch::Matchers::Contains("no space left (test)"));
  CHECK(heard == 0);
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open((h.dir + "/herald.db").c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "DELETE FROM refuse_inbox", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  REQUIRE(WaitFor([&] { return heard == 1; }, 10s));  // the retry, after the 300 ms tier
  REQUIRE(WaitFor([&] { return h.store->ListAttempts(nid, attempts).ok() && attempts.size() == 2; }, 5s));
  CHECK(attempts[1].outcome == "sent");
  CHECK(attempts[1].attempt == 2);
  // The inbox row is the delivery's record; no sent record is kept beside it.
  std::vector<InboxEntry> inbox;
  REQUIRE(h.store->ListInbox("u-1", 0, 10, inbox).ok());
  CHECK(inbox.size() == 1);
  bool sent = true;
  REQUIRE(h.store->WasSent(job["delivery_id"], sent).ok());
  CHECK_FALSE(sent);
}

namespace {

// A hook that checks our signature and records each accepted request's Idempotency-Key.
json SignedHook(const std::string& id, const std::string& log, const json& extra_rule, int mismatch_code,
                bool slow = false) {
  json rule = {{"match", {{"type", "payload-hmac-sha256"}, {"secret", "worker-secret"},
                          {"parameter", {{"source", "header"}, {"name", "X-Herald-Signature"}}}}}};
  if (!extra_rule.is_null()) rule = {{"and", json::array({rule, extra_rule})}};
  return {{"id", id},
          {"execute-command", "/bin/sh"},
          {"pass-arguments-to-command",
           json::array({{{"source", "string"}, {"name", "-c"}},
                        {{"source", "string"}, {"name", std::string(slow ? "sleep 3; " : "") + "echo \"$1\" >> " + log}},
                        {{"source", "string"}, {"name", "sh"}},
                        {{"source", "header"}, {"name", "Idempotency-Key"}}})},
          {"include-command-output-in-response", slow},
          {"trigger-rule", rule},
          {"trigger-rule-mismatch-http-response-code", mismatch_code}};
}

size_t Lines(const std::string& file) {
  std::ifstream in(file);
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) n += !line.empty();
  return n;
}

WebhookConfig HookConfig(Millis timeout = Millis(5000)) {
  WebhookConfig c;
  c.secret = "worker-secret";
  c.allow_private_targets = true;  // the test server is on loopback
  c.timeout = timeout;
  return c;
}

}  // namespace

TEST_CASE("Worker + webhook server: a 503 is retried and the job delivered once") {
  const std::string log = TempFile("503.log", "");
  // Attempt 1 is refused with 503; the retry (attempt 2) passes.
  json not_first = {{"not", {{"match", {{"type", "value"}, {"value", "1"},
                                        {"parameter", {{"source", "payload"}, {"name", "attempt"}}}}}}}};
  WebhookServer server(json::array({SignedHook("flaky", log, not_first, 503)}).dump());
  WorkerHarness h("worker-hook-503", {Millis(300)});
  WebhookChannel channel(HookConfig());
  auto w = h.Worker("webhook", channel);
  json job = Job("webhook", "u-1");
  job["contact"]["url"] = server.Url("flaky");
  h.PublishJob("webhook", job);
  bool sent = false;
  REQUIRE(WaitFor([&] { return h.store->WasSent(job["delivery_id"], sent).ok() && sent; }, 20s));
  // The server answers before it runs the recording command, so the line may lag a little.
  CHECK(WaitFor([&] { return Lines(log) == 1; }, 5s));
  std::this_thread::sleep_for(300ms);
  CHECK(Lines(log) == 1);
  Peek peek(h.vhost.url());
  CHECK(peek.Depth("herald.dlq") == 0);
}

TEST_CASE("Worker + webhook server: a permanent 4xx is dead-lettered with the server's answer") {
  const std::string log = TempFile("400.log", "");
  json never = {{"match", {{"type", "value"}, {"value", "never"}, {"parameter", {{"source", "payload"}, {"name", "user_id"}}}}}};
  WebhookServer server(json::array({SignedHook("refuses", log, never, 400)}).dump());
  WorkerHarness h("worker-hook-400");
  WebhookChannel channel(HookConfig());
  auto w = h.Worker("webhook", channel);
  DeadLetterDrain drain(h.config, *h.store, SystemClock::Instance());
  drain.Start();
  json job = Job("webhook", "u-1");
  job["contact"]["url"] = server.Url("refuses");
  h.PublishJob("webhook", job);
  std::vector<DeadLetter> rows;
  REQUIRE(WaitFor([&] { return h.store->ListDeadLetters({}, rows).ok() && rows.size() == 1; }, 20s));
  CHECK(rows[0].reason == "permanent");
  CHECK_THAT(rows[0].error, Catch::Matchers::StartsWith("HTTP 400"));
  CHECK(rows[0].attempts == 1);
  CHECK(Lines(log) == 0);
  drain.Stop(1s);
}

TEST_CASE("Worker + webhook server: a hook slower than the timeout is retried until attempts run out") {
  const std::string log = TempFile("slow.log", "");
  WebhookServer server(json::array({SignedHook("slow", log, nullptr, 500, /*slow=*/true)}).dump());
  WorkerHarness h("worker-hook-slow", {Millis(200)});
  h.config.retry.max_attempts = 2;
  WebhookChannel channel(HookConfig(Millis(1000)));
  auto w = h.Worker("webhook", channel);
  DeadLetterDrain drain(h.config, *h.store, SystemClock::Instance());
  drain.Start();
  json job = Job("webhook", "u-1");
  job["contact"]["url"] = server.Url("slow");
  h.PublishJob("webhook", job);
  std::vector<DeadLetter> rows;
  REQUIRE(WaitFor([&] { return h.store->ListDeadLetters({}, rows).ok() && rows.size() == 1; }, 30s));
  CHECK(rows[0].reason == "attempts_exhausted");
  CHECK(rows[0].attempts == 2);
  CHECK_THAT(rows[0].error, Catch::Matchers::Contains("imeout") || Catch::Matchers::Contains("timed out"));
  drain.Stop(1s);
}
