// Herald's configuration: one YAML file, every scalar key overridable by an environment variable
// HERALD_<PATH> (the key's path upper-cased, dots as underscores, e.g. broker.queue_type ->
// HERALD_BROKER_QUEUE_TYPE). Unknown keys, unknown HERALD_* variables and bad values stop start-up
// with a message naming the key and, for the file, its line.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/time.h"

namespace herald {

using namespace std::chrono_literals;

struct BrokerConfig {
  std::string url = "amqp://guest:guest@127.0.0.1:5672/";
  std::string queue_type = "quorum";  // quorum (replicated, the safe default) or classic
  Millis heartbeat = 30s;             // dead peers are noticed within about twice this
  Millis connect_timeout = 5s;
  Millis reconnect_min = 100ms;       // first wait after a lost connection, doubled up to max
  Millis reconnect_max = 10s;
  int prefetch = 500;                 // unacked deliveries per consumer; bounds memory in flight
  int publish_window = 1000;          // unconfirmed publishes per connection before waiting
};

struct StoreConfig {
  std::string url = "sqlite://var/herald.db";  // sqlite:///abs/path, sqlite://rel/path, postgresql://
};

// A service's API key (DESIGN.md: service keys with scopes).
struct ApiKeyConfig {
  std::string name;                 // who: shown in logs and audit records, never the key itself
  std::string key;                  // the secret, at least 16 characters
  std::vector<std::string> scopes;  // events:write, prefs:write, admin (admin allows everything)
};

struct ApiConfig {
  std::string listen = "127.0.0.1:8080";
  std::vector<ApiKeyConfig> keys;
  std::string jwt_secret;              // HS256 secret of end-user tokens; empty = user tokens refused
  Millis jwt_leeway = 30s;             // clock skew allowed on exp and nbf
  long long max_body_bytes = 65536;    // request bodies other than events (events.max_body_bytes)
  long long max_connections = 4096;    // open connections (each live stream holds one)
  Millis stream_keepalive = 15s;       // comment line on an idle stream, so dead clients are noticed
  Millis publish_timeout = 5s;         // POST /v1/events waits this long for the broker's confirm
  Millis request_timeout = 10s;        // reading a request / writing a response
};

// The scopes an API key may hold.
const std::vector<std::string>& ApiScopes();

struct EventsConfig {
  // DESIGN.md said 64 KiB, but 10,000 recipients (the allowed maximum) with ids of ~30 bytes
  // need ~350 KB; 1 MiB fits them with ids up to ~100 bytes.
  long long max_body_bytes = 1024 * 1024;
  long long max_recipients = 10000;      // per event with an explicit recipient list
  Millis dedup_window = 24h;
};

struct RetryConfig {
  long long max_attempts = 6;
  // One TTL queue per tier and channel; attempt n waits tiers[min(n-1, size-1)].
  std::vector<Millis> tiers = {1s, 2s, 4s, 8s, 16s, 32s};
};

// Binding of one configuration mapping, for settings defined outside core (channel plugins).
// Every key a binder asks for is known; the others are reported as unknown keys. Scalars can be
// overridden from the environment like any other key.
class ConfigSection {
 public:
  virtual ~ConfigSection() = default;
  virtual void Str(const char* key, std::string& out) = 0;
  virtual void Bool(const char* key, bool& out) = 0;
  virtual void Int(const char* key, long long& out, long long min, long long max) = 0;
  virtual void Duration(const char* key, Millis& out, Millis min, Millis max) = 0;
  virtual void Error(const std::string& message) = 0;  // a problem with this section
};

struct ChannelConfig {
  bool enabled = true;
  long long rate = 0;         // requests per second to the provider; 0 = unlimited
  long long burst = 0;        // tokens a quiet bucket saves up (0 = max(1, rate / 10))
  long long concurrency = 4;  // sends in flight at once per process
  long long prefetch = 100;   // jobs taken from the queue ahead of sending
  // The channel's own typed settings (channels/<name>/), bound by the channel's registry entry.
  std::shared_ptr<const void> settings;
};

// Binds `channels.<channel>`'s own keys; defined by the channel registry (channels/registry.cc).
std::shared_ptr<const void> BindChannelSettings(const std::string& channel, ConfigSection& section);
// The channel's defaults for the generic settings (a provider's usual rate limit, say).
ChannelConfig ChannelDefaults(const std::string& channel);

struct EngineConfig {
  long long workers = 2;               // threads deciding and fanning out events
  long long fanout_batch = 500;        // recipients loaded, decided and published together
  std::string default_locale = "en";   // templates fall back to this locale
  long long budget_per_hour = 20;      // DESIGN.md rule 7: push + email per user per hour
  Millis presence_ttl = 60s;           // an "active" heartbeat counts this long
  long long prefs_cache_size = 100000; // users whose preferences are kept in memory (LRU)
  Millis prefs_cache_ttl = std::chrono::minutes(10);  // a cached entry is reloaded after this, change seen or not
  bool prefs_cache_warm = true;        // the engine loads stored preferences (up to the size) before it starts
};

// One template: field name -> Mustache source ("title", "body"; email: "subject", "text", "html").
using TemplateFields = std::map<std::string, std::string>;

struct EventTypeConfig {
  std::string name;
  std::string category = "default";
  bool critical = false;  // ignores quiet hours, mute and the budget; only configuration decides
  std::vector<std::string> channels;       // channels this type may use, in preference order
  std::vector<std::string> required_vars;  // missing from data.vars -> the event is invalid
  // channel -> locale -> fields
  std::map<std::string, std::map<std::string, TemplateFields>> templates;
};

struct LogConfig {
  std::string level = "info";   // trace, debug, info, warn, error
  std::string format = "text";  // text, or json (one JSON object per line)
};

struct Config {
  BrokerConfig broker;
  StoreConfig store;
  ApiConfig api;
  EventsConfig events;
  RetryConfig retry;
  std::map<std::string, ChannelConfig> channels;  // every known channel, enabled or not
  EngineConfig engine;
  std::map<std::string, EventTypeConfig> event_types;
  LogConfig log;
  Millis shutdown_grace = 30s;  // how long SIGTERM waits for in-flight work before closing

  // Names of enabled channels, sorted.
  std::vector<std::string> EnabledChannels() const;
};

// Channels Herald knows. The delivery queue herald.deliver.<name> exists for each enabled one.
const std::vector<std::string>& KnownChannels();

// The template fields each channel accepts; the first ones listed are required.
const std::vector<std::string>& TemplateFieldsFor(const std::string& channel, size_t* required = nullptr);

// Raised only while loading; the message lists every problem found, one per line.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Loads `path` (YAML) and applies HERALD_* overrides from `environ`-style entries ("K=V").
// Throws ConfigError.
Config LoadConfig(const std::string& path, const std::vector<std::string>& env);
// The same from YAML text (`origin` names it in messages).
Config LoadConfigText(const std::string& yaml, const std::string& origin,
                      const std::vector<std::string>& env);

// The process environment as "K=V" entries.
std::vector<std::string> ProcessEnvironment();

// Environment variables that are not configuration keys but are read by Herald's programs.
inline constexpr const char* kConfigPathEnv = "HERALD_CONFIG";

}  // namespace herald
