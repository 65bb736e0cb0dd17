#include <sqlite3.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <atomic>
#include <filesystem>
#include <thread>

#include "core/metrics.h"
#include "engine/prefs_cache.h"

using namespace herald;
using namespace std::chrono_literals;

namespace {

const SystemTime kT0 = SystemTime(std::chrono::seconds(1800000000));

// A store file of its own, and a second connection to it: "another process".
struct Stores {
  explicit Stores(const std::string& name)
      : dir("/tmp/herald-test-" + std::to_string(::getpid()) + "-" + name) {
    std::filesystem::remove_all(dir);
    REQUIRE(OpenStore("sqlite://" + dir + "/herald.db", mine).ok());
    REQUIRE(OpenStore("sqlite://" + dir + "/herald.db", other).ok());
  }
  ~Stores() {
    mine.reset();
    other.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  std::string dir;
  std::unique_ptr<Store> mine, other;
};

Preferences WithEmail(const std::string& user, const std::string& email) {
  Preferences p = DefaultPreferences(user);
  p.contacts.email = email;
  return p;
}

std::string Email(PreferenceCache& cache, const std::string& user) {
  PreferenceCache::Entry e;
  REQUIRE(cache.Get(user, e).ok());
  return e->contacts.email;
}

// SQL run on the store's file by hand, as nothing in Herald would.
void Exec(const std::string& dir, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open((dir + "/herald.db").c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  INFO((err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

double Misses() { return Metrics::Global().Counters("herald_prefs_cache_misses_total", "", {}).Value({}); }

}  // namespace

TEST_CASE("Preference cache: a change another process stored, with no signal, is used after the next poll",
          "[prefs_cache]") {
  Stores s("cache-poll");
  ManualClock clock(kT0);
  PreferenceCache cache(*s.mine, 100, Millis(3600000), clock);  // a TTL far beyond the test
  REQUIRE(s.other->PutPreferences(WithEmail("u-1", "old@example.org")).ok());
  CHECK(Email(cache, "u-1") == "old@example.org");
  CHECK(Email(cache, "u-2").empty());

  REQUIRE(s.other->PutPreferences(WithEmail("u-1", "new@example.org")).ok());
  REQUIRE(s.other->PutPreferences(WithEmail("u-2", "two@example.org")).ok());
  const double misses = Misses();
  clock.Advance(PreferenceCache::kPollEvery - 1ms);
  CHECK(Email(cache, "u-1") == "old@example.org");  // not read again before the poll is due
  CHECK(Misses() == misses);
  clock.Advance(1ms);
  CHECK(Email(cache, "u-1") == "new@example.org");
  CHECK(Email(cache, "u-2") == "two@example.org");
  CHECK(Misses() == misses + 2);  // only those two were dropped
  CHECK(cache.Size() == 2);

  // A delete is a change too.
  REQUIRE(s.other->DeletePreferences("u-1").ok());
  clock.Advance(PreferenceCache::kPollEvery);
  CHECK(Email(cache, "u-1").empty());
  CHECK(Email(cache, "u-2") == "two@example.org");
}

TEST_CASE("Preference cache: changes purged from the log before the cache read them drop everything it holds",
          "[prefs_cache]") {
  Stores s("cache-gap");
  ManualClock clock(kT0);
  PreferenceCache cache(*s.mine, 100, Millis(3600000), clock);
  REQUIRE(s.other->PutPreferences(WithEmail("u-1", "a1@example.org")).ok());
  REQUIRE(s.other->PutPreferences(WithEmail("u-2", "b1@example.org")).ok());
  CHECK(Email(cache, "u-1") == "a1@example.org");  // (the first lookup read the log: those two changes)
  CHECK(Email(cache, "u-2") == "b1@example.org");
  CHECK(cache.Size() == 2);

  SECTION("all of the unread part purged") {
    REQUIRE(s.other->PutPreferences(WithEmail("u-2", "b2@example.org")).ok());
    size_t purged = 0;
    REQUIRE(s.other->PurgePreferenceChanges(std::chrono::system_clock::now() + 1min, purged).ok());
    REQUIRE(purged == 3);
  }
  SECTION("the start of the unread part purged") {
    REQUIRE(s.other->PutPreferences(WithEmail("u-2", "b2@example.org")).ok());
    size_t purged = 0;
    REQUIRE(s.other->PurgePreferenceChanges(std::chrono::system_clock::now() + 1min, purged).ok());
    REQUIRE(s.other->PutPreferences(WithEmail("u-3", "c@example.org")).ok());  // left in the log
  }
  clock.Advance(PreferenceCache::kPollEvery);
  CHECK(Email(cache, "u-2") == "b2@example.org");
  CHECK(cache.Size() == 1);  // u-1 went too
}

TEST_CASE("Preference cache: a store whose log is behind what the cache saw (a restored copy) drops everything",
          "[prefs_cache]") {
  Stores s("cache-behind");
  ManualClock clock(kT0);
  for (int i = 0; i < 3; ++i) REQUIRE(s.other->PutPreferences(WithEmail("u-1", "a@example.org")).ok());
  PreferenceCache cache(*s.mine, 100, Millis(3600000), clock);  // has seen 3 changes
  CHECK(Email(cache, "u-1") == "a@example.org");
  // The file now holds an older copy: other preferences, a log that has counted less.
  Exec(s.dir, "DELETE FROM prefs_changes; UPDATE sqlite_sequence SET seq = 0 WHERE name = 'prefs_changes';"
              "UPDATE preferences SET doc = replace(doc, 'a@', 'restored@')");
  REQUIRE(s.other->PutPreferences(WithEmail("u-2", "b@example.org")).ok());  // change 1 of that log
  clock.Advance(PreferenceCache::kPollEvery);
  CHECK(Email(cache, "u-1") == "restored@example.org");
  // From then on the cache follows the new count.
  REQUIRE(s.other->PutPreferences(WithEmail("u-1", "later@example.org")).ok());
  clock.Advance(PreferenceCache::kPollEvery);
  CHECK(Email(cache, "u-1") == "later@example.org");
}

TEST_CASE("Preference cache: what nothing announces (a store edited by hand) is reloaded after the TTL",
          "[prefs_cache]") {
  Stores s("cache-ttl");
  ManualClock clock(kT0);
  PreferenceCache cache(*s.mine, 100, Millis(60000), clock);
  REQUIRE(s.other->PutPreferences(WithEmail("u-1", "old@example.org")).ok());
  CHECK(Email(cache, "u-1") == "old@example.org");
  Exec(s.dir, "UPDATE preferences SET doc = replace(doc, 'old@', 'hand@')");
  clock.Advance(59s);
  CHECK(Email(cache, "u-1") == "old@example.org");
  clock.Advance(1s);
  CHECK(Email(cache, "u-1") == "hand@example.org");
}

TEST_CASE("Preference cache: a load that overlaps a drop of its user does not keep what it read", "[prefs_cache]") {
  Stores s("cache-race");
  ManualClock clock(kT0);  // never moves: no poll, no TTL; only the drops below make it reload
  PreferenceCache cache(*s.mine, 100, Millis(3600000), clock);
  REQUIRE(s.other->PutPreferences(WithEmail("u-1", "v0@example.org")).ok());
  // Each round a reader keeps loading u-1 from the store (it drops its copy before each lookup)
  // while a change is stored and its signal drops u-1, as the API does; the reader stops right
  // after. A load that read the store before the change and cached the result after the drop
  // would keep the old value (until the TTL).
  int stale = 0;
  for (int i = 1; i <= 200; ++i) {
    std::atomic<bool> stop{false};
    std::atomic<long> lookups{0};
    std::thread reader([&] {
      PreferenceCache::Entry e;
      while (!stop) {
        cache.Invalidate("u-1");
        if (cache.Get("u-1", e).ok()) ++lookups;
      }
    });
    while (lookups.load() < 2) std::this_thread::yield();
    const std::string email = "v" + std::to_string(i) + "@example.org";
    REQUIRE(s.other->PutPreferences(WithEmail("u-1", email)).ok());
    cache.Invalidate("u-1");
    stop = true;
    reader.join();
    if (Email(cache, "u-1") != email) ++stale;
  }
  CHECK(stale == 0);
}

TEST_CASE("Preference cache: warming loads stored preferences up to the size and keeps what is cached",
          "[prefs_cache]") {
  Stores s("cache-warm");
  ManualClock clock(kT0);
  for (int i = 0; i < 2500; ++i) {  // more than one page of the load
    char user[16];
    std::snprintf(user, sizeof user, "u-%04d", i);
    REQUIRE(s.other->PutPreferences(WithEmail(user, std::string(user) + "@example.org")).ok());
  }
  SECTION("all fit") {
    PreferenceCache cache(*s.mine, 10000, Millis(3600000), clock);
    CHECK(Email(cache, "u-0007") == "u-0007@example.org");
    Exec(s.dir, "UPDATE preferences SET doc = replace(doc, '@example.org', '@changed.org')");  // no log entry
    size_t loaded = 0;
    REQUIRE(cache.Warm(loaded).ok());
    CHECK(loaded == 2499);
    CHECK(cache.Size() == 2500);
    const double misses = Misses();
    CHECK(Email(cache, "u-0007") == "u-0007@example.org");  // already cached: left as it was
    CHECK(Email(cache, "u-0000") == "u-0000@changed.org");
    CHECK(Email(cache, "u-2499") == "u-2499@changed.org");
    CHECK(Misses() == misses);
  }
  SECTION("the size is the bound") {
    PreferenceCache cache(*s.mine, 1200, Millis(3600000), clock);
    size_t loaded = 0;
    REQUIRE(cache.Warm(loaded).ok());
    CHECK(loaded == 1200);
    CHECK(cache.Size() == 1200);
    const double misses = Misses();
    CHECK(Email(cache, "u-1199") == "u-1199@example.org");
    CHECK(Misses() == misses);
    CHECK(Email(cache, "u-1200") == "u-1200@example.org");
    CHECK(Misses() == misses + 1);
  }
  SECTION("a document that cannot be read stops it, named") {
    Exec(s.dir, "UPDATE preferences SET doc = '{\"channels\":{\"pigeon\":true}}' WHERE user_id = 'u-1500'");
    PreferenceCache cache(*s.mine, 10000, Millis(3600000), clock);
    size_t loaded = 0;
    Status st = cache.Warm(loaded);
    CHECK_FALSE(st.ok());
    CHECK_THAT(st.message(), Catch::Matchers::Contains("u-1500"));
    CHECK(loaded == 1000);  // the first page
  }
}
