// Delivery ids made by the engine carry the time the event's processing began (DeliveryId):
// tests that cannot know that moment compare the part that depends on the event, user and channel.
#pragma once

#include <string>

#include "engine/notification_engine.h"

namespace herald::test {

// True if `id` is a delivery id of this event, user and channel, whatever its start time.
inline bool IsDeliveryOf(const std::string& id, const std::string& event_id, const std::string& user,
                         const std::string& channel) {
  const std::string any = DeliveryId(event_id, user, channel, SystemTime{});
  return id.size() == any.size() && id.rfind("d-", 0) == 0 && id.substr(13) == any.substr(13);
}

inline long long ToMillisForTest(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// The start time an engine-made delivery id carries, in milliseconds since the epoch.
inline long long DeliveryBegunMs(const std::string& id) { return std::stoll(id.substr(2, 11), nullptr, 16); }

}  // namespace herald::test
