#include "engine/prefs_cache.h"

#include <spdlog/spdlog.h>

#include "core/metrics.h"

namespace herald {
namespace {

Counter& Hits() {
  static Counter& c = Metrics::Global()
                          .Counters("herald_prefs_cache_hits_total", "Preference lookups served from memory.", {})
                          .With({});
  return c;
}

Counter& Misses() {
  static Counter& c = Metrics::Global()
                          .Counters("herald_prefs_cache_misses_total", "Preference lookups that read the store.", {})
                          .With({});
  return c;
}

}  // namespace

PreferenceCache::PreferenceCache(Store& store, size_t max_entries, Millis ttl, const Clock& clock)
    : store_(store), max_entries_(max_entries), ttl_(ttl), clock_(clock) {
  // Registered now, so /metrics shows them at zero before the first lookup.
  Hits();
  Misses();
  // Changes made before now are in what the first lookups read; if the log cannot be read now,
  // the first poll starts it (and drops what was cached until then).
  std::vector<Store::PreferenceChange> none;
  long long head = 0;
  if (store_.PreferenceChanges(std::numeric_limits<long long>::max(), 1, none, head).ok()) {
    log_seen_ = head;
    log_started_ = true;
  }
}

void PreferenceCache::PollChanges(SystemTime now) {
  const SystemTime::rep at = now.time_since_epoch().count();
  if (at < next_poll_.load(std::memory_order_relaxed)) return;
  std::unique_lock poll(poll_mu_, std::try_to_lock);
  if (!poll.owns_lock() || at < next_poll_.load()) return;  // another thread reads it, or just did
  next_poll_ = (now + std::chrono::duration_cast<SystemTime::duration>(kPollEvery)).time_since_epoch().count();
  bool drop_all = false;
  std::vector<Store::PreferenceChange> changes;
  for (;;) {
    long long head = 0;
    if (Status s = store_.PreferenceChanges(log_seen_, kPollBatch, changes, head); !s.ok()) {
      // Cached entries stay (within the TTL); the next poll tries again.
      if (!poll_failing_) spdlog::warn("preferences cache: cannot read the change log: {}", s.message());
      poll_failing_ = true;
      return;
    }
    if (poll_failing_) spdlog::info("preferences cache: the change log can be read again");
    poll_failing_ = false;
    const bool gap = !log_started_ || head < log_seen_ ||
                     (changes.empty() ? head > log_seen_ : changes.front().seq != log_seen_ + 1);
    if (gap) {
      // Not started, another store file (the log is behind what was seen), or entries purged
      // before they were read: any cached entry may be stale.
      drop_all = true;
      log_seen_ = changes.empty() ? head : std::max(head, changes.back().seq);
      log_started_ = true;
      break;
    }
    if (changes.empty()) break;
    {
      std::lock_guard lock(mu_);
      for (const Store::PreferenceChange& c : changes) DropLocked(c.user_id);
      ++generation_;
    }
    log_seen_ = changes.back().seq;
    if (changes.size() < kPollBatch) break;
  }
  if (drop_all) Clear();
}

Status PreferenceCache::Get(const std::string& user, Entry& out) {
  std::vector<Entry> one;
  Status s = GetMany({user}, one);
  if (s.ok()) out = one[0];
  return s;
}

Status PreferenceCache::GetMany(const std::vector<std::string>& users, std::vector<Entry>& out) {
  const SystemTime now = clock_.Now();
  PollChanges(now);
  out.assign(users.size(), nullptr);
  std::vector<std::string> missing;
  std::vector<size_t> missing_at;
  unsigned long long generation;
  {
    std::lock_guard lock(mu_);
    generation = generation_;
    for (size_t i = 0; i < users.size(); ++i) {
      auto it = slots_.find(users[i]);
      if (it != slots_.end() && now - it->second.loaded_at < ttl_) {
        lru_.splice(lru_.begin(), lru_, it->second.lru);
        out[i] = it->second.prefs;
        Hits().Inc();
      } else {
        missing.push_back(users[i]);
        missing_at.push_back(i);
      }
    }
  }
  if (missing.empty()) return Status::Ok();
  Misses().Inc(static_cast<double>(missing.size()));
  std::vector<Preferences> loaded;
  if (Status s = store_.GetPreferencesBatch(missing, loaded); !s.ok()) return s;
  std::unordered_map<std::string, Entry> by_user;
  for (Preferences& p : loaded) {
    std::string id = p.user_id;
    by_user.emplace(std::move(id), std::make_shared<const Preferences>(std::move(p)));
  }
  std::lock_guard lock(mu_);
  // A drop since the read may have been of one of these users: what was read serves this lookup
  // but is not kept.
  const bool keep = generation == generation_;
  for (size_t k = 0; k < missing.size(); ++k) {
    auto it = by_user.find(missing[k]);
    Entry e = it != by_user.end() ? it->second : std::make_shared<const Preferences>(DefaultPreferences(missing[k]));
    out[missing_at[k]] = e;
    if (keep) Insert(missing[k], std::move(e), now);
  }
  return Status::Ok();
}

void PreferenceCache::Insert(const std::string& user, Entry prefs, SystemTime now) {
  if (max_entries_ == 0) return;
  auto it = slots_.find(user);
  if (it != slots_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    it->second.prefs = std::move(prefs);
    it->second.loaded_at = now;
    return;
  }
  lru_.push_front(user);
  slots_.emplace(user, Slot{std::move(prefs), now, lru_.begin()});
  while (slots_.size() > max_entries_) {
    slots_.erase(lru_.back());
    lru_.pop_back();
  }
}

Status PreferenceCache::Warm(size_t& loaded) {
  loaded = 0;
  constexpr size_t kPage = 1000;
  std::string after;
  std::vector<Preferences> page;
  for (;;) {
    unsigned long long generation;
    {
      std::lock_guard lock(mu_);
      if (slots_.size() >= max_entries_) return Status::Ok();
      generation = generation_;
    }
    if (Status s = store_.PreferencesPage(after, kPage, page); !s.ok()) return s;
    if (page.empty()) return Status::Ok();
    after = page.back().user_id;
    const SystemTime now = clock_.Now();
    std::lock_guard lock(mu_);
    // A drop since the read may have been of a user on this page: the page is left out (its users
    // are read when looked up).
    if (generation != generation_) continue;
    for (Preferences& p : page) {
      if (slots_.size() >= max_entries_) return Status::Ok();
      if (slots_.count(p.user_id)) continue;
      std::string user = p.user_id;
      Insert(user, std::make_shared<const Preferences>(std::move(p)), now);
      ++loaded;
    }
    if (page.size() < kPage) return Status::Ok();
  }
}

void PreferenceCache::Invalidate(const std::string& user) {
  std::lock_guard lock(mu_);
  DropLocked(user);
  ++generation_;
}

void PreferenceCache::DropLocked(const std::string& user) {
  auto it = slots_.find(user);
  if (it == slots_.end()) return;
  lru_.erase(it->second.lru);
  slots_.erase(it);
}

void PreferenceCache::Clear() {
  std::lock_guard lock(mu_);
  slots_.clear();
  lru_.clear();
  ++generation_;
}

size_t PreferenceCache::Size() {
  std::lock_guard lock(mu_);
  return slots_.size();
}

}  // namespace herald
