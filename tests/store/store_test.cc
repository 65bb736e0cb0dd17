#include <catch2/catch.hpp>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>

#include "core/time.h"
#include "store/store.h"
#include "tests/support/test_env.h"

using namespace herald;
using Catch::Matchers::Contains;

namespace {

constexpr int kSchema = 5;  // migrations in store/sqlite_store.cc

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
