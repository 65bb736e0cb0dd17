// heraldd: runs any set of Herald's roles (engine, worker, api) in one process.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <pthread.h>
#include <sys/resource.h>
#include <spdlog/spdlog.h>

#include "api/server.h"
#include "broker/options.h"
#include "broker/publisher.h"
#include "broker/topology.h"
#include "core/config.h"
#include "core/log.h"
#include "channels/in_app/hub.h"
#include "channels/registry.h"
#include "engine/control.h"
#include "engine/intake.h"
#include "engine/notification_engine.h"
#include "engine/templates.h"
#include "store/store.h"
#include "workers/worker.h"

namespace herald {
namespace {

const std::vector<std::string> kRoles = {"engine", "worker", "api"};

std::string RedactUrl(const std::string& url) {
  size_t at = url.rfind('@'), scheme = url.find("://");
  if (at == std::string::npos || scheme == std::string::npos) return url;
  size_t colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

int Run(int argc, char** argv) {
  CLI::App app{"heraldd: Herald's notification daemon"};
  const char* env_config = std::getenv(kConfigPathEnv);
  std::string config_path = env_config ? env_config : "config/herald.yaml";
  std::string roles_arg = "engine,worker,api";
  app.add_option("-c,--config", config_path, "configuration file (default $HERALD_CONFIG or config/herald.yaml)");
  app.add_option("--roles", roles_arg, "comma-separated roles to run: engine, worker, api");
  app.set_version_flag("--version", std::string(HERALD_VERSION));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  std::set<std::string> roles;
  for (size_t start = 0; start <= roles_arg.size();) {
    size_t comma = roles_arg.find(',', start);
    std::string role = roles_arg.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (std::find(kRoles.begin(), kRoles.end(), role) == kRoles.end()) {
      std::cerr << "heraldd: unknown role \"" << role << "\" in --roles (known: engine, worker, api)\n";
      return 2;
    }
    roles.insert(role);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }

  Config config;
  try {
    config = LoadConfig(config_path, ProcessEnvironment());
    CheckTemplates(config);
  } catch (const ConfigError& e) {
    std::cerr << "heraldd: configuration error:\n" << e.what() << "\n";
    return 2;
  }
  SetupLogging(config.log.level, config.log.format);

  // Signals are taken by sigwait in this thread only; every thread created later inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  // Every live stream holds a socket: allow as many descriptors as the system lets us.
  if (rlimit nofile{}; getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }

  std::unique_ptr<Store> store;
  if (Status s = OpenStore(config.store.url, store, KnownChannels()); !s.ok()) {
    spdlog::critical("cannot open the store: {}", s.message());
    return 1;
  }

  // Channels are created before anything connects, so unusable channel settings stop start-up
  // like any other configuration error.
  const Clock& clock = SystemClock::Instance();
  InAppHub hub;
  std::vector<std::pair<std::string, std::unique_ptr<Channel>>> channels;
  if (roles.count("worker")) {
    ChannelContext ctx{store.get(), &hub, &clock};
    std::string problems;
    for (const std::string& name : config.EnabledChannels()) {
      const ChannelSpec* spec = FindChannel(name);
      if (!spec || !spec->make) {
        spdlog::info("channel {}: no provider in this version; its jobs wait in herald.deliver.{}", name, name);
        continue;
      }
      std::unique_ptr<Channel> impl;
      if (Status s = spec->make(config.channels.at(name), ctx, impl); !s.ok()) {
        problems += s.message() + " (or set channels." + name + ".enabled: false)\n";
        continue;
      }
      channels.emplace_back(name, std::move(impl));
    }
    if (!problems.empty()) {
      std::cerr << "heraldd: configuration error:\n" << problems;
      return 2;
    }
  }

  auto spec = broker::TopologySpec::FromConfig(config);
  {
    // Fail fast on what retrying cannot fix (wrong credentials, conflicting queue arguments);
    // an unreachable broker is only a warning: every role connects and retries by itself.
    broker::Connection probe(broker::ConnectOptionsFor(config, "heraldd start-up check"));
    Status s = probe.Open();
    if (s.ok()) s = broker::DeclareTopology(probe, spec);
    if (!s.ok()) {
      if (s.code() == Status::Code::kRejected || s.message().find("login") != std::string::npos) {
        spdlog::critical("cannot use the broker at {}: {}", RedactUrl(config.broker.url), s.message());
        return 1;
      }
      spdlog::warn("broker not reachable yet ({}); roles will keep retrying", s.message());
    }
  }

  broker::Publisher publisher(broker::PublisherOptionsFor(config, "heraldd publisher"));
  publisher.Start();

  LocalPresence presence(config.engine.presence_ttl);
  PreferenceCache prefs(*store, static_cast<size_t>(config.engine.prefs_cache_size), config.engine.prefs_cache_ttl,
                        clock);
  std::unique_ptr<NotificationEngine> engine;
  std::unique_ptr<Intake> intake;
  ControlListener control(config, prefs);
  control.Start();
  std::unique_ptr<api::ApiServer> api_server;
  if (roles.count("api")) {
    api::ApiDeps deps;
    deps.config = &config;
    deps.store = store.get();
    deps.publisher = &publisher;
    deps.presence = &presence;
    deps.hub = &hub;
    deps.cache = &prefs;
    deps.clock = &clock;
    deps.local_in_app = roles.count("worker") && config.channels.at("in_app").enabled;
    if (config.api.keys.empty()) spdlog::warn("api: no keys configured (api.keys): only user tokens and health routes work");
    if (config.api.jwt_secret.empty()) spdlog::warn("api: api.jwt_secret is empty: user tokens are refused");
    api_server = std::make_unique<api::ApiServer>(deps);
    if (Status s = api_server->Start(); !s.ok()) {
      spdlog::critical("{}", s.message());
      control.Stop();
      publisher.Stop(Millis(0));
      return 1;
    }
  }
  if (roles.count("engine")) {
    if (config.engine.prefs_cache_warm && config.engine.prefs_cache_size > 0) {
      // Before the first event: otherwise each of the first events after a start reads its
      // recipients' preferences from the store (bench/README.md, sixth round).
      const auto began = std::chrono::steady_clock::now();
      size_t loaded = 0;
      Status s = prefs.Warm(loaded);
      const auto took = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - began);
      if (s.ok()) {
        spdlog::info("engine: loaded the preferences of {} user(s) into the cache in {}", loaded, FormatDuration(took));
      } else {
        spdlog::warn("engine: loading preferences into the cache stopped after {} user(s): {}", loaded, s.message());
      }
    }
    engine = std::make_unique<NotificationEngine>(config, *store, prefs, presence, publisher, clock);
    engine->Start();
    intake = std::make_unique<Intake>(config, *engine, publisher, clock);
    intake->Start();
  }
  std::vector<std::unique_ptr<ChannelWorker>> workers;
  std::unique_ptr<DeadLetterDrain> drain;
  if (roles.count("worker")) {
    for (auto& [name, impl] : channels) {
      workers.push_back(std::make_unique<ChannelWorker>(config, name, *impl, *store, publisher, clock));
      workers.back()->Start();
    }
    drain = std::make_unique<DeadLetterDrain>(config, *store, clock);
    drain->Start();
  }

  std::string role_list;
  for (const std::string& r : roles) role_list += (role_list.empty() ? "" : ",") + r;
  spdlog::info("heraldd {} started: roles {}, broker {}, queue type {}", HERALD_VERSION, role_list,
               RedactUrl(config.broker.url), config.broker.queue_type);

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("received {}, finishing in-flight work (up to {})", sig == SIGTERM ? "SIGTERM" : "SIGINT",
               FormatDuration(config.shutdown_grace));
  // The API and the consumers stop first so nothing new arrives, then the publisher drains its confirms.
  if (api_server) api_server->Stop();
  if (intake) intake->Stop(config.shutdown_grace);
  if (engine) engine->Stop();
  for (auto& w : workers) w->Stop(config.shutdown_grace);
  if (drain) drain->Stop(config.shutdown_grace);
  control.Stop();
  publisher.Stop(config.shutdown_grace);
  store->DrainWrites();  // the last records and event marks, while what they call back still exists
  if (size_t batches = store->GroupBatches()) {
    spdlog::info("store: {} writes in {} group transactions ({:.1f} per transaction)", store->GroupWrites(), batches,
                 static_cast<double>(store->GroupWrites()) / static_cast<double>(batches));
  }
  spdlog::info("heraldd stopped");
  return 0;
}

}  // namespace
}  // namespace herald

int main(int argc, char** argv) { return herald::Run(argc, argv); }
