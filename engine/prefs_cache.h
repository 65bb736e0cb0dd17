// An in-process cache of user preferences in front of the store: bounded (LRU) and with a TTL,
// so a change another process made without telling us is seen within the TTL at worst; changes
// made through Herald are announced on herald.control and invalidate at once (engine/control.h).
#pragma once

#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/time.h"
#include "store/store.h"

namespace herald {

class PreferenceCache {
 public:
  using Entry = std::shared_ptr<const Preferences>;

  // `max_entries` 0 disables caching. All methods are thread-safe.
  PreferenceCache(Store& store, size_t max_entries, Millis ttl, const Clock& clock);

  // One entry per user, in order; users the store does not know get default preferences.
  Status GetMany(const std::vector<std::string>& users, std::vector<Entry>& out);
  Status Get(const std::string& user, Entry& out);

  void Invalidate(const std::string& user);
  void Clear();  // e.g. after missing invalidations while disconnected
  size_t Size();

 private:
  struct Slot {
    Entry prefs;
    SystemTime loaded_at;
    std::list<std::string>::iterator lru;
  };
  void Insert(const std::string& user, Entry prefs, SystemTime now);  // REQUIRES: mu_ held

  Store& store_;
  const size_t max_entries_;
  const Millis ttl_;
  const Clock& clock_;
  std::mutex mu_;
  std::list<std::string> lru_;  // most recently used first
  std::unordered_map<std::string, Slot> slots_;
};

}  // namespace herald
