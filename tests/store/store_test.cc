#include <catch2/catch.hpp>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>

#include "core/metrics.h"
#include "core/time.h"
#include "store/group_commit.h"
#include "store/store.h"
#include "tests/support/ids.h"
#include "tests/support/test_env.h"

using namespace herald;
using Catch::Matchers::Contains;

namespace {

constexpr int kSchema = 14;  // migrations in store/sqlite_store.cc

// A store in a directory of its own, removed at the end of the test.
class TempStore {
 public:
  explicit TempStore(const std::string& name)
      : dir_("/tmp/herald-test-" + std::to_string(::getpid()) + "-" + name) {
    std::filesystem::remove_all(dir_);
    Reopen();
  }
  ~TempStore() {
    store_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  Store& operator*() { return *store_; }
  Store* operator->() { return store_.get(); }
  std::string path() const { return dir_ + "/herald.db"; }
  // Closes the store and opens the same file again.
  void Reopen() {
    store_.reset();
    Status s = OpenStore("sqlite://" + path(), store_);
    INFO(s.ToString());
    REQUIRE(s.ok());
  }

 private:
  std::string dir_;
  std::unique_ptr<Store> store_;
};

Preferences MakePrefs(const std::string& user) {
  Preferences p = DefaultPreferences(user);
  p.locale = "de";
  p.timezone = "Europe/Berlin";
  p.contacts.email = user + "@example.org";
  p.contacts.push.push_back(PushContact{"fcm", "", "", "", "tok-" + user});
  p.channels = {{"email", true}, {"webhook", false}};
  p.categories = {{"social", {{"email", false}}}};
  p.quiet_hours = QuietHours{22 * 60, 7 * 60};
  p.mute_until = *ParseRfc3339("2026-11-23T07:30:00.250Z");
  return p;
}

const SystemTime kT0 = *ParseRfc3339("2026-11-22T10:00:00Z");

// An unread in-app entry; `i` makes its times and texts distinct.
InboxEntry MakeEntry(const std::string& notification_id, const std::string& user, int i = 0) {
  InboxEntry e;
  e.notification_id = notification_id;
  e.user_id = user;
  e.event_id = "evt-" + std::to_string(i);
  e.event_type = "social.comment.created";
  e.title = "Title " + std::to_string(i);
  e.body = "Body " + std::to_string(i);
  e.data_json = R"({"i":)" + std::to_string(i) + "}";
  e.created_at = kT0 + std::chrono::milliseconds(i);
  return e;
}

DeadLetter MakeLetter(const std::string& delivery_id, const std::string& channel, const std::string& reason,
                      const std::string& type, const std::string& user, SystemTime dead_at) {
  DeadLetter d;
  d.delivery_id = delivery_id;
  d.channel = channel;
  d.reason = reason;
  d.error = "550 mailbox unavailable";
  d.attempts = 5;
  d.event_id = "evt-" + delivery_id;
  d.event_type = type;
  d.user_id = user;
  d.first_failed_at = dead_at - std::chrono::minutes(10);
  d.dead_at = dead_at;
  d.job_json = R"({"delivery_id":")" + delivery_id + R"("})";
  d.headers_json = R"({"x-attempt":5})";
  return d;
}

std::vector<long long> Seqs(const std::vector<InboxEntry>& entries) {
  std::vector<long long> out;
  for (const InboxEntry& e : entries) out.push_back(e.seq);
  return out;
}

std::vector<std::string> DeliveryIds(const std::vector<DeadLetter>& letters) {
  std::vector<std::string> out;
  for (const DeadLetter& d : letters) out.push_back(d.delivery_id);
  return out;
}

std::string Id(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "u-%05d", i);
  return buf;
}

}  // namespace

TEST_CASE("Store: opens an SQLite file in WAL mode, creating its directory and schema", "[store]") {
  std::string dir = "/tmp/herald-test-" + std::to_string(::getpid()) + "-store/nested";
  std::unique_ptr<Store> store;
  REQUIRE(OpenStore("sqlite://" + dir + "/herald.db", store).ok());
  CHECK(store->SchemaVersion() == kSchema);
  CHECK(store->CheckWritable().ok());
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(( dir + "/herald.db").c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))) == "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  // Opening again keeps the schema.
  store.reset();
  REQUIRE(OpenStore("sqlite://" + dir + "/herald.db", store).ok());
  CHECK(store->SchemaVersion() == kSchema);
}

TEST_CASE("Store: unusable URLs and paths are explained", "[store]") {
  std::unique_ptr<Store> store;
  CHECK_THAT(OpenStore("postgresql://db/herald", store).message(), Contains("PostgreSQL is not supported"));
  CHECK_THAT(OpenStore("sqlite://", store).message(), Contains("no file path"));
  std::string file = test::TempFile("not-a-dir", "x");
  Status s = OpenStore("sqlite://" + file + "/herald.db", store);
  CHECK_FALSE(s.ok());
  CHECK_THAT(s.message(), Contains(file));
}

TEST_CASE("Store: a store at schema version 1 is migrated and keeps its data", "[store]") {
  std::string dir = "/tmp/herald-test-" + std::to_string(::getpid()) + "-migrate";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string path = dir + "/herald.db";
  {
    // What the first version of the store left behind.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "PRAGMA journal_mode=WAL;"
                         "CREATE TABLE herald_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                         "INSERT INTO herald_meta VALUES ('kept', 'yes');"
                         "PRAGMA user_version=1;",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  std::unique_ptr<Store> store;
  REQUIRE(OpenStore("sqlite://" + path, store).ok());
  CHECK(store->SchemaVersion() == kSchema);
  REQUIRE(store->PutPreferences(MakePrefs("u-1")).ok());
  store.reset();
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db, "SELECT value FROM herald_meta WHERE key = 'kept'", -1, &stmt, nullptr);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))) == "yes");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Store: preferences put, get, replace and delete", "[store]") {
  TempStore store("prefs");
  Preferences out;
  Status s = store->GetPreferences("u-1", out);
  CHECK(s.code() == Status::Code::kNotFound);
  CHECK_THAT(s.message(), Contains("u-1"));

  Preferences p = MakePrefs("u-1");
  REQUIRE(store->PutPreferences(p).ok());
  REQUIRE(store->PutPreferences(p).ok());  // idempotent
  REQUIRE(store->GetPreferences("u-1", out).ok());
  CHECK(out == p);

  // An upsert replaces the whole document.
  Preferences q = DefaultPreferences("u-1");
  q.channels = {{"push", false}};
  REQUIRE(store->PutPreferences(q).ok());
  REQUIRE(store->GetPreferences("u-1", out).ok());
  CHECK(out == q);

  REQUIRE(store->DeletePreferences("u-1").ok());
  CHECK(store->GetPreferences("u-1", out).code() == Status::Code::kNotFound);
  CHECK(store->DeletePreferences("u-1").ok());  // idempotent
}

TEST_CASE("Store: preferences that would not read back are refused", "[store]") {
  TempStore store("prefs-invalid");
  Preferences p = MakePrefs("u-1");
  p.channels["pigeon"] = true;
  Status s = store->PutPreferences(p);
  CHECK(s.code() == Status::Code::kInvalid);
  CHECK_THAT(s.message(), Contains("channels.pigeon: unknown channel"));
  p = MakePrefs("");
  CHECK(store->PutPreferences(p).code() == Status::Code::kInvalid);
  Preferences out;
  CHECK(store->GetPreferences("u-1", out).code() == Status::Code::kNotFound);
}

// The users of PreferenceChanges(after), as "seq:user" strings; REQUIREs the read to succeed.
std::vector<std::string> Changes(Store& store, long long after, size_t limit, long long& head) {
  std::vector<Store::PreferenceChange> out;
  REQUIRE(store.PreferenceChanges(after, limit, out, head).ok());
  std::vector<std::string> r;
  for (const auto& c : out) r.push_back(std::to_string(c.seq) + ":" + c.user_id);
  return r;
}

TEST_CASE("Store: every preference write is in the change log, in commit order, until purged", "[store]") {
  TempStore store("prefs-changes");
  long long head = -1;
  CHECK(Changes(*store, 0, 10, head).empty());
  CHECK(head == 0);

  REQUIRE(store->PutPreferences(MakePrefs("u-1")).ok());
  REQUIRE(store->PutPreferences(MakePrefs("u-2")).ok());
  REQUIRE(store->DeletePreferences("u-1").ok());
  Preferences bad = MakePrefs("u-3");
  bad.channels["pigeon"] = true;
  REQUIRE(store->PutPreferences(bad).code() == Status::Code::kInvalid);  // refused: not logged
  using V = std::vector<std::string>;
  CHECK(Changes(*store, 0, 10, head) == V{"1:u-1", "2:u-2", "3:u-1"});
  CHECK(head == 3);
  CHECK(Changes(*store, 2, 10, head) == V{"3:u-1"});
  CHECK(Changes(*store, 0, 2, head) == V{"1:u-1", "2:u-2"});
  CHECK(Changes(*store, 3, 10, head).empty());

  // Written by another connection (another process): seen, and numbered after.
  {
    std::unique_ptr<Store> other;
    REQUIRE(OpenStore("sqlite://" + store.path(), other).ok());
    REQUIRE(other->PutPreferences(MakePrefs("u-9")).ok());
  }
  CHECK(Changes(*store, 3, 10, head) == V{"4:u-9"});

  // Purged by age; the head stays, so a reader that had seen less can tell it missed some.
  size_t purged = 0;
  REQUIRE(store->PurgePreferenceChanges(std::chrono::system_clock::now() - std::chrono::hours(1), purged).ok());
  CHECK(purged == 0);
  REQUIRE(store->PurgePreferenceChanges(std::chrono::system_clock::now() + std::chrono::minutes(1), purged).ok());
  CHECK(purged == 4);
  CHECK(Changes(*store, 0, 10, head).empty());
  CHECK(head == 4);
  // Numbers are never reused, across reopening too.
  store.Reopen();
  REQUIRE(store->PutPreferences(MakePrefs("u-2")).ok());
  CHECK(Changes(*store, 0, 10, head) == V{"5:u-2"});
  CHECK(head == 5);
}

TEST_CASE("Store: preferences in batches, absent users left out", "[store]") {
  TempStore store("prefs-batch");
  // 1,200 stored users (every third of 3,600 ids) spread over several chunks of 500.
  std::vector<std::string> ids;
  for (int i = 0; i < 3600; ++i) {
    ids.push_back(Id(i));
    if (i % 3 == 0) REQUIRE(store->PutPreferences(MakePrefs(Id(i))).ok());
  }
  std::vector<Preferences> out;
  REQUIRE(store->GetPreferencesBatch(ids, out).ok());
  REQUIRE(out.size() == 1200);
  for (size_t k = 0; k < out.size(); ++k) {
    CHECK(out[k].user_id == Id(static_cast<int>(k) * 3));  // in the order asked
    if (k % 97 == 0) CHECK(out[k] == MakePrefs(out[k].user_id));
  }

  // Small, reversed, with duplicates and unknown users.
  REQUIRE(store->GetPreferencesBatch({Id(9), "nobody", Id(3), Id(9), Id(4)}, out).ok());
  REQUIRE(out.size() == 2);
  CHECK(out[0].user_id == Id(9));
  CHECK(out[1].user_id == Id(3));

  REQUIRE(store->GetPreferencesBatch({}, out).ok());
  CHECK(out.empty());
  REQUIRE(store->GetPreferencesBatch({"nobody", "no-one"}, out).ok());
  CHECK(out.empty());
}

TEST_CASE("Store: topic paging visits 2,500 subscribers exactly once, in order", "[store]") {
  TempStore store("topics");
  // Inserted out of order; plus another topic that must not leak in.
  for (int i = 0; i < 2500; ++i) REQUIRE(store->Subscribe("followers-of-u-9", Id((i * 7919) % 2500)).ok());
  for (int i = 0; i < 30; ++i) REQUIRE(store->Subscribe("other", Id(i)).ok());
  // Subscribing again changes nothing.
  for (int i = 0; i < 10; ++i) REQUIRE(store->Subscribe("followers-of-u-9", Id(i)).ok());

  std::vector<std::string> seen, page;
  std::string after;
  int pages = 0;
  for (;;) {
    REQUIRE(store->TopicPage("followers-of-u-9", after, 1000, page).ok());
    if (page.empty()) break;
    ++pages;
    CHECK(page.size() <= 1000);
    seen.insert(seen.end(), page.begin(), page.end());
    after = page.back();
  }
  CHECK(pages == 3);
  REQUIRE(seen.size() == 2500);
  for (int i = 0; i < 2500; ++i) CHECK(seen[static_cast<size_t>(i)] == Id(i));

  REQUIRE(store->TopicPage("other", "", 1000, page).ok());
  CHECK(page.size() == 30);
  REQUIRE(store->TopicPage("nobody-follows", "", 1000, page).ok());
  CHECK(page.empty());
  REQUIRE(store->TopicPage("other", "", 0, page).ok());
  CHECK(page.empty());

  REQUIRE(store->Unsubscribe("other", Id(0)).ok());
  REQUIRE(store->Unsubscribe("other", Id(0)).ok());  // idempotent
  REQUIRE(store->TopicPage("other", "", 5, page).ok());
  CHECK(page == std::vector<std::string>{Id(1), Id(2), Id(3), Id(4), Id(5)});

  CHECK(store->Subscribe("", "u-1").code() == Status::Code::kInvalid);
  CHECK_THAT(store->Subscribe("t", "a b").message(), Contains("user_id"));
}

TEST_CASE("Store: event de-duplication states", "[store]") {
  TempStore store("dedup");
  using D = Store::DedupState;
  using namespace std::chrono_literals;
  D state = D::kDone;
  SystemTime expires = kT0 + 24h;

  REQUIRE(store->BeginEvent("evt-1", kT0, expires, state).ok());
  CHECK(state == D::kNew);
  REQUIRE(store->BeginEvent("evt-1", kT0 + 1s, expires, state).ok());
  CHECK(state == D::kInProgress);  // begun, never finished (a crash)
  REQUIRE(store->FinishEvent("evt-1").ok());
  REQUIRE(store->FinishEvent("evt-1").ok());  // idempotent
  REQUIRE(store->BeginEvent("evt-1", kT0 + 2s, expires, state).ok());
  CHECK(state == D::kDone);
  REQUIRE(store->BeginEvent("evt-1", expires - 1ms, expires, state).ok());
  CHECK(state == D::kDone);
  // Once the record expired, the id is new again, recorded afresh as in progress.
  REQUIRE(store->BeginEvent("evt-1", expires, expires + 24h, state).ok());
  CHECK(state == D::kNew);
  REQUIRE(store->BeginEvent("evt-1", expires + 1s, expires + 24h, state).ok());
  CHECK(state == D::kInProgress);

  REQUIRE(store->FinishEvent("never-begun").ok());
  REQUIRE(store->BeginEvent("never-begun", kT0, expires, state).ok());
  CHECK(state == D::kNew);

  // Purge: evt-1 expires at kT0+48h, never-begun at kT0+24h; five more at kT0+1h.
  for (int i = 0; i < 5; ++i) {
    REQUIRE(store->BeginEvent("short-" + std::to_string(i), kT0, kT0 + 1h, state).ok());
    CHECK(state == D::kNew);
  }
  size_t purged = 99;
  REQUIRE(store->PurgeDedup(kT0, purged).ok());
  CHECK(purged == 0);
  REQUIRE(store->PurgeDedup(kT0 + 1h, purged).ok());  // expires_at <= now
  CHECK(purged == 5);
  REQUIRE(store->PurgeDedup(kT0 + 1h, purged).ok());
  CHECK(purged == 0);
  REQUIRE(store->PurgeDedup(kT0 + 24h, purged).ok());
  CHECK(purged == 1);
  REQUIRE(store->BeginEvent("evt-1", kT0 + 25h, kT0 + 49h, state).ok());
  CHECK(state == D::kInProgress);  // not purged
  REQUIRE(store->PurgeDedup(kT0 + 100h, purged).ok());
  CHECK(purged == 1);
  REQUIRE(store->BeginEvent("evt-1", kT0 + 100h, kT0 + 124h, state).ok());
  CHECK(state == D::kNew);
}

TEST_CASE("Store: purging more than one chunk of expired records counts them all", "[store]") {
  TempStore store("dedup-purge");
  using namespace std::chrono_literals;
  Store::DedupState state;
  for (int i = 0; i < 12345; ++i) REQUIRE(store->BeginEvent("e" + std::to_string(i), kT0, kT0 + 1h, state).ok());
  REQUIRE(store->BeginEvent("later", kT0, kT0 + 2h, state).ok());
  size_t purged = 0;
  REQUIRE(store->PurgeDedup(kT0 + 1h, purged).ok());
  CHECK(purged == 12345);
  REQUIRE(store->BeginEvent("later", kT0 + 1h, kT0 + 2h, state).ok());
  CHECK(state == Store::DedupState::kInProgress);
}

TEST_CASE("Store: the same event begun at once from many threads and two connections is new once", "[store]") {
  TempStore store("dedup-race");
  std::unique_ptr<Store> second;
  REQUIRE(OpenStore("sqlite://" + store.path(), second).ok());
  using namespace std::chrono_literals;
  for (int round = 0; round < 20; ++round) {
    std::string id = "evt-race-" + std::to_string(round);
    std::atomic<int> fresh{0}, errors{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      Store* s = (t % 2 == 0) ? &*store : second.get();
      threads.emplace_back([&, s] {
        Store::DedupState state;
        if (!s->BeginEvent(id, kT0, kT0 + 1h, state).ok()) ++errors;
        else if (state == Store::DedupState::kNew) ++fresh;
      });
    }
    for (auto& t : threads) t.join();
    CHECK(errors == 0);
    CHECK(fresh == 1);
  }
}

TEST_CASE("Store: traces are written in one go, replaced by id, and read back", "[store]") {
  TempStore store("traces");
  TraceRecord out;
  CHECK(store->GetTrace("evt-1:u-1", out).code() == Status::Code::kNotFound);

  std::vector<TraceRecord> records;
  for (int i = 0; i < 300; ++i) {
    records.push_back(TraceRecord{"evt-1:" + Id(i), "evt-1", "billing.invoice.paid", Id(i),
                                  kT0 + std::chrono::milliseconds(i), R"({"channels":["email"],"rules":[]})"});
  }
  REQUIRE(store->PutTraces(records).ok());
  REQUIRE(store->PutTraces({}).ok());
  REQUIRE(store->GetTrace("evt-1:" + Id(299), out).ok());
  CHECK(out.notification_id == "evt-1:" + Id(299));
  CHECK(out.event_id == "evt-1");
  CHECK(out.event_type == "billing.invoice.paid");
  CHECK(out.user_id == Id(299));
  CHECK(out.created_at == kT0 + std::chrono::milliseconds(299));
  CHECK(out.decision_json == R"({"channels":["email"],"rules":[]})");

  // The same notification again (a redelivered event) replaces the record.
  TraceRecord again = records[5];
  again.decision_json = R"({"channels":[],"rules":["duplicate"]})";
  again.created_at = kT0 + std::chrono::hours(1);
  REQUIRE(store->PutTraces({again}).ok());
  REQUIRE(store->GetTrace(again.notification_id, out).ok());
  CHECK(out.decision_json == again.decision_json);
  CHECK(out.created_at == again.created_at);

  // A bad record stops the whole batch before anything is written.
  std::vector<TraceRecord> bad = {TraceRecord{"evt-2:u-1", "evt-2", "t", "u-1", kT0, "{}"},
                                  TraceRecord{"", "evt-2", "t", "u-2", kT0, "{}"}};
  CHECK_THAT(store->PutTraces(bad).message(), Contains("traces[1].notification_id"));
  CHECK(store->GetTrace("evt-2:u-1", out).code() == Status::Code::kNotFound);

  // Found by event and user as well; the latest if two ids name one (an interrupted upgrade).
  REQUIRE(store->GetTraceByEvent("evt-1", Id(7), out).ok());
  CHECK(out.notification_id == "evt-1:" + Id(7));
  CHECK(out.user_id == Id(7));
  CHECK(store->GetTraceByEvent("evt-1", "u-nobody", out).code() == Status::Code::kNotFound);
  CHECK(store->GetTraceByEvent("evt-nothing", Id(7), out).code() == Status::Code::kNotFound);
  TraceRecord renamed = records[7];
  renamed.notification_id = "n-later";
  renamed.decision_json = R"({"channels":["in_app"],"rules":[]})";
  REQUIRE(store->PutTraces({renamed}).ok());
  REQUIRE(store->GetTraceByEvent("evt-1", Id(7), out).ok());
  CHECK(out.notification_id == "n-later");
  CHECK(out.decision_json == renamed.decision_json);
}

TEST_CASE("Store: a write renumbers its traces from the event's first start, before writing them", "[store]") {
  TempStore store("renumber");
  Store::DedupState state;
  REQUIRE(store->BeginEvent("evt-r", kT0, kT0 + std::chrono::hours(24), state).ok());
  // A write of `event` begun at `now` with one trace `id`, renumbered to `prefix` + the start in ms.
  auto write = [&](const std::string& event, SystemTime now, const std::string& id, const std::string& prefix) {
    StoreWrite w;
    w.begin_event = event;
    w.begin_now = now;
    w.begin_expires_at = now + std::chrono::hours(24);
    w.traces = {TraceRecord{id, event, "t", "u-1", now, "{}"}};
    w.renumber_traces = [prefix](SystemTime first, std::vector<TraceRecord>& traces) {
      for (TraceRecord& t : traces) t.notification_id = prefix + std::to_string(test::ToMillisForTest(first));
    };
    REQUIRE(store->Write(w).ok());
    return w;
  };
  StoreWrite w = write("evt-r", kT0 + std::chrono::minutes(5), "n-now", "n-");
  CHECK(w.begin_state == Store::DedupState::kInProgress);
  TraceRecord out;
  CHECK(store->GetTrace("n-" + std::to_string(test::ToMillisForTest(kT0)), out).ok());
  CHECK(store->GetTrace("n-now", out).code() == Status::Code::kNotFound);
  // A new event's ids come from its own start time.
  StoreWrite fresh = write("evt-new", kT0, "n-new", "n-new-");
  CHECK(fresh.begin_state == Store::DedupState::kNew);
  CHECK(store->GetTrace("n-new-" + std::to_string(test::ToMillisForTest(kT0)), out).ok());
}

TEST_CASE("Store: everything survives closing and reopening the store", "[store]") {
  TempStore store("reopen");
  using namespace std::chrono_literals;
  Store::DedupState state;
  REQUIRE(store->PutPreferences(MakePrefs("u-1")).ok());
  REQUIRE(store->Subscribe("t", "u-1").ok());
  REQUIRE(store->Subscribe("t", "u-2").ok());
  REQUIRE(store->BeginEvent("evt-done", kT0, kT0 + 1h, state).ok());
  REQUIRE(store->FinishEvent("evt-done").ok());
  REQUIRE(store->BeginEvent("evt-open", kT0, kT0 + 1h, state).ok());
  REQUIRE(store->PutTraces({TraceRecord{"evt-done:u-1", "evt-done", "a.b", "u-1", kT0, "{\"x\":1}"}}).ok());

  store.Reopen();
  CHECK(store->SchemaVersion() == kSchema);
  Preferences p;
  REQUIRE(store->GetPreferences("u-1", p).ok());
  CHECK(p == MakePrefs("u-1"));
  std::vector<std::string> page;
  REQUIRE(store->TopicPage("t", "", 10, page).ok());
  CHECK(page == std::vector<std::string>{"u-1", "u-2"});
  REQUIRE(store->BeginEvent("evt-done", kT0 + 1s, kT0 + 1h, state).ok());
  CHECK(state == Store::DedupState::kDone);
  REQUIRE(store->BeginEvent("evt-open", kT0 + 1s, kT0 + 1h, state).ok());
  CHECK(state == Store::DedupState::kInProgress);
  TraceRecord t;
  REQUIRE(store->GetTrace("evt-done:u-1", t).ok());
  CHECK(t.decision_json == "{\"x\":1}");
  CHECK(t.created_at == kT0);
}

TEST_CASE("Store: stored preferences naming a channel no longer known are reported, not guessed", "[store]") {
  TempStore store("prefs-channels");
  REQUIRE(store->PutPreferences(MakePrefs("u-1")).ok());
  std::unique_ptr<Store> narrow;
  REQUIRE(OpenStore("sqlite://" + store.path(), narrow, {"email", "push"}).ok());
  Preferences p;
  Status s = narrow->GetPreferences("u-1", p);
  CHECK(s.code() == Status::Code::kInternal);
  CHECK_THAT(s.message(), Contains("u-1"));
  CHECK_THAT(s.message(), Contains("channels.webhook: unknown channel"));
  std::vector<Preferences> batch;
  CHECK_FALSE(narrow->GetPreferencesBatch({"u-1"}, batch).ok());
}

TEST_CASE("Store: a store at schema version 5 gains the inbox, sent deliveries and dead letters", "[store]") {
  TempStore store("migrate-5");
  REQUIRE(store->PutPreferences(MakePrefs("u-1")).ok());
  REQUIRE(store->PutTraces({TraceRecord{"evt-1:u-1", "evt-1", "a.b", "u-1", kT0, "{}"}}).ok());
  {
    // Turn the file back into what the store of schema version 5 left behind.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(store.path().c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "DROP TABLE inbox; DROP TABLE sent_deliveries; DROP TABLE dead_letters;"
                         "DELETE FROM sqlite_sequence; PRAGMA user_version=5;",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  store.Reopen();
  CHECK(store->SchemaVersion() == kSchema);
  Preferences p;
  REQUIRE(store->GetPreferences("u-1", p).ok());
  CHECK(p == MakePrefs("u-1"));
  TraceRecord t;
  REQUIRE(store->GetTrace("evt-1:u-1", t).ok());
  InboxEntry e = MakeEntry("n-1", "u-1");
  bool created = false;
  REQUIRE(store->PutInbox(e, created).ok());
  CHECK(created);
  REQUIRE(store->RecordSent("d-1", "email", kT0).ok());
  DeadLetter d = MakeLetter("d-2", "email", "permanent", "a.b", "u-1", kT0);
  REQUIRE(store->PutDeadLetter(d).ok());
}

TEST_CASE("Store: an inbox entry is written once, writing it again reports the existing seq", "[store]") {
  TempStore store("inbox-put");
  InboxEntry a = MakeEntry("n-a", "u-1", 1);
  bool created = false;
  REQUIRE(store->PutInbox(a, created).ok());
  CHECK(created);
  CHECK(a.seq > 0);

  // The same notification again (a redelivered event), even with other contents: nothing changes.
  InboxEntry again = MakeEntry("n-a", "u-1", 2);
  REQUIRE(store->PutInbox(again, created).ok());
  CHECK_FALSE(created);
  CHECK(again.seq == a.seq);

  InboxEntry b = MakeEntry("n-b", "u-1", 3);
  b.read_at = kT0 + std::chrono::seconds(5);
  REQUIRE(store->PutInbox(b, created).ok());
  CHECK(created);
  CHECK(b.seq > a.seq);

  std::vector<InboxEntry> out;
  REQUIRE(store->ListInbox("u-1", 0, 10, out).ok());
  REQUIRE(out.size() == 2);
  CHECK(out[0].seq == b.seq);
  CHECK(out[0].read_at == b.read_at);
  const InboxEntry& got = out[1];
  CHECK(got.seq == a.seq);
  CHECK(got.notification_id == "n-a");
  CHECK(got.user_id == "u-1");
  CHECK(got.event_id == a.event_id);
  CHECK(got.event_type == a.event_type);
  CHECK(got.title == "Title 1");  // the first write stays
  CHECK(got.body == "Body 1");
  CHECK(got.data_json == R"({"i":1})");
  CHECK(got.created_at == a.created_at);
  CHECK_FALSE(got.read_at.has_value());

  InboxEntry nameless = MakeEntry("", "u-1");
  CHECK_THAT(store->PutInbox(nameless, created).message(), Contains("notification_id"));
  InboxEntry ownerless = MakeEntry("n-c", "");
  CHECK_THAT(store->PutInbox(ownerless, created).message(), Contains("user_id"));
  REQUIRE(store->ListInbox("", 0, 10, out).ok());
  CHECK(out.empty());
}

TEST_CASE("Store: the same inbox entry written at once from many threads and two connections is created once",
          "[store]") {
  TempStore store("inbox-race");
  std::unique_ptr<Store> second;
  REQUIRE(OpenStore("sqlite://" + store.path(), second).ok());
  for (int round = 0; round < 20; ++round) {
    std::string nid = "n-race-" + std::to_string(round);
    std::atomic<int> created_count{0}, errors{0};
    std::vector<long long> seqs(8);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < 8; ++t) {
      Store* s = (t % 2 == 0) ? &*store : second.get();
      threads.emplace_back([&, s, t] {
        InboxEntry e = MakeEntry(nid, "u-1", round);
        bool created = false;
        if (!s->PutInbox(e, created).ok()) ++errors;
        else if (created) ++created_count;
        seqs[t] = e.seq;
      });
    }
    for (auto& t : threads) t.join();
    CHECK(errors == 0);
    CHECK(created_count == 1);
    CHECK(std::set<long long>(seqs.begin(), seqs.end()).size() == 1);
    CHECK(seqs[0] > 0);
  }
  size_t unread = 0;
  REQUIRE(store->UnreadCount("u-1", unread).ok());
  CHECK(unread == 20);
}

TEST_CASE("Store: the inbox pages newest first and resumes oldest first, one user at a time", "[store]") {
  TempStore store("inbox-page");
  // 25 entries of u-1 interleaved with entries of u-2, which must never show up.
  std::vector<long long> mine;
  bool created;
  for (int i = 0; i < 25; ++i) {
    InboxEntry e = MakeEntry("n-1-" + std::to_string(i), "u-1", i);
    REQUIRE(store->PutInbox(e, created).ok());
    mine.push_back(e.seq);
    InboxEntry other = MakeEntry("n-2-" + std::to_string(i), "u-2", i);
    REQUIRE(store->PutInbox(other, created).ok());
  }

  SECTION("newest first, in pages of 10") {
    std::vector<long long> seen;
    std::vector<size_t> sizes;
    std::vector<InboxEntry> page;
    long long cursor = 0;
    for (;;) {
      REQUIRE(store->ListInbox("u-1", cursor, 10, page).ok());
      if (page.empty()) break;
      sizes.push_back(page.size());
      for (const InboxEntry& e : page) {
        CHECK(e.user_id == "u-1");
        seen.push_back(e.seq);
      }
      cursor = page.back().seq;
    }
    CHECK(sizes == std::vector<size_t>{10, 10, 5});
    CHECK(seen == std::vector<long long>(mine.rbegin(), mine.rend()));

    // A cursor in the middle: strictly older than it.
    REQUIRE(store->ListInbox("u-1", mine[3], 10, page).ok());
    CHECK(Seqs(page) == std::vector<long long>{mine[2], mine[1], mine[0]});
    REQUIRE(store->ListInbox("u-1", mine[0], 10, page).ok());
    CHECK(page.empty());
    REQUIRE(store->ListInbox("u-1", 0, 0, page).ok());
    CHECK(page.empty());
    REQUIRE(store->ListInbox("nobody", 0, 10, page).ok());
    CHECK(page.empty());
  }

  SECTION("oldest first after a seq, and resuming picks up entries written since") {
    std::vector<InboxEntry> page;
    REQUIRE(store->InboxSince("u-1", 0, 7, page).ok());
    CHECK(Seqs(page) == std::vector<long long>(mine.begin(), mine.begin() + 7));
    long long last = page.back().seq;

    // A client that saw up to `last` reconnects after three more entries arrived.
    for (int i = 25; i < 28; ++i) {
      InboxEntry e = MakeEntry("n-1-" + std::to_string(i), "u-1", i);
      REQUIRE(store->PutInbox(e, created).ok());
      mine.push_back(e.seq);
    }
    std::vector<long long> resumed;
    for (;;) {
      REQUIRE(store->InboxSince("u-1", last, 8, page).ok());
      if (page.empty()) break;
      CHECK(page.size() <= 8);
      for (const InboxEntry& e : page) {
        CHECK(e.user_id == "u-1");
        resumed.push_back(e.seq);
      }
      last = page.back().seq;
    }
    CHECK(resumed == std::vector<long long>(mine.begin() + 7, mine.end()));
    CHECK(last == mine.back());
    REQUIRE(store->InboxSince("u-1", mine.back(), 10, page).ok());
    CHECK(page.empty());
    REQUIRE(store->InboxSince("u-1", 0, 0, page).ok());
    CHECK(page.empty());
  }
}

TEST_CASE("Store: marking inbox entries read, one or all, and counting unread", "[store]") {
  TempStore store("inbox-read");
  using namespace std::chrono_literals;
  bool created;
  for (int i = 0; i < 5; ++i) {
    InboxEntry e = MakeEntry("n-1-" + std::to_string(i), "u-1", i);
    REQUIRE(store->PutInbox(e, created).ok());
  }
  for (int i = 0; i < 3; ++i) {
    InboxEntry e = MakeEntry("n-2-" + std::to_string(i), "u-2", i);
    REQUIRE(store->PutInbox(e, created).ok());
  }
  size_t unread = 0;
  REQUIRE(store->UnreadCount("u-1", unread).ok());
  CHECK(unread == 5);
  REQUIRE(store->UnreadCount("nobody", unread).ok());
  CHECK(unread == 0);

  // Read once, then again later: found both times, the first read time stays.
  bool found = false;
  REQUIRE(store->MarkRead("u-1", "n-1-2", kT0 + 1h, found).ok());
  CHECK(found);
  REQUIRE(store->MarkRead("u-1", "n-1-2", kT0 + 2h, found).ok());
  CHECK(found);
  std::vector<InboxEntry> page;
  REQUIRE(store->InboxSince("u-1", 0, 10, page).ok());
  REQUIRE(page.size() == 5);
  CHECK(page[2].read_at == kT0 + 1h);
  CHECK_FALSE(page[1].read_at.has_value());
  REQUIRE(store->UnreadCount("u-1", unread).ok());
  CHECK(unread == 4);

  // Someone else's notification, and one that does not exist: not found, nothing changed.
  found = true;
  REQUIRE(store->MarkRead("u-1", "n-2-0", kT0 + 1h, found).ok());
  CHECK_FALSE(found);
  found = true;
  REQUIRE(store->MarkRead("u-1", "n-nope", kT0 + 1h, found).ok());
  CHECK_FALSE(found);
  REQUIRE(store->UnreadCount("u-2", unread).ok());
  CHECK(unread == 3);
  REQUIRE(store->InboxSince("u-2", 0, 10, page).ok());
  for (const InboxEntry& e : page) CHECK_FALSE(e.read_at.has_value());

  // All of u-1's: only the four unread change, and the earlier read time stays.
  size_t changed = 99;
  REQUIRE(store->MarkAllRead("u-1", kT0 + 3h, changed).ok());
  CHECK(changed == 4);
  REQUIRE(store->MarkAllRead("u-1", kT0 + 4h, changed).ok());
  CHECK(changed == 0);
  REQUIRE(store->UnreadCount("u-1", unread).ok());
  CHECK(unread == 0);
  REQUIRE(store->InboxSince("u-1", 0, 10, page).ok());
  REQUIRE(page.size() == 5);
  for (size_t i = 0; i < page.size(); ++i) CHECK(page[i].read_at == (i == 2 ? kT0 + 1h : kT0 + 3h));
  REQUIRE(store->UnreadCount("u-2", unread).ok());
  CHECK(unread == 3);
  REQUIRE(store->MarkAllRead("nobody", kT0, changed).ok());
  CHECK(changed == 0);
}

TEST_CASE("Store: a batch of sent checks answers each id, and ends its snapshot", "[store]") {
  TempStore store("sent-batch");
  REQUIRE(store->RecordSent("d-1", "webhook", kT0).ok());
  REQUIRE(store->RecordSent("d-3", "webhook", kT0).ok());
  std::vector<bool> sent;
  REQUIRE(store->WasSent(std::vector<std::string>{"d-1", "d-2", "d-3", "d-1", "d-4"}, sent).ok());
  CHECK(sent == std::vector<bool>{true, false, true, true, false});
  REQUIRE(store->WasSent(std::vector<std::string>{}, sent).ok());
  CHECK(sent.empty());
  REQUIRE(store->WasSent(std::vector<std::string>{"d-3"}, sent).ok());
  CHECK(sent == std::vector<bool>{true});
  // A record made after a batch is seen by the next one: the batch's read transaction ended.
  REQUIRE(store->RecordSent("d-2", "webhook", kT0).ok());
  REQUIRE(store->WasSent(std::vector<std::string>{"d-2", "d-4"}, sent).ok());
  CHECK(sent == std::vector<bool>{true, false});
  bool one = false;
  REQUIRE(store->WasSent("d-2", one).ok());
  CHECK(one);
}

TEST_CASE("Store: sent deliveries are recorded once and remembered", "[store]") {
  TempStore store("sent");
  bool sent = true;
  REQUIRE(store->WasSent("d-1", sent).ok());
  CHECK_FALSE(sent);
  REQUIRE(store->RecordSent("d-1", "email", kT0).ok());
  REQUIRE(store->RecordSent("d-1", "push", kT0 + std::chrono::hours(1)).ok());  // idempotent
  REQUIRE(store->WasSent("d-1", sent).ok());
  CHECK(sent);
  REQUIRE(store->WasSent("d-2", sent).ok());
  CHECK_FALSE(sent);
  CHECK_THAT(store->RecordSent("", "email", kT0).message(), Contains("delivery_id"));

  store.Reopen();
  REQUIRE(store->WasSent("d-1", sent).ok());
  CHECK(sent);
  // The first record stays (read from the file: the interface has no getter for it).
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(store.path().c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT channel, sent_at FROM sent_deliveries WHERE delivery_id = 'd-1'", -1, &stmt,
                             nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))) == "email");
  CHECK(sqlite3_column_int64(stmt, 1) ==
        std::chrono::duration_cast<std::chrono::milliseconds>(kT0.time_since_epoch()).count());
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST_CASE("Store: under continuous writes the WAL is checkpointed beside them and stays bounded", "[store]") {
  TempStore store("checkpoint");
  const std::string wal = store.path() + "-wal";
  // Each record is a commit of two pages or more: 100,000 of them are far more frames than the
  // WAL may hold (64,000 before the committing write finishes the checkpoint), so it must have
  // started over from its beginning while the writes went on.
  constexpr int kRecords = 100000;
  uintmax_t largest = 0;
  for (int i = 0; i < kRecords; ++i) {
    REQUIRE(store->RecordSent("d-" + std::to_string(i * 7919 % 1000003), "webhook", kT0).ok());
    if (i % 1000 == 999) largest = std::max(largest, std::filesystem::file_size(wal));
  }
  CHECK(largest < 72000u * (4096u + 24u));  // frames of 4 KiB pages, with room for the checkpointer's lag
  // Every record is there for another connection (checkpointed or still in the WAL).
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(store.path().c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM sent_deliveries", -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  CHECK(sqlite3_column_int64(stmt, 0) == kRecords);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST_CASE("Store: dead letters are put, replaced by delivery id, read, counted and deleted", "[store]") {
  TempStore store("dead-letters");
  using namespace std::chrono_literals;
  size_t count = 99;
  REQUIRE(store->CountDeadLetters(count).ok());
  CHECK(count == 0);
  DeadLetter out;
  Status s = store->GetDeadLetter(1, out);
  CHECK(s.code() == Status::Code::kNotFound);
  CHECK_THAT(s.message(), Contains("1"));

  DeadLetter a = MakeLetter("d-a", "email", "permanent", "billing.invoice.paid", "u-1", kT0 + 250ms);
  REQUIRE(store->PutDeadLetter(a).ok());
  CHECK(a.id > 0);
  DeadLetter b = MakeLetter("d-b", "push", "attempts_exhausted", "social.comment.created", "u-2", kT0 + 1s);
  REQUIRE(store->PutDeadLetter(b).ok());
  CHECK(b.id > a.id);

  REQUIRE(store->GetDeadLetter(a.id, out).ok());
  CHECK(out.id == a.id);
  CHECK(out.delivery_id == "d-a");
  CHECK(out.channel == "email");
  CHECK(out.reason == "permanent");
  CHECK(out.error == a.error);
  CHECK(out.attempts == 5);
  CHECK(out.event_id == a.event_id);
  CHECK(out.event_type == "billing.invoice.paid");
  CHECK(out.user_id == "u-1");
  CHECK(out.first_failed_at == a.first_failed_at);
  CHECK(out.dead_at == a.dead_at);
  CHECK(out.job_json == a.job_json);
  CHECK(out.headers_json == a.headers_json);

  // The same delivery failing again: the latest failure replaces the row, under a new id.
  DeadLetter a2 = MakeLetter("d-a", "email", "attempts_exhausted", "billing.invoice.paid", "u-1", kT0 + 1h);
  a2.attempts = 8;
  a2.error = "timeout";
  REQUIRE(store->PutDeadLetter(a2).ok());
  CHECK(a2.id > b.id);
  CHECK(store->GetDeadLetter(a.id, out).code() == Status::Code::kNotFound);
  REQUIRE(store->GetDeadLetter(a2.id, out).ok());
  CHECK(out.reason == "attempts_exhausted");
  CHECK(out.attempts == 8);
  CHECK(out.error == "timeout");
  CHECK(out.dead_at == kT0 + 1h);
  REQUIRE(store->CountDeadLetters(count).ok());
  CHECK(count == 2);
  std::vector<DeadLetter> all;
  REQUIRE(store->ListDeadLetters({}, all).ok());
  CHECK(DeliveryIds(all) == std::vector<std::string>{"d-b", "d-a"});

  REQUIRE(store->DeleteDeadLetter(b.id).ok());
  REQUIRE(store->DeleteDeadLetter(b.id).ok());  // idempotent
  REQUIRE(store->DeleteDeadLetter(12345).ok());
  CHECK(store->GetDeadLetter(b.id, out).code() == Status::Code::kNotFound);
  REQUIRE(store->CountDeadLetters(count).ok());
  CHECK(count == 1);

  // Ids are not reused after the newest letter is deleted, so an id an operator saw stays unique.
  REQUIRE(store->DeleteDeadLetter(a2.id).ok());
  DeadLetter c = MakeLetter("d-c", "email", "permanent", "a.b", "u-1", kT0);
  REQUIRE(store->PutDeadLetter(c).ok());
  CHECK(c.id > a2.id);

  DeadLetter nameless = MakeLetter("", "email", "permanent", "a.b", "u-1", kT0);
  CHECK_THAT(store->PutDeadLetter(nameless).message(), Contains("delivery_id"));
}

TEST_CASE("Store: dead letters are filtered by every field, in id order, with cursor and limit", "[store]") {
  TempStore store("dead-letter-filter");
  using namespace std::chrono_literals;
  // Written in this order, so ids follow the names.
  const std::vector<DeadLetter> letters = {
      MakeLetter("d-1", "email", "permanent", "billing.invoice.paid", "u-1", kT0),
      MakeLetter("d-2", "push", "attempts_exhausted", "billing.invoice.paid", "u-2", kT0 + 1h),
      MakeLetter("d-3", "email", "attempts_exhausted", "social.comment.created", "u-1", kT0 + 2h),
      MakeLetter("d-4", "webhook", "invalid_contact", "social.comment.created", "u-3", kT0 + 3h),
      MakeLetter("d-5", "email", "permanent", "social.comment.created", "u-2", kT0 + 4h),
      MakeLetter("d-6", "push", "invalid_job", "billing.invoice.paid", "u-1", kT0 + 5h),
  };
  std::vector<long long> ids;
  for (DeadLetter d : letters) {
    REQUIRE(store->PutDeadLetter(d).ok());
    ids.push_back(d.id);
  }

  struct Case {
    const char* name;
    DeadLetterFilter filter;
    std::vector<std::string> want;
  };
  auto with = [](auto set) {
    DeadLetterFilter f;
    set(f);
    return f;
  };
  const std::vector<Case> cases = {
      {"no filter", {}, {"d-1", "d-2", "d-3", "d-4", "d-5", "d-6"}},
      {"channel", with([](auto& f) { f.channel = "email"; }), {"d-1", "d-3", "d-5"}},
      {"reason", with([](auto& f) { f.reason = "attempts_exhausted"; }), {"d-2", "d-3"}},
      {"event type", with([](auto& f) { f.event_type = "billing.invoice.paid"; }), {"d-1", "d-2", "d-6"}},
      {"user", with([](auto& f) { f.user_id = "u-1"; }), {"d-1", "d-3", "d-6"}},
      {"since (inclusive)", with([](auto& f) { f.since = kT0 + 3h; }), {"d-4", "d-5", "d-6"}},
      {"until (exclusive)", with([](auto& f) { f.until = kT0 + 2h; }), {"d-1", "d-2"}},
      {"since and until", with([](auto& f) { f.since = kT0 + 1h; f.until = kT0 + 4h; }), {"d-2", "d-3", "d-4"}},
      {"empty window", with([](auto& f) { f.since = kT0 + 4h; f.until = kT0 + 4h; }), {}},
      {"channel and reason", with([](auto& f) { f.channel = "email"; f.reason = "permanent"; }), {"d-1", "d-5"}},
      {"channel, type and user",
       with([](auto& f) { f.channel = "push"; f.event_type = "billing.invoice.paid"; f.user_id = "u-1"; }),
       {"d-6"}},
      {"all fields",
       with([](auto& f) {
         f.channel = "email"; f.reason = "attempts_exhausted"; f.event_type = "social.comment.created";
         f.user_id = "u-1"; f.since = kT0 + 2h; f.until = kT0 + 3h;
       }),
       {"d-3"}},
      {"no match", with([](auto& f) { f.channel = "sms"; }), {}},
      {"a value that looks like SQL is only a value", with([](auto& f) { f.channel = "email' OR '1'='1"; }), {}},
      {"limit", with([](auto& f) { f.limit = 2; }), {"d-1", "d-2"}},
      {"limit 0", with([](auto& f) { f.limit = 0; }), {}},
      {"after id", with([&](auto& f) { f.after_id = ids[3]; }), {"d-5", "d-6"}},
      {"after id, channel and limit", with([&](auto& f) { f.after_id = ids[0]; f.channel = "email"; f.limit = 1; }),
       {"d-3"}},
      {"after the last id", with([&](auto& f) { f.after_id = ids[5]; }), {}},
  };
  std::vector<DeadLetter> out;
  for (const Case& c : cases) {
    INFO(c.name);
    REQUIRE(store->ListDeadLetters(c.filter, out).ok());
    CHECK(DeliveryIds(out) == c.want);
  }
  // The same filter shape twice reuses its statement; the second result must not carry the first's values.
  DeadLetterFilter f;
  f.channel = "push";
  REQUIRE(store->ListDeadLetters(f, out).ok());
  CHECK(DeliveryIds(out) == std::vector<std::string>{"d-2", "d-6"});
  f.channel = "webhook";
  REQUIRE(store->ListDeadLetters(f, out).ok());
  CHECK(DeliveryIds(out) == std::vector<std::string>{"d-4"});

  // Cursor paging: the letters since kT0 + 1h in pages of two, each page after the last id seen.
  f = DeadLetterFilter{};
  f.since = kT0 + 1h;
  f.limit = 2;
  std::vector<std::string> seen;
  std::vector<size_t> sizes;
  for (;;) {
    REQUIRE(store->ListDeadLetters(f, out).ok());
    if (out.empty()) break;
    sizes.push_back(out.size());
    for (const DeadLetter& d : out) seen.push_back(d.delivery_id);
    f.after_id = out.back().id;
  }
  CHECK(sizes == std::vector<size_t>{2, 2, 1});
  CHECK(seen == std::vector<std::string>{"d-2", "d-3", "d-4", "d-5", "d-6"});
}

TEST_CASE("Store: the inbox, sent deliveries and dead letters survive closing and reopening", "[store]") {
  TempStore store("reopen-delivery");
  bool created;
  InboxEntry a = MakeEntry("n-a", "u-1", 1), b = MakeEntry("n-b", "u-1", 2);
  REQUIRE(store->PutInbox(a, created).ok());
  REQUIRE(store->PutInbox(b, created).ok());
  bool found;
  REQUIRE(store->MarkRead("u-1", "n-a", kT0 + std::chrono::hours(1), found).ok());
  REQUIRE(store->RecordSent("d-sent", "email", kT0).ok());
  DeadLetter d = MakeLetter("d-dead", "webhook", "permanent", "a.b", "u-1", kT0);
  REQUIRE(store->PutDeadLetter(d).ok());

  store.Reopen();
  std::vector<InboxEntry> page;
  REQUIRE(store->ListInbox("u-1", 0, 10, page).ok());
  REQUIRE(Seqs(page) == std::vector<long long>{b.seq, a.seq});
  CHECK(page[1].read_at == kT0 + std::chrono::hours(1));
  CHECK(page[1].data_json == a.data_json);
  size_t unread;
  REQUIRE(store->UnreadCount("u-1", unread).ok());
  CHECK(unread == 1);
  // Seqs keep increasing across a restart, and the old entries are still known.
  InboxEntry c = MakeEntry("n-c", "u-1", 3);
  REQUIRE(store->PutInbox(c, created).ok());
  CHECK(created);
  CHECK(c.seq > b.seq);
  InboxEntry again = MakeEntry("n-a", "u-1", 1);
  REQUIRE(store->PutInbox(again, created).ok());
  CHECK_FALSE(created);
  CHECK(again.seq == a.seq);

  bool sent;
  REQUIRE(store->WasSent("d-sent", sent).ok());
  CHECK(sent);
  DeadLetter out;
  REQUIRE(store->GetDeadLetter(d.id, out).ok());
  CHECK(out.delivery_id == "d-dead");
  CHECK(out.channel == "webhook");
  CHECK(out.job_json == d.job_json);
  size_t count;
  REQUIRE(store->CountDeadLetters(count).ok());
  CHECK(count == 1);
}

TEST_CASE("Store: sent-delivery records are purged by age", "[store]") {
  std::string dir = "/tmp/herald-test-" + std::to_string(::getpid()) + "-purge-sent";
  std::unique_ptr<Store> store;
  REQUIRE(OpenStore("sqlite://" + dir + "/herald.db", store).ok());
  const SystemTime t0 = *ParseRfc3339("2026-11-22T10:00:00Z");
  REQUIRE(store->RecordSent("d-old", "email", t0).ok());
  REQUIRE(store->RecordSent("d-new", "email", t0 + std::chrono::hours(2)).ok());
  size_t purged = 0;
  REQUIRE(store->PurgeSent(t0 + std::chrono::hours(1), purged).ok());
  CHECK(purged == 1);
  bool sent = true;
  REQUIRE(store->WasSent("d-old", sent).ok());
  CHECK_FALSE(sent);
  REQUIRE(store->WasSent("d-new", sent).ok());
  CHECK(sent);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Store: delivery attempts are listed per notification in order, and a sent attempt marks the delivery sent",
          "[store]") {
  TempStore store("attempts");
  DeliveryAttempt a;
  a.notification_id = "n-1";
  a.delivery_id = "d-1";
  a.channel = "email";
  a.attempt = 1;
  a.outcome = "retried";
  a.error = "421 try later";
  a.at = kT0;
  a.duration_ms = 40;
  REQUIRE(store->RecordAttempt(a).ok());
  bool sent = true;
  REQUIRE(store->WasSent("d-1", sent).ok());
  CHECK_FALSE(sent);
  a.attempt = 2;
  a.outcome = "sent";
  a.error = "";
  a.at = kT0 + std::chrono::seconds(2);
  REQUIRE(store->RecordAttempt(a).ok());
  REQUIRE(store->WasSent("d-1", sent).ok());
  CHECK(sent);
  DeliveryAttempt other = a;
  other.notification_id = "n-2";
  other.delivery_id = "d-2";
  REQUIRE(store->RecordAttempt(other).ok());
  CHECK_FALSE(store->RecordAttempt(DeliveryAttempt{}).ok());  // no delivery id: refused

  std::vector<DeliveryAttempt> list;
  REQUIRE(store->ListAttempts("n-1", list).ok());
  REQUIRE(list.size() == 2);
  CHECK(list[0].outcome == "retried");
  CHECK(list[0].error == "421 try later");
  CHECK(list[0].duration_ms == 40);
  CHECK(list[0].at == kT0);
  CHECK(list[1].outcome == "sent");
  CHECK(list[1].attempt == 2);
  store.Reopen();
  REQUIRE(store->ListAttempts("n-1", list).ok());
  CHECK(list.size() == 2);
  REQUIRE(store->ListAttempts("n-none", list).ok());
  CHECK(list.empty());
}

namespace {

// Runs SQL on the store's file through a connection of its own (triggers, counts).
void ExecOn(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  INFO((err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

StoreWrite SentWrite(const std::string& delivery_id) {
  StoreWrite w;
  w.attempt = DeliveryAttempt{"n-" + delivery_id, delivery_id, "webhook", 1, "sent", "", kT0, 3};
  return w;
}

}  // namespace

TEST_CASE("Store: a store at schema version 13 keeps its attempts, in order, when their table loses AUTOINCREMENT",
          "[store]") {
  TempStore store("migrate-13");
  {
    // What schema version 13 left behind: attempts in a table with AUTOINCREMENT, and its counter.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(store.path().c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "DROP TABLE delivery_attempts;"
                         "CREATE TABLE delivery_attempts (id INTEGER PRIMARY KEY AUTOINCREMENT, notification_id TEXT"
                         " NOT NULL, delivery_id TEXT NOT NULL, channel TEXT NOT NULL, attempt INTEGER NOT NULL,"
                         " outcome TEXT NOT NULL, error TEXT NOT NULL, at INTEGER NOT NULL, duration_ms INTEGER NOT NULL);"
                         "CREATE INDEX delivery_attempts_notification ON delivery_attempts (notification_id, id);"
                         "INSERT INTO delivery_attempts VALUES (7, 'n-1', 'd-1', 'webhook', 1, 'retried', 'HTTP 503', 1000, 4);"
                         "INSERT INTO delivery_attempts VALUES (9, 'n-1', 'd-1', 'webhook', 2, 'sent', '', 2000, 3);"
                         "PRAGMA user_version=13;",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  store.Reopen();
  CHECK(store->SchemaVersion() == kSchema);
  DeliveryAttempt third{"n-1", "d-1", "webhook", 3, "sent", "", kT0, 2};
  REQUIRE(store->RecordAttempt(third).ok());
  std::vector<DeliveryAttempt> attempts;
  REQUIRE(store->ListAttempts("n-1", attempts).ok());
  REQUIRE(attempts.size() == 3);
  CHECK(attempts[0].error == "HTTP 503");
  CHECK(attempts[1].attempt == 2);
  CHECK(attempts[2].attempt == 3);
  // The new table has no AUTOINCREMENT: nothing of it is left in sqlite_sequence, and a new row
  // takes the id after the newest.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(store.path().c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db,
                             "SELECT (SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'delivery_attempts'),"
                             " (SELECT MAX(id) FROM delivery_attempts),"
                             " (SELECT sql LIKE '%AUTOINCREMENT%' FROM sqlite_master WHERE name = 'delivery_attempts')",
                             -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  CHECK(sqlite3_column_int(stmt, 0) == 0);
  CHECK(sqlite3_column_int(stmt, 1) == 10);
  CHECK(sqlite3_column_int(stmt, 2) == 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST_CASE("Group commit: writes waiting together are applied in one transaction and each is told its own result",
          "[store]") {
  // An injected apply that holds the first batch until 50 more writes wait: those 50 must then
  // go in one batch, in the order they came.
  std::mutex mu;
  std::condition_variable cv;
  std::vector<size_t> batches;
  std::vector<std::string> order;
  bool release = false;
  GroupCommit group(
      [&](std::vector<StoreWrite*>& writes) {
        std::unique_lock lock(mu);
        batches.push_back(writes.size());
        for (StoreWrite* w : writes) {
          order.push_back(w->finish_event);
          w->status = w->finish_event == "e-13" ? Status::Invalid("e-13 is bad") : Status::Ok();
        }
        if (batches.size() == 1) cv.wait(lock, [&] { return release; });
      },
      64);
  std::atomic<int> ok{0}, failed{0};
  auto submit = [&](const std::string& id) {
    StoreWrite w;
    w.finish_event = id;
    group.Submit(std::move(w), [&, id](StoreWrite& done) {
      CHECK(done.finish_event == id);
      (done.status.ok() ? ok : failed)++;
    });
  };
  submit("e-first");
  REQUIRE(herald::test::WaitFor([&] {
    std::lock_guard lock(mu);
    return batches.size() == 1;
  }, 5s));
  for (int i = 0; i < 50; ++i) submit("e-" + std::to_string(i));
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  REQUIRE(herald::test::WaitFor([&] { return ok + failed == 51; }, 5s));
  CHECK(failed == 1);
  std::lock_guard lock(mu);
  CHECK(batches == std::vector<size_t>{1, 50});
  REQUIRE(order.size() == 51);
  CHECK(order[1] == "e-0");
  CHECK(order[50] == "e-49");
  CHECK(group.Batches() == 2);
  CHECK(group.WritesApplied() == 51);
}

TEST_CASE("Group commit: an idle writer lingers for more writes, so writes close together share a transaction",
          "[store]") {
  std::mutex mu;
  std::vector<size_t> batches;
  auto apply = [&](std::vector<StoreWrite*>& writes) {
    std::lock_guard lock(mu);
    batches.push_back(writes.size());
    for (StoreWrite* w : writes) w->status = Status::Ok();
  };
  // One write, a pause shorter than the linger, 19 more: one transaction. Without the linger the
  // first is applied alone during the pause.
  auto run = [&](std::chrono::microseconds linger) {
    {
      std::lock_guard lock(mu);
      batches.clear();
    }
    GroupCommit group(apply, 64, linger);
    std::atomic<int> done{0};
    group.Submit(StoreWrite{}, [&](StoreWrite&) { ++done; });
    std::this_thread::sleep_for(50ms);
    for (int i = 0; i < 19; ++i) group.Submit(StoreWrite{}, [&](StoreWrite&) { ++done; });
    REQUIRE(herald::test::WaitFor([&] { return done == 20; }, 5s));
    std::lock_guard lock(mu);
    return batches;
  };
  CHECK(run(std::chrono::milliseconds(1000)) == std::vector<size_t>{20});
  CHECK(run(std::chrono::microseconds(0)).front() == 1);
}

TEST_CASE("Group commit: how long each transaction took is in herald_store_commit_seconds", "[store]") {
  GroupCommit group(
      [&](std::vector<StoreWrite*>& writes) {
        std::this_thread::sleep_for(30ms);  // a checkpoint's hold
        for (StoreWrite* w : writes) w->status = Status::Ok();
      },
      8);
  REQUIRE_THAT(herald::Metrics::Global().Render(),  // listed before the first write
               Catch::Matchers::Contains("herald_store_commit_seconds_bucket{le=\"0.02\"} "));
  const herald::Histogram& h =
      herald::Metrics::Global().Histograms("herald_store_commit_seconds", "", {}).With({});
  const uint64_t under_20ms = h.CountAtOrBelow(0.02);
  const uint64_t under_50ms = h.CountAtOrBelow(0.05);
  StoreWrite w;
  REQUIRE(group.Write(w).ok());
  CHECK(h.CountAtOrBelow(0.02) == under_20ms);
  CHECK(h.CountAtOrBelow(0.05) == under_50ms + 1);
}

TEST_CASE("Group commit: after Drain nothing is lost and later writes are applied on the caller's thread", "[store]") {
  std::atomic<int> applied{0};
  std::thread::id applied_on;
  GroupCommit group(
      [&](std::vector<StoreWrite*>& writes) {
        applied_on = std::this_thread::get_id();
        for (StoreWrite* w : writes) w->status = Status::Ok();
        applied += static_cast<int>(writes.size());
      },
      8);
  std::atomic<int> called{0};
  for (int i = 0; i < 100; ++i) group.Submit(StoreWrite{}, [&](StoreWrite&) { ++called; });
  group.Drain();
  CHECK(applied == 100);  // all of them, though at most 8 per batch
  CHECK(called == 100);
  CHECK(group.Batches() >= 13);
  StoreWrite late;
  CHECK(group.Write(late).ok());
  CHECK(applied_on == std::this_thread::get_id());
  CHECK(applied == 101);
}

TEST_CASE("Store: one bad write among many fails alone and the others are all written", "[store]") {
  TempStore store("group-fail");
  // A trigger stands in for whatever can make one statement fail (a full disk, a constraint).
  ExecOn(store.path(), "CREATE TRIGGER refuse BEFORE INSERT ON delivery_attempts WHEN NEW.delivery_id = 'd-bad' "
                       "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
  std::vector<StoreWrite> writes;
  for (const char* id : {"d-1", "d-bad", "d-2"}) writes.push_back(SentWrite(id));
  writes.emplace_back();  // invalid: an inbox entry without ids, refused before any SQL
  writes.back().inbox.emplace();
  std::vector<StoreWrite*> ptrs;
  for (StoreWrite& w : writes) ptrs.push_back(&w);
  store->ApplyWrites(ptrs);
  CHECK(writes[0].status.ok());
  CHECK_THAT(writes[1].status.message(), Contains("refused by the test"));
  CHECK(writes[2].status.ok());
  CHECK_THAT(writes[3].status.message(), Contains("notification_id"));
  bool sent = false;
  CHECK((store->WasSent("d-1", sent).ok() && sent));
  CHECK((store->WasSent("d-2", sent).ok() && sent));
  CHECK((store->WasSent("d-bad", sent).ok() && !sent));  // its sent record went with its attempt
  std::vector<DeliveryAttempt> attempts;
  REQUIRE(store->ListAttempts("n-d-2", attempts).ok());
  CHECK(attempts.size() == 1);
}

TEST_CASE("Store: an inbox row and its attempt are one write and all arrive when submitted from many threads",
          "[store]") {
  TempStore store("group-inbox");
  constexpr int kThreads = 4, kEach = 250;
  std::atomic<int> created{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const std::string id = std::to_string(t) + "-" + std::to_string(i);
        StoreWrite w = SentWrite("d-" + id);
        InboxEntry& e = w.inbox.emplace();
        e.notification_id = "n-" + id;
        e.user_id = "u-" + std::to_string(i % 10);
        e.created_at = kT0;
        store->Submit(std::move(w), [&](StoreWrite& done) {
          if (!done.status.ok()) ++failed;
          if (done.inbox_created && done.inbox->seq > 0) ++created;
        });
      }
    });
  }
  for (std::thread& t : threads) t.join();
  store->DrainWrites();
  CHECK(failed == 0);
  CHECK(created == kThreads * kEach);
  CHECK(store->GroupWrites() == kThreads * kEach);
  INFO(store->GroupBatches() << " transactions");
  CHECK(store->GroupBatches() <= store->GroupWrites());
  size_t unread = 0;
  REQUIRE(store->UnreadCount("u-3", unread).ok());
  CHECK(unread == kThreads * kEach / 10);
  std::vector<DeliveryAttempt> attempts;
  REQUIRE(store->ListAttempts("n-d-3-249", attempts).ok());
  CHECK(attempts.size() == 1);
  // The inbox row is the delivery's record: no sent record beside it (its channel checks none).
  bool sent = true;
  CHECK((store->WasSent("d-3-249", sent).ok() && !sent));
  // Written again (a redelivered job): the existing row, not a new one.
  StoreWrite again = SentWrite("d-0-0");
  again.inbox.emplace();
  again.inbox->notification_id = "n-0-0";
  again.inbox->user_id = "u-0";
  REQUIRE(store->ApplyWrite(again).ok());
  CHECK_FALSE(again.inbox_created);
  CHECK(again.inbox->seq > 0);
}

TEST_CASE("Store: a write that begins an event already done writes nothing else", "[store]") {
  TempStore store("group-begin");
  auto begin = [&](const std::string& trace_id) {
    StoreWrite w;
    w.begin_event = "e-1";
    w.begin_now = kT0;
    w.begin_expires_at = kT0 + std::chrono::hours(1);
    w.traces.push_back(TraceRecord{trace_id, "e-1", "t", "u-1", kT0, "{}"});
    REQUIRE(store->ApplyWrite(w).ok());
    return w.begin_state;
  };
  CHECK(begin("n-first") == DedupState::kNew);
  CHECK(begin("n-again") == DedupState::kInProgress);  // not finished: processed again, traces too
  TraceRecord t;
  CHECK(store->GetTrace("n-again", t).ok());
  REQUIRE(store->FinishEvent("e-1").ok());
  CHECK(begin("n-late") == DedupState::kDone);
  CHECK(store->GetTrace("n-late", t).code() == Status::Code::kNotFound);
}

TEST_CASE("Store: the sent check and preference reads do not wait for a write in progress", "[store]") {
  TempStore store("reader");
  REQUIRE(store->RecordSent("d-read", "webhook", SystemClock::Instance().Now()).ok());
  Preferences p;
  p.user_id = "u-read";
  REQUIRE(store->PutPreferences(p).ok());
  // Another process holds the database's write lock, so the store's next write waits for it (up
  // to its busy timeout, 5 s) holding the store's write connection.
  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(store.path().c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  std::thread writer([&] { CHECK(store->RecordSent("d-later", "webhook", SystemClock::Instance().Now()).ok()); });
  std::this_thread::sleep_for(300ms);  // nothing to observe: the writer is inside SQLite's busy wait by now

  const auto started = std::chrono::steady_clock::now();
  bool sent = false;
  CHECK((store->WasSent("d-read", sent).ok() && sent));
  Preferences got;
  CHECK(store->GetPreferences("u-read", got).ok());
  std::vector<Preferences> batch;
  CHECK(store->GetPreferencesBatch({"u-read", "u-none"}, batch).ok());
  CHECK(batch.size() == 1);
  CHECK(std::chrono::steady_clock::now() - started < 1s);

  REQUIRE(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(other);
  writer.join();
  CHECK((store->WasSent("d-later", sent).ok() && sent));
}
