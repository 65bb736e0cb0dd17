// The decision for one recipient of one event: which channels, and why (DESIGN.md rules 2-8).
// A pure function of its inputs, so every rule is tested with a table and no broker or clock.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/config.h"
#include "engine/event.h"
#include "engine/preferences.h"

namespace herald {

struct TraceStep {
  int rule;             // the DESIGN.md decision rule that applied
  std::string channel;  // "" for a step about the whole decision
  std::string outcome;  // "chosen", "skipped", "fallback" or "note"
  std::string reason;
};

struct Decision {
  std::vector<std::string> channels;  // jobs to publish, in order; "in_app" first when chosen
  std::vector<std::string> fallback;  // channels to try, in order, if the personal channel fails
  bool uses_budget = false;           // a push or email counts against the user's hourly budget
  std::vector<TraceStep> trace;

  nlohmann::json ToJson() const;
  // The same object as ToJson(), appended as compact JSON, without its closing brace, so the
  // caller can add members.
  void AppendJsonOpen(std::string& out) const;
  bool Has(const std::string& channel) const;
};

struct DecisionInput {
  const Event* event;
  const EventTypeConfig* type;
  const Preferences* prefs;
  const std::vector<std::string>* enabled_channels;  // by configuration
  SystemTime now;
  bool active = false;            // presence
  long long loud_last_hour = 0;   // push + email already sent to this user in the last hour
  long long budget_per_hour = 20;
};

Decision Decide(const DecisionInput& in);

// Whether `now` falls in the user's quiet hours, in the user's time zone; `local` receives the
// local time of day as "HH:MM". An unknown zone counts as UTC.
bool InQuietHours(const Preferences& prefs, SystemTime now, std::string* local = nullptr);

}  // namespace herald
