// `herald dlq`: the operator's view of the dead letters, run as the real binary against a store
// filled directly and, for replays, a vhost of its own; on a terminal (a pseudo-terminal from
// tests/support/pty_run.py) where that matters, and with heraldd delivering what is replayed to
// Debian's webhook server where delivery counts.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <set>

#include "core/time.h"
#include "store/store.h"
#include "tests/support/test_env.h"
#include "tests/support/worker_harness.h"

using namespace herald;
using namespace herald::test;
using Catch::Matchers::Contains;

namespace {

std::string Herald() { return BinaryDir() + "/herald"; }

std::string StoreUrl(const std::string& name) {
  std::string dir = "/tmp/herald-test-" + std::to_string(::getpid()) + "-" + name;
  std::string cmd = "rm -rf '" + dir + "'";  // a fresh store even when a test is run twice
  REQUIRE(std::system(cmd.c_str()) == 0);
  return "sqlite://" + dir + "/herald.db";
}

std::unique_ptr<Store> OpenTestStore(const std::string& url) {
  std::unique_ptr<Store> store;
  Status s = OpenStore(url, store);
  INFO(s.message());
  REQUIRE(s.ok());
  return store;
}

const SystemTime kBase = *ParseRfc3339("2026-11-20T10:00:00Z");

// A dead letter whose job carries the retry bookkeeping a worker adds.
DeadLetter Letter(int n, const std::string& channel, const std::string& reason, const std::string& type,
                  const std::string& user, SystemTime dead_at) {
  DeadLetter d;
  d.delivery_id = "d-" + std::to_string(n);
  d.channel = channel;
  d.reason = reason;
  d.error = "provider said no to " + std::to_string(n);
  d.attempts = 5;
  d.event_id = "evt-" + std::to_string(n);
  d.event_type = type;
  d.user_id = user;
  d.first_failed_at = dead_at - std::chrono::minutes(10);
  d.dead_at = dead_at;
  d.job_json = nlohmann::json{{"v", 1}, {"delivery_id", d.delivery_id}, {"notification_id", "n-" + std::to_string(n)},
                              {"user_id", user}, {"channel", channel}, {"attempt", 5},
                              {"first_failed_at", FormatRfc3339(d.first_failed_at)}, {"last_error", d.error},
                              {"content", {{"title", "t"}, {"body", "b"}}}}
                   .dump();
  d.headers_json = nlohmann::json{{"x-herald-event-id", d.event_id}}.dump();
  return d;
}

// Fills the store with six letters (ids 1..6) of mixed channels, reasons, types, users and times.
void FillSix(Store& store) {
  std::vector<DeadLetter> rows = {
      Letter(1, "email", "permanent", "billing.invoice.paid", "u-1", kBase),
      Letter(2, "push", "attempts_exhausted", "billing.invoice.paid", "u-2", kBase + std::chrono::hours(1)),
      Letter(3, "email", "attempts_exhausted", "social.post.liked", "u-1", kBase + std::chrono::hours(2)),
      Letter(4, "webhook", "permanent", "social.post.liked", "u-3", kBase + std::chrono::hours(3)),
      Letter(5, "email", "invalid_contact", "billing.invoice.paid", "u-2", kBase + std::chrono::hours(4)),
      Letter(6, "push", "permanent", "account.password.changed", "u-1", kBase + std::chrono::hours(5)),
  };
  for (DeadLetter& d : rows) REQUIRE(store.PutDeadLetter(d).ok());
}

std::vector<long long> JsonIds(const std::string& out) {
  std::vector<long long> ids;
  auto doc = nlohmann::json::parse(out, nullptr, false);
  if (!doc.is_array()) return {-1};
  for (const auto& row : doc) ids.push_back(row["id"].get<long long>());
  return ids;
}

// Runs the command on a pseudo-terminal (standard input, output and error); with `expect`, types
// `answer` once `expect` was printed. `out` gets everything the command wrote, "\r" included.
int RunOnTerminal(const std::vector<std::string>& argv, const std::vector<std::string>& env, std::string* out,
                  const std::string& expect = "", const std::string& answer = "") {
  std::vector<std::string> cmd = {"/usr/bin/python3", SourceDir() + "/tests/support/pty_run.py", "--timeout", "60"};
  if (!expect.empty()) cmd.insert(cmd.end(), {"--expect", expect, "--answer", answer});
  cmd.push_back("--");
  cmd.insert(cmd.end(), argv.begin(), argv.end());
  return Run(cmd, env, out, 90s);
}

// A vhost with Herald's topology, and the environment that points herald at it and at a fresh store.
struct ReplaySetup {
  explicit ReplaySetup(const std::string& name, std::vector<std::string> extra_env = {})
      : vhost(name), url(StoreUrl(name)) {
    env = {"HERALD_STORE_URL=" + url, "HERALD_BROKER_URL=" + vhost.url(), "HERALD_BROKER_RECONNECT_MAX=1s"};
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    std::string out;
    int rc = Run({Herald(), "--config", SourceDir() + "/config/herald.yaml", "topology", "declare"}, env, &out);
    INFO(out);
    REQUIRE(rc == 0);
    store = OpenTestStore(url);
  }
  Vhost vhost;
  std::string url;
  std::vector<std::string> env;
  std::unique_ptr<Store> store;
};

std::vector<long long> StoredIds(Store& store) {
  DeadLetterFilter f;
  f.limit = 100000;
  std::vector<DeadLetter> rows;
  REQUIRE(store.ListDeadLetters(f, rows).ok());
  std::vector<long long> ids;
  for (const DeadLetter& d : rows) ids.push_back(d.id);
  return ids;
}

}  // namespace

TEST_CASE("dlq list: filters select exactly the expected ids", "[dlq]") {
  std::string url = StoreUrl("dlq-list");
  auto store = OpenTestStore(url);
  FillSix(*store);
  std::vector<std::string> env = {"HERALD_STORE_URL=" + url};
  struct Case {
    std::vector<std::string> args;
    std::vector<long long> ids;
  };
  std::vector<Case> cases = {
      {{}, {1, 2, 3, 4, 5, 6}},
      {{"--channel", "email"}, {1, 3, 5}},
      {{"--reason", "permanent"}, {1, 4, 6}},
      {{"--type", "social.post.liked"}, {3, 4}},
      {{"--user", "u-1"}, {1, 3, 6}},
      {{"--since", "2026-11-20T12:00:00Z"}, {3, 4, 5, 6}},
      {{"--until", "2026-11-20T12:00:00Z"}, {1, 2}},
      {{"--since", "2026-11-20T11:00:00Z", "--until", "2026-11-20T14:00:00Z"}, {2, 3, 4}},
      {{"--limit", "2"}, {1, 2}},
      {{"--channel", "email", "--user", "u-2"}, {5}},
      {{"--channel", "push", "--reason", "permanent", "--limit", "5"}, {6}},
      {{"--since", "10000d"}, {1, 2, 3, 4, 5, 6}},  // relative: now minus 10000 days
      {{"--since", "1h"}, {}},
      {{"--channel", "in_app"}, {}},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {Herald(), "dlq", "list", "--json"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    std::string out;
    INFO(Catch::StringMaker<std::vector<std::string>>::convert(c.args));
    REQUIRE(Run(argv, env, &out) == 0);
    INFO(out);
    CHECK(JsonIds(out) == c.ids);
  }

  std::string out;
  REQUIRE(Run({Herald(), "dlq", "list", "--channel", "email"}, env, &out) == 0);
  CHECK_THAT(out, Contains("ID") && Contains("DEAD_AT") && Contains("provider said no to 3"));
  CHECK_THAT(out, Contains("2026-11-20T10:00:00.000Z  email"));
  CHECK(out.find("provider said no to 2") == std::string::npos);

  REQUIRE(Run({Herald(), "dlq", "list", "--summary"}, env, &out) == 0);
  CHECK_THAT(out, Contains("email    attempts_exhausted  1"));
  CHECK_THAT(out, Contains("push     permanent           1"));
  CHECK_THAT(out, Contains("total"));

  REQUIRE(Run({Herald(), "dlq", "list", "--user", "nobody"}, env, &out) == 0);
  CHECK_THAT(out, Contains("no dead letters match"));
}

TEST_CASE("dlq: bad filters and unknown ids are clear errors", "[dlq]") {
  std::string url = StoreUrl("dlq-errors");
  auto store = OpenTestStore(url);
  FillSix(*store);
  std::vector<std::string> env = {"HERALD_STORE_URL=" + url};
  struct Case {
    std::vector<std::string> argv;
    int code;
    std::string message;
  };
  std::vector<Case> cases = {
      {{"dlq", "list", "--channel", "fax"}, 2, "unknown channel \"fax\""},
      {{"dlq", "list", "--since", "yesterday"}, 2, "--since: \"yesterday\" is neither an RFC 3339 time"},
      {{"dlq", "list", "--until", "2026-13-01"}, 2, "--until: \"2026-13-01\""},
      {{"dlq", "list", "--limit", "-1"}, 2, "--limit must be 0"},
      {{"dlq", "replay", "--channel", "fax"}, 2, "unknown channel"},
      {{"dlq", "purge", "--since", "soon", "--yes"}, 2, "--since"},
      {{"dlq", "show", "99"}, 1, "no dead letter 99"},
      {{"dlq", "show", "abc"}, 2, "positive integer"},
  };
  for (Case& c : cases) {
    c.argv.insert(c.argv.begin(), Herald());
    std::string out;
    INFO(Catch::StringMaker<std::vector<std::string>>::convert(c.argv));
    CHECK(Run(c.argv, env, &out) == c.code);
    CHECK_THAT(out, Contains(c.message));
  }
  CHECK(StoredIds(*store).size() == 6);
}

TEST_CASE("dlq show prints the whole letter", "[dlq]") {
  std::string url = StoreUrl("dlq-show");
  auto store = OpenTestStore(url);
  FillSix(*store);
  std::string out;
  REQUIRE(Run({Herald(), "dlq", "show", "4"}, {"HERALD_STORE_URL=" + url}, &out) == 0);
  CHECK_THAT(out, Contains("d-4") && Contains("webhook") && Contains("provider said no to 4"));
  CHECK_THAT(out, Contains("\"notification_id\": \"n-4\""));  // pretty-printed job
  CHECK_THAT(out, Contains("\"x-herald-event-id\": \"evt-4\""));
  CHECK_THAT(out, Contains("2026-11-20T13:00:00.000Z"));
}

TEST_CASE("dlq purge: --yes deletes the selection only, without a terminal it refuses, audit records it", "[dlq]") {
  std::string url = StoreUrl("dlq-purge");
  auto store = OpenTestStore(url);
  FillSix(*store);
  std::vector<std::string> env = {"HERALD_STORE_URL=" + url};
  std::string out;
  // Run() gives the child no terminal on standard input.
  CHECK(Run({Herald(), "dlq", "purge", "--channel", "email"}, env, &out) == 2);
  CHECK_THAT(out, Contains("refusing to delete 3 dead letter(s)") && Contains("--yes"));
  CHECK(StoredIds(*store).size() == 6);

  REQUIRE(Run({Herald(), "dlq", "purge", "--channel", "email", "--yes", "--actor", "ops-ann"}, env, &out) == 0);
  CHECK_THAT(out, Contains("deleted 3 dead letter(s)"));
  CHECK(StoredIds(*store) == std::vector<long long>{2, 4, 6});
  REQUIRE(Run({Herald(), "dlq", "purge", "--channel", "email", "--yes"}, env, &out) == 0);
  CHECK_THAT(out, Contains("no dead letters match"));

  std::vector<AuditRecord> audit;
  REQUIRE(store->ListAudit(10, audit).ok());
  REQUIRE(audit.size() == 1);
  CHECK(audit[0].actor == "ops-ann");
  CHECK(audit[0].action == "purge");
  CHECK(audit[0].count == 3);
  CHECK(!audit[0].dry_run);
  CHECK(nlohmann::json::parse(audit[0].filter_json) == nlohmann::json{{"channel", "email"}});

  REQUIRE(Run({Herald(), "dlq", "audit"}, env, &out) == 0);
  CHECK_THAT(out, Contains("ops-ann") && Contains("purge") && Contains("{\"channel\":\"email\"}"));
}

TEST_CASE("dlq replay: jobs go back to their channel as first attempts, rows go after the confirm", "[dlq]") {
  ReplaySetup setup("dlq-replay", {"USER=tester"});
  const auto& env = setup.env;
  auto& store = setup.store;
  std::string out;
  FillSix(*store);
  Peek peek(setup.vhost.url());

  // Dry run: lists, changes nothing, publishes nothing, is audited.
  REQUIRE(Run({Herald(), "dlq", "replay", "--channel", "email", "--dry-run"}, env, &out) == 0);
  CHECK_THAT(out, Contains("would replay 1") && Contains("would replay 3") && Contains("would replay 5"));
  CHECK_THAT(out, Contains("3 dead letter(s) would be replayed"));
  CHECK(StoredIds(*store).size() == 6);
  CHECK(peek.Depth("herald.deliver.email") == 0);

  REQUIRE(Run({Herald(), "dlq", "replay", "--channel", "email", "--reason", "attempts_exhausted"}, env, &out) == 0);
  CHECK_THAT(out, Contains("replayed 1 of 1"));
  REQUIRE(Run({Herald(), "dlq", "replay", "--channel", "email"}, env, &out) == 0);
  CHECK_THAT(out, Contains("replayed 2 of 2"));
  CHECK(StoredIds(*store) == std::vector<long long>{2, 4, 6});  // other channels untouched

  auto jobs = peek.Drain("herald.deliver.email");
  REQUIRE(jobs.size() == 3);
  std::vector<long long> from;
  for (const auto& m : jobs) {
    auto job = nlohmann::json::parse(m.body);
    CHECK(job["attempt"] == 1);
    CHECK(!job.contains("first_failed_at"));
    CHECK(!job.contains("last_error"));
    CHECK(m.message_id == job["delivery_id"]);
    from.push_back(m.headers["x-herald-replayed-from"].get<long long>());
  }
  CHECK(from == std::vector<long long>{3, 1, 5});
  CHECK(peek.Depth("herald.deliver.push") == 0);

  REQUIRE(Run({Herald(), "dlq", "replay", "--channel", "email"}, env, &out) == 0);
  CHECK_THAT(out, Contains("no dead letters match"));

  std::vector<AuditRecord> audit;
  REQUIRE(store->ListAudit(10, audit).ok());
  REQUIRE(audit.size() == 4);
  CHECK(audit[3].dry_run);
  CHECK(audit[3].count == 3);
  CHECK(audit[3].actor == "tester");
  CHECK(audit[2].count == 1);
  CHECK(!audit[2].dry_run);
  CHECK(audit[0].count == 0);
  REQUIRE(Run({Herald(), "dlq", "audit"}, env, &out) == 0);
  CHECK_THAT(out, Contains("replay") && Contains("tester"));
}


TEST_CASE("dlq purge on a terminal asks first: y deletes and is audited, n keeps everything", "[dlq]") {
  std::string url = StoreUrl("dlq-purge-tty");
  auto store = OpenTestStore(url);
  FillSix(*store);
  std::vector<std::string> env = {"HERALD_STORE_URL=" + url, "USER=ops-bob"};
  std::string out;
  for (const std::string no : {"n", "", "nein"}) {
    INFO("answer \"" << no << "\"");
    REQUIRE(RunOnTerminal({Herald(), "dlq", "purge", "--channel", "email"}, env, &out, "[y/N] ", no) == 0);
    INFO(out);
    CHECK_THAT(out, Contains("delete 3 dead letters? [y/N] "));
    CHECK_THAT(out, Contains("nothing deleted"));
    CHECK(StoredIds(*store).size() == 6);
  }
  std::vector<AuditRecord> audit;
  REQUIRE(store->ListAudit(10, audit).ok());
  CHECK(audit.empty());  // declined: nothing done, nothing to audit

  REQUIRE(RunOnTerminal({Herald(), "dlq", "purge", "--channel", "email"}, env, &out, "[y/N] ", "y") == 0);
  INFO(out);
  CHECK_THAT(out, Contains("delete 3 dead letters? [y/N] "));
  CHECK_THAT(out, Contains("deleted 3 dead letter(s)"));
  CHECK(StoredIds(*store) == std::vector<long long>{2, 4, 6});
  REQUIRE(store->ListAudit(10, audit).ok());
  REQUIRE(audit.size() == 1);
  CHECK(audit[0].action == "purge");
  CHECK(audit[0].actor == "ops-bob");
  CHECK(audit[0].count == 3);
}

TEST_CASE("dlq replay shows its progress line (rate, ETA) on a terminal only", "[dlq]") {
  ReplaySetup setup("dlq-progress");
  for (int i = 1; i <= 20; ++i) {
    DeadLetter d = Letter(i, i <= 10 ? "push" : "webhook", "permanent", "a.b", "u-1", kBase);
    REQUIRE(setup.store->PutDeadLetter(d).ok());
  }
  std::string out;
  REQUIRE(RunOnTerminal({Herald(), "dlq", "replay", "--channel", "push", "--rate", "20"}, setup.env, &out) == 0);
  INFO(out);
  CHECK_THAT(out, Contains("\rreplayed ") && Contains("/10  ") && Contains("/s  ETA "));
  CHECK_THAT(out, Contains("\rreplayed 10/10  "));
  CHECK_THAT(out, Contains("replayed 10 of 10 dead letter(s)"));

  REQUIRE(Run({Herald(), "dlq", "replay", "--channel", "webhook", "--rate", "20"}, setup.env, &out) == 0);
  INFO(out);
  CHECK(out == "replayed 10 of 10 dead letter(s)\n");  // no progress line in a log file or a pipe
  CHECK(StoredIds(*setup.store).empty());
}

TEST_CASE("dlq replay interrupted (SIGINT) stops, deletes exactly the rows whose jobs the broker confirmed", "[dlq]") {
  ReplaySetup setup("dlq-sigint");
  for (int i = 1; i <= 40; ++i) {
    DeadLetter d = Letter(i, "push", "permanent", "a.b", "u-" + std::to_string(i), kBase);
    REQUIRE(setup.store->PutDeadLetter(d).ok());
  }
  Process replay({Herald(), "dlq", "replay", "--rate", "10"}, setup.env, "dlq-sigint");
  REQUIRE(WaitFor([&] { return StoredIds(*setup.store).size() <= 36; }, 15s));
  replay.Signal(SIGINT);
  REQUIRE(replay.Wait(20s) == std::optional<int>(130));
  INFO(replay.Output());
  CHECK_THAT(replay.Output(), Contains("interrupted; the rest are still stored (run the replay again)"));
  std::vector<long long> left = StoredIds(*setup.store);
  CHECK(left.size() >= 20);  // it stopped long before the end
  CHECK_THAT(replay.Output(), Contains("replayed " + std::to_string(40 - left.size()) + " of 40 dead letter(s)"));
  std::multiset<long long> from;
  for (const auto& m : Peek(setup.vhost.url()).Drain("herald.deliver.push")) {
    from.insert(m.headers["x-herald-replayed-from"].get<long long>());
  }
  // Every job on the queue left the store, and every row that left the store is on the queue, once.
  CHECK(from.size() == 40 - left.size());
  for (long long id = 1; id <= 40; ++id) {
    bool stored = std::find(left.begin(), left.end(), id) != left.end();
    CHECK(from.count(id) == (stored ? 0u : 1u));
  }
}

TEST_CASE("dlq replay without a reachable broker fails clearly and keeps every row", "[dlq]") {
  std::string url = StoreUrl("dlq-nobroker");
  auto store = OpenTestStore(url);
  FillSix(*store);
  std::string out;
  CHECK(Run({Herald(), "dlq", "replay", "--channel", "email"},
            {"HERALD_STORE_URL=" + url, "HERALD_BROKER_URL=amqp://guest:guest@127.0.0.1:1/"}, &out) == 1);
  CHECK_THAT(out, Contains("herald: cannot reach the broker within 10s; nothing was replayed"));
  CHECK(StoredIds(*store).size() == 6);
}

namespace {

// A stored dead letter of a real webhook job for `url`, as a worker would have left it.
DeadLetter WebhookLetter(int n, const std::string& url) {
  nlohmann::json job = Job("webhook", "u-" + std::to_string(n));
  job["contact"]["url"] = url;
  job["attempt"] = 6;
  job["first_failed_at"] = "2026-11-20T09:50:00.000Z";
  job["last_error"] = "HTTP 503";
  DeadLetter d = Letter(n, "webhook", "attempts_exhausted", "billing.invoice.paid", job["user_id"].get<std::string>(),
                        kBase);
  d.delivery_id = job["delivery_id"].get<std::string>();
  d.job_json = job.dump();
  return d;
}

}  // namespace

TEST_CASE("dlq replay killed halfway (kill -9), then again: heraldd delivers every job exactly once", "[dlq]") {
  const std::string log = TempFile("dlq-kill-received.log", "");
  WebhookServer server(RecordingHooks("deliver", "dlq-kill-secret", log));
  // One send at a time, so a job replayed twice (its row outlived the kill) reaches the worker
  // after its first copy was recorded as sent: the repeat is skipped, never sent.
  ReplaySetup setup("dlq-kill", {"HERALD_CHANNELS_WEBHOOK_SECRET=dlq-kill-secret",
                                 "HERALD_CHANNELS_WEBHOOK_ALLOW_PRIVATE_TARGETS=true",
                                 "HERALD_CHANNELS_WEBHOOK_CONCURRENCY=1", "HERALD_LOG_LEVEL=debug"});
  const int n = 60;
  std::set<std::string> ids;
  for (int i = 1; i <= n; ++i) {
    DeadLetter d = WebhookLetter(i, server.Url("deliver"));
    ids.insert(d.delivery_id);
    REQUIRE(setup.store->PutDeadLetter(d).ok());
  }
  Process worker({BinaryDir() + "/heraldd", "--config", SourceDir() + "/config/herald.yaml", "--roles", "worker"},
                 setup.env, "dlq-kill-heraldd");
  REQUIRE(WaitFor([&] { return worker.OutputContains("started"); }, 15s));
  {
    Process replay({Herald(), "dlq", "replay", "--rate", "20"}, setup.env, "dlq-kill-1");
    // About halfway: 60 at 20/s takes 3 s.
    REQUIRE(WaitFor([&] { return StoredIds(*setup.store).size() <= 35; }, 10s));
    replay.Signal(SIGKILL);
    REQUIRE(replay.Wait(5s) == std::optional<int>(128 + SIGKILL));
  }
  size_t left = StoredIds(*setup.store).size();
  INFO("left after the kill: " << left);
  CHECK(left > 0);
  CHECK(left < static_cast<size_t>(n));
  std::string out;
  REQUIRE(Run({Herald(), "dlq", "replay"}, setup.env, &out) == 0);
  INFO(out);
  CHECK(StoredIds(*setup.store).empty());

  // Delivered: each job's Idempotency-Key arrived at the webhook server, signed, exactly once.
  REQUIRE(WaitFor([&] { return LineCounts(log).size() == static_cast<size_t>(n); }, 60s, 50ms));
  Peek peek(setup.vhost.url());
  CHECK(WaitFor([&] { return peek.Depth("herald.deliver.webhook") == 0; }, 10s));
  worker.Signal(SIGTERM);
  CHECK(worker.Wait(30s) == std::optional<int>(0));  // every job in hand finished
  auto received = LineCounts(log);
  std::set<std::string> keys;
  for (const auto& [key, count] : received) {
    INFO(key);
    CHECK(count == 1);
    keys.insert(key);
  }
  CHECK(keys == ids);
  CHECK(StoredIds(*setup.store).empty());  // and nothing failed again
  CHECK(peek.Depth("herald.dlq") == 0);
}
