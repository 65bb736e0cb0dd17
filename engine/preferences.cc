#include "engine/preferences.h"

#include <date/tz.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <unordered_map>
#include <string_view>

#include "core/time.h"
#include "engine/event.h"

namespace herald {
namespace {

using nlohmann::json;

constexpr size_t kMaxEmailBytes = 254;     // RFC 5321's limit on a forward path
constexpr size_t kMaxWebhookBytes = 2048;  // what common HTTP stacks accept in a request line
constexpr size_t kMaxEndpointBytes = 2048;
constexpr size_t kMaxTokenBytes = 4096;
constexpr size_t kMaxKeyBytes = 1024;      // p256dh is 87 characters, auth 22; leave room, not abuse


// A value from the document made safe to echo in a message: no control characters, bounded.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 64)) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) ? '?' : c;
  if (s.size() > 64) out += "...";
  return out + "\"";
}

// An object key as a path segment; keys come from the document, so they get the same treatment.
std::string Segment(std::string_view key) {
  std::string q = Quote(key);
  return q.substr(1, q.size() - 2);
}

Status Fail(const std::string& field, const std::string& message) {
  return Status::Invalid(field + ": " + message);
}

Status WrongType(const std::string& field, const char* wanted, const json& got) {
  return Fail(field, std::string("must be ") + wanted + ", not " + JsonTypeName(got));
}

bool HasSpaceOrControl(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7F;
  });
}

bool HasControl(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7F;
  });
}

// Refuses members of `obj` other than `allowed`, naming the first one found.
Status OnlyFields(const json& obj, const std::string& prefix, std::initializer_list<std::string_view> allowed) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
      std::string list;
      for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return Fail(prefix + Segment(it.key()), "unknown field (allowed: " + list + ")");
    }
  }
  return Status::Ok();
}

bool ValidLocale(std::string_view s) {
  if (s.size() < 2 || s.size() > 35) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

bool ValidCategory(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
}

// base64url (RFC 4648 section 5), padding optional because Web Push subscriptions omit it.
bool ValidBase64Url(std::string_view s) {
  size_t end = s.size();
  while (end > 0 && s.size() - end < 2 && s[end - 1] == '=') --end;
  if (end == 0) return false;
  return std::all_of(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(end), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

// "scheme://host..." with something after the scheme and no whitespace anywhere.
bool ValidUrl(std::string_view s, bool allow_http) {
  size_t prefix = 0;
  if (s.rfind("https://", 0) == 0) prefix = 8;
  else if (allow_http && s.rfind("http://", 0) == 0) prefix = 7;
  else return false;
  return s.size() > prefix && s[prefix] != '/' && !HasSpaceOrControl(s);
}

// "HH:MM", 00:00..23:59, to minutes after midnight; -1 if malformed.
int ParseClock(std::string_view s) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (s.size() != 5 || !digit(s[0]) || !digit(s[1]) || s[2] != ':' || !digit(s[3]) || !digit(s[4])) return -1;
  int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
  if (h > 23 || m > 59) return -1;
  return h * 60 + m;
}

std::string FormatClock(int minutes) {
  char buf[8] = {char('0' + minutes / 600), char('0' + minutes / 60 % 10), ':', char('0' + minutes % 60 / 10),
                 char('0' + minutes % 10), 0};
  return buf;
}

// An optional string member: absent leaves `out` alone. Null is refused unless `null_is_empty`,
// for the fields where "none" is a meaningful value (e-mail, webhook).
Status OptionalString(const json& obj, const char* key, const std::string& field, bool null_is_empty,
                      std::string& out, bool& present) {
  present = false;
  auto it = obj.find(key);
  if (it == obj.end()) return Status::Ok();
  if (it->is_null() && null_is_empty) {
    out.clear();
    present = true;
    return Status::Ok();
  }
  if (!it->is_string()) return WrongType(field, "a string", *it);
  out = it->get_ref<const std::string&>();
  present = true;
  return Status::Ok();
}

// A map channel -> bool ("channels", and each entry of "categories").
Status ParseChannelSwitches(const json& obj, const std::string& field, const std::vector<std::string>& known,
                            std::map<std::string, bool>& out) {
  if (!obj.is_object()) return WrongType(field, "an object", obj);
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    std::string path = field + "." + Segment(it.key());
    if (std::find(known.begin(), known.end(), it.key()) == known.end()) {
      std::string list;
      for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
      return Fail(path, "unknown channel (known: " + list + ")");
    }
    if (!it->is_boolean()) return Fail(path, std::string("must be true or false, not ") + JsonTypeName(*it));
    out[it.key()] = it->get<bool>();
  }
  return Status::Ok();
}

Status ParsePush(const json& entry, const std::string& field, PushContact& out) {
  if (!entry.is_object()) return WrongType(field, "an object", entry);
  auto kind = entry.find("kind");
  if (kind == entry.end() || kind->is_null()) return Fail(field + ".kind", "required");
  if (!kind->is_string()) return WrongType(field + ".kind", "a string", *kind);
  out.kind = kind->get_ref<const std::string&>();

  // A required, non-empty string member of the entry, at most `max` bytes.
  auto required = [&](const char* key, size_t max, std::string& dst) -> Status {
    std::string path = field + "." + key;
    auto it = entry.find(key);
    if (it == entry.end() || it->is_null()) return Fail(path, "required");
    if (!it->is_string()) return WrongType(path, "a string", *it);
    const std::string& v = it->get_ref<const std::string&>();
    if (v.empty()) return Fail(path, "must not be empty");
    if (v.size() > max) return Fail(path, "must be at most " + std::to_string(max) + " bytes");
    if (HasControl(v)) return Fail(path, "must not contain control characters");
    dst = v;
    return Status::Ok();
  };

  if (out.kind == "webpush") {
    if (Status s = OnlyFields(entry, field + ".", {"kind", "endpoint", "p256dh", "auth"}); !s.ok()) return s;
    if (Status s = required("endpoint", kMaxEndpointBytes, out.endpoint); !s.ok()) return s;
    if (!ValidUrl(out.endpoint, /*allow_http=*/false)) {
      return Fail(field + ".endpoint", "must be an https:// URL (got " + Quote(out.endpoint) + ")");
    }
    for (auto [key, dst] : {std::pair{"p256dh", &out.p256dh}, std::pair{"auth", &out.auth}}) {
      if (Status s = required(key, kMaxKeyBytes, *dst); !s.ok()) return s;
      if (!ValidBase64Url(*dst)) return Fail(field + "." + key, "must be base64url ([A-Za-z0-9_-])");
    }
    return Status::Ok();
  }
  if (out.kind == "fcm" || out.kind == "apns") {
    if (Status s = OnlyFields(entry, field + ".", {"kind", "token"}); !s.ok()) return s;
    return required("token", kMaxTokenBytes, out.token);
  }
  return Fail(field + ".kind", "must be one of webpush, fcm, apns (got " + Quote(out.kind) + ")");
}

Status ParseContacts(const json& obj, Contacts& out) {
  if (!obj.is_object()) return WrongType("contacts", "an object", obj);
  if (Status s = OnlyFields(obj, "contacts.", {"email", "push", "webhook"}); !s.ok()) return s;
  bool present = false;

  if (Status s = OptionalString(obj, "email", "contacts.email", true, out.email, present); !s.ok()) return s;
  if (!out.email.empty()) {
    const std::string& e = out.email;
    if (e.size() > kMaxEmailBytes) return Fail("contacts.email", "must be at most 254 bytes");
    if (HasSpaceOrControl(e)) return Fail("contacts.email", "must not contain whitespace or control characters");
    size_t at = e.find('@');
    if (at == std::string::npos || e.find('@', at + 1) != std::string::npos || at == 0 || at + 1 == e.size()) {
      return Fail("contacts.email", "must be an address with exactly one '@' (got " + Quote(e) + ")");
    }
  }

  if (auto push = obj.find("push"); push != obj.end()) {
    if (!push->is_array()) return WrongType("contacts.push", "an array", *push);
    for (size_t i = 0; i < push->size(); ++i) {
      PushContact pc;
      if (Status s = ParsePush((*push)[i], "contacts.push[" + std::to_string(i) + "]", pc); !s.ok()) return s;
      out.push.push_back(std::move(pc));
    }
  }

  if (Status s = OptionalString(obj, "webhook", "contacts.webhook", true, out.webhook, present); !s.ok()) return s;
  if (!out.webhook.empty()) {
    if (out.webhook.size() > kMaxWebhookBytes) return Fail("contacts.webhook", "must be at most 2048 bytes");
    if (!ValidUrl(out.webhook, /*allow_http=*/true)) {
      return Fail("contacts.webhook", "must be an http:// or https:// URL (got " + Quote(out.webhook) + ")");
    }
  }
  return Status::Ok();
}

}  // namespace

bool Preferences::ChannelEnabled(const std::string& channel, const std::string& category) const {
  if (auto cat = categories.find(category); cat != categories.end()) {
    if (auto ch = cat->second.find(channel); ch != cat->second.end()) return ch->second;
  }
  if (auto ch = channels.find(channel); ch != channels.end()) return ch->second;
  return true;
}

Preferences DefaultPreferences(const std::string& user_id) {
  Preferences p;
  p.user_id = user_id;
  return p;
}

const date::time_zone* FindTimeZone(const std::string& name) {
  static std::mutex mu;
  static std::unordered_map<std::string, const date::time_zone*> found;  // bounded by the database
  {
    std::lock_guard lock(mu);
    if (auto it = found.find(name); it != found.end()) return it->second;
  }
  const date::time_zone* zone = nullptr;
  try {
    zone = date::locate_zone(name);  // reports an unknown name by throwing
  } catch (const std::exception&) {
    return nullptr;  // not remembered: names that are not zones come from input, without bound
  }
  std::lock_guard lock(mu);
  found.emplace(name, zone);
  return zone;
}

Status ParsePreferences(const nlohmann::json& doc, const std::string& user_id,
                        const std::vector<std::string>& known_channels, Preferences& out) {
  if (std::string why = CheckUserId(user_id); !why.empty()) return Fail("user_id", why);
  if (!doc.is_object()) return WrongType("preferences", "a JSON object", doc);
  if (Status s = OnlyFields(doc, "", {"user_id", "locale", "timezone", "contacts", "channels", "categories",
                                      "quiet_hours", "mute_until"});
      !s.ok()) {
    return s;
  }

  // Built aside and moved into `out` only when the whole document is good.
  Preferences p = DefaultPreferences(user_id);
  bool present = false;

  std::string doc_user;
  if (Status s = OptionalString(doc, "user_id", "user_id", false, doc_user, present); !s.ok()) return s;
  if (present && doc_user != user_id) {
    return Fail("user_id", "must match the user the preferences belong to (" + Quote(user_id) + ", got " +
                               Quote(doc_user) + ")");
  }

  if (Status s = OptionalString(doc, "locale", "locale", false, p.locale, present); !s.ok()) return s;
  if (present && !ValidLocale(p.locale)) {
    return Fail("locale", "must be a language tag of 2 to 35 characters [A-Za-z0-9_-] like \"de\" or \"pt-BR\" (got " +
                              Quote(p.locale) + ")");
  }

  if (Status s = OptionalString(doc, "timezone", "timezone", false, p.timezone, present); !s.ok()) return s;
  if (present) {
    if (p.timezone.empty() || !FindTimeZone(p.timezone)) return Fail("timezone", "unknown time zone " + Quote(p.timezone));
  }

  if (auto c = doc.find("contacts"); c != doc.end()) {
    if (Status s = ParseContacts(*c, p.contacts); !s.ok()) return s;
  }

  if (auto c = doc.find("channels"); c != doc.end()) {
    if (Status s = ParseChannelSwitches(*c, "channels", known_channels, p.channels); !s.ok()) return s;
  }

  if (auto c = doc.find("categories"); c != doc.end()) {
    if (!c->is_object()) return WrongType("categories", "an object", *c);
    for (auto it = c->begin(); it != c->end(); ++it) {
      std::string path = "categories." + Segment(it.key());
      if (!ValidCategory(it.key())) return Fail(path, "category names must match [a-z0-9._-]{1,64}");
      if (Status s = ParseChannelSwitches(*it, path, known_channels, p.categories[it.key()]); !s.ok()) return s;
    }
  }

  if (auto q = doc.find("quiet_hours"); q != doc.end() && !q->is_null()) {
    if (!q->is_object()) return WrongType("quiet_hours", "an object or null", *q);
    if (Status s = OnlyFields(*q, "quiet_hours.", {"start", "end"}); !s.ok()) return s;
    QuietHours qh;
    for (auto [key, dst] : {std::pair{"start", &qh.start_minute}, std::pair{"end", &qh.end_minute}}) {
      std::string path = std::string("quiet_hours.") + key;
      auto it = q->find(key);
      if (it == q->end() || it->is_null()) return Fail(path, "required");
      if (!it->is_string()) return WrongType(path, "a string \"HH:MM\"", *it);
      *dst = ParseClock(it->get_ref<const std::string&>());
      if (*dst < 0) {
        return Fail(path, "must be a time \"HH:MM\" from 00:00 to 23:59 (got " +
                              Quote(it->get_ref<const std::string&>()) + ")");
      }
    }
    // An empty window is almost certainly a mistake, and "always quiet" would be spelled mute_until.
    if (qh.start_minute == qh.end_minute) {
      return Fail("quiet_hours", "start and end are equal, an empty window; use null for no quiet hours");
    }
    p.quiet_hours = qh;
  }

  if (auto m = doc.find("mute_until"); m != doc.end() && !m->is_null()) {
    if (!m->is_string()) return WrongType("mute_until", "an RFC 3339 timestamp string or null", *m);
    auto t = ParseRfc3339(m->get_ref<const std::string&>());
    if (!t) {
      return Fail("mute_until", "must be an RFC 3339 timestamp like 2026-11-22T10:00:00Z (got " +
                                    Quote(m->get_ref<const std::string&>()) + ")");
    }
    // The JSON form carries milliseconds; keeping only those makes parse(to_json(p)) == p hold.
    p.mute_until = std::chrono::time_point_cast<SystemTime::duration>(
        std::chrono::time_point_cast<std::chrono::milliseconds>(*t));
  }

  out = std::move(p);
  return Status::Ok();
}

nlohmann::json PreferencesToJson(const Preferences& p) {
  json contacts = json::object();
  if (!p.contacts.email.empty()) contacts["email"] = p.contacts.email;
  json push = json::array();
  for (const PushContact& pc : p.contacts.push) {
    // Only the members of the contact's kind, so the output parses back.
    json e = {{"kind", pc.kind}};
    if (pc.kind == "webpush") {
      e["endpoint"] = pc.endpoint;
      e["p256dh"] = pc.p256dh;
      e["auth"] = pc.auth;
    } else {
      e["token"] = pc.token;
    }
    push.push_back(std::move(e));
  }
  contacts["push"] = std::move(push);
  if (!p.contacts.webhook.empty()) contacts["webhook"] = p.contacts.webhook;

  json channels = json::object();
  for (const auto& [name, on] : p.channels) channels[name] = on;
  // Built member by member: an empty category must stay {} rather than become null.
  json categories = json::object();
  for (const auto& [category, switches] : p.categories) {
    json c = json::object();
    for (const auto& [name, on] : switches) c[name] = on;
    categories[category] = std::move(c);
  }

  json j = json::object();
  j["user_id"] = p.user_id;
  j["locale"] = p.locale;
  j["timezone"] = p.timezone;
  j["contacts"] = std::move(contacts);
  j["channels"] = std::move(channels);
  j["categories"] = std::move(categories);
  if (p.quiet_hours) {
    j["quiet_hours"] = {{"start", FormatClock(p.quiet_hours->start_minute)},
                        {"end", FormatClock(p.quiet_hours->end_minute)}};
  } else {
    j["quiet_hours"] = nullptr;
  }
  j["mute_until"] = p.mute_until ? json(FormatRfc3339(*p.mute_until)) : json(nullptr);
  return j;
}

nlohmann::json MergePatch(nlohmann::json target, const nlohmann::json& patch) {
  // RFC 7396 section 2, step by step.
  if (!patch.is_object()) return patch;
  if (!target.is_object()) target = json::object();
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it->is_null()) {
      target.erase(it.key());
      continue;
    }
    auto existing = target.find(it.key());
    json current = existing != target.end() ? std::move(*existing) : json();
    target[it.key()] = MergePatch(std::move(current), *it);
  }
  return target;
}

}  // namespace herald
