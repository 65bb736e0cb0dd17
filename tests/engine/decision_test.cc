#include <catch2/catch.hpp>

#include "core/time.h"
#include "engine/decision.h"

using namespace herald;
using Catch::Matchers::Contains;

namespace {

const std::vector<std::string> kAll = {"email", "in_app", "push", "webhook"};
// 2026-11-22 is a Sunday; 10:00 UTC = 11:00 in Berlin.
const SystemTime kNow = *ParseRfc3339("2026-11-22T10:00:00Z");

EventTypeConfig Type(bool critical = false) {
  EventTypeConfig t;
  t.name = critical ? "account.password.changed" : "social.post.liked";
  t.category = critical ? "security" : "social";
  t.critical = critical;
  t.channels = {"in_app", "push", "email", "webhook"};
  return t;
}

Preferences User() {
  Preferences p = DefaultPreferences("u-1");
  p.timezone = "Europe/Berlin";
  p.contacts.email = "ada@example.org";
  p.contacts.push.push_back(PushContact{"fcm", "", "", "", "token-1"});
  p.contacts.webhook = "https://hooks.example.org/u-1";
  return p;
}

struct Row {
  std::string name;
  std::function<void(Event&, EventTypeConfig&, Preferences&, DecisionInput&)> setup;
  std::vector<std::string> channels;
  std::vector<std::string> fallback;
  std::string trace;  // a reason that must appear in the trace
};

Decision Run(const Row& row) {
  Event e;
  e.id = "evt-1";
  e.type = "social.post.liked";
  e.recipients = {"u-1"};
  EventTypeConfig t = Type();
  Preferences p = User();
  DecisionInput in{&e, &t, &p, &kAll, kNow};
  row.setup(e, t, p, in);
  in.event = &e;
  in.type = &t;
  in.prefs = &p;
  return Decide(in);
}

std::string TraceText(const Decision& d) {
  std::string s;
  for (const TraceStep& t : d.trace) s += "rule " + std::to_string(t.rule) + " " + t.channel + " " + t.outcome + ": " + t.reason + "\n";
  return s;
}

void Check(const std::vector<Row>& rows) {
  for (const Row& row : rows) {
    INFO(row.name);
    Decision d = Run(row);
    INFO(TraceText(d));
    CHECK(d.channels == row.channels);
    CHECK(d.fallback == row.fallback);
    if (!row.trace.empty()) CHECK_THAT(TraceText(d), Contains(row.trace));
  }
}

const auto kNothing = [](Event&, EventTypeConfig&, Preferences&, DecisionInput&) {};

}  // namespace

TEST_CASE("Decide rule 2: an expired event keeps only the in-app entry") {
  Check({
      {"expired", [](Event& e, auto&, auto&, auto&) { e.expires_at = kNow - std::chrono::minutes(1); }, {"in_app"}, {},
       "rule 2 push skipped: event expired at 2026-11-22T09:59:00.000Z"},
      {"expires later", [](Event& e, auto&, auto&, auto&) { e.expires_at = kNow + std::chrono::minutes(1); },
       {"in_app", "push", "webhook"}, {"email"}, ""},
      {"expired, in-app off", [](Event& e, auto&, Preferences& p, auto&) {
         e.expires_at = kNow - std::chrono::seconds(1);
         p.channels["in_app"] = false;
       }, {}, {}, "rule 2 email skipped"},
  });
}

TEST_CASE("Decide rule 3: candidates are type, user, event restriction and contacts intersected") {
  Check({
      {"everything possible, inactive", kNothing, {"in_app", "push", "webhook"}, {"email"}, ""},
      {"type without push", [](auto&, EventTypeConfig& t, auto&, auto&) { t.channels = {"in_app", "email"}; },
       {"in_app", "email"}, {}, ""},
      {"user turned push off", [](auto&, auto&, Preferences& p, auto&) { p.channels["push"] = false; },
       {"in_app", "email", "webhook"}, {}, "rule 3 push skipped: turned off by the user"},
      {"user turned email off for the category", [](auto&, auto&, Preferences& p, auto&) {
         p.categories["social"]["email"] = false;
       }, {"in_app", "push", "webhook"}, {}, "rule 3 email skipped: turned off by the user for category social"},
      {"category setting wins over global", [](auto&, auto&, Preferences& p, auto&) {
         p.channels["email"] = false;
         p.channels["push"] = false;
         p.categories["social"]["email"] = true;
       }, {"in_app", "email", "webhook"}, {}, ""},
      {"data.channels restriction", [](Event& e, auto&, auto&, auto&) { e.channels = {"email"}; }, {"email"}, {},
       "rule 3 in_app skipped: not in the event's data.channels"},
      {"channel disabled in configuration", [](auto&, auto&, auto&, DecisionInput& in) {
         static const std::vector<std::string> no_push = {"email", "in_app", "webhook"};
         in.enabled_channels = &no_push;
       }, {"in_app", "email", "webhook"}, {}, "rule 3 push skipped: channel disabled in Herald's configuration"},
      {"no push contact", [](auto&, auto&, Preferences& p, auto&) { p.contacts.push.clear(); },
       {"in_app", "email", "webhook"}, {}, "rule 3 push skipped: no push subscription or device"},
      {"push disabled and no email", [](auto&, auto&, Preferences& p, auto&) {
         p.channels["push"] = false;
         p.contacts.email.clear();
         p.contacts.webhook.clear();
       }, {"in_app"}, {}, "rule 3 email skipped: no e-mail address"},
      {"unknown user: defaults and no contacts", [](auto&, auto&, Preferences& p, auto&) { p = DefaultPreferences("u-1"); },
       {"in_app"}, {}, "rule 3 webhook skipped: no webhook URL"},
      {"nothing possible", [](auto&, auto&, Preferences& p, auto&) {
         p = DefaultPreferences("u-1");
         p.channels["in_app"] = false;
       }, {}, {}, "no channel is possible for this user"},
  });
}

TEST_CASE("Decide rule 4: the in-app entry is written whenever in-app is a candidate") {
  Check({
      {"inactive", kNothing, {"in_app", "push", "webhook"}, {"email"}, "rule 4 in_app chosen: inbox entry"},
      {"active", [](auto&, auto&, auto&, DecisionInput& in) { in.active = true; }, {"in_app"}, {}, "rule 4 in_app chosen"},
      {"quiet hours", [](auto&, auto&, Preferences& p, auto&) { p.quiet_hours = QuietHours{10 * 60, 12 * 60}; },
       {"in_app"}, {}, "rule 4 in_app chosen"},
  });
}

TEST_CASE("Decide rule 5: active means in-app only, otherwise push, else e-mail, with e-mail as fallback") {
  Check({
      {"active user", [](auto&, auto&, auto&, DecisionInput& in) { in.active = true; }, {"in_app"}, {},
       "rule 5 push skipped: user is active: in-app only"},
      {"inactive user gets push with e-mail fallback", kNothing, {"in_app", "push", "webhook"}, {"email"},
       "rule 5 email fallback: if push fails permanently"},
      {"no push possible: e-mail", [](auto&, auto&, Preferences& p, auto&) { p.contacts.push.clear(); },
       {"in_app", "email", "webhook"}, {}, "rule 5 email chosen: user is not active and push is not possible"},
      {"active but in-app off: other channels", [](auto&, auto&, Preferences& p, DecisionInput& in) {
         in.active = true;
         p.channels["in_app"] = false;
       }, {"push", "webhook"}, {"email"}, "in-app is not possible"},
  });
}

TEST_CASE("Decide rule 6: quiet hours and mute keep only in-app unless the type is critical") {
  Check({
      // 11:00 in Berlin.
      {"inside quiet hours in the user's zone", [](auto&, auto&, Preferences& p, auto&) {
         p.quiet_hours = QuietHours{10 * 60 + 30, 11 * 60 + 30};
       }, {"in_app"}, {}, "quiet hours 10:30-11:30 (11:00 in Europe/Berlin): in-app only"},
      {"window in UTC terms would not match", [](auto&, auto&, Preferences& p, auto&) {
         p.quiet_hours = QuietHours{9 * 60 + 30, 10 * 60 + 30};  // 09:30-10:30 Berlin: not now
       }, {"in_app", "push", "webhook"}, {"email"}, ""},
      {"window across midnight", [](auto&, auto&, Preferences& p, auto&) {
         p.timezone = "America/New_York";  // 05:00 there
         p.quiet_hours = QuietHours{22 * 60, 7 * 60};
       }, {"in_app"}, {}, "(05:00 in America/New_York)"},
      {"muted", [](auto&, auto&, Preferences& p, auto&) { p.mute_until = kNow + std::chrono::hours(1); }, {"in_app"}, {},
       "muted until 2026-11-22T11:00:00.000Z: in-app only"},
      {"mute over", [](auto&, auto&, Preferences& p, auto&) { p.mute_until = kNow - std::chrono::hours(1); },
       {"in_app", "push", "webhook"}, {"email"}, ""},
      {"critical type during quiet hours", [](auto&, EventTypeConfig& t, Preferences& p, auto&) {
         t = Type(true);
         p.quiet_hours = QuietHours{0, 23 * 60 + 59};
       }, {"in_app", "push", "webhook"}, {"email"}, "but type account.password.changed is critical"},
      {"active + quiet hours", [](auto&, auto&, Preferences& p, DecisionInput& in) {
         in.active = true;
         p.quiet_hours = QuietHours{0, 23 * 60 + 59};
       }, {"in_app"}, {}, "rule 6"},
      {"critical + active: still in-app only", [](auto&, EventTypeConfig& t, Preferences& p, DecisionInput& in) {
         t = Type(true);
         in.active = true;
         p.quiet_hours = QuietHours{0, 23 * 60 + 59};
       }, {"in_app"}, {}, "user is active"},
  });
}

TEST_CASE("Decide rule 7: the hourly budget of push and e-mail") {
  Check({
      {"under budget", [](auto&, auto&, auto&, DecisionInput& in) { in.loud_last_hour = 19; },
       {"in_app", "push", "webhook"}, {"email"}, ""},
      {"budget used", [](auto&, auto&, auto&, DecisionInput& in) { in.loud_last_hour = 20; }, {"in_app", "webhook"}, {},
       "rule 7 push skipped: hourly budget of 20 push/e-mail used: in-app only"},
      {"smaller budget from configuration", [](auto&, auto&, auto&, DecisionInput& in) {
         in.budget_per_hour = 3;
         in.loud_last_hour = 3;
       }, {"in_app", "webhook"}, {}, "hourly budget of 3"},
      {"budget used, critical type", [](auto&, EventTypeConfig& t, auto&, DecisionInput& in) {
         t = Type(true);
         in.loud_last_hour = 50;
       }, {"in_app", "push", "webhook"}, {"email"}, "hourly budget used, but type account.password.changed is critical"},
  });
  Decision d = Run({"", kNothing, {}, {}, ""});
  CHECK(d.uses_budget);
  d = Run({"", [](auto&, auto&, auto&, DecisionInput& in) { in.active = true; }, {}, {}, ""});
  CHECK_FALSE(d.uses_budget);
}

TEST_CASE("Decide rule 8: every channel of the type appears in the trace with a reason") {
  Decision d = Run({"", [](Event& e, auto&, Preferences& p, auto&) {
                      e.channels = {"in_app", "push"};
                      p.contacts.push.clear();
                    }, {}, {}, ""});
  std::string text = TraceText(d);
  for (const char* ch : {"in_app", "push", "email", "webhook"}) CHECK_THAT(text, Contains(std::string(" ") + ch + " "));
  auto j = d.ToJson();
  CHECK(j["channels"] == nlohmann::json::array({"in_app"}));
  CHECK(j["steps"].size() == d.trace.size());
  CHECK(j["steps"][0].contains("rule"));
}
