#include "engine/presence.h"

namespace herald {

bool LocalPresence::IsActive(const std::string& user, SystemTime now) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return false;
  const State& s = it->second;
  return (s.streams > 0 && !s.background) || now < s.active_until;
}

void LocalPresence::Heartbeat(const std::string& user, bool active, SystemTime now) {
  std::lock_guard lock(mu_);
  State& s = users_[user];
  s.background = !active;
  s.active_until = active ? now + ttl_ : SystemTime{};
  if (++ops_ % 4096 == 0) Sweep(now);
}

void LocalPresence::StreamOpened(const std::string& user) {
  std::lock_guard lock(mu_);
  State& s = users_[user];
  ++s.streams;
  s.background = false;
}

void LocalPresence::StreamClosed(const std::string& user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it != users_.end() && it->second.streams > 0) --it->second.streams;
}

size_t LocalPresence::Tracked() {
  std::lock_guard lock(mu_);
  return users_.size();
}

void LocalPresence::Sweep(SystemTime now) {
  for (auto it = users_.begin(); it != users_.end();) {
    if (it->second.streams == 0 && it->second.active_until <= now) it = users_.erase(it);
    else ++it;
  }
}

}  // namespace herald
