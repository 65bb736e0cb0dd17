#include "engine/decision.h"

#include <date/tz.h>

#include <algorithm>
#include <cstdio>

#include "core/json_writer.h"
#include "core/time.h"

namespace herald {
namespace {

bool Contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

std::string Hhmm(int minutes) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%02d:%02d", (minutes / 60) % 24, minutes % 60);
  return buf;
}

// What a channel needs from the user's contacts; "" if it has it.
std::string MissingContact(const std::string& channel, const Preferences& p) {
  if (channel == "email" && p.contacts.email.empty()) return "no e-mail address";
  if (channel == "push" && p.contacts.push.empty()) return "no push subscription or device";
  if (channel == "webhook" && p.contacts.webhook.empty()) return "no webhook URL";
  return "";
}

}  // namespace

bool InQuietHours(const Preferences& prefs, SystemTime now, std::string* local) {
  int minute_of_day = -1;
  if (const date::time_zone* zone = FindTimeZone(prefs.timezone)) {
    try {
      auto lt = zone->to_local(std::chrono::time_point_cast<std::chrono::seconds>(now));
      auto since_midnight = lt - date::floor<date::days>(lt);
      minute_of_day = static_cast<int>(std::chrono::duration_cast<std::chrono::minutes>(since_midnight).count());
    } catch (const std::exception&) {
      minute_of_day = -1;
    }
  }
  if (minute_of_day < 0) {  // no such zone: UTC
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    minute_of_day = static_cast<int>(((secs % 86400) + 86400) % 86400 / 60);
  }
  if (local) *local = Hhmm(minute_of_day);
  if (!prefs.quiet_hours) return false;
  int start = prefs.quiet_hours->start_minute, end = prefs.quiet_hours->end_minute;
  if (start < end) return minute_of_day >= start && minute_of_day < end;
  return minute_of_day >= start || minute_of_day < end;  // the window crosses midnight
}

bool Decision::Has(const std::string& channel) const { return Contains(channels, channel); }

nlohmann::json Decision::ToJson() const {
  nlohmann::json steps = nlohmann::json::array();
  for (const TraceStep& s : trace) {
    nlohmann::json j = {{"rule", s.rule}, {"outcome", s.outcome}, {"reason", s.reason}};
    if (!s.channel.empty()) j["channel"] = s.channel;
    steps.push_back(std::move(j));
  }
  return {{"channels", channels}, {"fallback", fallback}, {"uses_budget", uses_budget}, {"steps", steps}};
}

void Decision::AppendJsonOpen(std::string& out) const {
  auto list = [&](const std::vector<std::string>& v) {
    out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) out += ',';
      AppendJsonString(out, v[i]);
    }
    out += ']';
  };
  out += "{\"channels\":";
  list(channels);
  out += ",\"fallback\":";
  list(fallback);
  out += uses_budget ? ",\"uses_budget\":true,\"steps\":[" : ",\"uses_budget\":false,\"steps\":[";
  for (size_t i = 0; i < trace.size(); ++i) {
    const TraceStep& s = trace[i];
    JsonWriter w(out);
    if (i) out += ',';
    w.Open().Int("rule", s.rule).Str("outcome", s.outcome).Str("reason", s.reason);
    if (!s.channel.empty()) w.Str("channel", s.channel);
    w.Close();
  }
  out += ']';
}

Decision Decide(const DecisionInput& in) {
  const Event& event = *in.event;
  const EventTypeConfig& type = *in.type;
  const Preferences& prefs = *in.prefs;
  Decision d;
  auto step = [&](int rule, const std::string& channel, const char* outcome, std::string reason) {
    d.trace.push_back({rule, channel, outcome, std::move(reason)});
  };

  // Rule 3: candidates.
  std::vector<std::string> candidates;
  for (const std::string& ch : type.channels) {
    if (!Contains(*in.enabled_channels, ch)) {
      step(3, ch, "skipped", "channel disabled in Herald's configuration");
    } else if (!event.channels.empty() && !Contains(event.channels, ch)) {
      step(3, ch, "skipped", "not in the event's data.channels");
    } else if (!prefs.ChannelEnabled(ch, type.category)) {
      bool by_category = prefs.categories.count(type.category) && prefs.categories.at(type.category).count(ch);
      step(3, ch, "skipped",
           by_category ? "turned off by the user for category " + type.category : "turned off by the user");
    } else if (std::string missing = MissingContact(ch, prefs); !missing.empty()) {
      step(3, ch, "skipped", missing);
    } else {
      candidates.push_back(ch);
    }
  }

  // Rule 4: the inbox entry whenever in-app is a candidate, whatever else happens.
  const bool in_app = Contains(candidates, "in_app");
  if (in_app) {
    d.channels.push_back("in_app");
    step(4, "in_app", "chosen", "inbox entry");
  }
  std::vector<std::string> loud;
  for (const std::string& ch : candidates) {
    if (ch != "in_app") loud.push_back(ch);
  }
  if (loud.empty()) {
    if (!in_app) step(3, "", "note", "no channel is possible for this user");
    return d;
  }
  auto skip_all = [&](int rule, const std::string& reason) {
    for (const std::string& ch : loud) step(rule, ch, "skipped", reason);
  };

  // Rule 2: expired events keep only the inbox entry.
  if (event.expires_at && *event.expires_at <= in.now) {
    skip_all(2, "event expired at " + FormatRfc3339(*event.expires_at));
    return d;
  }

  // Rule 6: quiet hours and mute, unless the type is critical by configuration.
  std::string local;
  const bool quiet = InQuietHours(prefs, in.now, &local);
  const bool muted = prefs.mute_until && in.now < *prefs.mute_until;
  if (quiet || muted) {
    std::string why = quiet ? "quiet hours " + Hhmm(prefs.quiet_hours->start_minute) + "-" +
                                  Hhmm(prefs.quiet_hours->end_minute) + " (" + local + " in " + prefs.timezone + ")"
                            : "muted until " + FormatRfc3339(*prefs.mute_until);
    if (!type.critical) {
      skip_all(6, why + ": in-app only");
      return d;
    }
    step(6, "", "note", why + ", but type " + type.name + " is critical");
  }

  // Rule 5: an active user sees it in the app; otherwise push, else e-mail.
  if (in.active) {
    if (in_app) {
      skip_all(5, "user is active: in-app only");
      return d;
    }
    step(5, "", "note", "user is active but in-app is not possible: using other channels");
  }
  std::string personal;
  if (Contains(loud, "push")) {
    personal = "push";
    step(5, "push", "chosen", in.active ? "in-app not possible" : "user is not active");
    if (Contains(loud, "email")) {
      d.fallback.push_back("email");
      step(5, "email", "fallback", "if push fails permanently or exhausts its retries");
    }
  } else if (Contains(loud, "email")) {
    personal = "email";
    step(5, "email", "chosen", in.active ? "in-app not possible" : "user is not active and push is not possible");
  }

  // Rule 7: at most budget_per_hour push + e-mail per user per hour.
  if (!personal.empty()) {
    if (in.loud_last_hour >= in.budget_per_hour && !type.critical) {
      d.trace.push_back({7, personal, "skipped",
                         "hourly budget of " + std::to_string(in.budget_per_hour) + " push/e-mail used: in-app only"});
      d.fallback.clear();
      personal.clear();
    } else {
      if (in.loud_last_hour >= in.budget_per_hour) {
        step(7, personal, "note", "hourly budget used, but type " + type.name + " is critical");
      }
      d.channels.push_back(personal);
      d.uses_budget = true;
    }
  }
  if (Contains(loud, "webhook")) {
    d.channels.push_back("webhook");
    step(5, "webhook", "chosen", "the user's webhook receives every notification it is enabled for");
  }
  return d;
}

}  // namespace herald
