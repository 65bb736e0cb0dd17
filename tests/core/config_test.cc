#include <catch2/catch.hpp>

#include "core/config.h"
#include "tests/support/test_env.h"

using namespace herald;
using Catch::Matchers::Contains;

namespace {
std::string LoadError(const std::string& yaml, const std::vector<std::string>& env = {}) {
  try {
    LoadConfigText(yaml, "herald.yaml", env);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("Config: the shipped config/herald.yaml loads with the documented defaults") {
  Config c = LoadConfig(test::SourceDir() + "/config/herald.yaml", {});
  CHECK(c.broker.queue_type == "quorum");
  CHECK(c.events.max_body_bytes == 1048576);
  CHECK(c.retry.max_attempts == 6);
  CHECK(c.retry.tiers.size() == 6);
  CHECK(c.EnabledChannels() == std::vector<std::string>{"email", "in_app", "push", "webhook"});
  CHECK(c.engine.prefs_cache_ttl == std::chrono::minutes(10));
  CHECK(c.engine.prefs_cache_warm);
}

TEST_CASE("Config: an empty document gives defaults") {
  Config c = LoadConfigText("", "x", {});
  CHECK(c.broker.prefetch == 500);
  CHECK(c.engine.prefs_cache_ttl == std::chrono::minutes(10));
  CHECK(c.engine.prefs_cache_warm);
  CHECK(c.events.dedup_window == std::chrono::hours(24));
  CHECK(c.api.listen == "127.0.0.1:8080");
}

TEST_CASE("Config: values from the file are applied") {
  Config c = LoadConfigText("broker:\n  queue_type: classic\n  prefetch: 50\nretry:\n  tiers: [500ms, 2s]\n"
                            "channels:\n  webhook: { enabled: false }\nengine:\n  prefs_cache_warm: false\n", "x", {});
  CHECK_FALSE(c.engine.prefs_cache_warm);
  CHECK(c.broker.queue_type == "classic");
  CHECK(c.broker.prefetch == 50);
  CHECK(c.retry.tiers == std::vector<Millis>{Millis(500), Millis(2000)});
  CHECK(c.EnabledChannels() == std::vector<std::string>{"email", "in_app", "push"});
}

TEST_CASE("Config: HERALD_* variables override the file") {
  Config c = LoadConfigText("broker:\n  url: amqp://a@h:1/\n  queue_type: quorum\n", "x",
                            {"HERALD_BROKER_URL=amqp://guest:guest@10.0.0.1:5672/v", "HERALD_BROKER_QUEUE_TYPE=classic",
                             "HERALD_STORE_URL=sqlite:///tmp/h.db", "HERALD_API_LISTEN=0.0.0.0:9000",
                             "HERALD_RETRY_TIERS=1s,5s", "HERALD_CHANNELS_PUSH_ENABLED=false", "PATH=/bin"});
  CHECK(c.broker.url == "amqp://guest:guest@10.0.0.1:5672/v");
  CHECK(c.broker.queue_type == "classic");
  CHECK(c.store.url == "sqlite:///tmp/h.db");
  CHECK(c.api.listen == "0.0.0.0:9000");
  CHECK(c.retry.tiers == std::vector<Millis>{Millis(1000), Millis(5000)});
  CHECK_FALSE(c.channels.at("push").enabled);
}

TEST_CASE("Config: an unknown key is named with its path and line") {
  std::string e = LoadError("broker:\n  url: amqp://x@h/\n  prefech: 5\n");
  CHECK_THAT(e, Contains("herald.yaml:3") && Contains("unknown key broker.prefech") && Contains("prefetch"));
  CHECK_THAT(LoadError("brokers: {}\n"), Contains("unknown key brokers"));
  CHECK_THAT(LoadError("channels:\n  sms: { enabled: true }\n"), Contains("unknown key channels.sms"));
}

TEST_CASE("Config: a wrong type or bad value is named with the key") {
  CHECK_THAT(LoadError("broker:\n  prefetch: lots\n"), Contains("herald.yaml:2") && Contains("broker.prefetch") &&
                                                           Contains("must be an integer"));
  CHECK_THAT(LoadError("broker:\n  prefetch: 0\n"), Contains("between 1 and 65535"));
  CHECK_THAT(LoadError("broker:\n  queue_type: fast\n"), Contains("broker.queue_type: must be one of quorum, classic"));
  CHECK_THAT(LoadError("broker:\n  url: http://x\n"), Contains("broker.url: must start with amqp://"));
  CHECK_THAT(LoadError("broker:\n  heartbeat: soon\n"), Contains("broker.heartbeat: must be a duration"));
  CHECK_THAT(LoadError("broker: 5\n"), Contains("broker: must be a mapping"));
  CHECK_THAT(LoadError("broker:\n  url: [a]\n"), Contains("broker.url: must be a single value"));
  CHECK_THAT(LoadError("retry:\n  tiers: [4s, 2s]\n"), Contains("retry.tiers: entries must increase"));
  CHECK_THAT(LoadError("store:\n  url: mysql://x\n"), Contains("store.url"));
  CHECK_THAT(LoadError("api:\n  listen: 8080\n"), Contains("api.listen: must be HOST:PORT"));
  CHECK_THAT(LoadError("channels:\n  push: { enabled: maybe }\n"), Contains("channels.push.enabled: must be true or false"));
}

TEST_CASE("Config: every problem is reported, not just the first") {
  std::string e = LoadError("broker:\n  prefetch: x\n  queue_type: y\nbogus: 1\n");
  CHECK_THAT(e, Contains("broker.prefetch") && Contains("broker.queue_type") && Contains("unknown key bogus"));
}

TEST_CASE("Config: bad or unknown environment variables are named") {
  CHECK_THAT(LoadError("", {"HERALD_BROKER_PREFETCH=many"}),
             Contains("environment HERALD_BROKER_PREFETCH") && Contains("must be an integer"));
  CHECK_THAT(LoadError("", {"HERALD_BROKER_ULR=amqp://x/"}),
             Contains("HERALD_BROKER_ULR: does not name a configuration key"));
  CHECK(LoadError("", {"HERALD_CONFIG=/etc/herald.yaml"}).empty());
}

TEST_CASE("Config: YAML syntax errors and missing files are reported") {
  CHECK_THAT(LoadError("broker: [unclosed\n"), Contains("herald.yaml:") && Contains("YAML syntax error"));
  try {
    LoadConfig("/nonexistent/herald.yaml", {});
    FAIL("expected an error");
  } catch (const ConfigError& e) {
    CHECK_THAT(e.what(), Contains("/nonexistent/herald.yaml") && Contains("No such file"));
  }
}

TEST_CASE("Config: event types with templates, and what is wrong with them") {
  const char* good = R"(
engine: { default_locale: en, budget_per_hour: 5 }
event_types:
  billing.invoice.paid:
    category: billing
    channels: [in_app, email, webhook]
    required_vars: [amount]
    templates:
      in_app:
        en: { title: "Paid", body: "{{amount}}" }
      email:
        en: { subject: "Paid", text: "{{amount}}", html: "<b>{{amount}}</b>" }
        de: { subject: "Bezahlt", text: "{{amount}}" }
)";
  Config c = LoadConfigText(good, "x", {});
  REQUIRE(c.event_types.count("billing.invoice.paid"));
  const EventTypeConfig& t = c.event_types.at("billing.invoice.paid");
  CHECK(t.category == "billing");
  CHECK_FALSE(t.critical);
  CHECK(t.channels == std::vector<std::string>{"in_app", "email", "webhook"});
  CHECK(t.required_vars == std::vector<std::string>{"amount"});
  CHECK(t.templates.at("email").at("de").at("subject") == "Bezahlt");
  CHECK(c.engine.budget_per_hour == 5);

  CHECK_THAT(LoadError("event_types:\n  a.b:\n    channels: [sms]\n"), Contains("event_types.a.b.channels[0]: unknown channel \"sms\""));
  CHECK_THAT(LoadError("event_types:\n  a.b:\n    channels: [email]\n"),
             Contains("event_types.a.b.templates.email.en: missing"));
  CHECK_THAT(LoadError("event_types:\n  a.b:\n    channels: [push]\n    templates:\n      push:\n        en: { title: t }\n"),
             Contains("event_types.a.b.templates.push.en.body: required"));
  CHECK_THAT(LoadError("event_types:\n  a.b:\n    channels: [push]\n    templates:\n      push:\n        en: { title: t, body: b, subject: s }\n"),
             Contains("unknown key event_types.a.b.templates.push.en.subject"));
  CHECK_THAT(LoadError("event_types:\n  A B:\n    channels: [webhook]\n"), Contains("event type names must match"));
  CHECK_THAT(LoadError("event_types:\n  a.b:\n    channels: [webhook]\n    critical: yes-please\n"),
             Contains("event_types.a.b.critical: must be true or false"));
  CHECK_THAT(LoadError("event_types:\n  a.b:\n    channels: [webhook]\n    templates:\n      email:\n        en: { subject: s, text: t }\n"),
             Contains("templates.email: email is not in channels"));
  CHECK_THAT(LoadError("event_types:\n  a.b: {}\n"), Contains("channels: name at least one channel"));
}

TEST_CASE("Config: channel settings are typed per channel, unknown keys are refused") {
  Config c = LoadConfigText("channels:\n  webhook: { rate: 30, burst: 5, secret: s3cret, timeout: 2s }\n", "x",
                            {"HERALD_CHANNELS_WEBHOOK_ALLOW_PRIVATE_TARGETS=true", "HERALD_CHANNELS_EMAIL_RATE=10"});
  CHECK(c.channels.at("webhook").rate == 30);
  CHECK(c.channels.at("webhook").burst == 5);
  CHECK(c.channels.at("email").rate == 10);
  CHECK(LoadConfigText("{}", "x", {}).channels.at("email").rate == 30);  // a provider's usual limit
  CHECK(LoadConfigText("{}", "x", {}).channels.at("webhook").rate == 0);
  REQUIRE(c.channels.at("webhook").settings);
  CHECK_THAT(LoadError("channels:\n  webhook: { secrets: x }\n"),
             Contains("herald.yaml:2") && Contains("unknown key channels.webhook.secrets") && Contains("secret"));
  CHECK_THAT(LoadError("channels:\n  in_app: { secret: x }\n"), Contains("unknown key channels.in_app.secret"));
  CHECK_THAT(LoadError("channels:\n  webhook: { timeout: forever }\n"), Contains("channels.webhook.timeout: must be a duration"));
  CHECK_THAT(LoadError("", {"HERALD_CHANNELS_WEBHOOK_RATE=-1"}), Contains("channels.webhook.rate: must be between 0"));
}
