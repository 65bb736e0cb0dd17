// workers/dead_letters: first without a broker (the selection as the CLI and the API give it,
// errors naming the field with either prefix, paging, pinning a counted selection, purging, the
// audit), then replays through the real broker, on a publisher shared with a running worker as in
// heraldd.
#include "workers/dead_letters.h"

#include <catch2/catch.hpp>
#include <map>
#include <set>

#include "broker/options.h"
#include "core/time.h"
#include "tests/support/test_env.h"
#include "tests/support/worker_harness.h"

using namespace herald;
using Catch::Matchers::Contains;
using Catch::Matchers::Equals;
using Catch::Matchers::StartsWith;

namespace {

const SystemTime kNow = *ParseRfc3339("2026-11-22T10:00:00Z");

struct TestStore {
  test::TempDir dir{"herald-dead-letters"};
  std::unique_ptr<Store> store;
  TestStore() {
    Status s = OpenStore("sqlite://" + dir.path + "/herald.db", store);
    INFO(s.ToString());
    REQUIRE(s.ok());
  }
  // Rows 1..n; odd ids are e-mail, even ones push; row i died i minutes before kNow.
  void Fill(int n) {
    for (int i = 1; i <= n; ++i) {
      DeadLetter d;
      d.delivery_id = "d-" + std::to_string(i);
      d.channel = i % 2 ? "email" : "push";
      d.reason = "permanent";
      d.event_type = "a.b";
      d.user_id = "u-" + std::to_string(i);
      d.dead_at = kNow - std::chrono::minutes(i);
      d.first_failed_at = d.dead_at;
      d.job_json = nlohmann::json{{"delivery_id", d.delivery_id}, {"attempt", 4}}.dump();
      REQUIRE(store->PutDeadLetter(d).ok());
    }
  }
  std::vector<long long> Ids(const DeadLetterSelection& sel) {
    std::vector<long long> ids;
    REQUIRE(ForEachDeadLetter(*store, sel, [&](const DeadLetter& d) {
              ids.push_back(d.id);
              return true;
            }).ok());
    return ids;
  }
};

DeadLetterSelection Select(const DeadLetterQuery& q) {
  DeadLetterSelection sel;
  Status s = BuildDeadLetterSelection(q, kNow, "", sel);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return sel;
}

}  // namespace

TEST_CASE("Dead letters: a bad selection names the field, with the CLI's prefix or the API's", "[dlq]") {
  struct Case {
    DeadLetterQuery q;
    std::string field;    // the name the message starts with, after the prefix
    std::string message;  // the rest
  };
  auto with = [](auto change) {
    DeadLetterQuery q;
    change(q);
    return q;
  };
  std::vector<Case> cases = {
      {with([](auto& q) { q.channel = "smsx"; }), "channel",
       ": unknown channel \"smsx\" (known: email, in_app, push, webhook)"},
      {with([](auto& q) { q.since = "x"; }), "since",
       ": \"x\" is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration (2h, 30m)"},
      {with([](auto& q) { q.until = "2026-13-01T00:00:00Z"; }), "until", ": \"2026-13-01T00:00:00Z\" is neither"},
      {with([](auto& q) { q.since = "-2h"; }), "since", ": \"-2h\" is neither"},
      {with([](auto& q) { q.limit = -1; }), "limit", " must be 0 (no limit) or more (got -1)"},
      // What a query string may carry is quoted safely: no raw control characters in a message.
      {with([](auto& q) { q.since = "a\nb\"c"; }), "since", ": \"a\\nb\\\"c\" is neither"},
  };
  for (const std::string prefix : {"--", ""}) {
    for (const Case& c : cases) {
      DeadLetterSelection sel;
      sel.limit = 99;  // untouched on failure
      Status s = BuildDeadLetterSelection(c.q, kNow, prefix, sel);
      INFO("prefix \"" << prefix << "\": " << s.ToString());
      CHECK(s.code() == Status::Code::kInvalid);
      CHECK_THAT(s.message(), StartsWith(prefix + c.field + c.message));
      CHECK(sel.limit == 99);
    }
  }
  // The first bad field is the one named.
  DeadLetterSelection sel;
  DeadLetterQuery q;
  q.since = "soon";
  q.until = "later";
  CHECK_THAT(BuildDeadLetterSelection(q, kNow, "--", sel).message(), StartsWith("--since: "));
}

TEST_CASE("Dead letters: a good selection converts every field and echoes it with times resolved", "[dlq]") {
  DeadLetterQuery q;
  q.channel = "email";
  q.reason = "attempts_exhausted";
  q.type = "billing.invoice.paid";
  q.user = "u-1";
  q.since = "2h";
  q.until = "2026-11-22T11:00:00+01:00";
  q.limit = 7;
  DeadLetterSelection sel;
  REQUIRE(BuildDeadLetterSelection(q, kNow, "", sel).ok());
  CHECK(sel.filter.channel == "email");
  CHECK(sel.filter.reason == "attempts_exhausted");
  CHECK(sel.filter.event_type == "billing.invoice.paid");
  CHECK(sel.filter.user_id == "u-1");
  CHECK(sel.filter.since == kNow - std::chrono::hours(2));
  CHECK(sel.filter.until == kNow);
  CHECK(sel.limit == 7);
  CHECK_FALSE(sel.up_to_id);
  CHECK(sel.echo == nlohmann::json{{"channel", "email"}, {"reason", "attempts_exhausted"},
                                   {"type", "billing.invoice.paid"}, {"user", "u-1"},
                                   {"since", "2026-11-22T08:00:00.000Z"}, {"until", "2026-11-22T10:00:00.000Z"},
                                   {"limit", 7}});
  REQUIRE(BuildDeadLetterSelection({}, kNow, "--", sel).ok());
  CHECK(sel.echo == nlohmann::json::object());
  CHECK(sel.limit == 0);
}

TEST_CASE("Dead letters: iteration pages through every row in id order, honouring limit, stop and filter", "[dlq]") {
  TestStore t;
  t.Fill(1203);  // more than two pages
  std::vector<long long> all = t.Ids(Select({}));
  REQUIRE(all.size() == 1203);
  CHECK(std::is_sorted(all.begin(), all.end()));
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());

  DeadLetterQuery q;
  q.limit = 501;
  CHECK(t.Ids(Select(q)).size() == 501);
  q.limit = 0;
  q.channel = "push";
  auto push = t.Ids(Select(q));
  CHECK(push.size() == 601);
  CHECK(push.front() == 2);
  CHECK(push.back() == 1202);
  q.since = "10m";  // rows 1..10 died within the last 10 minutes
  CHECK(t.Ids(Select(q)) == std::vector<long long>{2, 4, 6, 8, 10});

  size_t visited = 0;
  REQUIRE(ForEachDeadLetter(*t.store, Select({}), [&](const DeadLetter&) { return ++visited < 3; }).ok());
  CHECK(visited == 3);
}

TEST_CASE("Dead letters: a counted selection is pinned, purge deletes exactly the rows counted", "[dlq]") {
  TestStore t;
  t.Fill(10);
  DeadLetterQuery q;
  q.channel = "email";
  DeadLetterSelection sel = Select(q);
  size_t count = 0;
  REQUIRE(CountDeadLetterSelection(*t.store, sel, count).ok());
  CHECK(count == 5);
  CHECK(sel.up_to_id == 9);

  // Dead-lettered while the operator read the prompt: not part of what was confirmed.
  t.Fill(2);  // d-1 replaced (a new id: it moved to the end) and d-2
  size_t deleted = 0;
  REQUIRE(PurgeDeadLetters(*t.store, sel, deleted).ok());
  CHECK(deleted == 4);  // 3, 5, 7, 9; the old row of d-1 was replaced meanwhile
  std::vector<std::string> left;
  REQUIRE(ForEachDeadLetter(*t.store, Select({}), [&](const DeadLetter& d) {
            left.push_back(d.delivery_id);
            return true;
          }).ok());
  CHECK(left == std::vector<std::string>{"d-4", "d-6", "d-8", "d-10", "d-1", "d-2"});

  // Nothing counted pins to nothing, even if rows arrive afterwards.
  q.channel = "webhook";
  DeadLetterSelection none = Select(q);
  REQUIRE(CountDeadLetterSelection(*t.store, none, count).ok());
  CHECK(count == 0);
  none.filter.channel.clear();
  REQUIRE(PurgeDeadLetters(*t.store, none, deleted).ok());
  CHECK(deleted == 0);

  DeadLetterSelection limited = Select({});
  limited.limit = 2;
  REQUIRE(PurgeDeadLetters(*t.store, limited, deleted).ok());
  CHECK(deleted == 2);
  REQUIRE(PurgeDeadLetters(*t.store, Select({}), deleted).ok());
  CHECK(deleted == 4);
  CHECK(t.Ids(Select({})).empty());
}

TEST_CASE("Dead letters: the audit keeps actor, action, selection, count and dry run", "[dlq]") {
  TestStore t;
  DeadLetterQuery q;
  q.channel = "push";
  q.since = "1h";
  DeadLetterSelection sel = Select(q);
  REQUIRE(RecordDeadLetterAudit(*t.store, "ops-ann", "replay", sel, 12, true).ok());
  REQUIRE(RecordDeadLetterAudit(*t.store, "", "purge", Select({}), 3, false).ok());
  std::vector<AuditRecord> audit;
  REQUIRE(t.store->ListAudit(10, audit).ok());
  REQUIRE(audit.size() == 2);
  CHECK(audit[0].actor == "unknown");
  CHECK(audit[0].action == "purge");
  CHECK(audit[0].filter_json == "{}");
  CHECK(audit[0].count == 3);
  CHECK_FALSE(audit[0].dry_run);
  CHECK(audit[1].actor == "ops-ann");
  CHECK(audit[1].action == "replay");
  CHECK(nlohmann::json::parse(audit[1].filter_json) ==
        nlohmann::json{{"channel", "push"}, {"since", "2026-11-22T09:00:00.000Z"}});
  CHECK(audit[1].count == 12);
  CHECK(audit[1].dry_run);
}

TEST_CASE("Dead letters: a replayed job is a first attempt without the retry bookkeeping", "[dlq]") {
  DeadLetter d;
  d.job_json = R"({"delivery_id":"d-1","attempt":6,"first_failed_at":"2026-11-22T09:00:00.000Z",)"
               R"("last_error":"SMTP 451","content":{"subject":"Grüße"}})";
  std::string body;
  REQUIRE(RewriteJob(d, body).ok());
  CHECK(nlohmann::json::parse(body) ==
        nlohmann::json{{"delivery_id", "d-1"}, {"attempt", 1}, {"content", {{"subject", "Grüße"}}}});
  for (const char* bad : {"not json", "[1,2]", "\"text\""}) {
    d.job_json = bad;
    Status s = RewriteJob(d, body);
    CHECK(s.code() == Status::Code::kInvalid);
    CHECK_THAT(s.message(), Equals("its job is not a JSON object"));
  }
}

namespace {

// A stored letter whose job goes back to `channel` (any JSON object will do for the broker).
DeadLetter StoredLetter(Store& store, const std::string& channel, const std::string& delivery_id,
                        const std::string& job_json = "") {
  DeadLetter d;
  d.delivery_id = delivery_id;
  d.channel = channel;
  d.reason = "permanent";
  d.dead_at = d.first_failed_at = kNow;
  d.job_json = job_json.empty() ? nlohmann::json{{"delivery_id", delivery_id}, {"attempt", 3}}.dump() : job_json;
  REQUIRE(store.PutDeadLetter(d).ok());
  return d;
}

std::set<long long> StoredIds(Store& store) {
  std::set<long long> ids;
  REQUIRE(ForEachDeadLetter(store, Select({}), [&](const DeadLetter& d) {
            ids.insert(d.id);
            return true;
          }).ok());
  return ids;
}

// The x-herald-replayed-from ids of every job waiting in `queue`.
std::multiset<long long> ReplayedFrom(const std::string& url, const std::string& queue) {
  std::multiset<long long> from;
  for (const auto& m : test::Peek(url).Drain(queue)) {
    CHECK(nlohmann::json::parse(m.body)["attempt"] == 1);
    from.insert(m.headers["x-herald-replayed-from"].get<long long>());
  }
  return from;
}

}  // namespace

TEST_CASE("Dead letters: replayed on the publisher a running worker shares, each job is delivered once", "[dlq]") {
  test::WorkerHarness h("dlq-shared", {Millis(100)});
  const int n = 20;
  // The provider refuses the first n sends for good, then accepts everything.
  test::ScriptedChannel ch(std::vector<SendResult>(n, SendResult::Permanent("HTTP 410: gone for now")));
  auto worker = h.Worker("webhook", ch);
  DeadLetterDrain drain(h.config, *h.store, SystemClock::Instance());
  drain.Start();
  for (int i = 0; i < n; ++i) h.PublishJob("webhook", test::Job("webhook", "u-" + std::to_string(i)));
  REQUIRE(test::WaitFor([&] { return StoredIds(*h.store).size() == static_cast<size_t>(n); }, 20s));

  DeadLetterQuery q;
  q.channel = "webhook";
  ReplayOptions o;
  o.window = 4;
  std::vector<ReplayProgress> steps;
  o.on_progress = [&](const ReplayProgress& p) { steps.push_back(p); };
  std::vector<std::string> problems;
  o.on_problem = [&](long long id, const std::string& p) { problems.push_back(std::to_string(id) + " " + p); };
  ReplayReport r;
  Status s = ReplayDeadLetters(*h.store, *h.publisher, Select(q), o, r);
  INFO(s.ToString());
  REQUIRE(s.ok());
  CHECK(r.total == static_cast<size_t>(n));
  CHECK(r.replayed == static_cast<size_t>(n));
  CHECK(r.failed + r.skipped == 0);
  CHECK_FALSE(r.cancelled);
  CHECK(problems.empty());
  REQUIRE_FALSE(steps.empty());
  CHECK(steps.back().replayed == static_cast<size_t>(n));
  CHECK(steps.back().total == static_cast<size_t>(n));
  CHECK(StoredIds(*h.store).empty());  // each row went with its confirm, before the call returned

  REQUIRE(test::WaitFor([&] { return ch.Calls().size() == static_cast<size_t>(2 * n); }, 20s));
  std::map<std::string, int> sends;
  for (const auto& c : ch.Calls()) ++sends[c.delivery_id];
  CHECK(sends.size() == static_cast<size_t>(n));
  for (const auto& [id, count] : sends) {
    INFO(id);
    CHECK(count == 2);  // refused once, delivered once
    // The sent record is written by the store's writer after the send returns.
    CHECK(test::WaitFor([&] {
      bool sent = false;
      return h.store->WasSent(id, sent).ok() && sent;
    }, 10s));
  }
  // The shared publisher was neither stopped nor drained for other work: it still publishes.
  CHECK(h.publisher->Connected());
  h.PublishJob("webhook", test::Job("webhook", "u-after"));
  CHECK(test::WaitFor([&] { return ch.Calls().size() == static_cast<size_t>(2 * n + 1); }, 10s));
  std::this_thread::sleep_for(300ms);
  CHECK(ch.Calls().size() == static_cast<size_t>(2 * n + 1));
  CHECK(StoredIds(*h.store).empty());
  worker->Stop(5s);
  drain.Stop(5s);
}

TEST_CASE("Dead letters: replay keeps what cannot go and says why, the rest goes", "[dlq]") {
  test::WorkerHarness h("dlq-problems");
  const long long good1 = StoredLetter(*h.store, "webhook", "d-good-1").id;
  const long long unroutable = StoredLetter(*h.store, "sms", "d-sms").id;  // no queue is bound for it
  const long long broken = StoredLetter(*h.store, "webhook", "d-broken", "{not json").id;
  const long long good2 = StoredLetter(*h.store, "webhook", "d-good-2").id;
  std::map<long long, std::string> problems;
  ReplayOptions o;
  o.on_problem = [&](long long id, const std::string& p) { problems[id] = p; };
  ReplayReport r;
  Status s = ReplayDeadLetters(*h.store, *h.publisher, Select({}), o, r);
  INFO(s.ToString());
  REQUIRE(s.ok());
  CHECK(r.total == 4);
  CHECK(r.replayed == 2);
  CHECK(r.failed == 1);
  CHECK(r.skipped == 1);
  REQUIRE(problems.size() == 2);
  CHECK_THAT(problems[unroutable], StartsWith("not replayed (kept): "));
  CHECK(problems[broken] == "skipped (kept): its job is not a JSON object");
  CHECK(StoredIds(*h.store) == std::set<long long>{unroutable, broken});
  CHECK(ReplayedFrom(h.vhost.url(), "herald.deliver.webhook") == std::multiset<long long>{good1, good2});
}

TEST_CASE("Dead letters: a cancelled replay stops taking rows and deletes exactly those confirmed", "[dlq]") {
  test::WorkerHarness h("dlq-cancel");
  const int n = 60;
  for (int i = 0; i < n; ++i) StoredLetter(*h.store, "webhook", "d-" + std::to_string(i));
  std::atomic<bool> cancel{false};
  ReplayOptions o;
  o.rate = 100;
  o.window = 8;
  o.cancel = &cancel;
  o.on_progress = [&](const ReplayProgress& p) {
    if (p.replayed >= 10) cancel = true;
  };
  ReplayReport r;
  REQUIRE(ReplayDeadLetters(*h.store, *h.publisher, Select({}), o, r).ok());
  INFO("replayed " << r.replayed);
  CHECK(r.cancelled);
  CHECK(r.total == static_cast<size_t>(n));
  CHECK(r.replayed >= 10);
  CHECK(r.replayed < static_cast<size_t>(n));
  CHECK(r.failed + r.skipped == 0);
  // Nothing in flight was abandoned: what is on the queue is exactly what left the store.
  std::set<long long> left = StoredIds(*h.store);
  CHECK(left.size() == n - r.replayed);
  std::multiset<long long> from = ReplayedFrom(h.vhost.url(), "herald.deliver.webhook");
  CHECK(from.size() == r.replayed);
  for (long long id : from) CHECK(left.count(id) == 0);
}

TEST_CASE("Dead letters: without a broker a replay fails within the connect timeout and changes nothing", "[dlq]") {
  test::TempDir dir("herald-dlq-nobroker");
  std::unique_ptr<Store> store;
  REQUIRE(OpenStore("sqlite://" + dir.path + "/herald.db", store).ok());
  Config config = LoadConfigText("{}", "test", {});
  config.broker.url = "amqp://guest:guest@127.0.0.1:1/";
  broker::Publisher publisher(broker::PublisherOptionsFor(config, "dlq test"));
  publisher.Start();
  ReplayOptions o;
  o.connect_timeout = Millis(300);
  ReplayReport r;
  // Nothing selected: done, without needing the broker.
  REQUIRE(ReplayDeadLetters(*store, publisher, Select({}), o, r).ok());
  CHECK(r.total == 0);

  for (int i = 0; i < 3; ++i) StoredLetter(*store, "email", "d-" + std::to_string(i));
  auto started = std::chrono::steady_clock::now();
  Status s = ReplayDeadLetters(*store, publisher, Select({}), o, r);
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  CHECK(s.code() == Status::Code::kUnavailable);
  CHECK(s.message() == "cannot reach the broker within 300ms; nothing was replayed");
  CHECK(r.total == 3);
  CHECK(r.replayed + r.failed + r.skipped == 0);
  CHECK(StoredIds(*store).size() == 3);
  publisher.Stop(Millis(0));
}
