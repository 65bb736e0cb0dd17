#include "core/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

extern char** environ;

namespace herald {
namespace {

std::string EnvName(const std::string& path) {
  std::string name = "HERALD_";
  for (char c : path) name += c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

// Collects problems and the environment overrides while one document is bound.
class Loader {
 public:
  Loader(std::string origin, const std::vector<std::string>& env) : origin_(std::move(origin)) {
    for (const std::string& kv : env) {
      size_t eq = kv.find('=');
      if (eq == std::string::npos || kv.compare(0, 7, "HERALD_") != 0) continue;
      env_[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
  }

  void Error(const YAML::Node& at, const std::string& msg) {
    std::ostringstream out;
    out << origin_;
    if (at.IsDefined() && !at.Mark().is_null()) out << ':' << at.Mark().line + 1;
    out << ": " << msg;
    errors_.push_back(out.str());
  }
  void EnvError(const std::string& var, const std::string& msg) {
    errors_.push_back("environment " + var + ": " + msg);
  }

  // The override for `path`, if the environment has one; marks it used.
  const std::string* Override(const std::string& path) {
    std::string name = EnvName(path);
    auto it = env_.find(name);
    if (it == env_.end()) return nullptr;
    used_.insert(name);
    return &it->second;
  }

  void CheckUnusedEnv() {
    for (const auto& [name, value] : env_) {
      if (used_.count(name) || name == kConfigPathEnv) continue;
      EnvError(name, "does not name a configuration key");
    }
  }

  void ThrowIfErrors() {
    if (errors_.empty()) return;
    std::string all;
    for (const std::string& e : errors_) all += e + "\n";
    all.pop_back();
    throw ConfigError(all);
  }

 private:
  std::string origin_;
  std::map<std::string, std::string> env_;
  std::set<std::string> used_;
  std::vector<std::string> errors_;
};

// One YAML mapping being bound to a struct. Every key the code asks for is marked known;
// Finish() reports the rest as unknown.
class Section final : public ConfigSection {
 public:
  Section(Loader& loader, YAML::Node node, std::string path, bool env_enabled = true)
      : loader_(loader), node_(node), path_(std::move(path)), env_enabled_(env_enabled) {
    if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap()) {
      loader_.Error(node_, (path_.empty() ? std::string("document") : path_) + ": must be a mapping");
      node_ = YAML::Node();
    }
  }

  void Str(const char* key, std::string& out) override { Str(key, out, {}); }
  void Str(const char* key, std::string& out, const std::function<std::string(const std::string&)>& check) {
    Bind(key, [&](const std::string& v) {
      if (check) {
        std::string problem = check(v);
        if (!problem.empty()) return problem;
      }
      out = v;
      return std::string();
    });
  }

  void OneOf(const char* key, std::string& out, std::initializer_list<const char*> allowed) {
    Str(key, out, [allowed](const std::string& v) {
      for (const char* a : allowed) {
        if (v == a) return std::string();
      }
      std::string list;
      for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
      return "must be one of " + list + " (got \"" + v + "\")";
    });
  }

  void Int(const char* key, long long& out, long long min, long long max) override {
    Bind(key, [&](const std::string& v) {
      long long n = 0;
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (ec != std::errc() || end != v.data() + v.size()) return "must be an integer (got \"" + v + "\")";
      if (n < min || n > max) {
        return "must be between " + std::to_string(min) + " and " + std::to_string(max) + " (got " + v + ")";
      }
      out = n;
      return std::string();
    });
  }

  void Int(const char* key, int& out, int min, int max) {
    long long v = out;
    Int(key, v, min, max);
    out = static_cast<int>(v);
  }

  void Bool(const char* key, bool& out) override {
    Bind(key, [&](const std::string& v) {
      if (v == "true") out = true;
      else if (v == "false") out = false;
      else return "must be true or false (got \"" + v + "\")";
      return std::string();
    });
  }

  void Duration(const char* key, Millis& out, Millis min, Millis max) override {
    Bind(key, [&](const std::string& v) { return ParseDurationInto(v, out, min, max); });
  }

  void DurationList(const char* key, std::vector<Millis>& out, Millis min, Millis max) {
    Known(key);
    std::string path = Path(key);
    YAML::Node list;
    std::string where;
    if (const std::string* ov = env_enabled_ ? loader_.Override(path) : nullptr) {
      // "1s,2s,4s" or a YAML flow list "[1s, 2s, 4s]".
      std::string text = *ov;
      if (!text.empty() && text.front() != '[') text = "[" + text + "]";
      try {
        list = YAML::Load(text);
      } catch (const YAML::Exception&) {
        loader_.EnvError(EnvName(path), path + ": must be a list of durations");
        return;
      }
      where = EnvName(path);
    } else {
      if (!node_.IsMap()) return;
      list = node_[key];
      if (!list.IsDefined()) return;
    }
    auto fail = [&](const std::string& msg) {
      if (where.empty()) loader_.Error(list, path + ": " + msg);
      else loader_.EnvError(where, path + ": " + msg);
    };
    if (!list.IsSequence() || list.size() == 0) return fail("must be a non-empty list of durations");
    std::vector<Millis> parsed;
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].IsScalar()) return fail("entry " + std::to_string(i) + " must be a duration");
      Millis d{};
      std::string problem = ParseDurationInto(list[i].Scalar(), d, min, max);
      if (!problem.empty()) return fail("entry " + std::to_string(i) + ": " + problem);
      if (!parsed.empty() && d <= parsed.back()) return fail("entries must increase");
      parsed.push_back(d);
    }
    out = std::move(parsed);
  }

  // A list of strings (YAML sequence). Not overridable from the environment.
  void StrList(const char* key, std::vector<std::string>& out,
               const std::function<std::string(const std::string&)>& check = {}) {
    Known(key);
    if (!node_.IsMap()) return;
    YAML::Node list = node_[key];
    if (!list.IsDefined() || list.IsNull()) return;
    std::string path = Path(key);
    if (!list.IsSequence()) return loader_.Error(list, path + ": must be a list");
    std::vector<std::string> parsed;
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].IsScalar()) return loader_.Error(list[i], path + "[" + std::to_string(i) + "]: must be a string");
      std::string v = list[i].Scalar();
      if (check) {
        if (std::string problem = check(v); !problem.empty()) {
          return loader_.Error(list[i], path + "[" + std::to_string(i) + "]: " + problem);
        }
      }
      if (std::find(parsed.begin(), parsed.end(), v) == parsed.end()) parsed.push_back(v);
    }
    out = std::move(parsed);
  }

  Section Child(const char* key) {
    Known(key);
    YAML::Node child = node_.IsDefined() && !node_.IsNull() ? node_[key] : YAML::Node();
    return Section(loader_, child, Path(key), env_enabled_);
  }

  // A mapping whose keys are names chosen by the user (event types, locales). Such names can
  // hold dots and capitals, so `env=false` keeps environment overrides out of them.
  void Entries(const char* key, const std::function<void(const std::string&, Section&)>& fn, bool env = true) {
    Section child = Child(key);
    if (!env) child.env_enabled_ = false;
    child.EachEntry(fn);
  }

  // Every key of this mapping as a user-chosen name with a mapping as value.
  void EachEntry(const std::function<void(const std::string&, Section&)>& fn) {
    if (!node_.IsMap()) return;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::string name = it->first.as<std::string>();
      Known(name);
      Section entry(loader_, it->second, Path(name.c_str()), env_enabled_);
      fn(name, entry);
      entry.Finish();
    }
  }

  bool Present() const { return node_.IsMap(); }

  void Error(const std::string& msg) override { loader_.Error(node_, path_.empty() ? msg : path_ + ": " + msg); }

  void Finish() {
    if (!node_.IsDefined() || node_.IsNull()) return;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::string key = it->first.as<std::string>();
      if (known_.count(key)) continue;
      std::string list;
      for (const std::string& k : order_) list += (list.empty() ? "" : ", ") + k;
      loader_.Error(it->first, "unknown key " + Path(key.c_str()) + (list.empty() ? "" : " (known: " + list + ")"));
    }
  }

 private:
  static std::string ParseDurationInto(const std::string& v, Millis& out, Millis min, Millis max) {
    auto d = ParseDuration(v);
    if (!d) return "must be a duration like 250ms, 30s, 5m, 24h (got \"" + v + "\")";
    if (*d < min || *d > max) {
      return "must be between " + FormatDuration(min) + " and " + FormatDuration(max) + " (got " + v + ")";
    }
    out = *d;
    return std::string();
  }

  std::string Path(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  void Known(const std::string& key) {
    if (known_.insert(key).second) order_.push_back(key);
  }

  // Binds one scalar: the environment override wins over the file.
  void Bind(const char* key, const std::function<std::string(const std::string&)>& apply) {
    Known(key);
    std::string path = Path(key);
    if (const std::string* ov = env_enabled_ ? loader_.Override(path) : nullptr) {
      std::string problem = apply(*ov);
      if (!problem.empty()) loader_.EnvError(EnvName(path), path + ": " + problem);
      return;
    }
    if (!node_.IsDefined() || node_.IsNull()) return;
    YAML::Node v = node_[key];
    if (!v.IsDefined()) return;
    if (!v.IsScalar()) {
      loader_.Error(v, path + ": must be a single value");
      return;
    }
    std::string problem = apply(v.Scalar());
    if (!problem.empty()) loader_.Error(v, path + ": " + problem);
  }

  Loader& loader_;
  YAML::Node node_;
  std::string path_;
  bool env_enabled_;
  std::set<std::string> known_;
  std::vector<std::string> order_;
};

std::string CheckAmqpUrl(const std::string& v) {
  if (v.rfind("amqp://", 0) == 0) return "";
  if (v.rfind("amqps://", 0) == 0) return "amqps:// (TLS) is not supported yet; use amqp://";
  return "must start with amqp:// (got \"" + v + "\")";
}

std::string CheckLocale(const std::string& v) {
  if (v.empty() || v.size() > 35) return "must be a locale like en, de or pt-BR (got \"" + v + "\")";
  for (char ch : v) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_') {
      return "must be a locale like en, de or pt-BR (got \"" + v + "\")";
    }
  }
  return "";
}

std::string CheckChannelName(const std::string& v) {
  const auto& known = KnownChannels();
  if (std::find(known.begin(), known.end(), v) != known.end()) return "";
  std::string list;
  for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
  return "unknown channel \"" + v + "\" (known: " + list + ")";
}

bool ValidName(const std::string& v, size_t max) {
  if (v.empty() || v.size() > max) return false;
  for (char ch : v) {
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-')) return false;
  }
  return true;
}

void BindEventType(const std::string& name, Section& t, Config& c) {
  EventTypeConfig et;
  et.name = name;
  if (!ValidName(name, 128)) t.Error("event type names must match [a-z0-9._-]{1,128}");
  t.Str("category", et.category, [](const std::string& v) {
    return ValidName(v, 64) ? "" : "must match [a-z0-9._-]{1,64} (got \"" + v + "\")";
  });
  t.Bool("critical", et.critical);
  t.StrList("channels", et.channels, CheckChannelName);
  t.StrList("required_vars", et.required_vars);
  t.Entries("templates", [&](const std::string& channel, Section& per_channel) {
    if (std::string problem = CheckChannelName(channel); !problem.empty()) return per_channel.Error(problem);
    per_channel.EachEntry([&](const std::string& locale, Section& fields) {
      if (std::string problem = CheckLocale(locale); !problem.empty()) return fields.Error(problem);
      TemplateFields& out = et.templates[channel][locale];
      for (const std::string& field : TemplateFieldsFor(channel)) {
        std::string source;
        fields.Str(field.c_str(), source);
        if (!source.empty()) out[field] = source;
      }
    });
  });
  if (et.channels.empty()) t.Error("channels: name at least one channel");
  for (const auto& [channel, locales] : et.templates) {
    if (std::find(et.channels.begin(), et.channels.end(), channel) == et.channels.end()) {
      t.Error("templates." + channel + ": " + channel + " is not in channels");
    }
  }
  c.event_types[name] = std::move(et);
}

// Checks that need the whole document: every channel of a type has a complete template in the
// default locale (webhooks carry the event data and need none).
void CheckEventTypes(Section& top, const Config& c) {
  for (const auto& [name, et] : c.event_types) {
    for (const std::string& channel : et.channels) {
      if (channel == "webhook") continue;
      size_t required = 0;
      const auto& fields = TemplateFieldsFor(channel, &required);
      auto ch = et.templates.find(channel);
      const TemplateFields* t = nullptr;
      if (ch != et.templates.end()) {
        auto loc = ch->second.find(c.engine.default_locale);
        if (loc != ch->second.end()) t = &loc->second;
      }
      std::string where = "event_types." + name + ".templates." + channel + "." + c.engine.default_locale;
      if (!t) {
        top.Error(where + ": missing (every channel needs a template in engine.default_locale)");
        continue;
      }
      for (size_t i = 0; i < required; ++i) {
        if (!t->count(fields[i])) top.Error(where + "." + fields[i] + ": required");
      }
    }
  }
}

std::string CheckStoreUrl(const std::string& v) {
  if (v.rfind("sqlite://", 0) == 0 && v.size() > 9) return "";
  if (v.rfind("postgresql://", 0) == 0 || v.rfind("postgres://", 0) == 0) return "";
  return "must be sqlite:///absolute/path, sqlite://relative/path or postgresql://... (got \"" + v + "\")";
}

std::string CheckListen(const std::string& v) {
  size_t colon = v.rfind(':');
  if (colon == std::string::npos || colon == 0) return "must be HOST:PORT (got \"" + v + "\")";
  int port = 0;
  auto [end, ec] = std::from_chars(v.data() + colon + 1, v.data() + v.size(), port);
  if (ec != std::errc() || end != v.data() + v.size() || port < 0 || port > 65535) {
    return "port must be 0..65535 (got \"" + v + "\")";
  }
  return "";
}

void BindApiKey(const std::string& name, Section& k, Config& c) {
  ApiKeyConfig key;
  key.name = name;
  bool name_ok = !name.empty() && name.size() <= 64;
  for (char ch : name) name_ok = name_ok && ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_');
  if (!name_ok) k.Error("API key names must match [a-z0-9_]{1,64} (they name HERALD_API_KEYS_<NAME>_KEY)");
  k.Str("key", key.key, [](const std::string& v) {
    if (v.size() < 16) return std::string("must be at least 16 characters");
    for (char ch : v) {
      if (ch <= ' ' || ch == '.' || ch == 127) return std::string("must not contain spaces, dots or control characters");
    }
    return std::string();
  });
  k.StrList("scopes", key.scopes, [](const std::string& v) {
    const auto& known = ApiScopes();
    if (std::find(known.begin(), known.end(), v) != known.end()) return std::string();
    return "unknown scope \"" + v + "\" (known: events:write, prefs:write, admin)";
  });
  if (key.key.empty()) k.Error("key is required");
  if (key.scopes.empty()) k.Error("scopes: give at least one of events:write, prefs:write, admin");
  for (const ApiKeyConfig& other : c.api.keys) {
    if (!key.key.empty() && other.key == key.key) k.Error("the same key is also configured as \"" + other.name + "\"");
  }
  c.api.keys.push_back(std::move(key));
}

Config Bind(const YAML::Node& root, Loader& loader) {
  Config c;
  Section top(loader, root, "");

  Section broker = top.Child("broker");
  broker.Str("url", c.broker.url, CheckAmqpUrl);
  broker.OneOf("queue_type", c.broker.queue_type, {"quorum", "classic"});
  broker.Duration("heartbeat", c.broker.heartbeat, 0s, 1h);
  broker.Duration("connect_timeout", c.broker.connect_timeout, 100ms, 5min);
  broker.Duration("reconnect_min", c.broker.reconnect_min, 10ms, 1min);
  broker.Duration("reconnect_max", c.broker.reconnect_max, 10ms, 10min);
  broker.Int("prefetch", c.broker.prefetch, 1, 65535);
  broker.Int("publish_window", c.broker.publish_window, 1, 100000);
  broker.Finish();
  if (c.broker.reconnect_max < c.broker.reconnect_min) {
    broker.Error("reconnect_max must not be below reconnect_min");
  }

  Section store = top.Child("store");
  store.Str("url", c.store.url, CheckStoreUrl);
  store.Finish();

  Section api = top.Child("api");
  api.Str("listen", c.api.listen, CheckListen);
  api.Entries("keys", [&](const std::string& name, Section& k) { BindApiKey(name, k, c); });
  api.Str("jwt_secret", c.api.jwt_secret, [](const std::string& v) {
    return v.empty() || v.size() >= 32 ? "" : "must be at least 32 characters (or empty to refuse user tokens)";
  });
  api.Duration("jwt_leeway", c.api.jwt_leeway, 0s, 10min);
  api.Int("max_body_bytes", c.api.max_body_bytes, 1024, 16 * 1024 * 1024);
  api.Int("max_connections", c.api.max_connections, 16, 100000);
  api.Duration("stream_keepalive", c.api.stream_keepalive, 1s, 10min);
  api.Duration("publish_timeout", c.api.publish_timeout, 100ms, 5min);
  api.Duration("request_timeout", c.api.request_timeout, 1s, 10min);
  api.Finish();

  Section events = top.Child("events");
  events.Int("max_body_bytes", c.events.max_body_bytes, 1024, 64 * 1024 * 1024);
  events.Int("max_recipients", c.events.max_recipients, 1, 1000000);
  events.Duration("dedup_window", c.events.dedup_window, 0s, std::chrono::hours(24 * 30));
  events.Finish();

  Section retry = top.Child("retry");
  retry.Int("max_attempts", c.retry.max_attempts, 1, 100);
  retry.DurationList("tiers", c.retry.tiers, 100ms, 24h);
  retry.Finish();

  for (const std::string& name : KnownChannels()) c.channels[name] = ChannelDefaults(name);
  Section channels = top.Child("channels");
  for (const std::string& name : KnownChannels()) {
    Section ch = channels.Child(name.c_str());
    ChannelConfig& cc = c.channels[name];
    ch.Bool("enabled", cc.enabled);
    ch.Int("rate", cc.rate, 0, 1000000);
    ch.Int("burst", cc.burst, 0, 1000000);
    ch.Int("concurrency", cc.concurrency, 1, 1024);
    ch.Int("prefetch", cc.prefetch, 1, 65535);
    cc.settings = BindChannelSettings(name, ch);
    ch.Finish();
  }
  channels.Finish();

  Section engine = top.Child("engine");
  engine.Int("workers", c.engine.workers, 1, 64);
  engine.Int("fanout_batch", c.engine.fanout_batch, 1, 10000);
  engine.Str("default_locale", c.engine.default_locale, CheckLocale);
  engine.Int("budget_per_hour", c.engine.budget_per_hour, 0, 1000000);
  engine.Duration("presence_ttl", c.engine.presence_ttl, 1s, 24h);
  engine.Int("prefs_cache_size", c.engine.prefs_cache_size, 0, 100000000);
  engine.Duration("prefs_cache_ttl", c.engine.prefs_cache_ttl, 0s, 24h);
  engine.Bool("prefs_cache_warm", c.engine.prefs_cache_warm);
  engine.Finish();

  top.Entries("event_types", [&](const std::string& name, Section& t) { BindEventType(name, t, c); },
              /*env=*/false);
  CheckEventTypes(top, c);

  Section log = top.Child("log");
  log.OneOf("level", c.log.level, {"trace", "debug", "info", "warn", "error"});
  log.OneOf("format", c.log.format, {"text", "json"});
  log.Finish();

  top.Duration("shutdown_grace", c.shutdown_grace, 0s, 1h);
  top.Finish();
  loader.CheckUnusedEnv();
  loader.ThrowIfErrors();
  return c;
}

}  // namespace

const std::vector<std::string>& TemplateFieldsFor(const std::string& channel, size_t* required) {
  static const std::vector<std::string> kEmail = {"subject", "text", "html"};
  static const std::vector<std::string> kOther = {"title", "body"};
  // collapse_key (optional): a newer push with the same key replaces an undelivered older one
  // (Web Push Topic, apns-collapse-id, FCM collapse_key).
  static const std::vector<std::string> kPush = {"title", "body", "collapse_key"};
  if (channel == "email") {
    if (required) *required = 2;  // html is optional
    return kEmail;
  }
  if (channel == "push") {
    if (required) *required = 2;
    return kPush;
  }
  if (required) *required = channel == "webhook" ? 0 : 2;
  return kOther;
}


std::vector<std::string> Config::EnabledChannels() const {
  std::vector<std::string> out;
  for (const auto& [name, ch] : channels) {
    if (ch.enabled) out.push_back(name);
  }
  return out;
}

Config LoadConfigText(const std::string& yaml, const std::string& origin, const std::vector<std::string>& env) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(origin + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                      ": YAML syntax error: " + e.msg);
  }
  Loader loader(origin, env);
  return Bind(root, loader);
}

Config LoadConfig(const std::string& path, const std::vector<std::string>& env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("config file " + path + ": " + std::strerror(errno));
  std::stringstream buf;
  buf << in.rdbuf();
  return LoadConfigText(buf.str(), path, env);
}

std::vector<std::string> ProcessEnvironment() {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) out.emplace_back(*e);
  return out;
}

const std::vector<std::string>& ApiScopes() {
  static const std::vector<std::string> kScopes = {"events:write", "prefs:write", "admin"};
  return kScopes;
}

}  // namespace herald
