// herald: the command-line tool for publishers and operators.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>

#include "broker/publisher.h"
#include "broker/topology.h"
#include "core/config.h"
#include "core/log.h"
#include "core/time.h"
#include "engine/control.h"
#include "engine/event.h"
#include "engine/notification_engine.h"
#include "store/store.h"
#include "broker/options.h"
#include "workers/dead_letters.h"

namespace herald {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInterrupted = 130;  // as a shell reports death by SIGINT

int Fail(int code, const std::string& message) {
  std::cerr << "herald: " << message << "\n";
  return code;
}

// The CLI works without a config file (built-in defaults plus HERALD_* variables) unless one is
// named explicitly, in which case it must exist. `from_file` says whether one was read.
Config LoadCliConfig(const std::string& path, bool explicit_path, bool& from_file) {
  std::ifstream probe(path);
  from_file = probe.good() || explicit_path;
  if (!from_file) return LoadConfigText("{}", "(defaults)", ProcessEnvironment());
  return LoadConfig(path, ProcessEnvironment());
}

std::string NewEventId() {
  std::random_device rd;
  std::uniform_int_distribution<uint64_t> dist;
  char buf[32];
  std::snprintf(buf, sizeof buf, "evt-%016llx", static_cast<unsigned long long>(dist(rd)));
  return buf;
}

std::vector<std::string> SplitCommas(const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const std::string& item : items) {
    std::stringstream ss(item);
    std::string part;
    while (std::getline(ss, part, ',')) {
      if (!part.empty()) out.push_back(part);
    }
  }
  return out;
}

struct PublishArgs {
  std::string type, id, source = "/herald-cli", priority, expires_at, topic, file;
  std::vector<std::string> to, vars, channels;
  double timeout_s = 10;
};

// `know_types`: the configuration came from a file, so its event types are the deployment's.
int Publish(const Config& config, bool know_types, const PublishArgs& a) {
  std::string body;
  if (!a.file.empty()) {
    if (!a.type.empty() || !a.to.empty() || !a.topic.empty() || !a.vars.empty()) {
      return Fail(kExitUsage, "--file takes the whole event; do not combine it with --type, --to, --topic or --var");
    }
    std::stringstream buf;
    if (a.file == "-") {
      buf << std::cin.rdbuf();
    } else {
      std::ifstream in(a.file, std::ios::binary);
      if (!in) return Fail(kExitUsage, "cannot read " + a.file + ": " + std::strerror(errno));
      buf << in.rdbuf();
    }
    body = buf.str();
  } else {
    if (a.type.empty()) return Fail(kExitUsage, "--type is required (or give the whole event with --file)");
    if (a.to.empty() == a.topic.empty()) return Fail(kExitUsage, "give exactly one of --to USER[,USER] or --topic NAME");
    nlohmann::json vars = nlohmann::json::object();
    for (const std::string& kv : a.vars) {
      size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) return Fail(kExitUsage, "--var must be KEY=VALUE (got \"" + kv + "\")");
      vars[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    nlohmann::json data = nlohmann::json::object();
    if (!a.topic.empty()) data["topic"] = a.topic;
    else data["recipients"] = SplitCommas(a.to);
    data["vars"] = vars;
    if (!a.channels.empty()) data["channels"] = SplitCommas(a.channels);
    nlohmann::json event = {{"specversion", "1.0"}, {"id", a.id.empty() ? NewEventId() : a.id},
                            {"source", a.source}, {"type", a.type}, {"time", FormatRfc3339(SystemClock::Instance().Now())},
                            {"data", data}};
    if (!a.priority.empty()) event["priority"] = a.priority;
    if (!a.expires_at.empty()) event["expiresat"] = a.expires_at;
    body = event.dump();
  }

  // Check locally first: a clear message here beats a message in herald.events.invalid.
  EventLimits limits;
  limits.max_body_bytes = static_cast<size_t>(config.events.max_body_bytes);
  limits.max_recipients = static_cast<size_t>(config.events.max_recipients);
  limits.channels = config.EnabledChannels();
  Event event;
  auto why = ParseEvent(body, limits, SystemClock::Instance().Now(), event);
  if (!why && know_types) why = CheckEventType(config, event);
  if (why) return Fail(kExitUsage, "event is invalid: " + why->ToString());

  auto po = broker::PublisherOptionsFor(config, "herald publish");
  po.reconnect_max = Millis(1000);
  broker::Publisher publisher(po);
  publisher.Start();
  broker::Message m;
  m.exchange = broker::kEventsExchange;
  m.routing_key = event.type;
  m.body = body;
  m.content_type = "application/cloudevents+json";
  m.message_id = event.id;
  Status s = publisher.PublishAndWait(std::move(m), Millis(static_cast<long long>(a.timeout_s * 1000)));
  publisher.Stop(Millis(0));
  if (!s.ok()) return Fail(kExitFailure, "cannot publish event " + event.id + ": " + s.message());
  std::cout << "published " << event.id << " (type " << event.type << ", "
            << (event.topic.empty() ? std::to_string(event.recipients.size()) + " recipient(s)" : "topic " + event.topic)
            << ")\n";
  return 0;
}

int DeclareTopologyCommand(const Config& config) {
  broker::Connection conn(broker::ConnectOptionsFor(config, "herald topology"));
  Status s = conn.Open();
  auto spec = broker::TopologySpec::FromConfig(config);
  if (s.ok()) s = broker::DeclareTopology(conn, spec);
  if (!s.ok()) return Fail(kExitFailure, "topology declare failed: " + s.message());
  std::cout << "declared (queue type " << spec.queue_type << "):\n"
            << "  exchanges " << broker::kEventsExchange << " (topic), " << broker::kDeliverExchange << " (direct), "
            << broker::kControlExchange << " (fanout)\n"
            << "  queues    " << broker::kEngineQueue << ", " << broker::kInvalidQueue << ", "
            << broker::kDeadLetterQueue << "\n";
  for (const std::string& ch : spec.channels) {
    std::cout << "  channel   " << broker::DeliverQueue(ch) << " + retry tiers";
    for (Millis d : spec.retry_tiers) std::cout << " " << FormatDuration(d);
    std::cout << "\n";
  }
  return 0;
}

std::string ReadInput(const std::string& file, std::string& error) {
  std::stringstream buf;
  if (file.empty() || file == "-") {
    buf << std::cin.rdbuf();
  } else {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      error = "cannot read " + file + ": " + std::strerror(errno);
      return "";
    }
    buf << in.rdbuf();
  }
  return buf.str();
}

int OpenStoreOrFail(const Config& config, std::unique_ptr<Store>& store) {
  if (Status s = OpenStore(config.store.url, store, KnownChannels()); !s.ok()) {
    return Fail(kExitFailure, "cannot open the store: " + s.message());
  }
  return 0;
}

// Tells every running heraldd to drop its cached copy; a failure only delays the change until
// the cache TTL, so it is a warning.
void Announce(const Config& config, const std::string& user) {
  auto po = broker::PublisherOptionsFor(config, "herald prefs");
  po.reconnect_max = Millis(1000);
  broker::Publisher publisher(po);
  publisher.Start();
  Status s = AnnouncePrefsChanged(publisher, user, Millis(5000));
  publisher.Stop(Millis(0));
  if (!s.ok()) {
    std::cerr << "herald: warning: saved, but running processes could not be told (" << s.message()
              << "); they see the change in the store's change log within "
              << FormatDuration(PreferenceCache::kPollEvery) << "\n";
  }
}

int PrefsGet(const Config& config, const std::string& user) {
  std::unique_ptr<Store> store;
  if (int rc = OpenStoreOrFail(config, store)) return rc;
  Preferences p;
  Status s = store->GetPreferences(user, p);
  if (s.code() == Status::Code::kNotFound) {
    std::cerr << "herald: " << user << " has no stored preferences; these are the defaults\n";
    p = DefaultPreferences(user);
  } else if (!s.ok()) {
    return Fail(kExitFailure, s.message());
  }
  std::cout << PreferencesToJson(p).dump(2) << "\n";
  return 0;
}

int PrefsSet(const Config& config, const std::string& user, const std::string& file) {
  if (std::string why = CheckUserId(user); !why.empty()) return Fail(kExitUsage, "user id " + why);
  std::string error;
  std::string text = ReadInput(file, error);
  if (!error.empty()) return Fail(kExitUsage, error);
  auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded()) return Fail(kExitUsage, "preferences are not valid JSON");
  Preferences p;
  if (Status s = ParsePreferences(doc, user, KnownChannels(), p); !s.ok()) {
    return Fail(kExitUsage, "preferences are invalid: " + s.message());
  }
  std::unique_ptr<Store> store;
  if (int rc = OpenStoreOrFail(config, store)) return rc;
  if (Status s = store->PutPreferences(p); !s.ok()) return Fail(kExitFailure, s.message());
  Announce(config, user);
  std::cout << "saved preferences of " << user << "\n";
  return 0;
}

int Topic(const Config& config, const std::string& action, const std::string& topic, const std::vector<std::string>& users) {
  if (std::string why = CheckUserId(topic); !why.empty()) return Fail(kExitUsage, "topic " + why);
  std::unique_ptr<Store> store;
  if (int rc = OpenStoreOrFail(config, store)) return rc;
  if (action == "list") {
    std::string after;
    std::vector<std::string> page;
    size_t n = 0;
    do {
      if (Status s = store->TopicPage(topic, after, 1000, page); !s.ok()) return Fail(kExitFailure, s.message());
      for (const std::string& u : page) std::cout << u << "\n";
      n += page.size();
      if (!page.empty()) after = page.back();
    } while (page.size() == 1000);
    std::cerr << n << " subscriber(s)\n";
    return 0;
  }
  std::vector<std::string> ids = SplitCommas(users);
  if (ids.empty()) return Fail(kExitUsage, "name at least one user");
  for (const std::string& u : ids) {
    if (std::string why = CheckUserId(u); !why.empty()) return Fail(kExitUsage, "user id \"" + u + "\" " + why);
    Status s = action == "subscribe" ? store->Subscribe(topic, u) : store->Unsubscribe(topic, u);
    if (!s.ok()) return Fail(kExitFailure, s.message());
  }
  std::cout << action << "d " << ids.size() << " user(s) " << (action == "subscribe" ? "to " : "from ") << topic << "\n";
  return 0;
}

// ---- herald dlq: inspect, replay and purge dead letters (workers/dead_letters.h does the work) ----

struct DlqArgs {
  DeadLetterQuery query;
  std::string id, actor;
  bool json = false, summary = false, dry_run = false, yes = false;
  double rate = 0;  // replays per second; 0 = unlimited
};

// The selection the flags name, and the store; on a bad flag or an unusable store, prints why and
// returns the exit code.
int OpenSelection(const Config& config, const DlqArgs& a, DeadLetterSelection& sel, std::unique_ptr<Store>& store) {
  if (Status s = BuildDeadLetterSelection(a.query, SystemClock::Instance().Now(), "--", sel); !s.ok()) {
    return Fail(kExitUsage, s.message());
  }
  return OpenStoreOrFail(config, store);
}

std::string Actor(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* user = std::getenv("USER");
  return user && *user ? user : "unknown";
}

// Records the action before it runs: a replay killed halfway must still show who started it.
int AuditOrFail(Store& store, const DlqArgs& a, const std::string& action, const DeadLetterSelection& sel,
                size_t count, bool dry_run) {
  if (Status s = RecordDeadLetterAudit(store, Actor(a.actor), action, sel, count, dry_run); !s.ok()) {
    return Fail(kExitFailure, s.message() + " (nothing was changed)");
  }
  return 0;
}

// One line, at most `width` characters (an error message may span lines or be a page long).
std::string OneLine(const std::string& text, size_t width) {
  std::string out;
  for (char c : text) out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  if (out.size() > width) out = out.substr(0, width - 3) + "...";
  return out;
}

nlohmann::json ParseOr(const std::string& text, nlohmann::json fallback) {
  auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return doc.is_discarded() ? fallback : doc;
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    width.resize(std::max(width.size(), r.size()), 0);
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

int DlqList(const Config& config, const DlqArgs& a) {
  DeadLetterSelection sel;
  std::unique_ptr<Store> store;
  if (int rc = OpenSelection(config, a, sel, store)) return rc;

  size_t n = 0;
  std::map<std::pair<std::string, std::string>, size_t> counts;
  std::vector<std::vector<std::string>> table = {{"ID", "DEAD_AT", "CHANNEL", "REASON", "ATTEMPTS", "TYPE", "USER", "ERROR"}};
  nlohmann::json array = nlohmann::json::array();
  Status s = ForEachDeadLetter(*store, sel, [&](const DeadLetter& d) {
    ++n;
    if (a.summary) {
      ++counts[{d.channel, d.reason}];
    } else if (a.json) {
      array.push_back({{"id", d.id}, {"delivery_id", d.delivery_id}, {"channel", d.channel}, {"reason", d.reason},
                       {"error", d.error}, {"attempts", d.attempts}, {"event_id", d.event_id},
                       {"event_type", d.event_type}, {"user_id", d.user_id},
                       {"first_failed_at", FormatRfc3339(d.first_failed_at)}, {"dead_at", FormatRfc3339(d.dead_at)},
                       {"job", ParseOr(d.job_json, d.job_json)}, {"headers", ParseOr(d.headers_json, d.headers_json)}});
    } else {
      table.push_back({std::to_string(d.id), FormatRfc3339(d.dead_at), d.channel, d.reason, std::to_string(d.attempts),
                       d.event_type, d.user_id, OneLine(d.error, 60)});
    }
    return true;
  });
  if (!s.ok()) return Fail(kExitFailure, s.message());
  if (a.json && !a.summary) {
    // Scripts get an array even when empty, so they need not special-case the message.
    std::cout << array.dump(2) << "\n";
    return 0;
  }
  if (n == 0) {
    std::cout << "no dead letters match\n";
    return 0;
  }
  if (a.summary) {
    if (a.json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& [key, count] : counts) out.push_back({{"channel", key.first}, {"reason", key.second}, {"count", count}});
      std::cout << out.dump(2) << "\n";
      return 0;
    }
    std::vector<std::vector<std::string>> sum = {{"CHANNEL", "REASON", "COUNT"}};
    for (const auto& [key, count] : counts) sum.push_back({key.first, key.second, std::to_string(count)});
    sum.push_back({"total", "", std::to_string(n)});
    PrintTable(sum);
    return 0;
  }
  PrintTable(table);
  return 0;
}

int DlqShow(const Config& config, const std::string& id_text) {
  char* end = nullptr;
  errno = 0;
  long long id = std::strtoll(id_text.c_str(), &end, 10);
  if (id_text.empty() || *end != '\0' || errno != 0 || id <= 0) {
    return Fail(kExitUsage, "a dead letter id is a positive integer (got \"" + id_text + "\")");
  }
  std::unique_ptr<Store> store;
  if (int rc = OpenStoreOrFail(config, store)) return rc;
  DeadLetter d;
  Status s = store->GetDeadLetter(id, d);
  if (s.code() == Status::Code::kNotFound) return Fail(kExitFailure, "no dead letter " + std::to_string(id));
  if (!s.ok()) return Fail(kExitFailure, s.message());
  std::cout << "id:              " << d.id << "\n"
            << "delivery_id:     " << d.delivery_id << "\n"
            << "channel:         " << d.channel << "\n"
            << "reason:          " << d.reason << "\n"
            << "attempts:        " << d.attempts << "\n"
            << "event:           " << d.event_id << " (" << d.event_type << ")\n"
            << "user:            " << d.user_id << "\n"
            << "first_failed_at: " << FormatRfc3339(d.first_failed_at) << "\n"
            << "dead_at:         " << FormatRfc3339(d.dead_at) << "\n"
            << "error:           " << d.error << "\n";
  auto dump = [](const std::string& text) {
    auto doc = nlohmann::json::parse(text, nullptr, false);
    // A job that was dead-lettered as invalid_job may not be JSON at all: show it as it is.
    return doc.is_discarded() ? text : doc.dump(2);
  };
  std::cout << "headers:\n" << dump(d.headers_json) << "\njob:\n" << dump(d.job_json) << "\n";
  return 0;
}

std::string FormatEta(double seconds) {
  if (seconds < 0 || !std::isfinite(seconds)) return "?";
  long long s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%llds", s);
  return buf;
}

// Set by SIGINT/SIGTERM during a replay: stop taking rows, let the confirms in flight arrive (so
// their rows are deleted), then report. A lock-free atomic store is async-signal-safe.
std::atomic<bool> g_replay_cancel{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void CancelReplay(int) { g_replay_cancel.store(true); }

// The progress line of a replay on a terminal: count, rate and time left, redrawn in place.
class ProgressLine {
 public:
  explicit ProgressLine(bool enabled) : enabled_(enabled) {}
  void Show(const ReplayProgress& p, bool force) {
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(100)) return;  // redrawing is not free
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? static_cast<double>(p.replayed) / secs : 0;
    double eta = rate > 0 ? static_cast<double>(p.total - p.replayed - p.failed - p.skipped) / rate : -1;
    char buf[160];
    std::snprintf(buf, sizeof buf, "\rreplayed %zu/%zu  %.1f/s  ETA %s   ", p.replayed, p.total, rate,
                  FormatEta(eta).c_str());
    std::cerr << buf << std::flush;
    drawn_ = true;
  }
  // Ends the line, so that what follows starts on a line of its own.
  void Break() {
    if (drawn_) std::cerr << "\n";
    drawn_ = false;
  }

 private:
  const bool enabled_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
  bool drawn_ = false;
};

int DlqReplay(const Config& config, const DlqArgs& a) {
  if (a.rate < 0) return Fail(kExitUsage, "--rate must be 0 (unlimited) or more");
  DeadLetterSelection sel;
  std::unique_ptr<Store> store;
  if (int rc = OpenSelection(config, a, sel, store)) return rc;

  size_t total = 0;
  if (a.dry_run) {
    Status s = ForEachDeadLetter(*store, sel, [&](const DeadLetter& d) {
      ++total;
      std::cout << "would replay " << d.id << "  " << d.channel << "  " << d.delivery_id << "  " << d.event_type
                << "  " << d.user_id << "\n";
      return true;
    });
    if (!s.ok()) return Fail(kExitFailure, s.message());
    if (int rc = AuditOrFail(*store, a, "replay", sel, total, true)) return rc;
    if (total == 0) std::cout << "no dead letters match\n";
    else std::cout << "dry run: " << total << " dead letter(s) would be replayed; nothing changed\n";
    return 0;
  }
  // Count first, for the audit record; the count pins the selection, so the replay takes exactly
  // the rows audited.
  if (Status s = CountDeadLetterSelection(*store, sel, total); !s.ok()) return Fail(kExitFailure, s.message());
  if (int rc = AuditOrFail(*store, a, "replay", sel, total, false)) return rc;
  if (total == 0) {
    std::cout << "no dead letters match\n";
    return 0;
  }

  ReplayOptions o;
  o.rate = a.rate;
  auto po = broker::PublisherOptionsFor(config, "herald dlq replay");
  po.reconnect_max = Millis(1000);
  // A small window: enough that confirms overlap (no round trip per message), small enough that
  // a kill leaves few rows replayed-but-not-deleted (which are merely replayed again later).
  po.window = static_cast<int>(o.window);
  broker::Publisher publisher(po);
  publisher.Start();

  ProgressLine line(::isatty(STDERR_FILENO) == 1);
  o.on_progress = [&](const ReplayProgress& p) { line.Show(p, false); };
  o.on_problem = [&](long long id, const std::string& problem) {
    line.Break();
    std::cerr << "herald: dead letter " << id << " " << problem << "\n";
  };
  g_replay_cancel.store(false);
  o.cancel = &g_replay_cancel;
  std::signal(SIGINT, CancelReplay);
  std::signal(SIGTERM, CancelReplay);
  ReplayReport r;
  Status s = ReplayDeadLetters(*store, publisher, sel, o, r);
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  publisher.Stop(Millis(0));
  line.Show({r.total, r.replayed, r.failed, r.skipped}, true);
  line.Break();

  if (r.replayed + r.failed + r.skipped > 0 || s.ok()) {
    std::cout << "replayed " << r.replayed << " of " << r.total << " dead letter(s)";
    if (r.failed) std::cout << ", " << r.failed << " failed (kept)";
    if (r.skipped) std::cout << ", " << r.skipped << " skipped (kept)";
    std::cout << "\n";
  }
  if (!s.ok()) return Fail(kExitFailure, s.message());
  if (r.cancelled) return Fail(kExitInterrupted, "interrupted; the rest are still stored (run the replay again)");
  return r.failed || r.skipped ? kExitFailure : 0;
}

int DlqPurge(const Config& config, const DlqArgs& a) {
  DeadLetterSelection sel;
  std::unique_ptr<Store> store;
  if (int rc = OpenSelection(config, a, sel, store)) return rc;
  // The count pins the selection: what is deleted is what was confirmed, never a letter that
  // arrived while the operator read the prompt.
  size_t total = 0;
  if (Status s = CountDeadLetterSelection(*store, sel, total); !s.ok()) return Fail(kExitFailure, s.message());
  if (total == 0) {
    std::cout << "no dead letters match\n";
    return 0;
  }
  if (!a.yes) {
    if (::isatty(STDIN_FILENO) != 1) {
      return Fail(kExitUsage, "refusing to delete " + std::to_string(total) +
                                  " dead letter(s) without a terminal to confirm; pass --yes");
    }
    std::cerr << "delete " << total << " dead letters? [y/N] " << std::flush;
    std::string answer;
    std::getline(std::cin, answer);
    if (answer != "y" && answer != "Y" && answer != "yes") {
      std::cout << "nothing deleted\n";
      return 0;
    }
  }
  if (int rc = AuditOrFail(*store, a, "purge", sel, total, false)) return rc;
  size_t deleted = 0;
  Status s = PurgeDeadLetters(*store, sel, deleted);
  std::cout << "deleted " << deleted << " dead letter(s)\n";
  if (!s.ok()) return Fail(kExitFailure, s.message());
  return 0;
}

int DlqAudit(const Config& config, long long limit) {
  if (limit <= 0) return Fail(kExitUsage, "--limit must be at least 1");
  std::unique_ptr<Store> store;
  if (int rc = OpenStoreOrFail(config, store)) return rc;
  std::vector<AuditRecord> records;
  if (Status s = store->ListAudit(static_cast<size_t>(limit), records); !s.ok()) return Fail(kExitFailure, s.message());
  if (records.empty()) {
    std::cout << "no audit records\n";
    return 0;
  }
  std::vector<std::vector<std::string>> table = {{"ID", "AT", "ACTOR", "ACTION", "COUNT", "DRY_RUN", "FILTER"}};
  for (const AuditRecord& r : records) {
    table.push_back({std::to_string(r.id), FormatRfc3339(r.at), r.actor, r.action, std::to_string(r.count),
                     r.dry_run ? "yes" : "no", r.filter_json});
  }
  PrintTable(table);
  return 0;
}

int Run(int argc, char** argv) {
  CLI::App app{"herald: publish events and operate Herald"};
  app.require_subcommand(1);
  const char* env_config = std::getenv(kConfigPathEnv);
  std::string config_path = env_config ? env_config : "config/herald.yaml";
  auto* config_opt = app.add_option("-c,--config", config_path,
                                    "configuration file (default $HERALD_CONFIG or config/herald.yaml)");
  app.set_version_flag("--version", std::string(HERALD_VERSION));

  PublishArgs pa;
  auto* publish = app.add_subcommand("publish", "publish one event to herald.events and wait for the broker's confirm");
  publish->add_option("--type", pa.type, "event type, e.g. billing.invoice.paid");
  publish->add_option("--to", pa.to, "recipient user ids (comma-separated or repeated)");
  publish->add_option("--topic", pa.topic, "a topic instead of recipients");
  publish->add_option("--var", pa.vars, "template variable KEY=VALUE (repeatable)");
  publish->add_option("--channel", pa.channels, "restrict to these channels (comma-separated or repeated)");
  publish->add_option("--id", pa.id, "event id (default: a random one)");
  publish->add_option("--source", pa.source, "event source (default /herald-cli)");
  publish->add_option("--priority", pa.priority, "critical, high, normal or low");
  publish->add_option("--expires-at", pa.expires_at, "RFC 3339 time after which loud channels are skipped");
  publish->add_option("--file", pa.file, "publish this CloudEvents JSON file as is (- for standard input)");
  publish->add_option("--timeout", pa.timeout_s, "seconds to wait for the broker (default 10)");

  auto* topology = app.add_subcommand("topology", "broker topology");
  topology->require_subcommand(1);
  auto* declare = topology->add_subcommand("declare", "declare every exchange and queue (idempotent)");

  std::string prefs_user, prefs_file, topic_name;
  std::vector<std::string> topic_users;
  auto* prefs = app.add_subcommand("prefs", "read or replace a user's preferences in the store");
  prefs->require_subcommand(1);
  auto* prefs_get = prefs->add_subcommand("get", "print a user's preferences as JSON");
  prefs_get->add_option("USER", prefs_user, "user id")->required();
  auto* prefs_set = prefs->add_subcommand("set", "replace a user's preferences and tell running processes");
  prefs_set->add_option("USER", prefs_user, "user id")->required();
  prefs_set->add_option("--file", prefs_file, "preferences JSON (default: standard input)");
  auto* topic = app.add_subcommand("topic", "manage topic subscribers (events may name a topic)");
  topic->require_subcommand(1);
  auto* topic_sub = topic->add_subcommand("subscribe", "add users to a topic");
  auto* topic_unsub = topic->add_subcommand("unsubscribe", "remove users from a topic");
  auto* topic_list = topic->add_subcommand("list", "print a topic's subscribers");
  for (auto* c : {topic_sub, topic_unsub, topic_list}) c->add_option("TOPIC", topic_name, "topic name")->required();
  for (auto* c : {topic_sub, topic_unsub}) c->add_option("USERS", topic_users, "user ids")->required();

  DlqArgs dlq_args;
  long long audit_limit = 50;
  auto* dlq = app.add_subcommand("dlq", "inspect, replay and purge dead letters");
  dlq->require_subcommand(1);
  auto* dlq_list = dlq->add_subcommand("list", "list dead letters (a table; --json or --summary)");
  auto* dlq_show = dlq->add_subcommand("show", "print one dead letter in full");
  dlq_show->add_option("ID", dlq_args.id, "dead letter id")->required();
  auto* dlq_replay = dlq->add_subcommand("replay", "publish dead letters to their channel again, then delete them");
  auto* dlq_purge = dlq->add_subcommand("purge", "delete dead letters");
  auto* dlq_audit = dlq->add_subcommand("audit", "print who replayed or purged what, newest first");
  dlq_audit->add_option("--limit", audit_limit, "at most this many records (default 50)");
  for (auto* c : {dlq_list, dlq_replay, dlq_purge}) {
    c->add_option("--channel", dlq_args.query.channel, "only this channel");
    c->add_option("--reason", dlq_args.query.reason, "only this reason (permanent, attempts_exhausted, ...)");
    c->add_option("--type", dlq_args.query.type, "only this event type");
    c->add_option("--user", dlq_args.query.user, "only this user");
    c->add_option("--since", dlq_args.query.since, "dead at or after: RFC 3339 or a duration ago (2h)");
    c->add_option("--until", dlq_args.query.until, "dead before: RFC 3339 or a duration ago (2h)");
    c->add_option("--limit", dlq_args.query.limit, "at most this many, lowest ids first (default: all)");
  }
  for (auto* c : {dlq_replay, dlq_purge}) c->add_option("--actor", dlq_args.actor, "who, for the audit (default $USER)");
  dlq_list->add_flag("--json", dlq_args.json, "one JSON array, for scripts");
  dlq_list->add_flag("--summary", dlq_args.summary, "counts by channel and reason");
  dlq_replay->add_flag("--dry-run", dlq_args.dry_run, "list what would be replayed; change nothing");
  dlq_replay->add_option("--rate", dlq_args.rate, "at most this many per second (default 0: unlimited)");
  dlq_purge->add_flag("--yes", dlq_args.yes, "do not ask");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  Config config;
  bool from_file = false;
  try {
    config = LoadCliConfig(config_path, config_opt->count() > 0 || env_config != nullptr, from_file);
  } catch (const ConfigError& e) {
    return Fail(kExitUsage, std::string("configuration error:\n") + e.what());
  }
  SetupLogging("warn", "text");

  if (publish->parsed()) return Publish(config, from_file, pa);
  if (declare->parsed()) return DeclareTopologyCommand(config);
  if (prefs_get->parsed()) return PrefsGet(config, prefs_user);
  if (prefs_set->parsed()) return PrefsSet(config, prefs_user, prefs_file);
  if (topic_sub->parsed()) return Topic(config, "subscribe", topic_name, topic_users);
  if (topic_unsub->parsed()) return Topic(config, "unsubscribe", topic_name, topic_users);
  if (topic_list->parsed()) return Topic(config, "list", topic_name, {});
  if (dlq_list->parsed()) return DlqList(config, dlq_args);
  if (dlq_show->parsed()) return DlqShow(config, dlq_args.id);
  if (dlq_replay->parsed()) return DlqReplay(config, dlq_args);
  if (dlq_purge->parsed()) return DlqPurge(config, dlq_args);
  if (dlq_audit->parsed()) return DlqAudit(config, audit_limit);
  return kExitUsage;
}

}  // namespace
}  // namespace herald

int main(int argc, char** argv) { return herald::Run(argc, argv); }
