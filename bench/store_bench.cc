// The store's share of one event: everything the store writer applies for an event with one
// recipient delivered in-app and by webhook, in group-commit transactions as heraldd makes them
// under load. Per event: the engine's write (de-duplication record + trace), the in-app worker's
// (inbox entry + attempt), the webhook worker's (attempt), the engine's finish; plus the webhook worker's
// sent check on the reader connection.
// Baseline in the same run: the same number of transactions on a raw SQLite connection with the
// same settings, one row per event (an autoincrement key and the event's bytes), the least any
// durable pipeline writes.
// Run: build/bench_store [seconds] [users] [writes per transaction]
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "core/ids.h"
#include "store/store.h"

using namespace herald;
using Steady = std::chrono::steady_clock;

namespace {

constexpr const char* kDecision =
    R"({"channels":[{"channel":"in_app","decision":"send","reason":"the user is active in the app"},)"
    R"({"channel":"webhook","decision":"send","reason":"the user has a webhook"},{"channel":"push",)"
    R"("decision":"skip","reason":"no push contact"},{"channel":"email","decision":"skip","reason":)"
    R"("the user turned e-mail off for this category"}],"category":"social","priority":"normal",)"
    R"("quiet_hours":false,"active":true})";

struct Run {
  long events = 0;
  double seconds = 0;
  double Rate() const { return events / seconds; }
};

std::string EventId(std::mt19937_64& rng) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "evt-%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

Run Herald(Store& store, double seconds, int users, size_t per_tx) {
  std::mt19937_64 rng(7);
  std::vector<StoreWrite> writes;
  std::vector<StoreWrite*> ptrs;
  Run run;
  const auto start = Steady::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  // Events' writes interleave as they do under load: a transaction holds the engine's write of
  // newer events beside the workers' writes and the finish of older ones.
  struct Pending {
    std::string event_id, user, nid;
    SystemTime begun;
  };
  std::vector<Pending> pending;
  while (Steady::now() < end) {
    writes.clear();
    pending.clear();
    const size_t events = std::max<size_t>(1, per_tx / 4);
    const SystemTime now = SystemClock::Instance().Now();
    for (size_t i = 0; i < events; ++i) {
      Pending p{EventId(rng), "user-" + std::to_string(100000 + rng() % users), "", now};
      p.nid = NotificationId(p.event_id, p.user, now);
      StoreWrite& e = writes.emplace_back();
      e.begin_event = p.event_id;
      e.begin_now = now;
      e.begin_expires_at = now + std::chrono::hours(24);
      e.traces.push_back(TraceRecord{p.nid, p.event_id, "social.post.liked", p.user, now, kDecision});
      pending.push_back(std::move(p));
    }
    for (const Pending& p : pending) {
      for (const char* channel : {"in_app", "webhook"}) {
        const std::string did = DeliveryId(p.event_id, p.user, channel, p.begun);
        bool sent = false;
        if (channel[0] == 'w') store.WasSent(did, sent);  // the in-app write needs no sent check
        StoreWrite& w = writes.emplace_back();
        if (channel[0] == 'i') {
          InboxEntry& in = w.inbox.emplace();
          in.notification_id = p.nid;
          in.user_id = p.user;
          in.event_id = p.event_id;
          in.event_type = "social.post.liked";
          in.title = "Ada liked your post";
          in.body = "Ada Lovelace liked \"Notes on the Analytical Engine\"";
          in.data_json = R"({"actor":"Ada Lovelace","post":"Notes on the Analytical Engine"})";
          in.created_at = p.begun;
        }
        w.attempt = DeliveryAttempt{p.nid, did, channel, 1, "sent", "", now, 3};
      }
      writes.emplace_back().finish_event = p.event_id;
    }
    ptrs.clear();
    for (StoreWrite& w : writes) ptrs.push_back(&w);
    // As the group commit cuts them: per_tx writes per transaction.
    for (size_t i = 0; i < ptrs.size(); i += per_tx) {
      std::vector<StoreWrite*> tx(ptrs.begin() + i, ptrs.begin() + std::min(ptrs.size(), i + per_tx));
      store.ApplyWrites(tx);
      for (StoreWrite* w : tx) {
        if (!w->status.ok()) {
          std::fprintf(stderr, "write failed: %s\n", w->status.message().c_str());
          std::exit(1);
        }
      }
    }
    run.events += static_cast<long>(events);
  }
  run.seconds = std::chrono::duration<double>(Steady::now() - start).count();
  return run;
}

void Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
    std::exit(1);
  }
}

Run Baseline(const std::string& path, double seconds, size_t per_tx) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) std::exit(1);
  Exec(db, "PRAGMA journal_mode=WAL");
  Exec(db, "PRAGMA synchronous=NORMAL");
  Exec(db, "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)");
  sqlite3_stmt* insert = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO events (body) VALUES (?1)", -1, &insert, nullptr);
  const std::string body = std::string(kDecision) + std::string(160, 'x');  // about an event and its job
  Run run;
  const size_t events = std::max<size_t>(1, per_tx / 4);
  const auto start = Steady::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  while (Steady::now() < end) {
    // The same number of transactions as Herald's run: one per `events` events.
    Exec(db, "BEGIN IMMEDIATE");
    for (size_t i = 0; i < events; ++i) {
      sqlite3_bind_blob(insert, 1, body.data(), static_cast<int>(body.size()), SQLITE_STATIC);
      if (sqlite3_step(insert) != SQLITE_DONE) std::exit(1);
      sqlite3_reset(insert);
    }
    Exec(db, "COMMIT");
    run.events += static_cast<long>(events);
  }
  run.seconds = std::chrono::duration<double>(Steady::now() - start).count();
  sqlite3_finalize(insert);
  sqlite3_close(db);
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 5.0;
  const int users = argc > 2 ? std::atoi(argv[2]) : 100000;
  const size_t per_tx = argc > 3 ? static_cast<size_t>(std::atoi(argv[3])) : 32;
  if (seconds <= 0 || users <= 0 || per_tx < 4) {
    std::fprintf(stderr, "usage: bench_store [seconds > 0] [users > 0] [writes per transaction >= 4]\n");
    return 2;
  }
  const std::string dir = "/tmp/herald-store-bench-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  Run base, herald;
  {
    std::unique_ptr<Store> store;
    if (Status s = OpenStore("sqlite://" + dir + "/herald.db", store); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.message().c_str());
      return 1;
    }
    Herald(*store, seconds / 5, users, per_tx);  // warm: tables and indexes past their first pages
    herald = Herald(*store, seconds, users, per_tx);
  }
  base = Baseline(dir + "/baseline.db", seconds, per_tx);
  std::filesystem::remove_all(dir);
  std::printf("writes per transaction %zu, %d users, %.1f s each\n", per_tx, users, seconds);
  std::printf("| | events/s | us per event | time x baseline |\n|---|---|---|---|\n");
  std::printf("| baseline (one row per event) | %.0f | %.1f | 1.00 |\n", base.Rate(), 1e6 / base.Rate());
  std::printf("| Herald's writes | %.0f | %.1f | %.2f |\n", herald.Rate(), 1e6 / herald.Rate(),
              base.Rate() / herald.Rate());
  return 0;
}
