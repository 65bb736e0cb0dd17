#include "store/wal_vfs.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

namespace herald {
namespace {

constexpr size_t kMaxGathered = 4 << 20;
// The unix VFS writes at most 128 KiB - 1 bytes per call (it masks the length to 17 bits).
constexpr size_t kMaxWrite = 120 << 10;
constexpr int kFrameHeaderBytes = 24;  // a WAL frame header; pages are at least 512 bytes

sqlite3_vfs* g_real = nullptr;

// A WAL file: our part first, the real file's after it (szOsFile covers both).
struct WalFile {
  sqlite3_file base;  // base.pMethods = &g_wal_methods
  sqlite3_file* real;
  std::vector<char> gathered;
  sqlite3_int64 gathered_at = 0;  // file offset of gathered[0]
  // Where the next appended frame goes: the end of the last write in sequence. A write before it
  // rewrites what is there (a page overwritten in place, checksums rewritten after a commit).
  sqlite3_int64 append_at = 0;
  bool commit_page_next = false;  // the commit frame's header was the last write
};

WalFile* Wal(sqlite3_file* f) { return reinterpret_cast<WalFile*>(f); }

int Flush(WalFile* w) {
  if (w->gathered.empty()) return SQLITE_OK;
  int rc = SQLITE_OK;
  for (size_t done = 0; done < w->gathered.size() && rc == SQLITE_OK; done += kMaxWrite) {
    const size_t n = std::min(kMaxWrite, w->gathered.size() - done);
    rc = w->real->pMethods->xWrite(w->real, w->gathered.data() + done, static_cast<int>(n),
                                   w->gathered_at + static_cast<sqlite3_int64>(done));
  }
  // Written or not, the data leaves the buffer: after an error SQLite writes the frames again
  // (or gives the transaction up) from its own page cache.
  w->gathered.clear();
  w->commit_page_next = false;
  return rc;
}

int Close(sqlite3_file* f) {
  WalFile* w = Wal(f);
  int flushed = Flush(w);
  int rc = w->real->pMethods ? w->real->pMethods->xClose(w->real) : SQLITE_OK;
  w->~WalFile();
  return flushed != SQLITE_OK ? flushed : rc;
}

int Read(sqlite3_file* f, void* p, int amt, sqlite3_int64 off) {
  WalFile* w = Wal(f);
  if (int rc = Flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xRead(w->real, p, amt, off);
}

int Write(sqlite3_file* f, const void* p, int amt, sqlite3_int64 off) {
  WalFile* w = Wal(f);
  const auto* bytes = static_cast<const char*>(p);
  const bool commit_page = w->commit_page_next;
  w->commit_page_next = false;
  if (!w->gathered.empty() && off != w->gathered_at + static_cast<sqlite3_int64>(w->gathered.size())) {
    if (int rc = Flush(w); rc != SQLITE_OK) return rc;
  }
  if (off == 0 || off < w->append_at) {
    // The WAL header (the log starts again from the beginning) or frames rewritten in place:
    // straight to the file, so it is there when SQLite goes on (the last write of a commit can be
    // one). Such a write never continues the gathered run, so that was flushed above.
    int rc = w->real->pMethods->xWrite(w->real, p, amt, off);
    if (off == 0 && rc == SQLITE_OK) w->append_at = amt;
    return rc;
  }
  if (w->gathered.empty()) w->gathered_at = off;
  w->gathered.insert(w->gathered.end(), bytes, bytes + amt);
  w->append_at = off + amt;
  // Bytes 4-7 of a frame header: the database size in pages after a commit, 0 in other frames.
  const bool commit_header = amt == kFrameHeaderBytes && (bytes[4] | bytes[5] | bytes[6] | bytes[7]) != 0;
  if (commit_page || w->gathered.size() >= kMaxGathered) {
    if (int rc = Flush(w); rc != SQLITE_OK) return rc;
  }
  w->commit_page_next = commit_header;
  return SQLITE_OK;
}

int Truncate(sqlite3_file* f, sqlite3_int64 size) {
  WalFile* w = Wal(f);
  if (int rc = Flush(w); rc != SQLITE_OK) return rc;
  w->append_at = std::min(w->append_at, size);
  return w->real->pMethods->xTruncate(w->real, size);
}

int Sync(sqlite3_file* f, int flags) {
  WalFile* w = Wal(f);
  if (int rc = Flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xSync(w->real, flags);
}

int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  WalFile* w = Wal(f);
  if (int rc = Flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xFileSize(w->real, size);
}

int Lock(sqlite3_file* f, int level) { return Wal(f)->real->pMethods->xLock(Wal(f)->real, level); }
int Unlock(sqlite3_file* f, int level) { return Wal(f)->real->pMethods->xUnlock(Wal(f)->real, level); }
int CheckReservedLock(sqlite3_file* f, int* out) {
  return Wal(f)->real->pMethods->xCheckReservedLock(Wal(f)->real, out);
}
int FileControl(sqlite3_file* f, int op, void* arg) {
  WalFile* w = Wal(f);
  if (int rc = Flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xFileControl(w->real, op, arg);
}
int SectorSize(sqlite3_file* f) { return Wal(f)->real->pMethods->xSectorSize(Wal(f)->real); }
int DeviceCharacteristics(sqlite3_file* f) {
  return Wal(f)->real->pMethods->xDeviceCharacteristics(Wal(f)->real);
}

// Version 1: a WAL file has no shared memory and is not memory-mapped.
const sqlite3_io_methods g_wal_methods = {
    1,        Close,  Read,     Write,           Truncate,          Sync,       FileSize, Lock,
    Unlock,   CheckReservedLock, FileControl, SectorSize, DeviceCharacteristics,
    nullptr,  nullptr, nullptr, nullptr,         nullptr,           nullptr,
};

int Open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  if (!(flags & SQLITE_OPEN_WAL)) return g_real->xOpen(g_real, name, f, flags, out_flags);  // as it is
  auto* w = new (f) WalFile();
  w->base.pMethods = nullptr;
  w->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + sizeof(WalFile));
  std::memset(w->real, 0, static_cast<size_t>(g_real->szOsFile));
  int rc = g_real->xOpen(g_real, name, w->real, flags, out_flags);
  if (rc != SQLITE_OK) {
    if (w->real->pMethods) w->real->pMethods->xClose(w->real);
    w->~WalFile();
    f->pMethods = nullptr;
    return rc;
  }
  w->base.pMethods = &g_wal_methods;
  return SQLITE_OK;
}

int Delete(sqlite3_vfs*, const char* name, int sync_dir) { return g_real->xDelete(g_real, name, sync_dir); }
int Access(sqlite3_vfs*, const char* name, int flags, int* out) { return g_real->xAccess(g_real, name, flags, out); }
int FullPathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return g_real->xFullPathname(g_real, name, n, out);
}
void* DlOpen(sqlite3_vfs*, const char* name) { return g_real->xDlOpen(g_real, name); }
void DlError(sqlite3_vfs*, int n, char* out) { g_real->xDlError(g_real, n, out); }
void (*DlSym(sqlite3_vfs*, void* h, const char* sym))(void) { return g_real->xDlSym(g_real, h, sym); }
void DlClose(sqlite3_vfs*, void* h) { g_real->xDlClose(g_real, h); }
int Randomness(sqlite3_vfs*, int n, char* out) { return g_real->xRandomness(g_real, n, out); }
int Sleep(sqlite3_vfs*, int us) { return g_real->xSleep(g_real, us); }
int CurrentTime(sqlite3_vfs*, double* out) { return g_real->xCurrentTime(g_real, out); }
int GetLastError(sqlite3_vfs*, int n, char* out) { return g_real->xGetLastError(g_real, n, out); }
int CurrentTimeInt64(sqlite3_vfs*, sqlite3_int64* out) { return g_real->xCurrentTimeInt64(g_real, out); }

}  // namespace

const char* WalBufferVfs() {
  static sqlite3_vfs vfs;
  static const char* name = [] () -> const char* {
    g_real = sqlite3_vfs_find(nullptr);
    if (!g_real || g_real->iVersion < 2 || !g_real->xCurrentTimeInt64) return nullptr;
    vfs = {};
    vfs.iVersion = 2;
    // Big enough for either: a WAL file (ours + the real one) or any other file (the real one).
    vfs.szOsFile = static_cast<int>(sizeof(WalFile)) + g_real->szOsFile;
    vfs.mxPathname = g_real->mxPathname;
    vfs.zName = "herald-walbuf";
    vfs.xOpen = Open;
    vfs.xDelete = Delete;
    vfs.xAccess = Access;
    vfs.xFullPathname = FullPathname;
    vfs.xDlOpen = DlOpen;
    vfs.xDlError = DlError;
    vfs.xDlSym = DlSym;
    vfs.xDlClose = DlClose;
    vfs.xRandomness = Randomness;
    vfs.xSleep = Sleep;
    vfs.xCurrentTime = CurrentTime;
    vfs.xGetLastError = GetLastError;
    vfs.xCurrentTimeInt64 = CurrentTimeInt64;
    return sqlite3_vfs_register(&vfs, /*makeDflt=*/0) == SQLITE_OK ? vfs.zName : nullptr;
  }();
  return name;
}

}  // namespace herald
