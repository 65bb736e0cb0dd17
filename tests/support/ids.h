// Notification and delivery ids made by the engine carry the time the event's processing began
// (core/ids.h): tests that cannot know that moment compare the part that depends on the event, user
// and channel.
#pragma once

#include <string>

#include "core/ids.h"

namespace herald::test {

// True if `id` is a delivery id of this event, user and channel, whatever its start time.
inline bool IsDeliveryOf(const std::string& id, const std::string& event_id, const std::string& user,
                         const std::string& channel) {
  const std::string any = DeliveryId(event_id, user, channel, SystemTime{});
  return id.size() == any.size() && id.rfind("d-", 0) == 0 && id.substr(13) == any.substr(13);
}

// True if `id` is the notification id of this event and user, whatever its start time.
inline bool IsNotificationOf(const std::string& id, const std::string& event_id, const std::string& user) {
  const std::string any = NotificationId(event_id, user, SystemTime{});
  return id.size() == any.size() && id.rfind("n-", 0) == 0 && id.substr(13) == any.substr(13);
}

inline long long ToMillisForTest(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// The start time an engine-made notification or delivery id carries, in milliseconds since the epoch.
inline long long DeliveryBegunMs(const std::string& id) { return std::stoll(id.substr(2, 11), nullptr, 16); }

}  // namespace herald::test
