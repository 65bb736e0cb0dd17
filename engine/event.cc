#include "engine/event.h"

#include <algorithm>
#include <set>
#include <unordered_set>

#include "core/json_parse.h"
#include "core/time.h"
#include "core/utf8.h"

namespace herald {
namespace {

using nlohmann::json;

// CloudEvents context attributes Herald understands; other names are extension attributes.
const std::set<std::string>& KnownAttributes() {
  static const std::set<std::string> k = {"specversion", "id",         "source",     "type",
                                          "time",        "priority",   "expiresat",  "data",
                                          "subject",     "dataschema", "datacontenttype", "data_base64"};
  return k;
}

// Deepest nesting of arrays/objects, scanning bytes outside strings. Stops early past `limit`.
size_t NestingDepth(std::string_view s, size_t limit) {
  size_t depth = 0, max = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      max = std::max(max, ++depth);
      if (max > limit) return max;
    } else if ((c == ']' || c == '}') && depth > 0) --depth;
  }
  return max;
}

}  // namespace

const char* JsonTypeName(const nlohmann::json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "a number";
  }
}

namespace {

class Checker {
 public:
  std::optional<Invalid> problem;

  bool Fail(std::string field, std::string message) {
    if (!problem) problem = Invalid{std::move(field), std::move(message)};
    return false;
  }

  // A required or optional string member of `obj`.
  const std::string* String(const json& obj, const char* key, const std::string& field, bool required) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
      if (required) Fail(field, "required");
      return nullptr;
    }
    if (!it->is_string()) {
      Fail(field, std::string("must be a string, not ") + JsonTypeName(*it));
      return nullptr;
    }
    return &it->get_ref<const std::string&>();
  }
};

bool ValidType(std::string_view t) {
  if (t.empty() || t.size() > 128) return false;
  for (char c : t) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

bool ValidExtensionName(std::string_view n) {
  if (n.empty() || n.size() > 20) return false;
  for (char c : n) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 64)) out += (static_cast<unsigned char>(c) < 0x20) ? '?' : c;
  if (s.size() > 64) out += "...";
  return out + "\"";
}

}  // namespace

const char* PriorityName(Priority p) {
  switch (p) {
    case Priority::kLow: return "low";
    case Priority::kNormal: return "normal";
    case Priority::kHigh: return "high";
    case Priority::kCritical: return "critical";
  }
  return "normal";
}

std::string CheckUserId(std::string_view id) {
  if (id.empty()) return "must not be empty";
  if (id.size() > 128) return "must be at most 128 bytes";
  for (unsigned char c : id) {
    if (c <= 0x20 || c == 0x7F || c == '/') return "must not contain whitespace, control characters or '/'";
  }
  return "";
}

std::optional<Invalid> ParseEvent(std::string_view body, const EventLimits& limits, SystemTime received_at,
                                  Event& out) {
  if (body.empty()) return Invalid{"body", "empty"};
  if (body.size() > limits.max_body_bytes) {
    return Invalid{"body", "exceeds the limit of " + std::to_string(limits.max_body_bytes) + " bytes (" +
                               std::to_string(body.size()) + " bytes)"};
  }
  if (size_t bad = FindInvalidUtf8(body); bad != std::string_view::npos) {
    return Invalid{"body", "not valid UTF-8 (byte offset " + std::to_string(bad) + ")"};
  }
  if (NestingDepth(body, limits.max_depth) > limits.max_depth) {
    return Invalid{"body", "JSON nested deeper than " + std::to_string(limits.max_depth) + " levels"};
  }
  json doc;
  if (!ParseJson(body, doc, limits.max_depth)) {
    // Parse again only to get the parser's description of where it failed.
    try {
      json ignored = json::parse(body);
      (void)ignored;
    } catch (const json::parse_error& e) {
      std::string what = e.what();
      size_t pos = what.find("parse error");
      return Invalid{"body", "not valid JSON: " + (pos == std::string::npos ? what : what.substr(pos))};
    }
    // What nlohmann accepts and ParseJson does not: a NUL byte after the document (json_parse.h).
    if (size_t nul = body.find('\0'); nul != std::string_view::npos) {
      return Invalid{"body", "not valid JSON: a NUL byte at offset " + std::to_string(nul)};
    }
    return Invalid{"body", "not valid JSON"};
  }
  if (!doc.is_object()) return Invalid{"body", std::string("must be a JSON object, not ") + JsonTypeName(doc)};

  Checker c;
  Event e;

  const std::string* spec = c.String(doc, "specversion", "specversion", true);
  if (!spec) return c.problem;
  if (*spec != "1.0") return Invalid{"specversion", "must be \"1.0\" (got " + Quote(*spec) + ")"};

  const std::string* id = c.String(doc, "id", "id", true);
  if (!id) return c.problem;
  if (id->empty()) return Invalid{"id", "must not be empty"};
  if (Utf8Length(*id) > 128) return Invalid{"id", "must be at most 128 characters"};
  if (HasControlChars(*id)) return Invalid{"id", "must not contain control characters"};
  e.id = *id;

  const std::string* source = c.String(doc, "source", "source", true);
  if (!source) return c.problem;
  if (source->empty()) return Invalid{"source", "must not be empty"};
  if (source->size() > 1024) return Invalid{"source", "must be at most 1024 bytes"};
  if (HasControlChars(*source)) return Invalid{"source", "must not contain control characters"};
  e.source = *source;

  const std::string* type = c.String(doc, "type", "type", true);
  if (!type) return c.problem;
  if (!ValidType(*type)) return Invalid{"type", "must match [a-z0-9._-]{1,128} (got " + Quote(*type) + ")"};
  e.type = *type;

  e.time = received_at;
  if (const std::string* t = c.String(doc, "time", "time", false)) {
    auto parsed = ParseRfc3339(*t);
    if (!parsed) return Invalid{"time", "must be an RFC 3339 timestamp like 2026-11-22T10:00:00Z (got " + Quote(*t) + ")"};
    e.time = *parsed;
  } else if (c.problem) {
    return c.problem;
  }

  if (const std::string* p = c.String(doc, "priority", "priority", false)) {
    if (*p == "critical") e.priority = Priority::kCritical;
    else if (*p == "high") e.priority = Priority::kHigh;
    else if (*p == "normal") e.priority = Priority::kNormal;
    else if (*p == "low") e.priority = Priority::kLow;
    else return Invalid{"priority", "must be one of critical, high, normal, low (got " + Quote(*p) + ")"};
  } else if (c.problem) {
    return c.problem;
  }

  if (const std::string* x = c.String(doc, "expiresat", "expiresat", false)) {
    auto parsed = ParseRfc3339(*x);
    if (!parsed) return Invalid{"expiresat", "must be an RFC 3339 timestamp (got " + Quote(*x) + ")"};
    e.expires_at = *parsed;
  } else if (c.problem) {
    return c.problem;
  }

  for (const char* key : {"subject", "dataschema"}) {
    if (!c.String(doc, key, key, false) && c.problem) return c.problem;
  }
  if (const std::string* ct = c.String(doc, "datacontenttype", "datacontenttype", false)) {
    if (ct->rfind("application/json", 0) != 0) {
      return Invalid{"datacontenttype", "must be application/json when present (got " + Quote(*ct) + ")"};
    }
  } else if (c.problem) {
    return c.problem;
  }
  if (doc.contains("data_base64")) {
    return Invalid{"data_base64", "binary data is not supported; send \"data\" as a JSON object"};
  }

  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (KnownAttributes().count(it.key())) continue;
    if (!ValidExtensionName(it.key())) {
      return Invalid{"extension", "attribute name " + Quote(it.key()) +
                                      " is not a CloudEvents attribute (lower-case letters and digits, at most 20)"};
    }
    if (it->is_object() || it->is_array()) {
      return Invalid{"extension", "attribute " + Quote(it.key()) + " must be a string, number or boolean"};
    }
  }

  auto data_it = doc.find("data");
  if (data_it == doc.end() || data_it->is_null()) return Invalid{"data", "required"};
  if (!data_it->is_object()) return Invalid{"data", std::string("must be an object, not ") + JsonTypeName(*data_it)};
  json& data = *data_it;  // members are moved out once checked

  for (auto it = data.begin(); it != data.end(); ++it) {
    const std::string& k = it.key();
    if (k != "recipients" && k != "topic" && k != "vars" && k != "channels") {
      return Invalid{"data", "unknown field " + Quote(k) + " (allowed: recipients, topic, vars, channels)"};
    }
  }

  bool has_recipients = data.contains("recipients"), has_topic = data.contains("topic");
  if (has_recipients == has_topic) return Invalid{"data", "must have exactly one of \"recipients\" or \"topic\""};
  if (has_recipients) {
    json& r = data["recipients"];
    if (!r.is_array()) return Invalid{"data.recipients", std::string("must be an array, not ") + JsonTypeName(r)};
    if (r.empty()) return Invalid{"data.recipients", "must name at least one user"};
    if (r.size() > limits.max_recipients) {
      return Invalid{"data.recipients", "at most " + std::to_string(limits.max_recipients) + " users per event (got " +
                                            std::to_string(r.size()) + "); use a topic for more"};
    }
    std::unordered_set<std::string_view> seen;
    seen.reserve(r.size() * 2);
    e.recipients.reserve(r.size());
    for (size_t i = 0; i < r.size(); ++i) {
      auto at = [i] { return "element " + std::to_string(i); };
      if (!r[i].is_string()) return Invalid{"data.recipients", at() + " must be a string, not " + JsonTypeName(r[i])};
      if (std::string why = CheckUserId(r[i].get_ref<const std::string&>()); !why.empty()) {
        return Invalid{"data.recipients", at() + " " + why};
      }
    }
    // Moving strings out of the document leaves the views in `seen` dangling, so dedupe first.
    std::vector<bool> keep(r.size());
    for (size_t i = 0; i < r.size(); ++i) keep[i] = seen.insert(r[i].get_ref<const std::string&>()).second;
    seen.clear();
    for (size_t i = 0; i < r.size(); ++i) {
      if (keep[i]) e.recipients.push_back(std::move(r[i].get_ref<std::string&>()));
    }
  } else {
    const json& t = data["topic"];
    if (!t.is_string()) return Invalid{"data.topic", std::string("must be a string, not ") + JsonTypeName(t)};
    if (std::string why = CheckUserId(t.get_ref<const std::string&>()); !why.empty()) {
      return Invalid{"data.topic", why};
    }
    e.topic = t.get<std::string>();
  }

  if (auto v = data.find("vars"); v != data.end()) {
    if (!v->is_object()) return Invalid{"data.vars", std::string("must be an object, not ") + JsonTypeName(*v)};
    e.vars = std::move(*v);
  }

  if (auto ch = data.find("channels"); ch != data.end()) {
    if (!ch->is_array()) return Invalid{"data.channels", std::string("must be an array, not ") + JsonTypeName(*ch)};
    if (ch->empty()) return Invalid{"data.channels", "must name at least one channel when present"};
    for (size_t i = 0; i < ch->size(); ++i) {
      const json& name = (*ch)[i];
      if (!name.is_string()) return Invalid{"data.channels", "element " + std::to_string(i) + " must be a string"};
      const std::string& n = name.get_ref<const std::string&>();
      if (std::find(limits.channels.begin(), limits.channels.end(), n) == limits.channels.end()) {
        std::string known;
        for (const std::string& k : limits.channels) known += (known.empty() ? "" : ", ") + k;
        return Invalid{"data.channels", "unknown channel " + Quote(n) + " (known: " + known + ")"};
      }
      if (std::find(e.channels.begin(), e.channels.end(), n) == e.channels.end()) e.channels.push_back(n);
    }
  }

  out = std::move(e);
  return std::nullopt;
}

nlohmann::json EventToJson(const Event& e) {
  json data = json::object();
  if (!e.topic.empty()) data["topic"] = e.topic;
  else data["recipients"] = e.recipients;
  if (!e.vars.empty()) data["vars"] = e.vars;
  if (!e.channels.empty()) data["channels"] = e.channels;
  json j = {{"specversion", "1.0"}, {"id", e.id}, {"source", e.source}, {"type", e.type},
            {"time", FormatRfc3339(e.time)}, {"data", data}};
  if (e.priority != Priority::kNormal) j["priority"] = PriorityName(e.priority);
  if (e.expires_at) j["expiresat"] = FormatRfc3339(*e.expires_at);
  return j;
}

}  // namespace herald
