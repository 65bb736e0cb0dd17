#include "engine/prefs_cache.h"

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
}

Status PreferenceCache::Get(const std::string& user, Entry& out) {
  std::vector<Entry> one;
  Status s = GetMany({user}, one);
  if (s.ok()) out = one[0];
  return s;
}

Status PreferenceCache::GetMany(const std::vector<std::string>& users, std::vector<Entry>& out) {
  const SystemTime now = clock_.Now();
  out.assign(users.size(), nullptr);
  std::vector<std::string> missing;
  std::vector<size_t> missing_at;
  {
    std::lock_guard lock(mu_);
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
  for (size_t k = 0; k < missing.size(); ++k) {
    auto it = by_user.find(missing[k]);
    Entry e = it != by_user.end() ? it->second : std::make_shared<const Preferences>(DefaultPreferences(missing[k]));
    out[missing_at[k]] = e;
    Insert(missing[k], std::move(e), now);
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

void PreferenceCache::Invalidate(const std::string& user) {
  std::lock_guard lock(mu_);
  auto it = slots_.find(user);
  if (it == slots_.end()) return;
  lru_.erase(it->second.lru);
  slots_.erase(it);
}

void PreferenceCache::Clear() {
  std::lock_guard lock(mu_);
  slots_.clear();
  lru_.clear();
}

size_t PreferenceCache::Size() {
  std::lock_guard lock(mu_);
  return slots_.size();
}

}  // namespace herald
