// bench_e2e: Herald end to end against a raw-broker baseline, on one private RabbitMQ node.
//
// Starts a broker (scripts/broker.sh), an HTTP sink, heraldd (roles engine,worker) in one vhost
// and the baseline relay (bench/e2e/relay.h) in another, creates the users, then measures both
// systems phase by phase, one after the other, so noise from the shared machine hits both alike:
//   sustained throughput (closed loop: at most --window events published and not yet delivered),
//   latency at 25 / 50 / 75 % of Herald's sustained rate (open loop, the same offered rate for both),
//   CPU per 1,000 events (heraldd or relay, and the broker) over the sustained window,
//   peak RSS, and fan-out of one event to 10,000 and 100,000 recipients.
// Before each phase it rolls the node's quorum-queue WAL over, so RabbitMQ's own roll-over (1-2 s
// of stalls on the node) never falls inside one system's phase.
// Writes PREFIX.json and PREFIX.md (a markdown table with ratios Herald / baseline).
// See bench/README.md for the method. Run: build/bench_e2e [--quick] [options]; --help lists them.
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include "bench/e2e/procs.h"
#include "bench/e2e/recorder.h"
#include "bench/e2e/relay.h"
#include "bench/e2e/sink.h"
#include "bench/e2e/tags.h"
#include "broker/publisher.h"
#include "broker/topology.h"
#include "core/config.h"
#include "core/time.h"
#include "engine/preferences.h"
#include "store/store.h"

namespace herald::bench {
namespace {

using nlohmann::json;
using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::atomic<bool> g_interrupted{false};
void OnSignal(int) { g_interrupted = true; }

struct Options {
  bool quick = false;
  long users = 100000;
  double sustained_s = 20;
  double latency_s = 12;      // counted per system and latency level, over all its turns
  int turns = 3;              // latency: each level in this many turns per system, taken alternately
  int sustained_turns = 3;    // sustained: this many closed-loop turns per system, taken alternately
  double warm_s = 2;          // not counted at the start of sustained phases
  double turn_warm_s = 1;     // not counted at the start of each latency turn
  long window = 4000;         // closed loop: events published and not yet fully delivered
  long warmup_events = 3000;
  std::vector<long> fanouts = {10000, 100000};
  std::vector<double> loads = {0.25, 0.50, 0.75};
  std::string broker_dir;     // reuse a node started by scripts/broker.sh (else start one)
  std::string out = "bench_e2e";
  std::string heraldd;        // default: next to this program
  bool keep = false;
  size_t job_bytes = 480;     // baseline job size: about what Herald's bench.ping jobs weigh
  int webhook_concurrency = 8;
  std::string queue_type = "quorum";
  std::string only;           // "herald" or "baseline": measure one system (for profiling; no table)
  std::vector<double> rates;  // latency phases at these events/s instead of fractions of Herald's rate
  std::string samples_dir;    // each latency turn's samples as CSV, to find when latency rose
};

void Usage() {
  std::puts(
      "usage: bench_e2e [--quick] [--users N] [--seconds S] [--latency-seconds S] [--window N]\n"
      "                 [--fanout N,N] [--broker-dir DIR] [--out PREFIX] [--heraldd PATH] [--keep]\n"
      "                 [--queue-type quorum|classic] [--job-bytes N] [--webhook-concurrency N]\n"
      "                 [--only herald|baseline] [--rates R,R,...] [--turns N] [--sustained-turns N]\n"
      "                 [--samples DIR]\n"
      "  --quick           20,000 users, 6 s sustained, 5 s per latency level, fan-out 10,000 only\n"
      "  --broker-dir DIR  use the node already running from DIR (scripts/broker.sh start DIR PORT)\n"
      "  --out PREFIX      write PREFIX.json and PREFIX.md (default bench_e2e)\n"
      "  --fanout N,N      fan-out phases to N recipients (0: none)\n"
      "  --turns N         each latency level in N alternating turns per system (default 3)\n"
      "  --sustained-turns N  the sustained phase in N alternating turns per system (default 3;\n"
      "                    --seconds is the time counted per system, over all its turns)\n"
      "  --samples DIR     write every latency turn's deliveries to DIR/SYSTEM-PHASE.csv\n"
      "                    (send time in ms since the turn began and Unix ms, channel, latency in us)");
}

// This program's own file, whatever it is called (it runs the relay as a child of itself).
std::string SelfExe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "bench_e2e";
}

std::string SelfDir() {
  const std::string p = SelfExe();
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string UserId(long i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "u-%06ld", i);
  return buf;
}

// ---- broker -------------------------------------------------------------------------------------

struct Broker {
  std::string dir;
  int port = 0;
  bool owned = false;
  pid_t beam = -1;
};

long Management(const Broker& b, const std::string& method, const std::string& path, const std::string& body) {
  CURL* curl = curl_easy_init();
  std::string url = "http://127.0.0.1:" + std::to_string(b.port + 1) + path;
  curl_slist* headers = curl_slist_append(nullptr, "content-type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl, CURLOPT_USERPWD, "guest:guest");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_PROXY, "");
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, +[](char*, size_t s, size_t n, void*) { return s * n; });
  if (!body.empty()) curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  long status = 0;
  if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return status;
}

bool FreshVhost(const Broker& b, const std::string& vhost) {
  Management(b, "DELETE", "/api/vhosts/" + vhost, "");
  long s1 = Management(b, "PUT", "/api/vhosts/" + vhost, "{}");
  long s2 = Management(b, "PUT", "/api/permissions/" + vhost + "/guest",
                       R"({"configure":".*","write":".*","read":".*"})");
  return (s1 == 201 || s1 == 204) && (s2 == 201 || s2 == 204);
}

// ---- the users ----------------------------------------------------------------------------------

// Creates the store's schema through the Store, then writes users and the fan-out topic in one
// transaction each (the Store writes one row per transaction, which would take minutes here).
bool CreateUsers(const std::string& db_path, long users, long topic_size, const std::string& hook_base,
                 std::string& error) {
  {
    std::unique_ptr<Store> store;
    if (Status s = OpenStore("sqlite://" + db_path, store); !s.ok()) {
      error = s.message();
      return false;
    }
  }
  sqlite3* db = nullptr;
  if (sqlite3_open(db_path.c_str(), &db) != SQLITE_OK) {
    error = "cannot open " + db_path;
    return false;
  }
  auto exec = [&](const char* sql) { return sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK; };
  bool ok = exec("BEGIN");
  sqlite3_stmt* prefs = nullptr;
  sqlite3_stmt* topic = nullptr;
  ok = ok && sqlite3_prepare_v2(db, "INSERT INTO preferences (user_id, doc, updated_at) VALUES (?1, ?2, ?3)", -1,
                                &prefs, nullptr) == SQLITE_OK;
  ok = ok && sqlite3_prepare_v2(db, "INSERT INTO topic_subscribers (topic, user_id) VALUES ('bench-all', ?1)", -1,
                                &topic, nullptr) == SQLITE_OK;
  const int64_t now_ms = NowMicros() / 1000;
  for (long i = 0; ok && i < users; ++i) {
    Preferences p = DefaultPreferences(UserId(i));
    p.contacts.webhook = hook_base + p.user_id;
    std::string doc = PreferencesToJson(p).dump();
    sqlite3_bind_text(prefs, 1, p.user_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(prefs, 2, doc.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(prefs, 3, now_ms);
    ok = sqlite3_step(prefs) == SQLITE_DONE;
    sqlite3_reset(prefs);
    if (ok && i < topic_size) {
      sqlite3_bind_text(topic, 1, p.user_id.c_str(), -1, SQLITE_TRANSIENT);
      ok = sqlite3_step(topic) == SQLITE_DONE;
      sqlite3_reset(topic);
    }
  }
  if (!ok) error = sqlite3_errmsg(db);
  sqlite3_finalize(prefs);
  sqlite3_finalize(topic);
  ok = ok && exec("COMMIT");
  sqlite3_close(db);
  return ok;
}

std::string HeraldConfig(const Options& o, const Broker& b, const std::string& vhost, const std::string& db_path) {
  std::ostringstream y;
  y << "# Written by bench_e2e: Herald as shipped (config/herald.yaml defaults) with the webhook channel\n"
       "# unthrottled and allowed to reach the benchmark's loopback sink, and one event type.\n"
       "broker:\n"
       "  url: amqp://guest:guest@127.0.0.1:" << b.port << "/" << vhost << "\n"
       "  queue_type: " << o.queue_type << "\n"
       "store:\n"
       "  url: sqlite://" << db_path << "\n"
       "channels:\n"
       "  in_app: { enabled: true }\n"
       "  push: { enabled: false }\n"
       "  email: { enabled: false }\n"
       "  webhook:\n"
       "    enabled: true\n"
       "    rate: 0\n"
       "    concurrency: " << o.webhook_concurrency << "\n"
       "    secret: bench-secret\n"
       "    allow_private_targets: true\n"
       "event_types:\n"
       "  bench.ping:\n"
       "    category: bench\n"
       "    channels: [in_app, webhook]\n"
       "    required_vars: [n, ph, sent_us]\n"
       "    templates:\n"
       "      in_app:\n"
       "        en: { title: \"Bench event {{n}}\", body: \"Event {{n}} of phase {{ph}}.\" }\n"
       "log:\n"
       "  level: warn\n"
       "shutdown_grace: 10s\n";
  return y.str();
}

// ---- the two systems ----------------------------------------------------------------------------

struct System {
  std::string name;   // "herald" or "baseline"
  std::string vhost;
  pid_t pid = -1;     // heraldd or the relay
  std::string log;
  std::unique_ptr<broker::Publisher> load;  // the load generator's connection into the vhost
  std::atomic<int64_t> publish_failures{0};
  json result = json::object();
};

struct Bench {
  Options o;
  Broker broker;
  Recorder rec;
  std::string run_id;
  int next_phase = 1;
  std::string topic_body_cache;

  std::string EventBody(const std::string& id, int64_t n, int phase, int64_t sent_us, long first_user, long recipients,
                        bool topic) {
    std::string b = "{\"specversion\":\"1.0\",\"id\":\"" + id + "\",\"source\":\"/bench\",\"type\":\"bench.ping\","
                    "\"time\":\"" + FormatRfc3339(SystemTime(std::chrono::microseconds(sent_us))) + "\",\"data\":{";
    if (topic) {
      b += "\"topic\":\"bench-all\"";
    } else {
      b += "\"recipients\":[";
      for (long r = 0; r < recipients; ++r) {
        if (r) b += ',';
        b += '"' + UserId((first_user + r) % o.users) + '"';
      }
      b += ']';
    }
    b += ",\"vars\":{\"n\":\"" + std::to_string(n) + "\",\"ph\":\"" + std::to_string(phase) + "\",\"sent_us\":\"" +
         std::to_string(sent_us) + "\"}}}";
    return b;
  }

  void Publish(System& s, int phase, int64_t n, int64_t sent_us, long first_user, long recipients = 1,
               bool topic = false) {
    broker::Message m;
    m.exchange = broker::kEventsExchange;
    m.routing_key = "bench.ping";
    m.message_id = "e2e-" + run_id + "-" + std::to_string(phase) + "-" + std::to_string(n);
    m.content_type = "application/cloudevents+json";
    m.body = EventBody(m.message_id, n, phase, sent_us, first_user, recipients, topic);
    m.headers = {{kHeaderN, n}, {kHeaderPhase, phase}, {kHeaderSent, sent_us}};
    if (recipients > 1) m.headers[kHeaderFanout] = recipients;
    System* sys = &s;
    s.load->Publish(std::move(m), [sys](const Status& st) {
      if (!st.ok()) ++sys->publish_failures;
    });
  }

  struct Cpu {
    double system = 0, broker = 0, self = 0, machine = 0;
    long long switches = 0;  // context switches of the system's threads
    std::map<std::string, double> threads;  // CPU seconds of the system's threads, by name
    long long written = 0, broker_written = 0;  // bytes written to storage
  };
  Cpu Snap(const System& s) {
    return {CpuSeconds(s.pid),      CpuSeconds(broker.beam),   CpuSeconds(::getpid()), MachineBusySeconds(),
            ContextSwitches(s.pid), ThreadCpuSeconds(s.pid), WrittenBytes(s.pid),   WrittenBytes(broker.beam)};
  }

  // Waits until `events` events of the phase are complete; false on timeout or interrupt.
  bool Drain(int64_t events, std::chrono::seconds timeout) {
    auto deadline = Steady::now() + timeout;
    while (rec.Completed() < events) {
      if (g_interrupted || Steady::now() >= deadline) return false;
      std::this_thread::sleep_for(2ms);
    }
    return true;
  }

  static json LatencyJson(std::vector<int64_t> v) {
    std::sort(v.begin(), v.end());
    auto ms = [&](double q) { return v.empty() ? -1.0 : Quantile(v, q, true) / 1000.0; };
    return {{"count", v.size()},      {"p50_ms", ms(0.5)},     {"p90_ms", ms(0.9)}, {"p99_ms", ms(0.99)},
            {"p999_ms", ms(0.999)}, {"max_ms", ms(1.0)}};
  }

  // Closed loop: keeps at most `window` events published and not complete, for `seconds` (or
  // until `max_events` were published). Measures completions and CPU between warm_s and the end.
  json ClosedLoop(System& s, const std::string& what, double seconds, long max_events) {
    const int phase = next_phase++;
    rec.Begin(phase, 2);
    const auto t0 = Steady::now();
    const auto t_end = t0 + std::chrono::duration<double>(seconds);
    const auto t_a = t0 + std::chrono::duration<double>(std::min(o.warm_s, seconds / 4));
    bool sampled = false;
    int64_t n = 0, done_a = 0;
    Cpu cpu_a;
    Steady::time_point at_a;
    while (!g_interrupted && Steady::now() < t_end && (max_events <= 0 || n < max_events)) {
      if (!sampled && Steady::now() >= t_a) {
        done_a = rec.Completed();
        cpu_a = Snap(s);
        at_a = Steady::now();
        sampled = true;
      }
      if (n - rec.Completed() >= o.window) {
        std::this_thread::sleep_for(100us);
        continue;
      }
      s.load->WaitForRoom(2000);
      Publish(s, phase, n, NowMicros(), n * 7919);
      ++n;
    }
    const auto at_b = Steady::now();
    const int64_t done_b = rec.Completed();
    const Cpu cpu_b = Snap(s);
    if (!sampled) {
      at_a = t0;
      done_a = 0;
    }
    bool drained = Drain(n, 180s);
    double drain_s = std::chrono::duration<double>(Steady::now() - at_b).count();
    PhaseData d = rec.End();
    const double window_s = std::chrono::duration<double>(at_b - at_a).count();
    const double events = static_cast<double>(done_b - done_a);
    json r = {{"phase", what},
              {"published", n},
              {"completed", d.completed},
              {"drained", drained},
              {"drain_s", drain_s},
              {"window_s", window_s},
              {"events_in_window", done_b - done_a},
              {"events_per_s", events / window_s},
              {"deliveries_per_s", 2 * events / window_s},
              {"duplicates", d.duplicates},
              {"strays", d.strays}};
    if (events > 0 && sampled) {
      r["cpu_s_per_1000_events"] = {{"system", (cpu_b.system - cpu_a.system) / events * 1000},
                                    {"broker", (cpu_b.broker - cpu_a.broker) / events * 1000},
                                    {"bench_tool", (cpu_b.self - cpu_a.self) / events * 1000}};
      r["context_switches_per_event"] = static_cast<double>(cpu_b.switches - cpu_a.switches) / events;
      if (cpu_a.written >= 0 && cpu_b.written >= 0 && cpu_a.broker_written >= 0 && cpu_b.broker_written >= 0) {
        r["disk_kb_written_per_event"] = {{"system", static_cast<double>(cpu_b.written - cpu_a.written) / events / 1024},
                                          {"broker", static_cast<double>(cpu_b.broker_written - cpu_a.broker_written) / events / 1024}};
      }
      json by_thread = json::object();
      for (const auto& [name, after] : cpu_b.threads) {
        auto before = cpu_a.threads.find(name);
        double used = after - (before == cpu_a.threads.end() ? 0.0 : before->second);
        if (used > 0) by_thread[name] = used / events * 1e6;
      }
      r["cpu_us_per_event_by_thread"] = by_thread;
      double ours = (cpu_b.system - cpu_a.system) + (cpu_b.broker - cpu_a.broker) + (cpu_b.self - cpu_a.self);
      r["cpu_cores_busy"] = {{"system", (cpu_b.system - cpu_a.system) / window_s},
                             {"broker", (cpu_b.broker - cpu_a.broker) / window_s},
                             {"bench_tool", (cpu_b.self - cpu_a.self) / window_s},
                             {"other_processes", std::max(0.0, (cpu_b.machine - cpu_a.machine) - ours) / window_s}};
    }
    return r;
  }

  // Open loop at `rate` events/s for `warm` + `seconds`; each event is stamped with the time it
  // was due, so a late publisher shows up as latency rather than hiding it. The latencies of events
  // due after `warm` are appended to `counted` (in-app, webhook).
  json OpenLoop(System& s, double rate, double warm, double seconds, std::vector<int64_t> (&counted)[kChannels]) {
    seconds += warm;
    const int phase = next_phase++;
    rec.Begin(phase, 2);
    const int64_t sys0 = NowMicros();
    const auto t0 = Steady::now();
    const auto total = static_cast<int64_t>(rate * seconds);
    Cpu cpu_a = Snap(s);
    int64_t n = 0;
    while (!g_interrupted && n < total) {
      const auto due = t0 + std::chrono::duration_cast<Steady::duration>(std::chrono::duration<double>(n / rate));
      if (Steady::now() < due) std::this_thread::sleep_until(due);
      auto offset = std::chrono::duration_cast<std::chrono::microseconds>(due - t0).count();
      Publish(s, phase, n, sys0 + offset, n * 7919);
      ++n;
    }
    const double publish_s = std::chrono::duration<double>(Steady::now() - t0).count();
    bool drained = Drain(n, 180s);
    Cpu cpu_b = Snap(s);
    PhaseData d = rec.End();
    const int64_t from = sys0 + static_cast<int64_t>(warm * 1e6);
    if (!o.samples_dir.empty()) {
      const std::string file = o.samples_dir + "/" + s.name + "-" + std::to_string(phase) + ".csv";
      std::ofstream csv(file);
      if (!csv) std::fprintf(stderr, "bench_e2e: cannot write %s\n", file.c_str());
      else csv << "sent_ms,sent_unix_ms,channel,latency_us\n";
      for (int c = 0; csv && c < kChannels; ++c) {
        for (const auto& [sent, lat] : d.latency[c]) {
          csv << (sent - sys0) / 1000 << ',' << sent / 1000 << (c == kInApp ? ",in_app," : ",webhook,") << lat << "\n";
        }
      }
    }
    std::vector<int64_t> mine[kChannels];
    for (int c = 0; c < kChannels; ++c) {
      for (const auto& [sent, lat] : d.latency[c]) {
        if (sent >= from) mine[c].push_back(lat);
      }
      counted[c].insert(counted[c].end(), mine[c].begin(), mine[c].end());
    }
    json r = {{"offered_events_per_s", rate},
              {"published", n},
              {"publish_s", publish_s},
              {"completed", d.completed},
              {"drained", drained},
              {"duplicates", d.duplicates},
              {"strays", d.strays},
              {"in_app", LatencyJson(std::move(mine[kInApp]))},
              {"webhook", LatencyJson(std::move(mine[kWebhook]))}};
    if (d.completed > 0) {
      r["cpu_s_per_1000_events"] = {{"system", (cpu_b.system - cpu_a.system) / static_cast<double>(d.completed) * 1000},
                                    {"broker", (cpu_b.broker - cpu_a.broker) / static_cast<double>(d.completed) * 1000}};
      r["context_switches_per_event"] =
          static_cast<double>(cpu_b.switches - cpu_a.switches) / static_cast<double>(d.completed);
    }
    return r;
  }

  // One event to `recipients` users (a list up to 10,000, the topic beyond); time from publish
  // until the last delivery.
  json Fanout(System& s, long recipients) {
    const int phase = next_phase++;
    rec.Begin(phase, 2 * recipients);
    const bool topic = recipients > 10000;
    const int64_t sent = NowMicros();
    Publish(s, phase, 0, sent, 0, recipients, topic);
    const auto t0 = Steady::now();
    bool complete = Drain(1, 600s);
    double observed_s = std::chrono::duration<double>(Steady::now() - t0).count();
    PhaseData d = rec.End();
    int64_t last = std::max(d.last_arrival_us[kInApp], d.last_arrival_us[kWebhook]);
    auto secs = [&](int64_t at) { return at > 0 ? static_cast<double>(at - sent) / 1e6 : -1.0; };
    return {{"recipients", recipients},
            {"via", topic ? "topic" : "recipient list"},
            {"complete", complete},
            {"deliveries", d.deliveries[kInApp] + d.deliveries[kWebhook]},
            {"last_delivery_s", secs(last)},
            {"last_in_app_s", secs(d.last_arrival_us[kInApp])},
            {"last_webhook_s", secs(d.last_arrival_us[kWebhook])},
            {"observed_s", observed_s},
            {"duplicates", d.duplicates}};
  }
};

// Polls Herald's inbox (read-only; WAL lets it read while heraldd writes) and reports each new
// row. created_at has millisecond resolution: in-app latencies are measured to the millisecond
// below (the baseline's in-app arrivals are truncated the same way).
void PollInbox(const std::string& db_path, Recorder& rec, std::atomic<bool>& stop) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::fprintf(stderr, "bench_e2e: cannot open %s read-only\n", db_path.c_str());
    return;
  }
  sqlite3_busy_timeout(db, 1000);
  sqlite3_stmt* q = nullptr;
  sqlite3_prepare_v2(db, "SELECT seq, created_at, data FROM inbox WHERE seq > ?1 ORDER BY seq LIMIT 20000", -1, &q,
                     nullptr);
  int64_t last = 0;
  while (!stop) {
    sqlite3_bind_int64(q, 1, last);
    int rows = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
      ++rows;
      last = sqlite3_column_int64(q, 0);
      int64_t created_ms = sqlite3_column_int64(q, 1);
      auto data = reinterpret_cast<const char*>(sqlite3_column_text(q, 2));
      Tags t;
      if (data && ReadTags(data, t)) rec.Deliver(t.phase, t.n, kInApp, t.sent_us, created_ms * 1000);
    }
    sqlite3_reset(q);
    if (rows == 0) std::this_thread::sleep_for(10ms);
  }
  sqlite3_finalize(q);
  sqlite3_close(db);
}

// Reads the relay's in-app arrival lines.
void ReadRelay(int fd, Recorder& rec) {
  std::string buf;
  char chunk[65536];
  for (;;) {
    ssize_t r = ::read(fd, chunk, sizeof chunk);
    if (r <= 0) return;
    buf.append(chunk, static_cast<size_t>(r));
    size_t start = 0;
    for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
      long long ph, n, sent, arrived;
      if (std::sscanf(buf.c_str() + start, "%lld %lld %lld %lld", &ph, &n, &sent, &arrived) == 4) {
        rec.Deliver(ph, n, kInApp, sent, arrived / 1000 * 1000);  // milliseconds, as Herald's inbox
      }
    }
    buf.erase(0, start);
  }
}

// ---- output -------------------------------------------------------------------------------------

double Num(const json& j, const json::json_pointer& p) {
  return j.contains(p) && j.at(p).is_number() ? j.at(p).get<double>() : -1;
}

std::string Cell(double v, int decimals = 2) {
  if (v < 0) return "n/a";
  return Fmt(decimals == 0 ? "%.0f" : decimals == 1 ? "%.1f" : decimals == 2 ? "%.2f" : "%.3f", v);
}

std::string RatioCell(double h, double b) { return (h < 0 || b <= 0) ? "n/a" : Fmt("%.2f", h / b); }

std::string Markdown(const json& r) {
  const json& h = r["herald"];
  const json& b = r["baseline"];
  std::ostringstream md;
  auto row = [&](const std::string& what, const json::json_pointer& p, int decimals) {
    double hv = Num(h, p), bv = Num(b, p);
    md << "| " << what << " | " << Cell(hv, decimals) << " | " << Cell(bv, decimals) << " | " << RatioCell(hv, bv)
       << " |\n";
  };
  md << "| measure | Herald | baseline | Herald / baseline |\n|---|---|---|---|\n";
  row("sustained events/s (end to end, closed loop)", "/sustained/events_per_s"_json_pointer, 0);
  row("sustained deliveries/s (in-app + webhook)", "/sustained/deliveries_per_s"_json_pointer, 0);
  for (size_t i = 0; i < h["latency"].size(); ++i) {
    const json& hl = h["latency"][i];
    const json& bl = b["latency"][i];
    std::string level = Fmt("%.0f", 100 * hl.value("load", 0.0)) + " % (" +
                        Fmt("%.0f", hl.value("offered_events_per_s", 0.0)) + " events/s)";
    for (const char* ch : {"webhook", "in_app"}) {
      std::string hs, bs, rs;
      for (const char* q : {"p50_ms", "p90_ms", "p99_ms", "p999_ms"}) {
        double hv = hl[ch].value(q, -1.0), bv = bl[ch].value(q, -1.0);
        const char* sep = hs.empty() ? "" : " / ";
        hs += sep + Cell(hv, 1);
        bs += sep + Cell(bv, 1);
        rs += sep + RatioCell(hv, bv);
      }
      md << "| latency at " << level << ", " << (std::string(ch) == "webhook" ? "webhook" : "in-app")
         << ": p50 / p90 / p99 / p99.9 ms | " << hs << " | " << bs << " | " << rs << " |\n";
    }
  }
  row("CPU s per 1,000 events: heraldd / relay", "/sustained/cpu_s_per_1000_events/system"_json_pointer, 3);
  row("CPU s per 1,000 events: broker", "/sustained/cpu_s_per_1000_events/broker"_json_pointer, 3);
  row("disk KiB written per event: heraldd / relay", "/sustained/disk_kb_written_per_event/system"_json_pointer, 1);
  row("disk KiB written per event: broker", "/sustained/disk_kb_written_per_event/broker"_json_pointer, 1);
  row("peak RSS MB: heraldd / relay", "/peak_rss_mb"_json_pointer, 1);
  for (size_t i = 0; i < h["fanout"].size(); ++i) {
    long n = h["fanout"][i].value("recipients", 0L);
    std::string what = "fan-out: one event to " + std::to_string(n) + " recipients, s to the last of " +
                       std::to_string(2 * n) + " deliveries";
    double hv = h["fanout"][i].value("last_delivery_s", -1.0), bv = b["fanout"][i].value("last_delivery_s", -1.0);
    if (!h["fanout"][i].value("complete", false)) hv = -1;
    if (!b["fanout"][i].value("complete", false)) bv = -1;
    md << "| " << what << " | " << Cell(hv, 2) << " | " << Cell(bv, 2) << " | " << RatioCell(hv, bv) << " |\n";
  }
  // The spread behind each pooled p99: the ratio turn by turn (Herald's turn against the
  // baseline's turn just before it).
  if (const auto p = "/sustained/turns"_json_pointer; h.contains(p) && b.contains(p) && h.at(p).size() == b.at(p).size() &&
                                                     h.at(p).size() > 1) {
    md << "\nSustained events/s turn by turn, Herald / baseline:";
    for (size_t t = 0; t < h.at(p).size(); ++t) {
      md << (t ? ", " : " ") << RatioCell(h.at(p)[t].value("events_per_s", -1.0), b.at(p)[t].value("events_per_s", -1.0));
    }
    md << ".\n";
  }
  for (size_t i = 0; i < h["latency"].size(); ++i) {
    const json& ht = h["latency"][i]["turns"];
    const json& bt = b["latency"][i]["turns"];
    if (!ht.is_array() || !bt.is_array() || ht.size() != bt.size() || ht.empty()) continue;
    md << (i ? "; " : "\nWebhook p99 turn by turn, Herald / baseline: ") << "at "
       << Fmt("%.0f", 100 * h["latency"][i].value("load", 0.0)) << " %";
    for (size_t t = 0; t < ht.size(); ++t) {
      md << (t ? ", " : " ") << RatioCell(ht[t]["webhook"].value("p99_ms", -1.0), bt[t]["webhook"].value("p99_ms", -1.0));
    }
    if (i + 1 == h["latency"].size()) md << ".\n";
  }
  md << "\nContext switches per event at saturation: heraldd " << Cell(Num(h, "/sustained/context_switches_per_event"_json_pointer), 1)
     << ", relay " << Cell(Num(b, "/sustained/context_switches_per_event"_json_pointer), 1)
     << ". Other processes on the machine kept " << Cell(Num(h, "/sustained/cpu_cores_busy/other_processes"_json_pointer), 2)
     << " / " << Cell(Num(b, "/sustained/cpu_cores_busy/other_processes"_json_pointer), 2)
     << " cores busy during Herald's / the baseline's sustained window.\n";
  if (const auto p = "/sustained/cpu_us_per_event_by_thread"_json_pointer; h.contains(p) && h.at(p).is_object() &&
                                                                              !h.at(p).empty()) {
    std::vector<std::pair<double, std::string>> rows;
    for (const auto& [name, us] : h.at(p).items()) rows.emplace_back(us.get<double>(), name);
    std::sort(rows.rbegin(), rows.rend());
    md << "\nheraldd CPU per event at saturation by thread, us:";
    for (size_t i = 0; i < rows.size(); ++i) md << (i ? ", " : " ") << rows[i].second << " " << Cell(rows[i].first, 0);
    md << ".\n";
  }
  md << "\n| target | measured | met |\n|---|---|---|\n";
  for (const json& t : r["targets"]) {
    md << "| " << t["target"].get<std::string>() << " | " << t["measured"].get<std::string>() << " | "
       << (t["met"].is_null() ? "not measured" : t["met"].get<bool>() ? "yes" : "**no**") << " |\n";
  }
  return md.str();
}

json Targets(const json& r) {
  const json& h = r["herald"];
  const json& b = r["baseline"];
  json t = json::array();
  double hr = Num(h, "/sustained/events_per_s"_json_pointer), br = Num(b, "/sustained/events_per_s"_json_pointer);
  t.push_back({{"target", "sustained throughput >= 0.80 x baseline"},
               {"measured", Fmt("%.2f", br > 0 ? hr / br : 0)},
               {"met", br > 0 && hr / br >= 0.8}});
  for (size_t i = 0; i < h["latency"].size(); ++i) {
    if (std::abs(h["latency"][i].value("load", 0.0) - 0.5) > 1e-9) continue;
    for (const char* ch : {"webhook", "in_app"}) {
      double hv = h["latency"][i][ch].value("p99_ms", -1.0), bv = b["latency"][i][ch].value("p99_ms", -1.0);
      t.push_back({{"target", std::string("p99 latency at 50 % load <= 2 x baseline (") +
                                  (std::string(ch) == "webhook" ? "webhook" : "in-app") + ")"},
                   {"measured", Fmt("%.2f", bv > 0 ? hv / bv : 0) + " (" + Cell(hv, 1) + " vs " + Cell(bv, 1) + " ms)"},
                   {"met", hv >= 0 && bv > 0 && hv / bv <= 2.0}});
    }
  }
  double hc = Num(h, "/sustained/cpu_s_per_1000_events/system"_json_pointer);
  double bc = Num(h, "/sustained/cpu_s_per_1000_events/broker"_json_pointer);
  t.push_back({{"target", "heraldd CPU per event <= broker CPU per event"},
               {"measured", Cell(hc, 3) + " vs " + Cell(bc, 3) + " s per 1,000 events"},
               {"met", hc >= 0 && bc > 0 && hc <= bc}});
  double rss = Num(h, "/peak_rss_mb"_json_pointer);
  const long users = r["config"].value("users", 0L);
  // The target is set at 100,000 users: a smaller run (--quick) says nothing about it.
  t.push_back({{"target", "heraldd peak RSS <= 150 MB at 100,000 users"},
               {"measured", Cell(rss, 1) + " MB at " + std::to_string(users) + " users"},
               {"met", users >= 100000 ? json(rss > 0 && rss <= 150) : json(nullptr)}});
  for (const json& f : h["fanout"]) {
    if (f.value("recipients", 0L) != 10000) continue;
    double s = f.value("complete", false) ? f.value("last_delivery_s", -1.0) : -1;
    t.push_back({{"target", "10,000-recipient fan-out delivered in <= 5 s"},
                 {"measured", Cell(s, 2) + " s"},
                 {"met", s >= 0 && s <= 5}});
  }
  return t;
}

// The mean of each number under `key` (an object of numbers, or a number) over the turns that have
// it, each weighed by `weight(turn)`; null if no turn has it.
json WeightedMean(const json& turns, const char* key, const std::function<double(const json&)>& weight) {
  std::map<std::string, double> sums;  // "" for a plain number
  double total = 0;
  for (const json& t : turns) {
    if (!t.contains(key)) continue;
    const double w = weight(t);
    total += w;
    if (t[key].is_object()) {
      for (const auto& [k, v] : t[key].items()) sums[k] += v.get<double>() * w;
    } else {
      sums[""] += t[key].get<double>() * w;
    }
  }
  if (total <= 0) return nullptr;
  if (sums.size() == 1 && sums.count("")) return sums[""] / total;
  json r = json::object();
  for (const auto& [k, v] : sums) r[k] = v / total;
  return r;
}

// One result of several ClosedLoop turns of one system: rates over the sum of their counted
// windows, per-event figures weighed by each turn's events (per-second ones by its window), and
// the turns themselves.
json PoolClosedLoops(const json& turns) {
  double window_s = 0, events = 0, drain_s = 0;
  int64_t published = 0, completed = 0, duplicates = 0, strays = 0;
  bool drained = true;
  for (const json& t : turns) {
    window_s += t["window_s"].get<double>();
    events += static_cast<double>(t["events_in_window"].get<int64_t>());
    published += t["published"].get<int64_t>();
    completed += t["completed"].get<int64_t>();
    duplicates += t["duplicates"].get<int64_t>();
    strays += t["strays"].get<int64_t>();
    drained = drained && t["drained"].get<bool>();
    drain_s = std::max(drain_s, t["drain_s"].get<double>());
  }
  json r = {{"phase", "sustained"},
            {"turns", turns},
            {"published", published},
            {"completed", completed},
            {"drained", drained},
            {"drain_s", drain_s},
            {"window_s", window_s},
            {"events_in_window", static_cast<int64_t>(events)},
            {"events_per_s", window_s > 0 ? events / window_s : 0},
            {"deliveries_per_s", window_s > 0 ? 2 * events / window_s : 0},
            {"duplicates", duplicates},
            {"strays", strays}};
  auto by_events = [](const json& t) { return static_cast<double>(t["events_in_window"].get<int64_t>()); };
  auto by_window = [](const json& t) { return t["window_s"].get<double>(); };
  for (const char* key : {"cpu_s_per_1000_events", "context_switches_per_event", "cpu_us_per_event_by_thread",
                          "disk_kb_written_per_event"}) {
    if (json m = WeightedMean(turns, key, by_events); !m.is_null()) r[key] = std::move(m);
  }
  if (json m = WeightedMean(turns, "cpu_cores_busy", by_window); !m.is_null()) r["cpu_cores_busy"] = std::move(m);
  return r;
}

// ---- main ---------------------------------------------------------------------------------------

bool ParseArgs(int argc, char** argv, Options& o) {
  bool users_set = false, sustained_set = false, latency_set = false, fanout_set = false;
  std::string a;  // the option being read, for the error message
  try {
    for (int i = 1; i < argc; ++i) {
      a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--quick") o.quick = true;
      else if (a == "--users") o.users = std::stol(value()), users_set = true;
      else if (a == "--seconds") o.sustained_s = std::stod(value()), sustained_set = true;
      else if (a == "--latency-seconds") o.latency_s = std::stod(value()), latency_set = true;
      else if (a == "--turns") o.turns = std::stoi(value());
      else if (a == "--sustained-turns") o.sustained_turns = std::stoi(value());
      else if (a == "--window") o.window = std::stol(value());
      else if (a == "--fanout") {
        o.fanouts.clear();
        std::stringstream ss(value());
        for (std::string x; std::getline(ss, x, ',');) {
          if (x.empty()) continue;
          if (const long n = std::stol(x); n != 0) o.fanouts.push_back(n);  // --fanout 0: none
        }
        fanout_set = true;
      } else if (a == "--broker-dir") o.broker_dir = value();
      else if (a == "--out") o.out = value();
      else if (a == "--heraldd") o.heraldd = value();
      else if (a == "--keep") o.keep = true;
      else if (a == "--queue-type") o.queue_type = value();
      else if (a == "--job-bytes") o.job_bytes = std::stoul(value());
      else if (a == "--webhook-concurrency") o.webhook_concurrency = std::stoi(value());
      else if (a == "--only") o.only = value();
      else if (a == "--samples") o.samples_dir = value();
      else if (a == "--rates") {
        o.rates.clear();
        std::stringstream ss(value());
        for (std::string x; std::getline(ss, x, ',');) {
          if (!x.empty()) o.rates.push_back(std::stod(x));
        }
      }
      else if (a == "--help" || a == "-h") return false;
      else throw std::runtime_error("unknown option " + a);
    }
  } catch (const std::logic_error&) {  // std::stol and the like: not a number, or out of range
    throw std::runtime_error("a number is wrong in the value of " + a);
  }
  if (o.quick) {
    if (!users_set) o.users = 20000;
    if (!sustained_set) o.sustained_s = 6;
    if (!latency_set) o.latency_s = 5;
    if (!fanout_set) o.fanouts = {10000};
    o.warmup_events = 1000;
  }
  if (o.turns < 1 || o.latency_s <= 0) throw std::runtime_error("--turns and --latency-seconds must be positive");
  if (o.sustained_turns < 1 || o.sustained_s <= 0) {
    throw std::runtime_error("--sustained-turns and --seconds must be positive");
  }
  if (!o.only.empty() && o.only != "herald" && o.only != "baseline") {
    throw std::runtime_error("--only must be herald or baseline");
  }
  for (long f : o.fanouts) {
    if (f < 0) throw std::runtime_error("--fanout must list positive recipient counts (or 0 for none)");
    if (f > o.users) throw std::runtime_error("--fanout " + std::to_string(f) + " exceeds --users");
  }
  if (!o.samples_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.samples_dir, ec);
    if (ec) throw std::runtime_error("--samples " + o.samples_dir + ": " + ec.message());
  }
  return true;
}

int RelayMain(int argc, char** argv) {
  RelayOptions r;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--url") r.url = v;
    else if (k == "--queue-type") r.queue_type = v;
    else if (k == "--sink") r.sink_url = v;
    else if (k == "--webhook-concurrency") r.webhook_concurrency = std::stoi(v);
    else if (k == "--job-bytes") r.job_bytes = std::stoul(v);
  }
  return RunRelay(r);
}

int Main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "relay") return RelayMain(argc, argv);
  Bench bench;
  Options& o = bench.o;
  try {
    if (!ParseArgs(argc, argv, o)) {
      Usage();
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_e2e: %s\n", e.what());
    Usage();
    return 2;
  }
  std::string command = "build/bench_e2e";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  spdlog::set_level(spdlog::level::warn);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  if (o.heraldd.empty()) o.heraldd = SelfDir() + "/heraldd";
  const std::string src = HERALD_SOURCE_DIR;
  const auto started = Steady::now();
  auto say = [&](const std::string& msg) {
    std::printf("[%6.1fs] %s\n", std::chrono::duration<double>(Steady::now() - started).count(), msg.c_str());
    std::fflush(stdout);
  };

  char tmpl[] = "/tmp/herald-e2e-XXXXXX";
  const std::string tmp = ::mkdtemp(tmpl);
  {
    char id[32];
    std::snprintf(id, sizeof id, "%" PRIx64, static_cast<uint64_t>(NowMicros()));
    bench.run_id = id;
  }

  // Everything started below is stopped by `cleanup`, whatever happens.
  Broker& broker = bench.broker;
  System herald, base;
  herald.name = "herald";
  herald.vhost = "bench-herald";
  base.name = "baseline";
  base.vhost = "bench-baseline";
  HttpSink sink([&](std::string_view, std::string_view body, int64_t arrived) {
    Tags t;
    if (ReadTags(body, t)) bench.rec.Deliver(t.phase, t.n, kWebhook, t.sent_us, arrived);
  });
  std::atomic<bool> stop_poll{false};
  std::thread poller, relay_reader;
  int relay_fd = -1;
  auto cleanup = [&] {
    herald.load.reset();
    base.load.reset();
    if (herald.pid > 0) Terminate(herald.pid, 15s);
    if (base.pid > 0) Terminate(base.pid, 15s);
    herald.pid = base.pid = -1;
    stop_poll = true;
    if (poller.joinable()) poller.join();
    if (relay_reader.joinable()) relay_reader.join();
    if (relay_fd >= 0) ::close(relay_fd);
    relay_fd = -1;
    sink.Stop();
    if (broker.owned) {
      RunCommand({"/bin/bash", src + "/scripts/broker.sh", "stop", broker.dir});
    } else if (broker.port) {
      Management(broker, "DELETE", "/api/vhosts/" + herald.vhost, "");
      Management(broker, "DELETE", "/api/vhosts/" + base.vhost, "");
    }
    broker.owned = false;
    broker.port = 0;
    if (!o.keep) RunCommand({"/bin/rm", "-rf", tmp});
  };
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "bench_e2e: %s\n", why.c_str());
    cleanup();
    return 1;
  };

  // 1. Broker.
  if (!o.broker_dir.empty()) {
    broker.dir = o.broker_dir;
    broker.port = std::atoi(ReadFile(broker.dir + "/port").c_str());
    if (broker.port <= 0) return fail("no node in " + broker.dir + " (missing port file)");
  } else {
    std::string out;
    if (RunCommand({"/bin/bash", src + "/scripts/broker.sh", "free-port", "5740"}, &out) != 0) {
      return fail("broker.sh free-port: " + out);
    }
    broker.port = std::atoi(out.c_str());
    broker.dir = tmp + "/broker";
    say("starting a private RabbitMQ node on 127.0.0.1:" + std::to_string(broker.port));
    broker.owned = true;
    if (RunCommand({"/bin/bash", src + "/scripts/broker.sh", "start", broker.dir, std::to_string(broker.port)}, &out) !=
        0) {
      return fail("broker.sh start: " + out);
    }
  }
  broker.beam = std::atoi(ReadFile(broker.dir + "/rabbitmq.pid").c_str());
  if (broker.beam <= 0 || CpuSeconds(broker.beam) < 0) return fail("cannot find the broker's beam.smp process");
  if (!FreshVhost(broker, herald.vhost) || !FreshVhost(broker, base.vhost)) {
    return fail("cannot create the vhosts through the management API on port " + std::to_string(broker.port + 1));
  }

  // 2. Sink, users, configuration.
  std::string error;
  if (!sink.Start(error)) return fail(error);
  const std::string db_path = tmp + "/herald.db";
  const long topic_size = o.fanouts.empty() ? 0 : *std::max_element(o.fanouts.begin(), o.fanouts.end());
  say("creating " + std::to_string(o.users) + " users (webhook sink on 127.0.0.1:" + std::to_string(sink.port()) + ")");
  if (!CreateUsers(db_path, o.users, topic_size,
                   "http://127.0.0.1:" + std::to_string(sink.port()) + "/h/", error)) {
    return fail("creating users: " + error);
  }
  const std::string config_path = tmp + "/herald.yaml";
  std::ofstream(config_path) << HeraldConfig(o, broker, herald.vhost, db_path);
  try {
    LoadConfig(config_path, {});
  } catch (const ConfigError& e) {
    return fail(std::string("the generated configuration is refused: ") + e.what());
  }

  // 3. heraldd and the relay.
  herald.log = tmp + "/heraldd.log";
  herald.pid = Spawn({o.heraldd, "--config", config_path, "--roles", "engine,worker"}, {}, herald.log);
  base.log = tmp + "/relay.log";
  const std::string base_url = "amqp://guest:guest@127.0.0.1:" + std::to_string(broker.port) + "/" + base.vhost;
  base.pid = Spawn({SelfExe(), "relay", "--url", base_url, "--queue-type", o.queue_type, "--sink",
                    "http://127.0.0.1:" + std::to_string(sink.port()) + "/base", "--webhook-concurrency",
                    std::to_string(o.webhook_concurrency), "--job-bytes", std::to_string(o.job_bytes)},
                   {}, base.log, &relay_fd);
  if (herald.pid <= 0 || base.pid <= 0) return fail("cannot start heraldd or the relay");
  for (int i = 0; i < 300 && ReadFile(herald.log).find("started") == std::string::npos; ++i) {
    if (WaitExit(herald.pid, 100ms) >= 0) {
      herald.pid = -1;
      return fail("heraldd exited at start:\n" + ReadFile(herald.log));
    }
  }
  poller = std::thread([&] { PollInbox(db_path, bench.rec, stop_poll); });
  relay_reader = std::thread([&] { ReadRelay(relay_fd, bench.rec); });
  for (System* s : {&herald, &base}) {
    broker::Publisher::Options po;
    po.connect.url = "amqp://guest:guest@127.0.0.1:" + std::to_string(broker.port) + "/" + s->vhost;
    po.connect.connection_name = "bench load generator";
    po.window = 1000;
    s->load = std::make_unique<broker::Publisher>(po);
    s->load->Start();
  }
  const long rss_start_kb = RssKb(herald.pid);

  auto alive = [&] {
    for (System* s : {&herald, &base}) {
      if (s->pid > 0 && WaitExit(s->pid, 0ms) >= 0) {
        std::fprintf(stderr, "bench_e2e: %s exited during the run; its log:\n%s\n", s->name.c_str(),
                     ReadFile(s->log).c_str());
        s->pid = -1;
        return false;
      }
    }
    return !g_interrupted;
  };

  // 4. Phases, the baseline and Herald back to back in each.
  json latency[2] = {json::array(), json::array()};
  json fanout[2] = {json::array(), json::array()};
  std::vector<System*> systems = {&herald, &base};  // in the order each phase measures them
  if (o.only == "herald") systems = {&herald};
  if (o.only == "baseline") systems = {&base};
  for (System* s : systems) {
    say("warming up " + s->name + " (" + std::to_string(o.warmup_events) + " events)");
    json w = bench.ClosedLoop(*s, "warm-up", 120, o.warmup_events);
    if (!w["drained"].get<bool>()) return fail(s->name + " did not finish the warm-up: " + w.dump());
  }
  // RabbitMQ writes every quorum queue's messages to one WAL and, when that reaches its size
  // limit (about 430 MB here, some 160,000 events of either system), writes it out to each
  // queue's segment files: 1-2 s in which the node takes most of both cores and every delivery
  // on it waits 100-300 ms. Left to chance, that falls in whichever system's phase is running
  // and decides its p99 (bench/README.md, ninth round). So the WAL is rolled over, and its
  // segments written, before each measured phase; no phase fills one.
  auto roll_broker_wal = [&] {
    std::string out;
    if (RunCommand({"/bin/bash", src + "/scripts/broker.sh", "ctl", broker.dir, "eval",
                    "ok = ra_log_wal:force_roll_over(ra_log_wal), ra_log_segment_writer:await(ra_log_segment_writer)."},
                   &out) != 0) {
      say("warning: could not roll the broker's quorum WAL over (" + out + "); a roll-over may fall in a phase");
    }
  };
  // The sustained phase in turns, the systems alternately and each pair in the other order than the
  // one before (Herald, baseline, baseline, Herald, ...): the machine's speed drifts by a fifth or
  // more over a minute here, and one window per system put all of a drift on one side of the ratio
  // (bench/README.md, eleventh round). Each turn has its own uncounted start; the rate and the CPU
  // per event are over all counted windows of a system.
  {
    const double turn_s = o.sustained_s / o.sustained_turns;
    say("sustained throughput: " + std::to_string(o.sustained_turns) + " turn(s) of " + Fmt("%.1f", o.warm_s + turn_s) +
        " s per system, at most " + std::to_string(o.window) + " events in flight");
    std::vector<json> turns(2);
    for (int t = 0; t < o.sustained_turns; ++t) {
      std::vector<System*> order = systems;
      if (t % 2 == 1) std::reverse(order.begin(), order.end());
      for (System* s : order) {
        if (!alive()) return fail("stopped");
        roll_broker_wal();
        json r = bench.ClosedLoop(*s, "sustained", o.warm_s + turn_s, 0);
        say("  turn " + std::to_string(t + 1) + ", " + s->name + ": " + Fmt("%.0f", r["events_per_s"].get<double>()) +
            " events/s");
        turns[s == &herald ? 0 : 1].push_back(std::move(r));
      }
    }
    for (System* s : systems) {
      s->result["sustained"] = PoolClosedLoops(turns[s == &herald ? 0 : 1]);
      say("  " + s->name + ": " + Fmt("%.0f", s->result["sustained"]["events_per_s"].get<double>()) + " events/s");
    }
  }
  const double herald_rate = systems[0]->result["sustained"]["events_per_s"].get<double>();
  std::reverse(systems.begin(), systems.end());  // the baseline first from here on
  std::vector<double> levels = o.rates.empty() ? o.loads : o.rates;
  // Each level in turns, the systems alternately (baseline, Herald, baseline, ...), so what the
  // machine's other load does during the level falls on both; each system's percentiles are over
  // all its turns.
  for (double level : levels) {
    const double load = o.rates.empty() ? level : level / herald_rate;
    const double rate = o.rates.empty() ? std::max(1.0, load * herald_rate) : level;
    const double turn_s = o.latency_s / o.turns;
    say("latency at " + Fmt("%.0f", load * 100) + " % of Herald's rate (" + Fmt("%.0f", rate) + " events/s): " +
        std::to_string(o.turns) + " turn(s) of " + Fmt("%.1f", o.turn_warm_s + turn_s) + " s per system");
    roll_broker_wal();
    std::vector<int64_t> counted[2][kChannels];
    json turns[2] = {json::array(), json::array()};
    for (int t = 0; t < o.turns; ++t) {
      for (System* s : systems) {
        if (!alive()) return fail("stopped");
        const int i = s == &herald ? 0 : 1;
        json l = bench.OpenLoop(*s, rate, o.turn_warm_s, turn_s, counted[i]);
        say("  turn " + std::to_string(t + 1) + ", " + s->name + ": webhook p50 " +
            Cell(l["webhook"]["p50_ms"].get<double>(), 1) + " ms, p99 " + Cell(l["webhook"]["p99_ms"].get<double>(), 1) +
            " ms; in-app p99 " + Cell(l["in_app"]["p99_ms"].get<double>(), 1) + " ms");
        turns[i].push_back(std::move(l));
      }
    }
    for (System* s : systems) {
      const int i = s == &herald ? 0 : 1;
      json l = {{"load", load}, {"offered_events_per_s", rate}, {"turns", turns[i]}};
      int64_t published = 0, completed = 0, duplicates = 0, strays = 0;
      double cpu_system = 0, cpu_broker = 0, switches = 0;
      bool drained = true;
      for (const json& t : turns[i]) {
        published += t["published"].get<int64_t>();
        const int64_t c = t["completed"].get<int64_t>();
        completed += c;
        duplicates += t["duplicates"].get<int64_t>();
        strays += t["strays"].get<int64_t>();
        drained = drained && t["drained"].get<bool>();
        if (t.contains("cpu_s_per_1000_events")) {  // per-turn rates, weighed by the turn's events
          cpu_system += t["cpu_s_per_1000_events"]["system"].get<double>() * static_cast<double>(c);
          cpu_broker += t["cpu_s_per_1000_events"]["broker"].get<double>() * static_cast<double>(c);
          switches += t["context_switches_per_event"].get<double>() * static_cast<double>(c);
        }
      }
      l["published"] = published;
      l["completed"] = completed;
      l["duplicates"] = duplicates;
      l["strays"] = strays;
      l["drained"] = drained;
      l["in_app"] = Bench::LatencyJson(std::move(counted[i][kInApp]));
      l["webhook"] = Bench::LatencyJson(std::move(counted[i][kWebhook]));
      if (completed > 0) {
        const double n = static_cast<double>(completed);
        l["cpu_s_per_1000_events"] = {{"system", cpu_system / n}, {"broker", cpu_broker / n}};
        l["context_switches_per_event"] = switches / n;
      }
      say("  " + s->name + ", all turns: webhook p50 " + Cell(l["webhook"]["p50_ms"].get<double>(), 1) + " ms, p99 " +
          Cell(l["webhook"]["p99_ms"].get<double>(), 1) + " ms; in-app p99 " +
          Cell(l["in_app"]["p99_ms"].get<double>(), 1) + " ms");
      latency[i].push_back(std::move(l));
    }
  }
  for (long n : o.fanouts) {
    for (System* s : systems) {
      if (!alive()) return fail("stopped");
      roll_broker_wal();
      say("fan-out to " + std::to_string(n) + " recipients: " + s->name);
      json f = bench.Fanout(*s, n);
      say("  last delivery after " + Cell(f["last_delivery_s"].get<double>(), 2) + " s" +
          (f["complete"].get<bool>() ? "" : " (INCOMPLETE)"));
      fanout[s == &herald ? 0 : 1].push_back(std::move(f));
    }
  }
  if (!alive()) return fail("stopped");
  herald.result["latency"] = latency[0];
  base.result["latency"] = latency[1];
  herald.result["fanout"] = fanout[0];
  base.result["fanout"] = fanout[1];
  herald.result["peak_rss_mb"] = PeakRssKb(herald.pid) / 1024.0;
  herald.result["rss_after_start_mb"] = rss_start_kb / 1024.0;
  base.result["peak_rss_mb"] = PeakRssKb(base.pid) / 1024.0;
  if (!o.only.empty()) {
    json one = (o.only == "herald" ? herald : base).result;
    std::ofstream(o.out + ".json") << one.dump(2) << "\n";
    std::printf("%s\n", one.dump(2).c_str());
    cleanup();
    return 0;
  }
  for (System* s : systems) s->result["publish_failures"] = s->publish_failures.load();

  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::localtime(&now));
  std::string commit;
  RunCommand({"/usr/bin/git", "-C", src, "rev-parse", "--short", "HEAD"}, &commit);
  while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back()))) commit.pop_back();
  json result = {{"command", command},
                 {"date", date},
                 {"commit", commit},
                 {"machine", {{"cores", std::thread::hardware_concurrency()}, {"loadavg_at_end", LoadAverage()}}},
                 {"config",
                  {{"users", o.users},
                   {"queue_type", o.queue_type},
                   {"window", o.window},
                   {"sustained_s", o.sustained_s},
                   {"latency_s", o.latency_s},
                   {"latency_turns", o.turns},
                   {"turn_warm_s", o.turn_warm_s},
                   {"warm_s", o.warm_s},
                   {"webhook_concurrency", o.webhook_concurrency},
                   {"baseline_job_bytes", o.job_bytes},
                   {"recipients_per_event", 1},
                   {"deliveries_per_event", 2}}},
                 {"herald", herald.result},
                 {"baseline", base.result},
                 {"strays_total", bench.rec.StraysTotal()},
                 {"duration_s", std::chrono::duration<double>(Steady::now() - started).count()}};
  result["targets"] = Targets(result);
  std::string md = Markdown(result);
  std::ofstream(o.out + ".json") << result.dump(2) << "\n";
  std::ofstream(o.out + ".md") << "Command: `" << command << "` (" << date << ", commit " << commit << ", "
                                 << o.users << " users, " << o.queue_type << " queues)\n\n" << md;
  say("done; wrote " + o.out + ".json and " + o.out + ".md");
  std::printf("\n%s", md.c_str());
  cleanup();
  return 0;
}

}  // namespace
}  // namespace herald::bench

int main(int argc, char** argv) { return herald::bench::Main(argc, argv); }
