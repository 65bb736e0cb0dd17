// /v1/dead-letters: the operator's view through the API, the same operations as `herald dlq`
// (workers/dead_letters.h), admin key only.
#include <spdlog/spdlog.h>

#include <charconv>

#include "api/server.h"
#include "core/time.h"
#include "workers/dead_letters.h"

namespace herald::api {
namespace {

constexpr long long kDefaultPage = 100, kMaxPage = 500;
constexpr long long kDefaultBatch = 1000, kMaxBatch = 10000;

nlohmann::json LetterJson(const DeadLetter& d) {
  auto job = nlohmann::json::parse(d.job_json, nullptr, false);
  auto headers = nlohmann::json::parse(d.headers_json, nullptr, false);
  return {{"id", d.id},
          {"delivery_id", d.delivery_id},
          {"channel", d.channel},
          {"reason", d.reason},
          {"error", d.error},
          {"attempts", d.attempts},
          {"event_id", d.event_id},
          {"event_type", d.event_type},
          {"user_id", d.user_id},
          {"first_failed_at", FormatRfc3339(d.first_failed_at)},
          {"dead_at", FormatRfc3339(d.dead_at)},
          {"job", job.is_discarded() ? nlohmann::json(d.job_json) : job},
          {"headers", headers.is_discarded() ? nlohmann::json::object() : headers}};
}

Problem BadFilter(const Status& s) {
  std::string field = FieldOf(s);
  if (s.message().rfind("unknown channel", 0) == 0) field = "channel";
  return Problem::Make(400, "invalid_filter", s.message(), field);
}

Problem Busy() {
  Problem p = Problem::Make(409, "busy", "another dead-letter replay or purge is running on this server; try again when it ends");
  p.headers.push_back({"Retry-After", "5"});
  return p;
}

bool FilterFromQuery(Call& c, DeadLetterQuery& q) {
  q.channel = c.Query("channel");
  q.reason = c.Query("reason");
  q.type = c.Query("type");
  q.user = c.Query("user");
  q.since = c.Query("since");
  q.until = c.Query("until");
  return true;
}

// Filter fields of a JSON body; anything else is refused by name.
bool FilterFromBody(Call& c, const nlohmann::json& body, DeadLetterQuery& q, bool& dry_run, double& rate) {
  for (auto it = body.begin(); it != body.end(); ++it) {
    const std::string& k = it.key();
    std::string* text = k == "channel" ? &q.channel
                        : k == "reason" ? &q.reason
                        : k == "type"   ? &q.type
                        : k == "user"   ? &q.user
                        : k == "since"  ? &q.since
                        : k == "until"  ? &q.until
                                        : nullptr;
    if (text) {
      if (!it->is_string()) {
        c.Fail(Problem::Make(422, "invalid_field", k + ": must be a string", k));
        return false;
      }
      *text = it->get<std::string>();
    } else if (k == "dry_run") {
      if (!it->is_boolean()) {
        c.Fail(Problem::Make(422, "invalid_field", "dry_run: must be true or false", k));
        return false;
      }
      dry_run = it->get<bool>();
    } else if (k == "limit") {
      if (!it->is_number_integer() || it->get<long long>() < 1 || it->get<long long>() > kMaxBatch) {
        c.Fail(Problem::Make(422, "invalid_field", "limit: must be an integer from 1 to " + std::to_string(kMaxBatch), k));
        return false;
      }
      q.limit = it->get<long long>();
    } else if (k == "rate") {
      if (!it->is_number() || it->get<double>() < 0) {
        c.Fail(Problem::Make(422, "invalid_field", "rate: must be a number of replays per second, 0 = unlimited", k));
        return false;
      }
      rate = it->get<double>();
    } else {
      c.Fail(Problem::Make(422, "invalid_field",
                           k + ": unknown field (known: channel, reason, type, user, since, until, limit, dry_run, rate)", k));
      return false;
    }
  }
  return true;
}

}  // namespace

bool ApiServer::SelectDeadLetters(Call& c, const DeadLetterQuery& q, DeadLetterSelection& sel,
                                  std::unique_lock<std::mutex>& lock, size_t& total) {
  if (Status s = BuildDeadLetterSelection(q, d_.clock->Now(), "", sel); !s.ok()) {
    c.Fail(BadFilter(s));
    return false;
  }
  lock = std::unique_lock(replay_mu_, std::try_to_lock);
  if (!lock) {
    c.Fail(Busy());
    return false;
  }
  // Pinned to the rows counted: a letter that dies meanwhile is not part of this call.
  if (Status s = CountDeadLetterSelection(*d_.store, sel, total); !s.ok()) {
    c.Fail(StoreUnavailable(s));
    return false;
  }
  return true;
}

void ApiServer::ListDeadLetters(Call& c) {
  DeadLetterQuery q;
  FilterFromQuery(c, q);
  long long limit = kDefaultPage;
  if (!c.IntQuery("limit", 1, kMaxPage, limit)) return;
  DeadLetterSelection sel;
  if (Status s = BuildDeadLetterSelection(q, d_.clock->Now(), "", sel); !s.ok()) return c.Fail(BadFilter(s));
  if (std::string cursor = c.Query("cursor"); !cursor.empty()) {
    auto after = DecodeCursor("d1", cursor, 0);
    if (!after) return c.Fail(Problem::Make(400, "invalid_cursor", "cursor: not a cursor this API gave out", "cursor"));
    sel.filter.after_id = *after;
  }
  sel.filter.limit = static_cast<size_t>(limit) + 1;
  std::vector<DeadLetter> rows;
  if (Status s = d_.store->ListDeadLetters(sel.filter, rows); !s.ok()) {
    return c.Fail(StoreUnavailable(s));
  }
  const bool more = rows.size() > static_cast<size_t>(limit);
  if (more) rows.resize(static_cast<size_t>(limit));
  nlohmann::json items = nlohmann::json::array();
  for (const DeadLetter& d : rows) items.push_back(LetterJson(d));
  c.Json(200, {{"items", items}, {"next_cursor", more ? nlohmann::json(EncodeCursor("d1", rows.back().id)) : nlohmann::json(nullptr)}});
}

void ApiServer::ReplayDeadLetters(Call& c) {
  nlohmann::json body;
  if (!c.ReadJson(body, static_cast<size_t>(config_.api.max_body_bytes))) return;
  DeadLetterQuery q;
  bool dry_run = false;
  double rate = 0;
  if (!FilterFromBody(c, body, q, dry_run, rate)) return;
  if (q.limit == 0) q.limit = kDefaultBatch;
  DeadLetterSelection sel;
  std::unique_lock<std::mutex> one_at_a_time;
  size_t total = 0;
  if (!SelectDeadLetters(c, q, sel, one_at_a_time, total)) return;
  if (Status s = RecordDeadLetterAudit(*d_.store, c.who.name, "replay", sel, total, dry_run); !s.ok()) {
    return c.Fail(StoreUnavailable(s));
  }
  nlohmann::json out = {{"selected", total}, {"dry_run", dry_run}, {"filter", sel.echo}};
  if (total == 0) {
    out["replayed"] = 0;
    out["message"] = "no dead letters match";
    return c.Json(200, out);
  }
  if (dry_run) return c.Json(200, out);
  if (!d_.publisher->Connected()) {
    Problem p = Problem::Make(503, "broker_unavailable", "the broker is not reachable; nothing was replayed");
    p.headers.push_back({"Retry-After", "5"});
    return c.Fail(p);
  }
  ReplayOptions o;
  o.rate = rate;
  o.connect_timeout = config_.api.publish_timeout;
  nlohmann::json problems = nlohmann::json::array();
  o.on_problem = [&](long long id, const std::string& problem) {
    if (problems.size() < 100) problems.push_back({{"id", id}, {"problem", problem}});
  };
  ReplayReport report;
  Status s = herald::ReplayDeadLetters(*d_.store, *d_.publisher, sel, o, report);
  spdlog::info("api: {} replayed {} of {} dead letter(s) ({} failed, {} skipped)", c.who.name, report.replayed,
               report.total, report.failed, report.skipped);
  out["selected"] = report.total;
  out["replayed"] = report.replayed;
  out["failed"] = report.failed;
  out["skipped"] = report.skipped;
  if (!problems.empty()) out["problems"] = problems;
  if (!s.ok()) {
    Problem p = Problem::Make(503, "replay_incomplete",
                              s.message() + "; " + std::to_string(report.replayed) + " replayed, the rest kept");
    p.headers.push_back({"Retry-After", "5"});
    for (const char* k : {"selected", "replayed", "failed", "skipped", "problems"}) {
      if (out.contains(k)) p.extra[k] = out[k];
    }
    return c.Fail(p);
  }
  c.Json(200, out);
}

void ApiServer::PurgeDeadLetters(Call& c) {
  DeadLetterQuery q;
  FilterFromQuery(c, q);
  const bool all = c.Query("all") == "true";
  if (q.channel.empty() && q.reason.empty() && q.type.empty() && q.user.empty() && q.since.empty() && q.until.empty() &&
      !all) {
    return c.Fail(Problem::Make(400, "filter_required",
                                "give a filter (channel, reason, type, user, since, until), or all=true to delete every dead letter"));
  }
  DeadLetterSelection sel;
  std::unique_lock<std::mutex> one_at_a_time;
  size_t total = 0;
  if (!SelectDeadLetters(c, q, sel, one_at_a_time, total)) return;
  if (total > 0) {
    if (Status s = RecordDeadLetterAudit(*d_.store, c.who.name, "purge", sel, total, false); !s.ok()) {
      return c.Fail(StoreUnavailable(s));
    }
  }
  size_t deleted = 0;
  if (Status s = herald::PurgeDeadLetters(*d_.store, sel, deleted); !s.ok()) {
    Problem p = StoreUnavailable(s);
    p.extra["deleted"] = deleted;
    return c.Fail(p);
  }
  c.Json(200, {{"deleted", deleted}, {"filter", sel.echo}});
}

}  // namespace herald::api
