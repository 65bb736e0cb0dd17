// A user's notification preferences and contacts (DESIGN.md, "Preferences").
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/status.h"

namespace date {
class time_zone;
}

namespace herald {

struct PushContact {
  std::string kind;      // "webpush", "fcm" or "apns"
  std::string endpoint;  // webpush: https URL of the push service
  std::string p256dh;    // webpush: the subscription's public key (base64url)
  std::string auth;      // webpush: the subscription's auth secret (base64url)
  std::string token;     // fcm / apns: the device token
  bool operator==(const PushContact&) const = default;
};

struct Contacts {
  std::string email;  // empty = none
  std::vector<PushContact> push;
  std::string webhook;  // empty = none
  bool operator==(const Contacts&) const = default;
};

struct QuietHours {
  int start_minute = 0;  // minutes after local midnight, 0..1439 ("22:00" -> 1320)
  int end_minute = 0;    // a window may cross midnight (22:00 -> 07:00)
  bool operator==(const QuietHours&) const = default;
};

struct Preferences {
  std::string user_id;
  std::string locale = "en";
  std::string timezone = "UTC";  // an IANA zone name, checked against the tz database
  Contacts contacts;
  // Global switch per channel; a channel missing here is enabled.
  std::map<std::string, bool> channels;
  // Per category, per channel; overrides the global switch for that category.
  std::map<std::string, std::map<std::string, bool>> categories;
  std::optional<QuietHours> quiet_hours;
  std::optional<SystemTime> mute_until;
  bool operator==(const Preferences&) const = default;

  // Whether `channel` is enabled for events of `category` (category setting, else global, else on).
  bool ChannelEnabled(const std::string& channel, const std::string& category) const;
};

// The preferences of a user Herald has never heard of: defaults and no contacts.
Preferences DefaultPreferences(const std::string& user_id);

// Parses the DESIGN.md JSON document for `user_id`. Unknown fields, wrong types and bad values
// (unknown channel names, bad time zone, malformed "HH:MM", e-mail without '@', push contact of an
// unknown kind or missing its fields, non-http(s) webhook URL) give Invalid naming the field
// ("contacts.push[1].endpoint: required"). A "user_id" in the document must match `user_id`.
// `known_channels` are the channel names allowed in "channels" and "categories".
Status ParsePreferences(const nlohmann::json& doc, const std::string& user_id,
                        const std::vector<std::string>& known_channels, Preferences& out);

// The DESIGN.md JSON form; ParsePreferences(ToJson(p)) == p.
nlohmann::json PreferencesToJson(const Preferences& p);

// The IANA time zone named `name`, or nullptr if there is none. Each name is looked up in the
// time zone database once (date::locate_zone checks the database's files on every call, which
// cost a system call per preference document read and per quiet-hours check).
const date::time_zone* FindTimeZone(const std::string& name);

// RFC 7396 JSON merge patch of `patch` onto `target` (objects merge, null deletes, else replace).
nlohmann::json MergePatch(nlohmann::json target, const nlohmann::json& patch);

}  // namespace herald
