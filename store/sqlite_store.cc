#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "engine/event.h"
#include "store/store.h"

namespace herald {
namespace {

// Each entry upgrades the schema by one version; applied in order inside one transaction.
// Append only: a store records how many of these it has applied (PRAGMA user_version).
const char* const kMigrations[] = {
    "CREATE TABLE IF NOT EXISTS herald_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    // 2: preferences, one JSON document per user (PreferencesToJson), so new fields need no migration.
    "CREATE TABLE preferences (user_id TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at INTEGER NOT NULL)",
    // 3: topics. WITHOUT ROWID: the primary key is the only index, and keyset paging walks it.
    "CREATE TABLE topic_subscribers (topic TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (topic, user_id))"
    " WITHOUT ROWID",
    // 4: event de-duplication. state 0 = in progress, 1 = done. The index serves PurgeDedup.
    "CREATE TABLE dedup (event_id TEXT PRIMARY KEY, state INTEGER NOT NULL, first_seen INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL);"
    "CREATE INDEX dedup_expires_at ON dedup (expires_at)",
    // 5: decision traces.
    "CREATE TABLE traces (notification_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, event_type TEXT NOT NULL,"
    " user_id TEXT NOT NULL, created_at INTEGER NOT NULL, decision TEXT NOT NULL)",
};
constexpr int kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

constexpr int kDedupInProgress = 0;
constexpr int kDedupDone = 1;

// Ids per GetPreferencesBatch query. Well under SQLite's bound-parameter limit, and large enough
// that a fan-out of 10,000 recipients takes 20 queries rather than 10,000.
constexpr size_t kBatchChunk = 500;
// Rows per DELETE in PurgeDedup, so a large purge does not hold the write lock in one go.
constexpr int kPurgeChunk = 10000;

// Every statement the store runs, prepared once at open.
enum Stmt {
  kBegin,
  kCommit,
  kRollback,
  kGetPrefs,
  kGetPrefsBatch,
  kPutPrefs,
  kDeletePrefs,
  kSubscribe,
  kUnsubscribe,
  kTopicPage,
  kDedupGet,
  kDedupPut,
  kDedupFinish,
  kDedupPurge,
  kPutTrace,
  kGetTrace,
  kStmtCount
};

std::string BatchSql() {
  std::string sql = "SELECT user_id, doc FROM preferences WHERE user_id IN (?";
  for (size_t i = 1; i < kBatchChunk; ++i) sql += ",?";
  return sql + ")";
}

std::string StmtSql(Stmt id) {
  switch (id) {
    // IMMEDIATE takes the write lock at once: a read-then-write transaction cannot be overtaken
    // by another connection (another heraldd on the same file) between its read and its write.
    case kBegin: return "BEGIN IMMEDIATE";
    case kCommit: return "COMMIT";
    case kRollback: return "ROLLBACK";
    case kGetPrefs: return "SELECT doc FROM preferences WHERE user_id = ?1";
    case kGetPrefsBatch: return BatchSql();
    case kPutPrefs:
      return "INSERT INTO preferences (user_id, doc, updated_at) VALUES (?1, ?2, ?3) "
             "ON CONFLICT (user_id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at";
    case kDeletePrefs: return "DELETE FROM preferences WHERE user_id = ?1";
    case kSubscribe: return "INSERT OR IGNORE INTO topic_subscribers (topic, user_id) VALUES (?1, ?2)";
    case kUnsubscribe: return "DELETE FROM topic_subscribers WHERE topic = ?1 AND user_id = ?2";
    case kTopicPage:
      return "SELECT user_id FROM topic_subscribers WHERE topic = ?1 AND user_id > ?2 ORDER BY user_id LIMIT ?3";
    case kDedupGet: return "SELECT state, expires_at FROM dedup WHERE event_id = ?1";
    case kDedupPut:
      return "INSERT OR REPLACE INTO dedup (event_id, state, first_seen, expires_at) VALUES (?1, 0, ?2, ?3)";
    case kDedupFinish: return "UPDATE dedup SET state = 1 WHERE event_id = ?1";
    case kDedupPurge:
      return "DELETE FROM dedup WHERE rowid IN "
             "(SELECT rowid FROM dedup WHERE expires_at <= ?1 LIMIT " + std::to_string(kPurgeChunk) + ")";
    case kPutTrace:
      return "INSERT OR REPLACE INTO traces (notification_id, event_id, event_type, user_id, created_at, decision) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    case kGetTrace:
      return "SELECT event_id, event_type, user_id, created_at, decision FROM traces WHERE notification_id = ?1";
    case kStmtCount: break;
  }
  return "";
}

int64_t ToMillis(SystemTime t) {
  return std::chrono::floor<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

SystemTime FromMillis(int64_t ms) {
  return SystemTime(std::chrono::duration_cast<SystemTime::duration>(std::chrono::milliseconds(ms)));
}

std::string ColumnText(sqlite3_stmt* stmt, int col) {
  const unsigned char* text = sqlite3_column_text(stmt, col);
  if (!text) return "";
  return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(sqlite3_column_bytes(stmt, col)));
}

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
  SqliteStore(sqlite3* db, std::vector<std::string> known_channels)
      : db_(db), known_channels_(std::move(known_channels)) {}
  ~SqliteStore() override {
    for (sqlite3_stmt* s : stmts_) sqlite3_finalize(s);
    sqlite3_close_v2(db_);
  }

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
    if (version > kSchemaVersion) return TooNew(version);
    if (version == kSchemaVersion) return Status::Ok();
    if (Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
    // Read again under the write lock: another process opening the same file at the same moment
    // may have migrated between the first read and our lock.
    version = ReadVersion();
    if (version >= kSchemaVersion) {
      Exec("ROLLBACK");
      return version > kSchemaVersion ? TooNew(version) : Status::Ok();
    }
    for (int v = version; v < kSchemaVersion; ++v) {
      if (Status s = Exec(kMigrations[v]); !s.ok()) {
        Exec("ROLLBACK");
        return Status::Unavailable("migration to schema version " + std::to_string(v + 1) + ": " + s.message());
      }
    }
    if (Status s = Exec("PRAGMA user_version=" + std::to_string(kSchemaVersion)); !s.ok()) {
      Exec("ROLLBACK");
      return s;
    }
    return Exec("COMMIT");
  }

  // Prepares every statement once; done after Migrate because they name the migrated tables.
  Status PrepareAll() {
    std::lock_guard lock(mu_);
    for (int i = 0; i < kStmtCount; ++i) {
      std::string sql = StmtSql(static_cast<Stmt>(i));
      if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &stmts_[i], nullptr) != SQLITE_OK) {
        return Status::Internal("cannot prepare \"" + sql.substr(0, 60) + "\": " + sqlite3_errmsg(db_));
      }
    }
    return Status::Ok();
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

  // ---- preferences ----

  Status GetPreferences(const std::string& user_id, Preferences& out) override {
    std::lock_guard lock(mu_);
    Use q(stmts_[kGetPrefs]);
    if (!BindText(q, 1, user_id)) return Error("GetPreferences");
    int rc = sqlite3_step(q.get());
    if (rc == SQLITE_DONE) return Status::NotFound("no preferences stored for user \"" + user_id + "\"");
    if (rc != SQLITE_ROW) return Error("GetPreferences");
    return ParseStored(user_id, ColumnText(q.get(), 0), out);
  }

  Status GetPreferencesBatch(const std::vector<std::string>& user_ids, std::vector<Preferences>& out) override {
    out.clear();
    // Distinct ids in the order first given, so the result follows the caller's order.
    std::vector<const std::string*> ids;
    ids.reserve(user_ids.size());
    {
      std::unordered_set<std::string_view> seen;
      seen.reserve(user_ids.size() * 2);
      for (const std::string& id : user_ids) {
        if (seen.insert(id).second) ids.push_back(&id);
      }
    }
    std::lock_guard lock(mu_);
    std::unordered_map<std::string, Preferences> found;
    for (size_t begin = 0; begin < ids.size(); begin += kBatchChunk) {
      size_t end = std::min(ids.size(), begin + kBatchChunk);
      // One statement for every chunk size: parameters left unbound are NULL, and
      // "user_id IN (..., NULL)" never matches a NULL, so a short last chunk needs no other SQL.
      Use q(stmts_[kGetPrefsBatch]);
      for (size_t i = begin; i < end; ++i) {
        if (!BindText(q, static_cast<int>(i - begin + 1), *ids[i])) return Error("GetPreferencesBatch");
      }
      found.clear();
      int rc;
      while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
        std::string user = ColumnText(q.get(), 0);
        Preferences p;
        if (Status s = ParseStored(user, ColumnText(q.get(), 1), p); !s.ok()) {
          out.clear();
          return s;
        }
        found.emplace(std::move(user), std::move(p));
      }
      if (rc != SQLITE_DONE) {
        out.clear();
        return Error("GetPreferencesBatch");
      }
      for (size_t i = begin; i < end; ++i) {
        if (auto it = found.find(*ids[i]); it != found.end()) out.push_back(std::move(it->second));
      }
    }
    return Status::Ok();
  }

  Status PutPreferences(const Preferences& p) override {
    // Never store what GetPreferences could not read back.
    nlohmann::json doc = PreferencesToJson(p);
    Preferences check;
    if (Status s = ParsePreferences(doc, p.user_id, known_channels_, check); !s.ok()) return s;
    std::string text;
    try {
      text = doc.dump();
    } catch (const nlohmann::json::exception&) {
      // dump() throws on invalid UTF-8, which only a caller that built Preferences by hand can produce.
      return Status::Invalid("preferences: strings must be valid UTF-8");
    }
    std::lock_guard lock(mu_);
    Use q(stmts_[kPutPrefs]);
    if (!BindText(q, 1, p.user_id) || !BindText(q, 2, text) ||
        sqlite3_bind_int64(q.get(), 3, ToMillis(std::chrono::system_clock::now())) != SQLITE_OK) {
      return Error("PutPreferences");
    }
    return Done(q, "PutPreferences");
  }

  Status DeletePreferences(const std::string& user_id) override {
    std::lock_guard lock(mu_);
    Use q(stmts_[kDeletePrefs]);
    if (!BindText(q, 1, user_id)) return Error("DeletePreferences");
    return Done(q, "DeletePreferences");
  }

  // ---- topics ----

  Status Subscribe(const std::string& topic, const std::string& user_id) override {
    if (std::string why = CheckUserId(topic); !why.empty()) return Status::Invalid("topic: " + why);
    if (std::string why = CheckUserId(user_id); !why.empty()) return Status::Invalid("user_id: " + why);
    std::lock_guard lock(mu_);
    Use q(stmts_[kSubscribe]);
    if (!BindText(q, 1, topic) || !BindText(q, 2, user_id)) return Error("Subscribe");
    return Done(q, "Subscribe");
  }

  Status Unsubscribe(const std::string& topic, const std::string& user_id) override {
    std::lock_guard lock(mu_);
    Use q(stmts_[kUnsubscribe]);
    if (!BindText(q, 1, topic) || !BindText(q, 2, user_id)) return Error("Unsubscribe");
    return Done(q, "Unsubscribe");
  }

  Status TopicPage(const std::string& topic, const std::string& after, size_t limit,
                   std::vector<std::string>& out) override {
    out.clear();
    if (limit == 0) return Status::Ok();
    auto max = static_cast<size_t>(std::numeric_limits<sqlite3_int64>::max());
    std::lock_guard lock(mu_);
    Use q(stmts_[kTopicPage]);
    if (!BindText(q, 1, topic) || !BindText(q, 2, after) ||
        sqlite3_bind_int64(q.get(), 3, static_cast<sqlite3_int64>(std::min(limit, max))) != SQLITE_OK) {
      return Error("TopicPage");
    }
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) out.push_back(ColumnText(q.get(), 0));
    if (rc != SQLITE_DONE) {
      out.clear();
      return Error("TopicPage");
    }
    return Status::Ok();
  }

  // ---- de-duplication ----

  Status BeginEvent(const std::string& event_id, SystemTime now, SystemTime expires_at,
                    DedupState& state) override {
    std::lock_guard lock(mu_);
    // Read and write in one IMMEDIATE transaction, so two consumers (threads or processes) that
    // receive the same event at once cannot both see it as new.
    Transaction tx(*this);
    if (Status s = tx.Begin("BeginEvent"); !s.ok()) return s;
    int64_t now_ms = ToMillis(now);
    {
      Use q(stmts_[kDedupGet]);
      if (!BindText(q, 1, event_id)) return Error("BeginEvent");
      int rc = sqlite3_step(q.get());
      if (rc == SQLITE_ROW && sqlite3_column_int64(q.get(), 1) > now_ms) {
        DedupState found = sqlite3_column_int(q.get(), 0) == kDedupDone ? DedupState::kDone : DedupState::kInProgress;
        q.Release();
        if (Status s = tx.Commit("BeginEvent"); !s.ok()) return s;
        state = found;
        return Status::Ok();
      }
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error("BeginEvent");
    }
    // No record, or one that has expired: this is a new occurrence.
    {
      Use q(stmts_[kDedupPut]);
      if (!BindText(q, 1, event_id) || sqlite3_bind_int64(q.get(), 2, now_ms) != SQLITE_OK ||
          sqlite3_bind_int64(q.get(), 3, ToMillis(expires_at)) != SQLITE_OK) {
        return Error("BeginEvent");
      }
      if (Status s = Done(q, "BeginEvent"); !s.ok()) return s;
    }
    if (Status s = tx.Commit("BeginEvent"); !s.ok()) return s;
    state = DedupState::kNew;
    return Status::Ok();
  }

  Status FinishEvent(const std::string& event_id) override {
    static_assert(kDedupInProgress == 0 && kDedupDone == 1, "the SQL of kDedupPut and kDedupFinish");
    std::lock_guard lock(mu_);
    Use q(stmts_[kDedupFinish]);
    if (!BindText(q, 1, event_id)) return Error("FinishEvent");
    return Done(q, "FinishEvent");
  }

  Status PurgeDedup(SystemTime now, size_t& purged) override {
    purged = 0;
    int64_t now_ms = ToMillis(now);
    for (;;) {
      // The lock is taken per chunk so other threads get the connection between chunks.
      std::lock_guard lock(mu_);
      Use q(stmts_[kDedupPurge]);
      if (sqlite3_bind_int64(q.get(), 1, now_ms) != SQLITE_OK) return Error("PurgeDedup");
      if (Status s = Done(q, "PurgeDedup"); !s.ok()) return s;
      int n = sqlite3_changes(db_);
      purged += static_cast<size_t>(n);
      if (n < kPurgeChunk) return Status::Ok();
    }
  }

  // ---- traces ----

  Status PutTraces(const std::vector<TraceRecord>& records) override {
    if (records.empty()) return Status::Ok();
    for (size_t i = 0; i < records.size(); ++i) {
      if (records[i].notification_id.empty()) {
        return Status::Invalid("traces[" + std::to_string(i) + "].notification_id: must not be empty");
      }
    }
    std::lock_guard lock(mu_);
    Transaction tx(*this);
    if (Status s = tx.Begin("PutTraces"); !s.ok()) return s;
    for (const TraceRecord& r : records) {
      Use q(stmts_[kPutTrace]);
      if (!BindText(q, 1, r.notification_id) || !BindText(q, 2, r.event_id) || !BindText(q, 3, r.event_type) ||
          !BindText(q, 4, r.user_id) || sqlite3_bind_int64(q.get(), 5, ToMillis(r.created_at)) != SQLITE_OK ||
          !BindText(q, 6, r.decision_json)) {
        return Error("PutTraces");
      }
      if (Status s = Done(q, "PutTraces"); !s.ok()) return s;
    }
    return tx.Commit("PutTraces");
  }

  Status GetTrace(const std::string& notification_id, TraceRecord& out) override {
    std::lock_guard lock(mu_);
    Use q(stmts_[kGetTrace]);
    if (!BindText(q, 1, notification_id)) return Error("GetTrace");
    int rc = sqlite3_step(q.get());
    if (rc == SQLITE_DONE) return Status::NotFound("no trace for notification \"" + notification_id + "\"");
    if (rc != SQLITE_ROW) return Error("GetTrace");
    TraceRecord r;
    r.notification_id = notification_id;
    r.event_id = ColumnText(q.get(), 0);
    r.event_type = ColumnText(q.get(), 1);
    r.user_id = ColumnText(q.get(), 2);
    r.created_at = FromMillis(sqlite3_column_int64(q.get(), 3));
    r.decision_json = ColumnText(q.get(), 4);
    out = std::move(r);
    return Status::Ok();
  }

 private:
  // A cached statement in use; reset and cleared when the scope ends, so it never keeps a read
  // transaction open or carries bindings into its next use.
  class Use {
   public:
    explicit Use(sqlite3_stmt* s) : s_(s) {}
    ~Use() { Release(); }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    sqlite3_stmt* get() const { return s_; }
    void Release() {
      if (!s_) return;
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
      s_ = nullptr;
    }

   private:
    sqlite3_stmt* s_;
  };

  // BEGIN IMMEDIATE ... COMMIT, rolled back if the scope ends before Commit. Caller holds mu_.
  class Transaction {
   public:
    explicit Transaction(SqliteStore& store) : store_(store) {}
    ~Transaction() {
      if (!open_) return;
      Use q(store_.stmts_[kRollback]);
      sqlite3_step(q.get());
    }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    Status Begin(const char* op) {
      Use q(store_.stmts_[kBegin]);
      if (Status s = store_.Done(q, op); !s.ok()) return s;
      open_ = true;
      return Status::Ok();
    }
    Status Commit(const char* op) {
      Use q(store_.stmts_[kCommit]);
      if (Status s = store_.Done(q, op); !s.ok()) return s;  // still open: the destructor rolls back
      open_ = false;
      return Status::Ok();
    }

   private:
    SqliteStore& store_;
    bool open_ = false;
  };

  // SQLITE_TRANSIENT: SQLite copies the text, so the caller's string may go away before step.
  static bool BindText(const Use& q, int index, const std::string& value) {
    return sqlite3_bind_text64(q.get(), index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8) ==
           SQLITE_OK;
  }

  // Steps a statement that returns no rows.
  Status Done(const Use& q, const char* op) {
    int rc = sqlite3_step(q.get());
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return Error(op);
    return Status::Ok();
  }

  Status Error(const char* op) { return Status::Unavailable(std::string("store: ") + op + ": " + sqlite3_errmsg(db_)); }

  Status ParseStored(const std::string& user_id, const std::string& text, Preferences& out) {
    auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) {
      return Status::Internal("store: stored preferences of user \"" + user_id + "\" are not valid JSON");
    }
    if (Status s = ParsePreferences(doc, user_id, known_channels_, out); !s.ok()) {
      // Happens if a channel the document names is no longer known; the operator has to decide.
      return Status::Internal("store: stored preferences of user \"" + user_id + "\" no longer parse: " +
                              s.message());
    }
    return Status::Ok();
  }

  Status TooNew(int version) {
    return Status::Invalid("the store has schema version " + std::to_string(version) +
                           ", newer than this heraldd knows (" + std::to_string(kSchemaVersion) + ")");
  }

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

  std::mutex mu_;  // one connection, used by one thread at a time
  sqlite3* db_;
  const std::vector<std::string> known_channels_;
  sqlite3_stmt* stmts_[kStmtCount] = {};
};

}  // namespace

Status OpenStore(const std::string& url, std::unique_ptr<Store>& out, const std::vector<std::string>& known_channels) {
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
  auto store = std::make_unique<SqliteStore>(db, known_channels);
  if (Status s = store->Migrate(); !s.ok()) return Status::Unavailable("store " + path + ": " + s.message());
  if (Status s = store->PrepareAll(); !s.ok()) return Status::Unavailable("store " + path + ": " + s.message());
  if (Status s = store->CheckWritable(); !s.ok()) return Status::Unavailable("store " + path + ": " + s.message());
  out = std::move(store);
  return Status::Ok();
}

}  // namespace herald
