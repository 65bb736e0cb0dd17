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
#include "engine/event.h"
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
// named explicitly, in which case it must exist.
Config LoadCliConfig(const std::string& path, bool explicit_path) {
  std::ifstream probe(path);
  if (!probe && !explicit_path) return LoadConfigText("{}", "(defaults)", ProcessEnvironment());
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

int Publish(const Config& config, const PublishArgs& a) {
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
  if (auto why = ParseEvent(body, limits, SystemClock::Instance().Now(), event)) {
    return Fail(kExitUsage, "event is invalid: " + why->ToString());
  }

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  Config config;
  try {
    config = LoadCliConfig(config_path, config_opt->count() > 0 || env_config != nullptr);
  } catch (const ConfigError& e) {
    return Fail(kExitUsage, std::string("configuration error:\n") + e.what());
  }
  SetupLogging("warn", "text");

  if (publish->parsed()) return Publish(config, pa);
  if (declare->parsed()) return DeclareTopologyCommand(config);
  return kExitUsage;
}

}  // namespace
}  // namespace herald

int main(int argc, char** argv) { return herald::Run(argc, argv); }
