// herald: the command-line tool for publishers and operators.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "broker/publisher.h"
#include "broker/topology.h"
#include "core/config.h"
#include "core/log.h"
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
  return kExitUsage;
}

}  // namespace
}  // namespace herald

int main(int argc, char** argv) { return herald::Run(argc, argv); }
