// The WAL-gathering VFS (store/wal_vfs.h): what a commit promised is in the file when it returns,
// other connections read it at once, and a commit that cannot be written fails cleanly.
#include <catch2/catch.hpp>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <string>

#include "store/wal_vfs.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;

namespace {

sqlite3* Open(const std::string& path, const char* vfs) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) == SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  return db;
}

long long Count(sqlite3* db, const char* sql) {
  sqlite3_stmt* q = nullptr;
  long long n = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &q, nullptr) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
    n = sqlite3_column_int64(q, 0);
  }
  sqlite3_finalize(q);
  return n;
}

std::string Text(sqlite3* db, const char* sql) {
  sqlite3_stmt* q = nullptr;
  std::string out = "(error)";
  if (sqlite3_prepare_v2(db, sql, -1, &q, nullptr) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
    out = reinterpret_cast<const char*>(sqlite3_column_text(q, 0));
  }
  sqlite3_finalize(q);
  return out;
}

// A database in WAL mode with table t, made through the default VFS.
void CreateTable(const std::string& path) {
  sqlite3* db = Open(path, nullptr);
  REQUIRE(sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, tx INTEGER, data BLOB)",
                       nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
}

// In a forked child (no Catch macros there): the database through this VFS, synchronous=NORMAL,
// no automatic checkpoints (committed pages stay in the WAL, where this VFS writes) and `more`
// pragmas; exits with 2 or 3 if that fails.
sqlite3* ChildOpen(const std::string& path, const std::string& more = "") {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, WalBufferVfs()) != SQLITE_OK) _exit(2);
  sqlite3_busy_timeout(db, 5000);
  const std::string pragmas = "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;" + more;
  if (sqlite3_exec(db, pragmas.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) _exit(3);
  return db;
}

// In a forked child: no Catch macros, a plain result.
bool Exec(sqlite3* db, const std::string& sql) { return sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK; }

// Transaction i inserts i % 7 + 1 rows; every 50th also a 5 MiB row (more than the VFS gathers).
long long RowsAfter(int i) {
  long long n = 0;
  for (int k = 1; k <= i; ++k) n += k % 7 + 1 + (k % 50 == 0 ? 1 : 0);
  return n;
}

std::string Transaction(int i) {
  std::string sql = "BEGIN;";
  for (int r = 0; r < i % 7 + 1; ++r) sql += "INSERT INTO t (tx, data) VALUES (" + std::to_string(i) + ", randomblob(3000));";
  if (i % 50 == 0) sql += "INSERT INTO t (tx, data) VALUES (" + std::to_string(i) + ", randomblob(5 * 1024 * 1024));";
  return sql + "COMMIT;";
}

// A database (table t, WAL mode) in a fresh directory and a forked child that writes to it:
// `body(report)` runs in the child (no Catch macros there) with the write end of a pipe whose read
// end is `report` here; it gets the database's path and the child exits with what it returns.
struct WriterChild {
  TempDir dir;
  std::string path;
  pid_t pid = -1;
  int report = -1;

  WriterChild(const std::string& hint, const std::function<int(const std::string& path, int report)>& body) : dir(hint), path(dir.path + "/t.db") {
    REQUIRE(WalBufferVfs() != nullptr);
    CreateTable(path);
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      _exit(body(path, fds[1]));
    }
    close(fds[1]);
    report = fds[0];
  }
  ~WriterChild() {
    if (pid > 0) Kill();
    close(report);
  }
  // Waits for the child to end; its wait status.
  int Wait() {
    int status = 0;
    waitpid(pid, &status, 0);
    pid = -1;
    return status;
  }
  // SIGKILL: nothing is closed or flushed.
  void Kill() {
    kill(pid, SIGKILL);
    Wait();
  }
};

}  // namespace

TEST_CASE("WAL VFS: a commit is in the file when it returns, read at once by others, kept after a kill", "[store]") {
  WriterChild child("walvfs", [](const std::string& path, int report) {
    sqlite3* db = ChildOpen(path);
    for (int i = 1; i <= 1000; ++i) {
      if (!Exec(db, Transaction(i))) {
        std::fprintf(stderr, "transaction %d: %s\n", i, sqlite3_errmsg(db));
        return 4;
      }
      if (write(report, &i, sizeof i) != sizeof i) return 5;
    }
    return 0;  // not reached: killed first
  });
  sqlite3* reader = Open(child.path, nullptr);  // the default VFS, as another process would
  int last = 0, got = 0;
  while (last < 150 && read(child.report, &got, sizeof got) == sizeof got) {
    last = got;
    // Commit `last` returned in the child: this connection sees at least its rows, whole.
    const long long rows = Count(reader, "SELECT count(*) FROM t");
    INFO("after commit " << last);
    REQUIRE(rows >= RowsAfter(last));
  }
  child.Kill();  // mid-transaction, most likely
  REQUIRE(last == 150);
  sqlite3_close(reader);

  sqlite3* after = Open(child.path, nullptr);
  CHECK(Text(after, "PRAGMA integrity_check") == "ok");
  const long long rows = Count(after, "SELECT count(*) FROM t");
  CHECK(rows >= RowsAfter(last));
  CHECK(Count(after, "SELECT count(*) FROM t WHERE length(data) NOT IN (3000, 5242880)") == 0);
  // Whole transactions only: every transaction present has all its rows.
  CHECK(Count(after, "SELECT count(*) FROM (SELECT tx, count(*) AS n FROM t GROUP BY tx "
                     "HAVING n != tx % 7 + 1 + (tx % 50 = 0))") == 0);
  sqlite3_close(after);
}

TEST_CASE("WAL VFS: a commit that cannot be written fails, and what was committed stays", "[store]") {
  WriterChild child("walvfs-full", [](const std::string& path, int) {
    // Files may not grow past a limit (as a full disk would refuse): the write fails with EFBIG.
    signal(SIGXFSZ, SIG_IGN);
    sqlite3* db = ChildOpen(path);
    if (!Exec(db, "INSERT INTO t (tx, data) VALUES (1, randomblob(3000))")) return 4;
    rlimit old{};
    getrlimit(RLIMIT_FSIZE, &old);
    rlimit small = old;
    small.rlim_cur = 1 << 20;
    if (setrlimit(RLIMIT_FSIZE, &small) != 0) return 5;
    // About 2 MiB of pages: more than the file may now hold. It must fail, as a whole.
    if (Exec(db, "BEGIN; WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 700) "
                 "INSERT INTO t (tx, data) SELECT 2, randomblob(3000) FROM s; COMMIT")) {
      return 6;
    }
    Exec(db, "ROLLBACK");
    if (setrlimit(RLIMIT_FSIZE, &old) != 0) return 7;
    if (!Exec(db, "INSERT INTO t (tx, data) VALUES (3, randomblob(3000))")) return 8;
    return 0;  // without closing
  });
  const int status = child.Wait();
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  sqlite3* after = Open(child.path, nullptr);
  CHECK(Text(after, "PRAGMA integrity_check") == "ok");
  CHECK(Count(after, "SELECT count(*) FROM t WHERE tx = 1") == 1);
  CHECK(Count(after, "SELECT count(*) FROM t WHERE tx = 2") == 0);
  CHECK(Count(after, "SELECT count(*) FROM t WHERE tx = 3") == 1);
  sqlite3_close(after);
}

TEST_CASE("WAL VFS: a transaction that rewrites pages it spilled is whole in the file when its commit returns",
          "[store]") {
  // With a tiny page cache the transaction spills pages to the WAL before its commit, then changes
  // them again: SQLite overwrites those frames in place and, after the commit frame, rewrites the
  // frame headers' checksums (the last of them the commit frame's). All of that must be in the
  // file when the commit returns, or recovery after a kill drops the transaction.
  WriterChild child("walvfs-rewrite", [](const std::string& path, int report) {
    sqlite3* db = ChildOpen(path, "PRAGMA cache_size=10");
    if (!Exec(db, "INSERT INTO t (tx, data) VALUES (0, randomblob(100))")) return 4;
    if (!Exec(db, "BEGIN; WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 400) "
                  "INSERT INTO t (tx, data) SELECT 1, zeroblob(1000) FROM s; "
                  "UPDATE t SET tx = 2, data = randomblob(1000) WHERE tx = 1; COMMIT")) {
      return 5;
    }
    int done = 1;
    if (write(report, &done, sizeof done) != sizeof done) return 6;
    pause();  // no further write: whatever is still gathered stays in memory until the kill
    return 0;
  });
  int done = 0;
  const bool committed = read(child.report, &done, sizeof done) == sizeof done;
  child.Kill();
  REQUIRE(committed);

  sqlite3* after = Open(child.path, nullptr);
  CHECK(Text(after, "PRAGMA integrity_check") == "ok");
  CHECK(Count(after, "SELECT count(*) FROM t WHERE tx = 2") == 400);
  CHECK(Count(after, "SELECT count(*) FROM t WHERE tx = 1") == 0);
  sqlite3_close(after);
}
