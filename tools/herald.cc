// herald: the command-line tool for publishers and operators.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "broker/publisher.h"
#include "broker/topology.h"
#include "core/config.h"
#include "core/log.h"
#include "core/time.h"
#include "core/token_bucket.h"
#include "engine/control.h"
#include "engine/event.h"
#include "engine/notification_engine.h"
#include "store/store.h"
#include "broker/options.h"

namespace herald {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

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
              << "); they see the change within engine.prefs_cache_ttl (" << FormatDuration(config.engine.prefs_cache_ttl)
              << ")\n";
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

// ---- herald dlq: inspect, replay and purge dead letters ----

struct DlqArgs {
  std::string channel, reason, type, user, since, until, id, actor;
  long long limit = 0;  // 0 = every matching row
  bool json = false, summary = false, dry_run = false, yes = false;
  double rate = 0;  // replays per second; 0 = unlimited
};

// A time bound: RFC 3339, or a duration ("2h") meaning that long before now.
bool ParseTimeBound(const std::string& flag, const std::string& text, std::optional<SystemTime>& out,
                    std::string& error) {
  if (text.empty()) return true;
  if (auto t = ParseRfc3339(text)) {
    out = *t;
    return true;
  }
  if (auto d = ParseDuration(text)) {
    out = SystemClock::Instance().Now() - *d;
    return true;
  }
  error = flag + ": \"" + text + "\" is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration (2h, 30m)";
  return false;
}

// Builds the store filter from the flags; on a bad flag returns false with `error` saying which.
// `echo` receives the selection as given, for the audit record.
bool BuildDlqFilter(const DlqArgs& a, DeadLetterFilter& f, nlohmann::json& echo, std::string& error) {
  if (!a.channel.empty()) {
    const auto& known = KnownChannels();
    if (std::find(known.begin(), known.end(), a.channel) == known.end()) {
      std::string list;
      for (const std::string& c : known) list += (list.empty() ? "" : ", ") + c;
      error = "unknown channel \"" + a.channel + "\" (known: " + list + ")";
      return false;
    }
  }
  if (a.limit < 0) {
    error = "--limit must be 0 (no limit) or more (got " + std::to_string(a.limit) + ")";
    return false;
  }
  if (!ParseTimeBound("--since", a.since, f.since, error) || !ParseTimeBound("--until", a.until, f.until, error)) {
    return false;
  }
  f.channel = a.channel;
  f.reason = a.reason;
  f.event_type = a.type;
  f.user_id = a.user;
  echo = nlohmann::json::object();
  if (!a.channel.empty()) echo["channel"] = a.channel;
  if (!a.reason.empty()) echo["reason"] = a.reason;
  if (!a.type.empty()) echo["type"] = a.type;
  if (!a.user.empty()) echo["user"] = a.user;
  // Resolved times: "2h" means nothing once the audit record is read a week later.
  if (f.since) echo["since"] = FormatRfc3339(*f.since);
  if (f.until) echo["until"] = FormatRfc3339(*f.until);
  if (a.limit > 0) echo["limit"] = a.limit;
  return true;
}

// Visits matching rows in id order, a page at a time so any number of rows fits in bounded
// memory, stopping after `limit` rows (0 = all). `visit` returns false to stop early.
constexpr size_t kDlqPage = 500;
Status ForEachDeadLetter(Store& store, DeadLetterFilter f, long long limit,
                         const std::function<bool(const DeadLetter&)>& visit) {
  size_t left = limit > 0 ? static_cast<size_t>(limit) : std::numeric_limits<size_t>::max();
  std::vector<DeadLetter> page;
  while (left > 0) {
    f.limit = std::min(kDlqPage, left);
    if (Status s = store.ListDeadLetters(f, page); !s.ok()) return s;
    for (const DeadLetter& d : page) {
      if (!visit(d)) return Status::Ok();
    }
    left -= page.size();
    if (page.size() < f.limit) break;
    f.after_id = page.back().id;
  }
  return Status::Ok();
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
  DeadLetterFilter f;
  nlohmann::json echo;
  std::string error;
  if (!BuildDlqFilter(a, f, echo, error)) return Fail(kExitUsage, error);
  std::unique_ptr<Store> store;
  if (int rc = OpenStoreOrFail(config, store)) return rc;

  size_t n = 0;
  std::map<std::pair<std::string, std::string>, size_t> counts;
  std::vector<std::vector<std::string>> table = {{"ID", "DEAD_AT", "CHANNEL", "REASON", "ATTEMPTS", "TYPE", "USER", "ERROR"}};
  nlohmann::json array = nlohmann::json::array();
  Status s = ForEachDeadLetter(*store, f, a.limit, [&](const DeadLetter& d) {
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

std::string Actor(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* user = std::getenv("USER");
  return user && *user ? user : "unknown";
}

// Records the action before it runs: a replay killed halfway must still show who started it.
int RecordAudit(Store& store, const DlqArgs& a, const std::string& action, const nlohmann::json& echo, size_t count,
                bool dry_run) {
  AuditRecord r;
  r.at = SystemClock::Instance().Now();
  r.actor = Actor(a.actor);
  r.action = action;
  r.filter_json = echo.dump();
  r.count = static_cast<long long>(count);
  r.dry_run = dry_run;
  if (Status s = store.PutAudit(r); !s.ok()) {
    return Fail(kExitFailure, "cannot record the audit entry (nothing was changed): " + s.message());
  }
  return 0;
}

// The job as it goes back to its channel: a fresh first attempt, without the retry bookkeeping
// the worker added (workers/worker.cc), so it gets the full retry schedule again.
bool RewriteJob(const DeadLetter& d, std::string& body, std::string& error) {
  auto job = nlohmann::json::parse(d.job_json, nullptr, false);
  if (job.is_discarded() || !job.is_object()) {
    error = "its job is not a JSON object";
    return false;
  }
  job["attempt"] = 1;
  job.erase("first_failed_at");
  job.erase("last_error");
  body = job.dump();
  return true;
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

int DlqReplay(const Config& config, const DlqArgs& a) {
  DeadLetterFilter f;
  nlohmann::json echo;
  std::string error;
  if (!BuildDlqFilter(a, f, echo, error)) return Fail(kExitUsage, error);
  if (a.rate < 0) return Fail(kExitUsage, "--rate must be 0 (unlimited) or more");
  std::unique_ptr<Store> store;
  if (int rc = OpenStoreOrFail(config, store)) return rc;

  // Count first, for the progress line and the audit record; rows are read again while
  // replaying, a page at a time, so the selection never has to fit in memory.
  size_t total = 0;
  long long last_id = 0;
  Status s = ForEachDeadLetter(*store, f, a.limit, [&](const DeadLetter& d) {
    ++total;
    last_id = d.id;
    if (a.dry_run) {
      std::cout << "would replay " << d.id << "  " << d.channel << "  " << d.delivery_id << "  " << d.event_type
                << "  " << d.user_id << "\n";
    }
    return true;
  });
  if (!s.ok()) return Fail(kExitFailure, s.message());
  if (int rc = RecordAudit(*store, a, "replay", echo, total, a.dry_run)) return rc;
  if (total == 0) {
    std::cout << "no dead letters match\n";
    return 0;
  }
  if (a.dry_run) {
    std::cout << "dry run: " << total << " dead letter(s) would be replayed; nothing changed\n";
    return 0;
  }

  // Outcomes arrive on the publisher thread; rows are deleted here, on this thread, because a
  // callback must stay short and the row may only go once its job is safely on the broker.
  struct Outcome {
    long long id;
    Status status;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Outcome> outcomes;
  size_t in_flight = 0, replayed = 0, failed = 0, skipped = 0;
  auto handle = [&](const std::vector<Outcome>& ready) {
    for (const Outcome& o : ready) {
      if (!o.status.ok()) {
        ++failed;
        std::cerr << "\nherald: dead letter " << o.id << " not replayed (kept): " << o.status.message() << "\n";
      } else if (Status d = store->DeleteDeadLetter(o.id); !d.ok()) {
        // Replayed but still stored: a second replay is harmless (workers skip sent ids).
        ++replayed;
        std::cerr << "\nherald: dead letter " << o.id << " replayed but not deleted: " << d.message() << "\n";
      } else {
        ++replayed;
      }
    }
  };
  // Handles the outcomes that arrived; with `wait_all`, keeps waiting until none is in flight or
  // nothing was confirmed for `stall`: the publisher reconnects on its own, so a slow broker is
  // not a failure, but a dead one must not hang us forever.
  auto settle = [&](bool wait_all, Millis stall) {
    for (;;) {
      std::vector<Outcome> ready;
      {
        std::unique_lock lock(mu);
        if (wait_all && in_flight > 0 && outcomes.empty() &&
            !cv.wait_for(lock, stall, [&] { return !outcomes.empty(); })) {
          return;
        }
        ready.swap(outcomes);
        in_flight -= ready.size();
      }
      handle(ready);
      std::lock_guard lock(mu);
      if (!wait_all || in_flight == 0) return;
    }
  };

  auto po = broker::PublisherOptionsFor(config, "herald dlq replay");
  po.reconnect_max = Millis(1000);
  // A small window: enough that confirms overlap (no round trip per message), small enough that
  // a kill leaves few rows replayed-but-not-deleted (which are merely replayed again later).
  constexpr size_t kWindow = 32;
  po.window = static_cast<int>(kWindow);
  broker::Publisher publisher(po);
  publisher.Start();
  // WaitForRoom() below waits for confirms, which never come while the broker is unreachable:
  // fail clearly now rather than hang with the window full.
  auto connect_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!publisher.Connected() && std::chrono::steady_clock::now() < connect_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!publisher.Connected()) {
    publisher.Stop(Millis(0));
    return Fail(kExitFailure, "cannot reach the broker within 10s; nothing was replayed");
  }
  TokenBucket bucket(a.rate, 1);
  const bool progress = ::isatty(STDERR_FILENO) == 1;
  const auto start = std::chrono::steady_clock::now();
  size_t sent = 0;
  auto show = [&] {
    if (!progress) return;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double rate = secs > 0 ? static_cast<double>(replayed) / secs : 0;
    double eta = rate > 0 ? static_cast<double>(total - replayed - failed - skipped) / rate : -1;
    char buf[160];
    std::snprintf(buf, sizeof buf, "\rreplayed %zu/%zu  %.1f/s  ETA %s   ", replayed, total, rate, FormatEta(eta).c_str());
    std::cerr << buf << std::flush;
  };

  // Only rows selected in the counting pass: a letter dead-lettered meanwhile (perhaps by a
  // replayed job failing again) must not be picked up by this same run.
  s = ForEachDeadLetter(*store, f, a.limit, [&](const DeadLetter& d) {
    if (d.id > last_id) return false;
    std::string body, why;
    if (!RewriteJob(d, body, why)) {
      ++skipped;
      std::cerr << "\nherald: dead letter " << d.id << " skipped: " << why << "\n";
      return true;
    }
    bucket.Acquire();
    broker::Message m;
    m.exchange = broker::kDeliverExchange;
    m.routing_key = d.channel;
    m.body = std::move(body);
    m.message_id = d.delivery_id;
    m.mandatory = true;  // a channel without a queue is an error, never a silent drop
    m.headers = {{"x-herald-event-id", d.event_id}, {"x-herald-user", d.user_id}, {"x-herald-channel", d.channel},
                 {"x-herald-replayed-from", d.id}};
    {
      std::lock_guard lock(mu);
      ++in_flight;
    }
    long long id = d.id;
    publisher.Publish(std::move(m), [&, id](const Status& st) {
      std::lock_guard lock(mu);
      outcomes.push_back({id, st});
      cv.notify_all();
    });
    ++sent;
    publisher.WaitForRoom(kWindow);
    settle(false, Millis(0));
    show();
    return true;
  });
  settle(true, Millis(30000));
  publisher.Stop(Millis(0));
  settle(true, Millis(1000));  // outcomes failed by Stop
  show();
  if (progress) std::cerr << "\n";
  if (!s.ok()) return Fail(kExitFailure, "reading dead letters: " + s.message());
  std::cout << "replayed " << replayed << " of " << total << " dead letter(s)";
  if (failed) std::cout << ", " << failed << " failed (kept)";
  if (skipped) std::cout << ", " << skipped << " skipped (kept)";
  std::cout << "\n";
  return failed || skipped ? kExitFailure : 0;
}

int DlqPurge(const Config& config, const DlqArgs& a) {
  DeadLetterFilter f;
  nlohmann::json echo;
  std::string error;
  if (!BuildDlqFilter(a, f, echo, error)) return Fail(kExitUsage, error);
  std::unique_ptr<Store> store;
  if (int rc = OpenStoreOrFail(config, store)) return rc;
  std::vector<long long> ids;
  Status s = ForEachDeadLetter(*store, f, a.limit, [&](const DeadLetter& d) {
    ids.push_back(d.id);
    return true;
  });
  if (!s.ok()) return Fail(kExitFailure, s.message());
  if (ids.empty()) {
    std::cout << "no dead letters match\n";
    return 0;
  }
  if (!a.yes) {
    if (::isatty(STDIN_FILENO) != 1) {
      return Fail(kExitUsage, "refusing to delete " + std::to_string(ids.size()) +
                                  " dead letter(s) without a terminal to confirm; pass --yes");
    }
    std::cerr << "delete " << ids.size() << " dead letters? [y/N] " << std::flush;
    std::string answer;
    std::getline(std::cin, answer);
    if (answer != "y" && answer != "Y" && answer != "yes") {
      std::cout << "nothing deleted\n";
      return 0;
    }
  }
  if (int rc = RecordAudit(*store, a, "purge", echo, ids.size(), false)) return rc;
  for (long long id : ids) {
    if (Status d = store->DeleteDeadLetter(id); !d.ok()) return Fail(kExitFailure, "deleting " + std::to_string(id) + ": " + d.message());
  }
  std::cout << "deleted " << ids.size() << " dead letter(s)\n";
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
    c->add_option("--channel", dlq_args.channel, "only this channel");
    c->add_option("--reason", dlq_args.reason, "only this reason (permanent, attempts_exhausted, ...)");
    c->add_option("--type", dlq_args.type, "only this event type");
    c->add_option("--user", dlq_args.user, "only this user");
    c->add_option("--since", dlq_args.since, "dead at or after: RFC 3339 or a duration ago (2h)");
    c->add_option("--until", dlq_args.until, "dead before: RFC 3339 or a duration ago (2h)");
    c->add_option("--limit", dlq_args.limit, "at most this many, lowest ids first (default: all)");
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
