#include "engine/control.h"

#include <spdlog/spdlog.h>

#include "broker/options.h"
#include "broker/topology.h"

namespace herald {

std::string PrefsChangedSignal(const std::string& user_id) {
  return nlohmann::json{{"kind", "prefs_changed"}, {"user_id", user_id}}.dump();
}

Status AnnouncePrefsChanged(broker::Publisher& publisher, const std::string& user_id, Millis timeout) {
  broker::Message m;
  m.exchange = broker::kControlExchange;
  m.routing_key = "";
  m.body = PrefsChangedSignal(user_id);
  m.persistent = false;  // a signal for processes running now; newcomers start with empty caches
  return publisher.PublishAndWait(std::move(m), timeout);
}

ControlListener::ControlListener(const Config& config, PreferenceCache& cache) : cache_(cache) {
  auto o = broker::ConsumerOptionsFor(config, "heraldd control", "");
  o.bind_exchange = broker::kControlExchange;
  o.prefetch = 1000;
  // Nothing is cleared on (re)connect: a signal missed while disconnected is found in the store's
  // change log within PreferenceCache::kPollEvery. Clearing here wiped the start-up warm-up (the
  // first connect came after it) and every reconnect sent all lookups to the store at once.
  consumer_ = std::make_unique<broker::Consumer>(std::move(o), [this](broker::Delivery&& d) {
    auto j = nlohmann::json::parse(d.message.body, nullptr, false);
    if (j.is_object() && j.value("kind", "") == "prefs_changed" && j.contains("user_id") && j["user_id"].is_string()) {
      cache_.Invalidate(j["user_id"].get<std::string>());
    } else {
      spdlog::warn("control: ignored an unknown signal ({} bytes)", d.message.body.size());
    }
    consumer_->Ack({d.tag, d.generation});
  });
}

void ControlListener::Start() { consumer_->Start(); }

void ControlListener::Stop() { consumer_->Stop(Millis(1000)); }

}  // namespace herald
