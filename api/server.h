// The HTTP API (DESIGN.md's route table; docs/api.md and docs/openapi.yaml describe it).
#pragma once

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "api/auth.h"
#include "api/http.h"
#include "broker/publisher.h"
#include "channels/in_app/hub.h"
#include "core/config.h"
#include "engine/prefs_cache.h"
#include "engine/presence.h"
#include "store/store.h"
#include "workers/dead_letters.h"

namespace herald::api {

struct ApiDeps {
  const Config* config = nullptr;
  Store* store = nullptr;
  broker::Publisher* publisher = nullptr;  // started; shared with the other roles
  Presence* presence = nullptr;            // the engine's, when both run in this process
  InAppHub* hub = nullptr;                 // new in-app entries of this process's in-app worker
  PreferenceCache* cache = nullptr;        // this process's cache, dropped at once on a change
  const Clock* clock = nullptr;
  // Whether an in-app worker runs in this process. If not, streams look for new entries in the
  // store every `stream_poll` instead of being woken by the hub.
  bool local_in_app = true;
  Millis stream_poll = Millis(1000);
};

class ApiServer {
 public:
  explicit ApiServer(ApiDeps deps);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds api.listen and serves on a thread of its own. Fails if the address cannot be bound.
  Status Start();
  // Ends open streams, stops accepting and waits for requests in progress. Idempotent.
  void Stop();
  int Port() const { return port_; }
  size_t OpenStreams() const { return streams_open_.load(); }

  // Every route as "METHOD /path/{param}", for the OpenAPI document's test.
  static std::vector<std::string> RouteList();

 private:
  struct Stream;
  // `self` may be null when only the table is wanted (RouteList).
  static void AddRoutes(ApiServer* self, Router& router);

  void PostEvent(Call& c);
  void GetPreferences(Call& c);
  void PutPreferences(Call& c);
  void PatchPreferences(Call& c);
  bool LoadPreferences(Call& c, Preferences& out);
  void StorePreferences(Call& c, const nlohmann::json& doc);
  void PostPresence(Call& c);
  void ListNotifications(Call& c);
  void MarkRead(Call& c);
  void MarkAllRead(Call& c);
  void UnreadCount(Call& c);
  void OpenStream(Call& c);
  void GetTrace(Call& c);
  void FindTrace(Call& c);
  void SendTrace(Call& c, const TraceRecord& t);
  void ListDeadLetters(Call& c);
  void ReplayDeadLetters(Call& c);
  void PurgeDeadLetters(Call& c);
  // Checks the query, takes the one-at-a-time lock and counts (pinning) the selection; false once
  // a problem was rendered.
  bool SelectDeadLetters(Call& c, const DeadLetterQuery& q, DeadLetterSelection& sel,
                         std::unique_lock<std::mutex>& lock, size_t& total);
  void Healthz(Call& c);
  void Readyz(Call& c);
  void MetricsText(Call& c);

  ApiDeps d_;
  const Config& config_;
  Authenticator auth_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> streams_open_{0};
  std::mutex streams_mu_;
  std::set<std::shared_ptr<Stream>> streams_;
  std::mutex replay_mu_;  // one dead-letter replay or purge at a time
};

}  // namespace herald::api
