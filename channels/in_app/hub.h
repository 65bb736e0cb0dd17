// InAppHub: fans new inbox entries out to the live streams open in this process. The in-app
// channel publishes; the API's stream subscribes. Entries missed while no stream was open are
// read from the inbox on resume, so the hub never needs to buffer.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "store/store.h"

namespace herald {

class InAppHub {
 public:
  // Runs on the publishing thread; must be quick and must not call the hub.
  using Listener = std::function<void(const InboxEntry&)>;

  // Thread-safe. Returns an id for Unsubscribe.
  uint64_t Subscribe(const std::string& user, Listener listener);
  void Unsubscribe(uint64_t id);
  void Publish(const InboxEntry& entry);
  size_t Subscribers(const std::string& user);

 private:
  std::mutex mu_;
  uint64_t next_id_ = 1;
  std::unordered_multimap<std::string, std::pair<uint64_t, Listener>> by_user_;
  std::unordered_map<uint64_t, std::string> user_of_;
};

}  // namespace herald
