// Signals between Herald processes over the herald.control fanout exchange: every process has a
// private queue bound to it, so a signal reaches all of them (DESIGN.md, broker topology).
//
// The only signal today: "the preferences of user X changed" -> drop X from the cache at once. A
// process that was disconnected may have missed signals; it finds those changes in the store's
// change log within a second (engine/prefs_cache.h), so its cache is kept across reconnects.
#pragma once

#include <memory>
#include <string>

#include "broker/consumer.h"
#include "broker/publisher.h"
#include "core/config.h"
#include "engine/prefs_cache.h"

namespace herald {

// The message body of a preference invalidation.
std::string PrefsChangedSignal(const std::string& user_id);

// Publishes the signal and waits for the broker's confirm.
Status AnnouncePrefsChanged(broker::Publisher& publisher, const std::string& user_id, Millis timeout);

class ControlListener {
 public:
  // `cache` must outlive the listener.
  ControlListener(const Config& config, PreferenceCache& cache);
  void Start();
  void Stop();
  bool Listening() const { return consumer_->Consuming(); }
  uint64_t Connects() const { return consumer_->Connects(); }

 private:
  PreferenceCache& cache_;
  std::unique_ptr<broker::Consumer> consumer_;
};

}  // namespace herald
