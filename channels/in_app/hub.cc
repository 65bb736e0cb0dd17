#include "channels/in_app/hub.h"

#include <vector>

namespace herald {

uint64_t InAppHub::Subscribe(const std::string& user, Listener listener) {
  std::lock_guard lock(mu_);
  uint64_t id = next_id_++;
  by_user_.emplace(user, std::make_pair(id, std::move(listener)));
  user_of_[id] = user;
  return id;
}

void InAppHub::Unsubscribe(uint64_t id) {
  std::lock_guard lock(mu_);
  auto u = user_of_.find(id);
  if (u == user_of_.end()) return;
  auto [first, last] = by_user_.equal_range(u->second);
  for (auto it = first; it != last; ++it) {
    if (it->second.first == id) {
      by_user_.erase(it);
      break;
    }
  }
  user_of_.erase(u);
}

void InAppHub::Publish(const InboxEntry& entry) {
  std::vector<Listener> listeners;
  {
    std::lock_guard lock(mu_);
    auto [first, last] = by_user_.equal_range(entry.user_id);
    for (auto it = first; it != last; ++it) listeners.push_back(it->second.second);
  }
  for (const Listener& l : listeners) l(entry);
}

size_t InAppHub::Subscribers(const std::string& user) {
  std::lock_guard lock(mu_);
  return by_user_.count(user);
}

}  // namespace herald
