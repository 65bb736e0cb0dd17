#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "store/store.h"

namespace herald {
namespace {

// Each entry upgrades the schema by one version; applied in order inside one transaction.
const char* const kMigrations[] = {
    "CREATE TABLE IF NOT EXISTS herald_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
};
constexpr int kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

Status MakeParents(const std::string& path) {
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    std::string dir = path.substr(0, pos);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return Status::Unavailable("cannot create directory " + dir + ": " + std::strerror(errno));
    }
  }
  return Status::Ok();
}

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  ~SqliteStore() override { sqlite3_close_v2(db_); }

  Status Exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      return Status::Unavailable(msg);
    }
    return Status::Ok();
  }

  Status Migrate() {
    std::lock_guard lock(mu_);
    if (Status s = Exec("PRAGMA journal_mode=WAL"); !s.ok()) return s;
    if (Status s = Exec("PRAGMA synchronous=NORMAL"); !s.ok()) return s;
    int version = ReadVersion();
    if (version > kSchemaVersion) {
      return Status::Invalid("the store has schema version " + std::to_string(version) +
                             ", newer than this heraldd knows (" + std::to_string(kSchemaVersion) + ")");
    }
    if (version == kSchemaVersion) return Status::Ok();
    if (Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
    for (int v = version; v < kSchemaVersion; ++v) {
      if (Status s = Exec(kMigrations[v]); !s.ok()) {
        Exec("ROLLBACK");
        return s;
      }
    }
    if (Status s = Exec("PRAGMA user_version=" + std::to_string(kSchemaVersion)); !s.ok()) {
      Exec("ROLLBACK");
      return s;
    }
    return Exec("COMMIT");
  }

  Status CheckWritable() override {
    std::lock_guard lock(mu_);
    return Exec("INSERT INTO herald_meta(key, value) VALUES('last_check', datetime('now')) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value");
  }

  int SchemaVersion() override {
    std::lock_guard lock(mu_);
    return ReadVersion();
  }

 private:
  int ReadVersion() {
    sqlite3_stmt* stmt = nullptr;
    int version = -1;
    if (sqlite3_prepare_v2(db_, "PRAGMA user_version", -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      version = sqlite3_column_int(stmt, 0);
    }
    sqlite3_finalize(stmt);
    return version;
  }

  std::mutex mu_;
  sqlite3* db_;
};

}  // namespace

Status OpenStore(const std::string& url, std::unique_ptr<Store>& out) {
  if (url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0) {
    return Status::Invalid("store.url: PostgreSQL is not supported by this version yet; use sqlite://");
  }
  if (url.rfind("sqlite://", 0) != 0) return Status::Invalid("store.url: must start with sqlite://");
  std::string path = url.substr(9);  // sqlite:///abs -> /abs ; sqlite://rel -> rel
  if (path.empty()) return Status::Invalid("store.url: no file path after sqlite://");
  if (Status s = MakeParents(path); !s.ok()) return Status::Unavailable("store " + path + ": " + s.message());
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return Status::Unavailable("store " + path + ": cannot open: " + msg);
  }
  sqlite3_busy_timeout(db, 5000);
  auto store = std::make_unique<SqliteStore>(db);
  if (Status s = store->Migrate(); !s.ok()) return Status::Unavailable("store " + path + ": " + s.message());
  if (Status s = store->CheckWritable(); !s.ok()) return Status::Unavailable("store " + path + ": " + s.message());
  out = std::move(store);
  return Status::Ok();
}

}  // namespace herald
