// Engine decisions per second on one thread with a warm preference cache: decision rules,
// template rendering, trace and job serialisation, no broker and no store writes.
// Baseline in the same run: serialising one ready-made job per recipient (the least any engine
// must do). Run: build/bench_engine [seconds] [recipients per event, default 500; 1 is
// bench_e2e's events, where what is done once per event is not shared]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "broker/options.h"
#include "engine/notification_engine.h"
#include "engine/templates.h"

using namespace herald;
using Steady = std::chrono::steady_clock;

int main(int argc, char** argv) {
  double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  const int per_event = argc > 2 ? std::atoi(argv[2]) : 500;
  if (seconds <= 0 || per_event < 1 || per_event > 10000) {
    std::fprintf(stderr, "usage: bench_engine [seconds > 0] [recipients per event, 1 to 10000]\n");
    return 2;
  }
  Config config = LoadConfig(std::string(HERALD_SOURCE_DIR) + "/config/herald.yaml", {});
  CheckTemplates(config);
  std::string dir = "/tmp/herald-bench-" + std::to_string(::getpid());
  std::unique_ptr<Store> store;
  if (!OpenStore("sqlite://" + dir + "/herald.db", store).ok()) return 1;

  const int users = 10000;
  std::vector<std::string> ids;
  for (int i = 0; i < users; ++i) {
    ids.push_back("user-" + std::to_string(100000 + i));
    Preferences p = DefaultPreferences(ids.back());
    p.locale = i % 2 ? "de" : "en";
    p.timezone = i % 3 ? "Europe/Berlin" : "America/New_York";
    if (i % 2 == 0) {  // half can be reached by push and e-mail, the rest in-app only
      p.contacts.email = ids.back() + "@example.org";
      p.contacts.push.push_back(PushContact{"fcm", "", "", "", "token-" + ids.back()});
    }
    if (i % 10 == 0) p.quiet_hours = QuietHours{0, 23 * 60 + 59};
    store->PutPreferences(p);
  }
  PreferenceCache cache(*store, users * 2, Millis(3600000), SystemClock::Instance());
  std::vector<PreferenceCache::Entry> warm;
  cache.GetMany(ids, warm);
  LocalPresence presence(Millis(60000));
  for (int i = 0; i < users; i += 4) presence.Heartbeat(ids[i], true, SystemClock::Instance().Now());
  config.engine.budget_per_hour = 1000000;  // measure decisions, not the budget cut-off
  broker::Publisher unused(broker::PublisherOptionsFor(config, "bench"));  // never started
  NotificationEngine engine(config, *store, cache, presence, unused, SystemClock::Instance());

  Event event;
  event.id = "evt-bench";
  event.source = "/bench";
  event.type = "billing.invoice.paid";
  event.time = SystemClock::Instance().Now();
  event.vars = {{"amount", "12.00 EUR"}, {"invoice", "INV-2026-0042"}};

  // Herald: decide + render + serialise, in batches as the engine does.
  NotificationEngine::Batch batch;
  size_t jobs = 0;
  long decisions = 0;
  std::vector<std::string> chunk;
  auto start = Steady::now();
  auto end = start + std::chrono::duration<double>(seconds);
  while (Steady::now() < end) {
    for (int i = 0; i + per_event <= users; i += per_event) {
      chunk.assign(ids.begin() + i, ids.begin() + i + per_event);
      engine.BuildBatch(event, chunk, SystemClock::Instance().Now(), batch);
      jobs += batch.jobs.size();
      decisions += per_event;
    }
  }
  double herald_rate = decisions / std::chrono::duration<double>(Steady::now() - start).count();

  // Baseline: one ready-made job serialised per recipient.
  nlohmann::json job = nlohmann::json::parse(batch.jobs.front().body);
  long serialised = 0;
  size_t bytes = 0;
  start = Steady::now();
  end = start + std::chrono::duration<double>(seconds);
  while (Steady::now() < end) {
    for (int i = 0; i < 500; ++i) bytes += job.dump().size();
    serialised += 500;
  }
  double base_rate = serialised / std::chrono::duration<double>(Steady::now() - start).count();

  std::printf("| measure | per second | Herald / baseline |\n|---|---|---|\n");
  std::printf("| engine decisions (decide + render + trace + jobs), 1 thread, %d per event | %.0f | %.2f |\n",
              per_event, herald_rate, herald_rate / base_rate);
  std::printf("| baseline: serialise one job per recipient | %.0f | 1.00 |\n", base_rate);
  std::printf("\njobs per decision: %.2f; %zu bytes per serialised job\n", double(jobs) / decisions,
              bytes / static_cast<size_t>(serialised));
  std::string cleanup = "rm -rf " + dir;
  return std::system(cleanup.c_str()) == 0 ? 0 : 1;
}
