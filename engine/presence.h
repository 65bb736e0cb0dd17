// Presence: whether a user is active in the app right now (DESIGN.md rule 5).
//
// Active means: a live stream is open (and the app has not said it went to the background), or an
// "active" heartbeat arrived within the presence TTL. A "background" heartbeat makes the user
// inactive at once. This is the in-process implementation; the API role feeds it, and a shared
// implementation for several nodes can replace it behind the same interface.
#pragma once

#include <mutex>
#include <string>
#include <unordered_map>

#include "core/clock.h"
#include "core/time.h"

namespace herald {

class Presence {
 public:
  virtual ~Presence() = default;
  // All methods are thread-safe.
  virtual bool IsActive(const std::string& user, SystemTime now) = 0;
  virtual void Heartbeat(const std::string& user, bool active, SystemTime now) = 0;
  virtual void StreamOpened(const std::string& user) = 0;
  virtual void StreamClosed(const std::string& user) = 0;
};

class LocalPresence final : public Presence {
 public:
  explicit LocalPresence(Millis ttl) : ttl_(ttl) {}
  bool IsActive(const std::string& user, SystemTime now) override;
  void Heartbeat(const std::string& user, bool active, SystemTime now) override;
  void StreamOpened(const std::string& user) override;
  void StreamClosed(const std::string& user) override;
  size_t Tracked();  // users with state, for tests: expired ones are dropped

 private:
  struct State {
    SystemTime active_until{};
    int streams = 0;
    bool background = false;
  };
  void Sweep(SystemTime now);  // REQUIRES: mu_ held

  const Millis ttl_;
  std::mutex mu_;
  std::unordered_map<std::string, State> users_;
  size_t ops_ = 0;
};

}  // namespace herald
