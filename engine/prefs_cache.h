// An in-process cache of user preferences in front of the store, bounded (LRU).
//
// Freshness: a change made through Herald (API, CLI, any process) is written with an entry in the
// store's change log (Store::PreferenceChanges). Before a lookup, when kPollEvery has passed since
// it last looked, the cache reads the entries added since and drops those users, so a change
// made anywhere is used within about kPollEvery. Changes announced on herald.control
// (engine/control.h) are dropped at once. A reader that finds part of the log purged before it
// read it, or the log behind what it saw (another store file), drops everything. The TTL bounds
// what nothing tells it about (a store edited by hand).
#pragma once

#include <atomic>
#include <limits>
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
  // How often a lookup first reads the store's change log.
  static constexpr Millis kPollEvery{1000};
  // Change-log entries read per query.
  static constexpr size_t kPollBatch = 1000;

  // `max_entries` 0 disables caching. All methods are thread-safe.
  PreferenceCache(Store& store, size_t max_entries, Millis ttl, const Clock& clock);

  // One entry per user, in order; users the store does not know get default preferences.
  Status GetMany(const std::vector<std::string>& users, std::vector<Entry>& out);
  Status Get(const std::string& user, Entry& out);

  // Loads stored preferences, in user id order, until the cache is full or all are in; entries
  // already cached stay as they are. `loaded` counts what was added. Stops at the first error
  // (a stored document that cannot be read: lookups report it for that user as before).
  Status Warm(size_t& loaded);

  void Invalidate(const std::string& user);
  void Clear();  // e.g. when the change log shows entries purged before they were read
  size_t Size();

 private:
  struct Slot {
    Entry prefs;
    SystemTime loaded_at;
    std::list<std::string>::iterator lru;
  };
  void Insert(const std::string& user, Entry prefs, SystemTime now);  // REQUIRES: mu_ held
  void DropLocked(const std::string& user);                           // REQUIRES: mu_ held
  // Reads the change log if kPollEvery has passed (one thread at a time; the others go on).
  void PollChanges(SystemTime now);

  Store& store_;
  const size_t max_entries_;
  const Millis ttl_;
  const Clock& clock_;
  std::mutex mu_;
  std::list<std::string> lru_;  // most recently used first
  std::unordered_map<std::string, Slot> slots_;
  // Bumped by every drop: a load that began before one must not put what it read into the cache,
  // since the drop may have been of that user, after the read.
  unsigned long long generation_ = 0;

  std::mutex poll_mu_;
  long long log_seen_ = 0;  // the change log has been applied up to this entry
  bool log_started_ = false;
  bool poll_failing_ = false;  // warned that the log cannot be read
  std::atomic<SystemTime::rep> next_poll_{0};
};

}  // namespace herald
