#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/thread_name.h"
#include "engine/event.h"
#include "store/store.h"
#include "store/wal_vfs.h"

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
    // 6: the in-app inbox. AUTOINCREMENT so a seq is never handed out twice, even if the newest rows
    // are deleted one day (retention): a client resuming its stream from a seq must not skip a new
    // entry that reused it. (user_id, seq) serves paging in both directions; the partial index holds only
    // unread rows, so the unread badge and mark-all-read cost the unread count, not the inbox size.
    "CREATE TABLE inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, notification_id TEXT UNIQUE NOT NULL,"
    " user_id TEXT NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL, title TEXT NOT NULL,"
    " body TEXT NOT NULL, data TEXT NOT NULL, created_at INTEGER NOT NULL, read_at INTEGER);"
    "CREATE INDEX inbox_user_seq ON inbox (user_id, seq);"
    "CREATE INDEX inbox_user_unread ON inbox (user_id) WHERE read_at IS NULL",
    // 7: deliveries completed, so a redelivered job is not sent twice. WITHOUT ROWID: looked up by
    // the primary key only.
    "CREATE TABLE sent_deliveries (delivery_id TEXT PRIMARY KEY, channel TEXT NOT NULL, sent_at INTEGER NOT NULL)"
    " WITHOUT ROWID",
    // 8: dead letters. AUTOINCREMENT so an id an operator saw (to replay or delete) never names a
    // later letter, and an after_id cursor never skips one. (channel, id) serves the channel filter
    // in id order without a sort; dead_at serves since/until.
    "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, delivery_id TEXT UNIQUE NOT NULL,"
    " channel TEXT NOT NULL, reason TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL,"
    " event_id TEXT NOT NULL, event_type TEXT NOT NULL, user_id TEXT NOT NULL, first_failed_at INTEGER NOT NULL,"
    " dead_at INTEGER NOT NULL, job TEXT NOT NULL, headers TEXT NOT NULL);"
    "CREATE INDEX dead_letters_channel ON dead_letters (channel, id);"
    "CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at)",
    // 9: sent records are purged by age.
    "CREATE INDEX sent_deliveries_at ON sent_deliveries (sent_at)",
    // 10: who replayed or purged dead letters, when, and which ones (`herald dlq audit`). Written
    // by operators' commands only, so it stays small and needs no index beyond the id. IF NOT EXISTS:
    // tests rebuild older schemas by dropping the tables they know of, which predate this one.
    "CREATE TABLE IF NOT EXISTS dlq_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,"
    " action TEXT NOT NULL CHECK (action IN ('replay', 'purge')), filter_json TEXT NOT NULL,"
    " count INTEGER NOT NULL, dry_run INTEGER NOT NULL)",
    // 11: every try of every delivery, for GET /v1/notifications/{nid}/trace. IF NOT EXISTS as in 10.
    "CREATE TABLE IF NOT EXISTS delivery_attempts (id INTEGER PRIMARY KEY AUTOINCREMENT, notification_id TEXT NOT NULL,"
    " delivery_id TEXT NOT NULL, channel TEXT NOT NULL, attempt INTEGER NOT NULL, outcome TEXT NOT NULL,"
    " error TEXT NOT NULL, at INTEGER NOT NULL, duration_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS delivery_attempts_notification ON delivery_attempts (notification_id, id)",
    // 12: traces by event and user (GET /v1/traces?event_id=&user_id=): notification ids carry
    // when the event's processing began (core/ids.h), so a service cannot compute them. IF NOT
    // EXISTS as in 10.
    "CREATE INDEX IF NOT EXISTS traces_event_user ON traces (event_id, user_id)",
    // 13: every preference write, in commit order (AUTOINCREMENT: numbers are never reused, and
    // sqlite_sequence keeps the newest even when old rows are purged). Each process's preference
    // cache reads what is new (engine/prefs_cache.h). IF NOT EXISTS as in 10.
    "CREATE TABLE IF NOT EXISTS prefs_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,"
    " at INTEGER NOT NULL)",
    // 14: delivery_attempts without AUTOINCREMENT. Attempts are never deleted, so a plain rowid key
    // already grows with every insert and keeps a notification's attempts in the order they were
    // made; AUTOINCREMENT cost a read and a write of sqlite_sequence on every attempt recorded, the
    // hottest insert there is (bench/README.md, ninth round). The rows keep their ids.
    "CREATE TABLE delivery_attempts_14 (id INTEGER PRIMARY KEY, notification_id TEXT NOT NULL,"
    " delivery_id TEXT NOT NULL, channel TEXT NOT NULL, attempt INTEGER NOT NULL, outcome TEXT NOT NULL,"
    " error TEXT NOT NULL, at INTEGER NOT NULL, duration_ms INTEGER NOT NULL);"
    "INSERT INTO delivery_attempts_14 (id, notification_id, delivery_id, channel, attempt, outcome, error, at,"
    " duration_ms) SELECT id, notification_id, delivery_id, channel, attempt, outcome, error, at, duration_ms"
    " FROM delivery_attempts;"
    "DROP TABLE delivery_attempts;"
    "ALTER TABLE delivery_attempts_14 RENAME TO delivery_attempts;"
    "CREATE INDEX delivery_attempts_notification ON delivery_attempts (notification_id, id)"
};
constexpr int kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

constexpr int kDedupInProgress = 0;
constexpr int kDedupDone = 1;

// Ids per GetPreferencesBatch query. Well under SQLite's bound-parameter limit, and large enough
// that a fan-out of 10,000 recipients takes 20 queries rather than 10,000.
constexpr size_t kBatchChunk = 500;
// Up to this many ids are read one at a time by primary key: SQLite builds a temporary index of
// all kBatchChunk parameters of the IN list on every run, bound or not, which made a lookup of one
// user (an event with one recipient, missing from the cache) cost 35-55 us of CPU instead of
// 13-21 us (bench/README.md, end to end).
constexpr size_t kBatchSmall = 8;
// Process-wide SQLite settings, before SQLite's first use (sqlite3_config refuses them later; the
// store works either way). MEMSTATUS off: SQLite otherwise counts every allocation under one
// global mutex, which every connection of every thread takes on each malloc and free.
void ConfigureSqliteOnce() {
  [[maybe_unused]] static const int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

// SqliteStore's checkpointer thread checkpoints the WAL each time this many frames were added
// (SQLite's own default for its automatic checkpoint). A checkpoint running beside new writes
// rarely finds the WAL complete, so the WAL could not start over from its beginning: once it
// holds kWalRestartFrames, the committing write checkpoints what is left itself, as SQLite would.
// That checkpoint holds every write waiting for the store for 10-30 ms (two fsyncs) on this
// machine, so it is rare: at 8,000 frames it came 1.4 times a second at 1,000 events/s and set
// the p99 latency; at 64,000 it comes every 5-6 s (bench/README.md, eighth round). The WAL file
// then grows to about 260 MB. When writes pause, a checkpoint completes and SQLite starts the WAL
// over by itself, long before that.
constexpr int kCheckpointFrames = 1000;
constexpr int kWalRestartFrames = 64000;
// Rows per DELETE in PurgeDedup, so a large purge does not hold the write lock in one go.
constexpr int kPurgeChunk = 10000;

// Every statement the store runs, prepared once at open.
enum Stmt {
  kBegin,
  kCommit,
  kBeginRead,
  kRollback,
  kGetPrefs,
  kGetPrefsBatch,
  kPutPrefs,
  kDeletePrefs,
  kPrefsChanged,
  kPrefsPage,
  kPrefsChangesSince,
  kPrefsChangesHead,
  kPrefsChangesPurge,
  kSubscribe,
  kUnsubscribe,
  kTopicPage,
  kDedupGet,
  kDedupInsert,
  kDedupPut,
  kDedupFinish,
  kDedupPurge,
  kPutTrace,
  kGetTrace,
  kGetTraceByEvent,
  kPutInbox,
  kInboxSeq,
  kListInbox,
  kInboxSince,
  kMarkRead,
  kInboxOwned,
  kMarkAllRead,
  kUnreadCount,
  kWasSent,
  kRecordSent,
  kPutAttempt,
  kListAttempts,
  kPutDeadLetter,
  kGetDeadLetter,
  kDeleteDeadLetter,
  kCountDeadLetters,
  kPutAudit,
  kListAudit,
  kStmtCount
};

// Prepared on the reader connection too: the reads of the hot path (preference cache misses, the
// sent check before every delivery).
constexpr Stmt kReaderStmts[] = {kGetPrefs,         kGetPrefsBatch, kWasSent,  kPrefsChangesSince,
                                 kPrefsChangesHead, kPrefsPage,     kBeginRead, kCommit};

// Column lists shared by the statements that read rows back and the functions that decode them
// (ReadInbox, ReadDeadLetter): the order here is the order those read.
constexpr char kInboxColumns[] =
    "seq, notification_id, user_id, event_id, event_type, title, body, data, created_at, read_at";
constexpr char kDeadLetterColumns[] =
    "id, delivery_id, channel, reason, error, attempts, event_id, event_type, user_id, first_failed_at,"
    " dead_at, job, headers";

// The optional conditions of ListDeadLetters, one bit each; a statement is prepared per combination.
enum DeadLetterClause {
  kDlChannel = 1 << 0,
  kDlReason = 1 << 1,
  kDlEventType = 1 << 2,
  kDlUserId = 1 << 3,
  kDlSince = 1 << 4,
  kDlUntil = 1 << 5,
  kDlCombinations = 1 << 6
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
    case kBeginRead: return "BEGIN";  // deferred: the reader's snapshot starts at its first read
    case kRollback: return "ROLLBACK";
    case kGetPrefs: return "SELECT doc FROM preferences WHERE user_id = ?1";
    case kGetPrefsBatch: return BatchSql();
    case kPutPrefs:
      return "INSERT INTO preferences (user_id, doc, updated_at) VALUES (?1, ?2, ?3) "
             "ON CONFLICT (user_id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at";
    case kDeletePrefs: return "DELETE FROM preferences WHERE user_id = ?1";
    case kPrefsChanged: return "INSERT INTO prefs_changes (user_id, at) VALUES (?1, ?2)";
    case kPrefsPage: return "SELECT user_id, doc FROM preferences WHERE user_id > ?1 ORDER BY user_id LIMIT ?2";
    case kPrefsChangesSince: return "SELECT seq, user_id FROM prefs_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2";
    case kPrefsChangesHead: return "SELECT seq FROM sqlite_sequence WHERE name = 'prefs_changes'";
    case kPrefsChangesPurge: return "DELETE FROM prefs_changes WHERE at < ?1";
    case kSubscribe: return "INSERT OR IGNORE INTO topic_subscribers (topic, user_id) VALUES (?1, ?2)";
    case kUnsubscribe: return "DELETE FROM topic_subscribers WHERE topic = ?1 AND user_id = ?2";
    case kTopicPage:
      return "SELECT user_id FROM topic_subscribers WHERE topic = ?1 AND user_id > ?2 ORDER BY user_id LIMIT ?3";
    case kDedupGet: return "SELECT state, expires_at, first_seen FROM dedup WHERE event_id = ?1";
    case kDedupInsert:
      return "INSERT INTO dedup (event_id, state, first_seen, expires_at) VALUES (?1, 0, ?2, ?3)"
             " ON CONFLICT (event_id) DO NOTHING";
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
      return "SELECT notification_id, event_id, event_type, user_id, created_at, decision FROM traces "
             "WHERE notification_id = ?1";
    case kGetTraceByEvent:  // the latest, should an interrupted upgrade have left two
      return "SELECT notification_id, event_id, event_type, user_id, created_at, decision FROM traces "
             "WHERE event_id = ?1 AND user_id = ?2 ORDER BY rowid DESC LIMIT 1";
    case kPutInbox:
      return "INSERT INTO inbox (notification_id, user_id, event_id, event_type, title, body, data, created_at, "
             "read_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (notification_id) DO NOTHING";
    case kInboxSeq: return "SELECT seq FROM inbox WHERE notification_id = ?1";
    case kListInbox:
      return std::string("SELECT ") + kInboxColumns +
             " FROM inbox WHERE user_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3";
    case kInboxSince:
      return std::string("SELECT ") + kInboxColumns + " FROM inbox WHERE user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";
    case kMarkRead:
      return "UPDATE inbox SET read_at = ?3 WHERE user_id = ?1 AND notification_id = ?2 AND read_at IS NULL";
    case kInboxOwned: return "SELECT 1 FROM inbox WHERE user_id = ?1 AND notification_id = ?2";
    case kMarkAllRead: return "UPDATE inbox SET read_at = ?2 WHERE user_id = ?1 AND read_at IS NULL";
    case kUnreadCount: return "SELECT COUNT(*) FROM inbox WHERE user_id = ?1 AND read_at IS NULL";
    case kWasSent: return "SELECT 1 FROM sent_deliveries WHERE delivery_id = ?1";
    case kRecordSent:
      return "INSERT OR IGNORE INTO sent_deliveries (delivery_id, channel, sent_at) VALUES (?1, ?2, ?3)";
    case kPutAttempt:
      return "INSERT INTO delivery_attempts (notification_id, delivery_id, channel, attempt, outcome, error, at,"
             " duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    case kListAttempts:
      return "SELECT notification_id, delivery_id, channel, attempt, outcome, error, at, duration_ms"
             " FROM delivery_attempts WHERE notification_id = ?1 ORDER BY id";
    case kPutDeadLetter:
      // REPLACE deletes the row with the same delivery id and inserts a new one, which takes the
      // next id: a replaced letter moves to the end, as if it had just arrived.
      return "INSERT OR REPLACE INTO dead_letters (delivery_id, channel, reason, error, attempts, event_id, "
             "event_type, user_id, first_failed_at, dead_at, job, headers) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
    case kGetDeadLetter: return std::string("SELECT ") + kDeadLetterColumns + " FROM dead_letters WHERE id = ?1";
    case kDeleteDeadLetter: return "DELETE FROM dead_letters WHERE id = ?1";
    case kCountDeadLetters: return "SELECT COUNT(*) FROM dead_letters";
    case kPutAudit:
      return "INSERT INTO dlq_audit (at, actor, action, filter_json, count, dry_run) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    case kListAudit:
      return "SELECT id, at, actor, action, filter_json, count, dry_run FROM dlq_audit ORDER BY id DESC LIMIT ?1";
    case kStmtCount: break;
  }
  return "";
}

// The SQL of ListDeadLetters for one combination of DeadLetterClause bits. Parameters: ?1 after_id,
// then one per set bit in the order of the bits, then the limit. Values are never spliced in.
std::string DeadLetterListSql(unsigned clauses) {
  static const char* const kConditions[] = {"channel = ?",  "reason = ?",   "event_type = ?",
                                            "user_id = ?",  "dead_at >= ?", "dead_at < ?"};
  static_assert(kDlCombinations == 1 << std::size(kConditions), "one condition per DeadLetterClause bit");
  std::string sql = std::string("SELECT ") + kDeadLetterColumns + " FROM dead_letters WHERE id > ?1";
  int param = 2;
  for (unsigned bit = 0; bit < std::size(kConditions); ++bit) {
    if (!(clauses & (1u << bit))) continue;
    sql += " AND ";
    sql += kConditions[bit];
    sql += std::to_string(param++);
  }
  return sql + " ORDER BY id LIMIT ?" + std::to_string(param);
}

// A size_t limit as an SQLite integer; anything beyond INT64_MAX means "no limit" anyway.
sqlite3_int64 LimitArg(size_t limit) {
  auto max = static_cast<size_t>(std::numeric_limits<sqlite3_int64>::max());
  return static_cast<sqlite3_int64>(std::min(limit, max));
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
    DrainWrites();  // its thread uses this connection
    if (checkpointer_.joinable()) {
      {
        std::lock_guard lock(ckpt_mu_);
        ckpt_stop_ = true;
      }
      ckpt_cv_.notify_one();
      checkpointer_.join();
    }
    sqlite3_close_v2(ckpt_db_);
    for (sqlite3_stmt* s : rstmts_) sqlite3_finalize(s);
    sqlite3_close_v2(rdb_);
    for (sqlite3_stmt* s : stmts_) sqlite3_finalize(s);
    for (sqlite3_stmt* s : dead_letter_lists_) sqlite3_finalize(s);
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

  // Checkpoints move to a thread with a connection of its own. SQLite's automatic checkpoint runs
  // inside the commit that crosses the threshold: copying up to kCheckpointFrames pages back into
  // the database and syncing both files takes milliseconds, during which that write holds the
  // connection and every thread waiting for the store waits too. The WAL hook below only wakes
  // the checkpointer; its PASSIVE checkpoint runs beside new writes (they append to the WAL). If
  // the thread or its connection cannot be had, SQLite's automatic checkpoint stays in place.
  void StartCheckpointer(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &ckpt_db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
      sqlite3_close_v2(ckpt_db_);
      ckpt_db_ = nullptr;
      return;
    }
    sqlite3_exec(ckpt_db_, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
    try {
      checkpointer_ = std::thread([this] { CheckpointLoop(); });
    } catch (const std::system_error&) {
      sqlite3_close_v2(ckpt_db_);
      ckpt_db_ = nullptr;
      return;
    }
    std::lock_guard lock(mu_);
    sqlite3_wal_hook(db_, &SqliteStore::OnWalCommit, this);  // replaces the automatic checkpoint
  }

  // Called by SQLite after each commit of the main connection (mu_ held), with the WAL's size.
  static int OnWalCommit(void* self, sqlite3* db, const char*, int frames) {
    auto* store = static_cast<SqliteStore*>(self);
    if (frames >= kWalRestartFrames) {
      // Little is left to copy (the checkpointer kept up); once all is, the next write restarts the WAL.
      sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      std::lock_guard lock(store->ckpt_mu_);
      store->ckpt_base_ = 0;
      return SQLITE_OK;
    }
    {
      std::lock_guard lock(store->ckpt_mu_);
      if (frames < store->ckpt_base_) store->ckpt_base_ = 0;  // the WAL started over
      if (store->ckpt_due_ || frames - store->ckpt_base_ < kCheckpointFrames) return SQLITE_OK;
      store->ckpt_base_ = frames;
      store->ckpt_due_ = true;
    }
    store->ckpt_cv_.notify_one();
    return SQLITE_OK;
  }

  void CheckpointLoop() {
    SetThreadName("store-ckpt");
    std::unique_lock lock(ckpt_mu_);
    for (;;) {
      ckpt_cv_.wait(lock, [&] { return ckpt_due_ || ckpt_stop_; });
      if (ckpt_stop_) return;
      lock.unlock();
      // PASSIVE: copies what no reader still needs and never waits; what it leaves is taken next time.
      sqlite3_wal_checkpoint_v2(ckpt_db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      lock.lock();
      ckpt_due_ = false;
    }
  }

  // Opens the reader connection (rdb_) and prepares its statements; without it (an in-memory
  // database, no file handles left) the hot reads share the main connection.
  void OpenReader(const std::string& path) {
    if (path == ":memory:" || path.rfind("file:", 0) == 0) return;
    sqlite3* r = nullptr;
    if (sqlite3_open_v2(path.c_str(), &r, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
      sqlite3_close_v2(r);
      return;
    }
    sqlite3_busy_timeout(r, 5000);
    for (Stmt k : kReaderStmts) {
      if (sqlite3_prepare_v3(r, StmtSql(k).c_str(), -1, SQLITE_PREPARE_PERSISTENT, &rstmts_[k], nullptr) != SQLITE_OK) {
        for (sqlite3_stmt*& s : rstmts_) {
          sqlite3_finalize(s);
          s = nullptr;
        }
        sqlite3_close_v2(r);
        return;
      }
    }
    rdb_ = r;
  }

  // A hot read's mutex, statement and connection: the reader's if there is one.
  std::mutex& ReadMutex() { return rdb_ ? rmu_ : mu_; }
  sqlite3_stmt* ReadStmt(Stmt k) { return rdb_ ? rstmts_[k] : stmts_[k]; }
  Status ReadError(const char* op) {
    return Status::Unavailable(std::string("store: ") + op + ": " + sqlite3_errmsg(rdb_ ? rdb_ : db_));
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
    std::lock_guard lock(ReadMutex());
    Use q(ReadStmt(kGetPrefs));
    if (!BindText(q, 1, user_id)) return ReadError("GetPreferences");
    int rc = sqlite3_step(q.get());
    if (rc == SQLITE_DONE) return Status::NotFound("no preferences stored for user \"" + user_id + "\"");
    if (rc != SQLITE_ROW) return ReadError("GetPreferences");
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
    std::lock_guard lock(ReadMutex());
    if (ids.size() <= kBatchSmall) {
      for (const std::string* id : ids) {
        Use q(ReadStmt(kGetPrefs));
        if (!BindText(q, 1, *id)) return ReadError("GetPreferencesBatch");
        int rc = sqlite3_step(q.get());
        if (rc == SQLITE_DONE) continue;
        if (rc != SQLITE_ROW) {
          out.clear();
          return ReadError("GetPreferencesBatch");
        }
        Preferences p;
        if (Status s = ParseStored(*id, ColumnText(q.get(), 0), p); !s.ok()) {
          out.clear();
          return s;
        }
        out.push_back(std::move(p));
      }
      return Status::Ok();
    }
    std::unordered_map<std::string, Preferences> found;
    for (size_t begin = 0; begin < ids.size(); begin += kBatchChunk) {
      size_t end = std::min(ids.size(), begin + kBatchChunk);
      // One statement for every chunk size: parameters left unbound are NULL, and
      // "user_id IN (..., NULL)" never matches a NULL, so a short last chunk needs no other SQL.
      Use q(ReadStmt(kGetPrefsBatch));
      for (size_t i = begin; i < end; ++i) {
        if (!BindText(q, static_cast<int>(i - begin + 1), *ids[i])) return ReadError("GetPreferencesBatch");
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
        return ReadError("GetPreferencesBatch");
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
    const int64_t now_ms = ToMillis(std::chrono::system_clock::now());
    std::lock_guard lock(mu_);
    Transaction tx(*this);
    if (Status s = tx.Begin("PutPreferences"); !s.ok()) return s;
    {
      Use q(stmts_[kPutPrefs]);
      if (!BindText(q, 1, p.user_id) || !BindText(q, 2, text) || !BindInt(q, 3, now_ms)) {
        return Error("PutPreferences");
      }
      if (Status s = Done(q, "PutPreferences"); !s.ok()) return s;
    }
    if (Status s = LogPreferenceChange(p.user_id, now_ms, "PutPreferences"); !s.ok()) return s;
    return tx.Commit("PutPreferences");
  }

  // REQUIRES: mu_ held, in a transaction.
  Status LogPreferenceChange(const std::string& user_id, int64_t now_ms, const char* op) {
    Use q(stmts_[kPrefsChanged]);
    if (!BindText(q, 1, user_id) || !BindInt(q, 2, now_ms)) return Error(op);
    return Done(q, op);
  }

  Status PreferenceChanges(long long after, size_t limit, std::vector<PreferenceChange>& out,
                           long long& head) override {
    out.clear();
    head = 0;
    std::lock_guard lock(ReadMutex());
    {
      // First: a change made between the two reads then shows up in `out` beyond `head`, never
      // the other way round (a head beyond every row read, which would look like changes missed).
      Use q(ReadStmt(kPrefsChangesHead));
      int rc = sqlite3_step(q.get());
      if (rc == SQLITE_ROW) head = sqlite3_column_int64(q.get(), 0);
      else if (rc != SQLITE_DONE) return ReadError("PreferenceChanges");
    }
    Use q(ReadStmt(kPrefsChangesSince));
    if (!BindInt(q, 1, after) || !BindInt(q, 2, LimitArg(limit))) return ReadError("PreferenceChanges");
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
      out.push_back(PreferenceChange{sqlite3_column_int64(q.get(), 0), ColumnText(q.get(), 1)});
    }
    if (rc != SQLITE_DONE) {
      out.clear();
      return ReadError("PreferenceChanges");
    }
    return Status::Ok();
  }

  Status PreferencesPage(const std::string& after, size_t limit, std::vector<Preferences>& out) override {
    out.clear();
    std::lock_guard lock(ReadMutex());
    Use q(ReadStmt(kPrefsPage));
    if (!BindText(q, 1, after) || !BindInt(q, 2, LimitArg(limit))) return ReadError("PreferencesPage");
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
      Preferences p;
      if (Status s = ParseStored(ColumnText(q.get(), 0), ColumnText(q.get(), 1), p); !s.ok()) {
        out.clear();
        return s;
      }
      out.push_back(std::move(p));
    }
    if (rc != SQLITE_DONE) {
      out.clear();
      return ReadError("PreferencesPage");
    }
    return Status::Ok();
  }

  Status PurgePreferenceChanges(SystemTime before, size_t& purged) override {
    purged = 0;
    std::lock_guard lock(mu_);
    Use q(stmts_[kPrefsChangesPurge]);
    if (!BindInt(q, 1, ToMillis(before))) return Error("PurgePreferenceChanges");
    if (Status s = Done(q, "PurgePreferenceChanges"); !s.ok()) return s;
    purged = static_cast<size_t>(sqlite3_changes(db_));
    return Status::Ok();
  }

  Status DeletePreferences(const std::string& user_id) override {
    std::lock_guard lock(mu_);
    Transaction tx(*this);
    if (Status s = tx.Begin("DeletePreferences"); !s.ok()) return s;
    {
      Use q(stmts_[kDeletePrefs]);
      if (!BindText(q, 1, user_id)) return Error("DeletePreferences");
      if (Status s = Done(q, "DeletePreferences"); !s.ok()) return s;
    }
    if (Status s = LogPreferenceChange(user_id, ToMillis(std::chrono::system_clock::now()), "DeletePreferences");
        !s.ok()) {
      return s;
    }
    return tx.Commit("DeletePreferences");
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

  // Read and write in one IMMEDIATE transaction, so two consumers (threads or processes) that
  // receive the same event at once cannot both see it as new.
  Status BeginEvent(const std::string& event_id, SystemTime now, SystemTime expires_at,
                    DedupState& state) override {
    StoreWrite w;
    w.begin_event = event_id;
    w.begin_now = now;
    w.begin_expires_at = expires_at;
    Status s = ApplyOne(w);
    state = w.begin_state;
    return s;
  }

  Status FinishEvent(const std::string& event_id) override {
    StoreWrite w;
    w.finish_event = event_id;
    return ApplyOne(w);
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

  Status PurgeSent(SystemTime before, size_t& purged) override {
    purged = 0;
    const int64_t before_ms = ToMillis(before);
    for (;;) {
      // Chunked like PurgeDedup, so other threads get the connection in between.
      std::lock_guard lock(mu_);
      sqlite3_stmt* raw = nullptr;
      if (sqlite3_prepare_v2(db_,
                             "DELETE FROM sent_deliveries WHERE delivery_id IN (SELECT delivery_id FROM sent_deliveries "
                             "WHERE sent_at < ?1 LIMIT 10000)",
                             -1, &raw, nullptr) != SQLITE_OK) {
        return Error("PurgeSent");
      }
      sqlite3_bind_int64(raw, 1, before_ms);
      int rc = sqlite3_step(raw);
      sqlite3_finalize(raw);
      if (rc != SQLITE_DONE) return Error("PurgeSent");
      int n = sqlite3_changes(db_);
      purged += static_cast<size_t>(n);
      if (n < 10000) return Status::Ok();
    }
  }

  // ---- traces ----

  Status PutTraces(const std::vector<TraceRecord>& records) override {
    if (records.empty()) return Status::Ok();
    StoreWrite w;
    w.traces = records;
    return ApplyOne(w);
  }

  // One row of kGetTrace or kGetTraceByEvent; NotFound (`missing`) if there is none.
  Status ReadTrace(sqlite3_stmt* q, const std::string& missing, TraceRecord& out) {
    int rc = sqlite3_step(q);
    if (rc == SQLITE_DONE) return Status::NotFound(missing);
    if (rc != SQLITE_ROW) return Error("GetTrace");
    TraceRecord r;
    r.notification_id = ColumnText(q, 0);
    r.event_id = ColumnText(q, 1);
    r.event_type = ColumnText(q, 2);
    r.user_id = ColumnText(q, 3);
    r.created_at = FromMillis(sqlite3_column_int64(q, 4));
    r.decision_json = ColumnText(q, 5);
    out = std::move(r);
    return Status::Ok();
  }

  Status GetTrace(const std::string& notification_id, TraceRecord& out) override {
    std::lock_guard lock(mu_);
    Use q(stmts_[kGetTrace]);
    if (!BindText(q, 1, notification_id)) return Error("GetTrace");
    return ReadTrace(q.get(), "no trace for notification \"" + notification_id + "\"", out);
  }

  Status GetTraceByEvent(const std::string& event_id, const std::string& user_id, TraceRecord& out) override {
    std::lock_guard lock(mu_);
    Use q(stmts_[kGetTraceByEvent]);
    if (!BindText(q, 1, event_id) || !BindText(q, 2, user_id)) return Error("GetTraceByEvent");
    return ReadTrace(q.get(), "no trace for event \"" + event_id + "\" and user \"" + user_id + "\"", out);
  }

  // ---- in-app inbox ----

  Status PutInbox(InboxEntry& entry, bool& created) override {
    StoreWrite w;
    w.inbox = std::move(entry);
    Status s = ApplyOne(w);
    entry = std::move(*w.inbox);
    created = w.inbox_created;
    return s;
  }

  Status ListInbox(const std::string& user, long long before_seq, size_t limit,
                   std::vector<InboxEntry>& out) override {
    // 0 asks for the newest; seqs are positive, so INT64_MAX bounds nothing.
    sqlite3_int64 bound = before_seq == 0 ? std::numeric_limits<sqlite3_int64>::max() : before_seq;
    return ReadInboxPage(kListInbox, "ListInbox", user, bound, limit, out);
  }

  Status InboxSince(const std::string& user, long long after_seq, size_t limit,
                    std::vector<InboxEntry>& out) override {
    return ReadInboxPage(kInboxSince, "InboxSince", user, after_seq, limit, out);
  }

  Status MarkRead(const std::string& user, const std::string& notification_id, SystemTime at,
                  bool& found) override {
    std::lock_guard lock(mu_);
    // Update and ownership check in one IMMEDIATE transaction: otherwise another process could
    // insert the entry between a missed update and the check, and we would report found for an
    // entry that is still unread.
    Transaction tx(*this);
    if (Status s = tx.Begin("MarkRead"); !s.ok()) return s;
    bool exists;
    {
      Use q(stmts_[kMarkRead]);
      if (!BindText(q, 1, user) || !BindText(q, 2, notification_id) || !BindInt(q, 3, ToMillis(at))) {
        return Error("MarkRead");
      }
      if (Status s = Done(q, "MarkRead"); !s.ok()) return s;
      exists = sqlite3_changes(db_) > 0;
    }
    if (!exists) {
      // Nothing changed: either the entry was read before (found) or it is not this user's.
      Use q(stmts_[kInboxOwned]);
      if (!BindText(q, 1, user) || !BindText(q, 2, notification_id)) return Error("MarkRead");
      int rc = sqlite3_step(q.get());
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error("MarkRead");
      exists = rc == SQLITE_ROW;
    }
    if (Status s = tx.Commit("MarkRead"); !s.ok()) return s;
    found = exists;
    return Status::Ok();
  }

  Status MarkAllRead(const std::string& user, SystemTime at, size_t& changed) override {
    std::lock_guard lock(mu_);
    Use q(stmts_[kMarkAllRead]);
    if (!BindText(q, 1, user) || !BindInt(q, 2, ToMillis(at))) return Error("MarkAllRead");
    if (Status s = Done(q, "MarkAllRead"); !s.ok()) return s;
    changed = static_cast<size_t>(sqlite3_changes(db_));
    return Status::Ok();
  }

  Status UnreadCount(const std::string& user, size_t& out) override {
    std::lock_guard lock(mu_);
    Use q(stmts_[kUnreadCount]);
    if (!BindText(q, 1, user)) return Error("UnreadCount");
    return ReadCount(q, "UnreadCount", out);
  }

  // ---- delivery idempotency ----

  Status WasSent(const std::string& delivery_id, bool& sent) override {
    std::lock_guard lock(ReadMutex());
    Use q(ReadStmt(kWasSent));
    if (!BindText(q, 1, delivery_id)) return ReadError("WasSent");
    int rc = sqlite3_step(q.get());
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return ReadError("WasSent");
    sent = rc == SQLITE_ROW;
    return Status::Ok();
  }

  // One read transaction for the whole batch: one snapshot and one round of WAL locks instead of
  // one per id, and the index pages the first lookup read serve the rest (recent ids share them).
  Status WasSent(const std::vector<std::string>& ids, std::vector<bool>& sent) override {
    sent.assign(ids.size(), false);
    if (ids.empty()) return Status::Ok();
    std::lock_guard lock(ReadMutex());
    const bool txn = rdb_ != nullptr && ids.size() > 1;
    if (txn) {
      Use begin(rstmts_[kBeginRead]);
      if (sqlite3_step(begin.get()) != SQLITE_DONE) return ReadError("WasSent");
    }
    Status result = Status::Ok();
    for (size_t i = 0; i < ids.size(); ++i) {
      Use q(ReadStmt(kWasSent));
      int rc = BindText(q, 1, ids[i]) ? sqlite3_step(q.get()) : SQLITE_ERROR;
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        result = ReadError("WasSent");
        break;
      }
      sent[i] = rc == SQLITE_ROW;
    }
    if (txn) {
      Use commit(rstmts_[kCommit]);
      if (sqlite3_step(commit.get()) != SQLITE_DONE) {
        if (result.ok()) result = ReadError("WasSent");
        commit.Release();
        sqlite3_exec(rdb_, "ROLLBACK", nullptr, nullptr, nullptr);  // never leave the snapshot open
      }
    }
    return result;
  }

  Status RecordSent(const std::string& delivery_id, const std::string& channel, SystemTime at) override {
    if (delivery_id.empty()) return Status::Invalid("sent delivery: delivery_id: must not be empty");
    std::lock_guard lock(mu_);
    Use q(stmts_[kRecordSent]);
    if (!BindText(q, 1, delivery_id) || !BindText(q, 2, channel) || !BindInt(q, 3, ToMillis(at))) {
      return Error("RecordSent");
    }
    return Done(q, "RecordSent");
  }

  // ---- delivery attempts ----

  Status RecordAttempt(const DeliveryAttempt& a) override {
    StoreWrite w;
    w.attempt = a;
    return ApplyOne(w);
  }

  // ---- writes made together ----

  void ApplyWrites(std::vector<StoreWrite*>& writes) override {
    std::vector<StoreWrite*> valid;
    valid.reserve(writes.size());
    for (StoreWrite* w : writes) {
      w->status = Validate(*w);
      if (w->status.ok()) valid.push_back(w);
    }
    if (valid.empty()) return;
    Status s;
    {
      std::lock_guard lock(mu_);
      Transaction tx(*this);
      s = tx.Begin("write");
      for (size_t i = 0; i < valid.size() && s.ok(); ++i) s = WriteParts(*valid[i]);
      if (s.ok()) s = tx.Commit("write");
    }  // rolled back unless committed
    if (s.ok() || valid.size() == 1) {
      for (StoreWrite* w : valid) w->status = s;
      return;
    }
    // One of them failed, and took the others with it: each alone, so only that one fails.
    for (StoreWrite* w : valid) w->status = ApplyOne(*w);
  }

  Status ListAttempts(const std::string& notification_id, std::vector<DeliveryAttempt>& out) override {
    out.clear();
    std::lock_guard lock(mu_);
    Use q(stmts_[kListAttempts]);
    if (!BindText(q, 1, notification_id)) return Error("ListAttempts");
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
      DeliveryAttempt a;
      a.notification_id = ColumnText(q.get(), 0);
      a.delivery_id = ColumnText(q.get(), 1);
      a.channel = ColumnText(q.get(), 2);
      a.attempt = sqlite3_column_int64(q.get(), 3);
      a.outcome = ColumnText(q.get(), 4);
      a.error = ColumnText(q.get(), 5);
      a.at = FromMillis(sqlite3_column_int64(q.get(), 6));
      a.duration_ms = sqlite3_column_int64(q.get(), 7);
      out.push_back(std::move(a));
    }
    return rc == SQLITE_DONE ? Status::Ok() : Error("ListAttempts");
  }

  // ---- dead letters ----

  Status PutDeadLetter(DeadLetter& letter) override {
    if (letter.delivery_id.empty()) return Status::Invalid("dead letter: delivery_id: must not be empty");
    std::lock_guard lock(mu_);
    Use q(stmts_[kPutDeadLetter]);
    if (!BindText(q, 1, letter.delivery_id) || !BindText(q, 2, letter.channel) || !BindText(q, 3, letter.reason) ||
        !BindText(q, 4, letter.error) || !BindInt(q, 5, letter.attempts) || !BindText(q, 6, letter.event_id) ||
        !BindText(q, 7, letter.event_type) || !BindText(q, 8, letter.user_id) ||
        !BindInt(q, 9, ToMillis(letter.first_failed_at)) || !BindInt(q, 10, ToMillis(letter.dead_at)) ||
        !BindText(q, 11, letter.job_json) || !BindText(q, 12, letter.headers_json)) {
      return Error("PutDeadLetter");
    }
    if (Status s = Done(q, "PutDeadLetter"); !s.ok()) return s;
    // Per connection, and the connection is ours while mu_ is held: this is the row just written.
    letter.id = sqlite3_last_insert_rowid(db_);
    return Status::Ok();
  }

  Status ListDeadLetters(const DeadLetterFilter& filter, std::vector<DeadLetter>& out) override {
    out.clear();
    if (filter.limit == 0) return Status::Ok();
    unsigned clauses = (filter.channel.empty() ? 0 : kDlChannel) | (filter.reason.empty() ? 0 : kDlReason) |
                       (filter.event_type.empty() ? 0 : kDlEventType) | (filter.user_id.empty() ? 0 : kDlUserId) |
                       (filter.since ? kDlSince : 0) | (filter.until ? kDlUntil : 0);
    std::lock_guard lock(mu_);
    sqlite3_stmt*& stmt = dead_letter_lists_[clauses];
    if (!stmt) {
      // Prepared on first use and kept: 64 combinations would be a lot to prepare at every open
      // for an operator's endpoint, and few of them are ever used.
      std::string sql = DeadLetterListSql(clauses);
      if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
        sqlite3_finalize(stmt);
        stmt = nullptr;
        return Error("ListDeadLetters");
      }
    }
    Use q(stmt);
    int param = 1;
    bool bound = BindInt(q, param++, filter.after_id);
    if (bound && !filter.channel.empty()) bound = BindText(q, param++, filter.channel);
    if (bound && !filter.reason.empty()) bound = BindText(q, param++, filter.reason);
    if (bound && !filter.event_type.empty()) bound = BindText(q, param++, filter.event_type);
    if (bound && !filter.user_id.empty()) bound = BindText(q, param++, filter.user_id);
    if (bound && filter.since) bound = BindInt(q, param++, ToMillis(*filter.since));
    if (bound && filter.until) bound = BindInt(q, param++, ToMillis(*filter.until));
    if (bound) bound = BindInt(q, param, LimitArg(filter.limit));
    if (!bound) return Error("ListDeadLetters");
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) out.push_back(ReadDeadLetter(q));
    if (rc != SQLITE_DONE) {
      out.clear();
      return Error("ListDeadLetters");
    }
    return Status::Ok();
  }

  Status GetDeadLetter(long long id, DeadLetter& out) override {
    std::lock_guard lock(mu_);
    Use q(stmts_[kGetDeadLetter]);
    if (!BindInt(q, 1, id)) return Error("GetDeadLetter");
    int rc = sqlite3_step(q.get());
    if (rc == SQLITE_DONE) return Status::NotFound("no dead letter with id " + std::to_string(id));
    if (rc != SQLITE_ROW) return Error("GetDeadLetter");
    out = ReadDeadLetter(q);
    return Status::Ok();
  }

  Status DeleteDeadLetter(long long id) override {
    std::lock_guard lock(mu_);
    Use q(stmts_[kDeleteDeadLetter]);
    if (!BindInt(q, 1, id)) return Error("DeleteDeadLetter");
    return Done(q, "DeleteDeadLetter");
  }

  Status CountDeadLetters(size_t& out) override {
    std::lock_guard lock(mu_);
    Use q(stmts_[kCountDeadLetters]);
    return ReadCount(q, "CountDeadLetters", out);
  }

  // ---- dead-letter audit ----

  Status PutAudit(AuditRecord& record) override {
    if (record.action != "replay" && record.action != "purge") {
      return Status::Invalid("audit: action: must be \"replay\" or \"purge\" (got \"" + record.action + "\")");
    }
    std::lock_guard lock(mu_);
    Use q(stmts_[kPutAudit]);
    if (!BindInt(q, 1, ToMillis(record.at)) || !BindText(q, 2, record.actor) || !BindText(q, 3, record.action) ||
        !BindText(q, 4, record.filter_json) || !BindInt(q, 5, record.count) || !BindInt(q, 6, record.dry_run ? 1 : 0)) {
      return Error("PutAudit");
    }
    if (Status s = Done(q, "PutAudit"); !s.ok()) return s;
    record.id = sqlite3_last_insert_rowid(db_);
    return Status::Ok();
  }

  Status ListAudit(size_t limit, std::vector<AuditRecord>& out) override {
    out.clear();
    if (limit == 0) return Status::Ok();
    std::lock_guard lock(mu_);
    Use q(stmts_[kListAudit]);
    if (!BindInt(q, 1, LimitArg(limit))) return Error("ListAudit");
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
      sqlite3_stmt* st = q.get();
      AuditRecord r;
      r.id = sqlite3_column_int64(st, 0);
      r.at = FromMillis(sqlite3_column_int64(st, 1));
      r.actor = ColumnText(st, 2);
      r.action = ColumnText(st, 3);
      r.filter_json = ColumnText(st, 4);
      r.count = sqlite3_column_int64(st, 5);
      r.dry_run = sqlite3_column_int64(st, 6) != 0;
      out.push_back(std::move(r));
    }
    if (rc != SQLITE_DONE) {
      out.clear();
      return Error("ListAudit");
    }
    return Status::Ok();
  }

 private:
  Status Validate(const StoreWrite& w) {
    for (size_t i = 0; i < w.traces.size(); ++i) {
      if (w.traces[i].notification_id.empty()) {
        return Status::Invalid("traces[" + std::to_string(i) + "].notification_id: must not be empty");
      }
    }
    if (w.inbox && w.inbox->notification_id.empty()) {
      return Status::Invalid("inbox entry: notification_id: must not be empty");
    }
    if (w.inbox && w.inbox->user_id.empty()) return Status::Invalid("inbox entry: user_id: must not be empty");
    if (w.attempt && w.attempt->delivery_id.empty()) {
      return Status::Invalid("delivery attempt: delivery_id: must not be empty");
    }
    return Status::Ok();
  }

  // One write in a transaction of its own.
  Status ApplyOne(StoreWrite& w) {
    if (Status s = Validate(w); !s.ok()) return s;
    std::lock_guard lock(mu_);
    Transaction tx(*this);
    if (Status s = tx.Begin("write"); !s.ok()) return s;
    if (Status s = WriteParts(w); !s.ok()) return s;
    return tx.Commit("write");
  }

  // The statements of one write. Caller holds mu_ and a transaction.
  Status WriteParts(StoreWrite& w) {
    if (!w.begin_event.empty()) {
      if (Status s = WriteBegin(w); !s.ok() || w.begin_state == DedupState::kDone) return s;
      // Also for a new event (the same ids then): a group retried write by write must not keep ids
      // an earlier attempt of the group gave.
      if (w.renumber_traces) w.renumber_traces(w.begin_first_seen, w.traces);
    }
    for (const TraceRecord& r : w.traces) {
      Use q(stmts_[kPutTrace]);
      if (!BindKept(q, 1, r.notification_id) || !BindKept(q, 2, r.event_id) || !BindKept(q, 3, r.event_type) ||
          !BindKept(q, 4, r.user_id) || !BindInt(q, 5, ToMillis(r.created_at)) || !BindKept(q, 6, r.decision_json)) {
        return Error("PutTraces");
      }
      if (Status s = Done(q, "PutTraces"); !s.ok()) return s;
    }
    if (w.inbox) {
      InboxEntry& entry = *w.inbox;
      {
        Use q(stmts_[kPutInbox]);
        bool bound = BindKept(q, 1, entry.notification_id) && BindKept(q, 2, entry.user_id) &&
                     BindKept(q, 3, entry.event_id) && BindKept(q, 4, entry.event_type) &&
                     BindKept(q, 5, entry.title) && BindKept(q, 6, entry.body) && BindKept(q, 7, entry.data_json) &&
                     BindInt(q, 8, ToMillis(entry.created_at));
        // Left unbound, ?9 is NULL: unread.
        if (bound && entry.read_at) bound = BindInt(q, 9, ToMillis(*entry.read_at));
        if (!bound) return Error("PutInbox");
        if (Status s = Done(q, "PutInbox"); !s.ok()) return s;
      }
      // DO NOTHING on a conflict leaves the change count at 0; an insert makes it 1. The
      // connection is ours alone while mu_ is held, so no other statement changed the count, or
      // the last inserted rowid (the seq: an INTEGER PRIMARY KEY is the rowid), since.
      // (RETURNING seq would say both in one statement, but SQLite runs it through a temporary
      // table: 12 % more instructions per event in bench_store than this.)
      w.inbox_created = sqlite3_changes(db_) > 0;
      if (w.inbox_created) {
        entry.seq = sqlite3_last_insert_rowid(db_);
      } else {
        // Inbox rows are never deleted, so the row found is the one that was already there.
        Use q(stmts_[kInboxSeq]);
        if (!BindKept(q, 1, entry.notification_id)) return Error("PutInbox");
        int rc = sqlite3_step(q.get());
        if (rc == SQLITE_DONE) {
          return Status::Internal("store: PutInbox: inbox entry \"" + entry.notification_id +
                                  "\" was neither written nor found");
        }
        if (rc != SQLITE_ROW) return Error("PutInbox");
        entry.seq = sqlite3_column_int64(q.get(), 0);
      }
    }
    if (w.attempt && (!w.inbox || w.inbox_created)) {
      const DeliveryAttempt& a = *w.attempt;
      // A delivery made by an inbox write needs no sent record: the inbox row, unique by
      // notification, is one, and its channel makes no sent check (ChannelWorker::Process). Not
      // writing it spares two index entries per in-app delivery (bench/README.md, ninth round).
      if (a.outcome == "sent" && !w.inbox) {
        Use q(stmts_[kRecordSent]);
        if (!BindKept(q, 1, a.delivery_id) || !BindKept(q, 2, a.channel) || !BindInt(q, 3, ToMillis(a.at))) {
          return Error("RecordAttempt");
        }
        if (Status s = Done(q, "RecordAttempt"); !s.ok()) return s;
      }
      Use q(stmts_[kPutAttempt]);
      if (!BindKept(q, 1, a.notification_id) || !BindKept(q, 2, a.delivery_id) || !BindKept(q, 3, a.channel) ||
          !BindInt(q, 4, a.attempt) || !BindKept(q, 5, a.outcome) || !BindKept(q, 6, a.error) ||
          !BindInt(q, 7, ToMillis(a.at)) || !BindInt(q, 8, a.duration_ms)) {
        return Error("RecordAttempt");
      }
      if (Status s = Done(q, "RecordAttempt"); !s.ok()) return s;
    }
    if (!w.finish_event.empty()) {
      static_assert(kDedupInProgress == 0 && kDedupDone == 1, "the SQL of kDedupPut and kDedupFinish");
      Use q(stmts_[kDedupFinish]);
      if (!BindKept(q, 1, w.finish_event)) return Error("FinishEvent");
      if (Status s = Done(q, "FinishEvent"); !s.ok()) return s;
    }
    return Status::Ok();
  }

  Status WriteBegin(StoreWrite& w) {
    const int64_t now_ms = ToMillis(w.begin_now);
    // Most events are new: the insert alone settles them, one statement instead of a read and a
    // write. When a record is there, it says whether this is a repeat, unless it has expired.
    static_assert(kDedupInProgress == 0, "the SQL of kDedupInsert and kDedupPut");
    auto put = [&](Stmt id) {
      Use q(stmts_[id]);
      if (!BindKept(q, 1, w.begin_event) || !BindInt(q, 2, now_ms) || !BindInt(q, 3, ToMillis(w.begin_expires_at))) {
        return Error("BeginEvent");
      }
      return Done(q, "BeginEvent");
    };
    if (Status s = put(kDedupInsert); !s.ok()) return s;
    if (sqlite3_changes(db_) > 0) return BegunNew(w, now_ms);  // mu_ is held: no other statement ran since
    {
      Use q(stmts_[kDedupGet]);
      if (!BindKept(q, 1, w.begin_event)) return Error("BeginEvent");
      int rc = sqlite3_step(q.get());
      if (rc == SQLITE_ROW && sqlite3_column_int64(q.get(), 1) > now_ms) {
        w.begin_state = sqlite3_column_int(q.get(), 0) == kDedupDone ? DedupState::kDone : DedupState::kInProgress;
        w.begin_first_seen = FromMillis(sqlite3_column_int64(q.get(), 2));
        return Status::Ok();
      }
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error("BeginEvent");
    }
    // The record has expired: this is a new occurrence.
    if (Status s = put(kDedupPut); !s.ok()) return s;
    return BegunNew(w, now_ms);
  }

  static Status BegunNew(StoreWrite& w, int64_t now_ms) {
    w.begin_state = DedupState::kNew;
    w.begin_first_seen = FromMillis(now_ms);
    return Status::Ok();
  }

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

  // SQLITE_STATIC: no copy. Only for a string that outlives the Use scope (a field of the write
  // being applied): Use clears the bindings before the scope ends.
  static bool BindKept(const Use& q, int index, const std::string& value) {
    return sqlite3_bind_text64(q.get(), index, value.data(), value.size(), SQLITE_STATIC, SQLITE_UTF8) == SQLITE_OK;
  }

  static bool BindInt(const Use& q, int index, sqlite3_int64 value) {
    return sqlite3_bind_int64(q.get(), index, value) == SQLITE_OK;
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

  // Steps a SELECT COUNT(*).
  Status ReadCount(const Use& q, const char* op, size_t& out) {
    if (sqlite3_step(q.get()) != SQLITE_ROW) return Error(op);
    out = static_cast<size_t>(sqlite3_column_int64(q.get(), 0));
    return Status::Ok();
  }

  // ListInbox and InboxSince: the same columns and parameters, only the direction differs.
  Status ReadInboxPage(Stmt id, const char* op, const std::string& user, sqlite3_int64 seq, size_t limit,
                       std::vector<InboxEntry>& out) {
    out.clear();
    if (limit == 0) return Status::Ok();
    std::lock_guard lock(mu_);
    Use q(stmts_[id]);
    if (!BindText(q, 1, user) || !BindInt(q, 2, seq) || !BindInt(q, 3, LimitArg(limit))) return Error(op);
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) out.push_back(ReadInbox(q));
    if (rc != SQLITE_DONE) {
      out.clear();
      return Error(op);
    }
    return Status::Ok();
  }

  // A row of kInboxColumns.
  static InboxEntry ReadInbox(const Use& q) {
    sqlite3_stmt* st = q.get();
    InboxEntry e;
    e.seq = sqlite3_column_int64(st, 0);
    e.notification_id = ColumnText(st, 1);
    e.user_id = ColumnText(st, 2);
    e.event_id = ColumnText(st, 3);
    e.event_type = ColumnText(st, 4);
    e.title = ColumnText(st, 5);
    e.body = ColumnText(st, 6);
    e.data_json = ColumnText(st, 7);
    e.created_at = FromMillis(sqlite3_column_int64(st, 8));
    if (sqlite3_column_type(st, 9) != SQLITE_NULL) e.read_at = FromMillis(sqlite3_column_int64(st, 9));
    return e;
  }

  // A row of kDeadLetterColumns.
  static DeadLetter ReadDeadLetter(const Use& q) {
    sqlite3_stmt* st = q.get();
    DeadLetter d;
    d.id = sqlite3_column_int64(st, 0);
    d.delivery_id = ColumnText(st, 1);
    d.channel = ColumnText(st, 2);
    d.reason = ColumnText(st, 3);
    d.error = ColumnText(st, 4);
    d.attempts = sqlite3_column_int64(st, 5);
    d.event_id = ColumnText(st, 6);
    d.event_type = ColumnText(st, 7);
    d.user_id = ColumnText(st, 8);
    d.first_failed_at = FromMillis(sqlite3_column_int64(st, 9));
    d.dead_at = FromMillis(sqlite3_column_int64(st, 10));
    d.job_json = ColumnText(st, 11);
    d.headers_json = ColumnText(st, 12);
    return d;
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
  // The reader (OpenReader): a read-only connection for the reads of the hot path, so they never
  // wait for mu_ while the writer thread holds it for a group transaction. Set before the store is
  // shared; null if it could not be opened (those reads then use db_).
  std::mutex rmu_;
  sqlite3* rdb_ = nullptr;
  sqlite3_stmt* rstmts_[kStmtCount] = {};  // kReaderStmts only
  // The checkpointer (StartCheckpointer): its own connection, used on its thread only.
  sqlite3* ckpt_db_ = nullptr;
  std::thread checkpointer_;
  std::mutex ckpt_mu_;  // guards the three below
  std::condition_variable ckpt_cv_;
  int ckpt_base_ = 0;  // WAL frames when the last checkpoint was asked for
  bool ckpt_due_ = false;
  bool ckpt_stop_ = false;
  const std::vector<std::string> known_channels_;
  sqlite3_stmt* stmts_[kStmtCount] = {};
  sqlite3_stmt* dead_letter_lists_[kDlCombinations] = {};  // by DeadLetterClause bits; prepared on first use
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
  ConfigureSqliteOnce();
  sqlite3* db = nullptr;
  // The writing connection gathers each transaction's WAL frames into one write (store/wal_vfs.h).
  // NOMUTEX: the store's own mutex (mu_) already gives the connection to one thread at a time, so
  // SQLite's per-connection mutex would only be taken and released around every call.
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           WalBufferVfs());
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
  store->StartCheckpointer(path);
  store->OpenReader(path);
  out = std::move(store);
  return Status::Ok();
}

}  // namespace herald
