#include <catch2/catch.hpp>
#include <sqlite3.h>
#include <unistd.h>

#include "store/store.h"
#include "tests/support/test_env.h"

using namespace herald;
using Catch::Matchers::Contains;

TEST_CASE("Store: opens an SQLite file in WAL mode, creating its directory and schema") {
  std::string dir = "/tmp/herald-test-" + std::to_string(::getpid()) + "-store/nested";
  std::unique_ptr<Store> store;
  REQUIRE(OpenStore("sqlite://" + dir + "/herald.db", store).ok());
  CHECK(store->SchemaVersion() == 1);
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
  CHECK(store->SchemaVersion() == 1);
}

TEST_CASE("Store: unusable URLs and paths are explained") {
  std::unique_ptr<Store> store;
  CHECK_THAT(OpenStore("postgresql://db/herald", store).message(), Contains("PostgreSQL is not supported"));
  CHECK_THAT(OpenStore("sqlite://", store).message(), Contains("no file path"));
  std::string file = test::TempFile("not-a-dir", "x");
  Status s = OpenStore("sqlite://" + file + "/herald.db", store);
  CHECK_FALSE(s.ok());
  CHECK_THAT(s.message(), Contains(file));
}
