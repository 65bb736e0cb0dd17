#include "workers/dead_letters.h"

#include <algorithm>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "broker/topology.h"
#include "core/config.h"
#include "core/token_bucket.h"

namespace herald {
namespace {

constexpr size_t kPage = 500;

// A value from a caller, quoted for an error message: escaped, so a query parameter cannot put
// control characters or broken UTF-8 into a log line or a problem document.
std::string Quote(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A time bound: RFC 3339, or a duration ("2h") meaning that long before `now`.
Status ParseTimeBound(const std::string& field, const std::string& text, SystemTime now,
                      std::optional<SystemTime>& out) {
  if (text.empty()) return Status::Ok();
  if (auto t = ParseRfc3339(text)) {
    out = *t;
    return Status::Ok();
  }
  if (auto d = ParseDuration(text)) {
    out = now - *d;
    return Status::Ok();
  }
  return Status::Invalid(field + ": " + Quote(text) +
                         " is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration (2h, 30m)");
}

// The same kind of failure, said with what was being done.
Status WithContext(const Status& s, const std::string& context) {
  const std::string m = context + ": " + s.message();
  switch (s.code()) {
    case Status::Code::kOk: return s;
    case Status::Code::kInvalid: return Status::Invalid(m);
    case Status::Code::kNotFound: return Status::NotFound(m);
    case Status::Code::kUnavailable: return Status::Unavailable(m);
    case Status::Code::kTimeout: return Status::Timeout(m);
    case Status::Code::kRejected: return Status::Rejected(m);
    case Status::Code::kInternal: break;
  }
  return Status::Internal(m);
}

// The outcomes of one replay's publishes. Shared with the publisher's callbacks, which may run
// after ReplayDeadLetters returned (a shared publisher outlives the call, and confirms given up
// on may still come): they then write into this orphan, which nobody reads.
struct Confirms {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<long long, Status>> done;  // arrived, not yet handled
  std::unordered_set<long long> waiting;           // published; outcome not yet handled
};

}  // namespace

Status BuildDeadLetterSelection(const DeadLetterQuery& q, SystemTime now, const std::string& field_prefix,
                                DeadLetterSelection& out) {
  if (!q.channel.empty()) {
    const auto& known = KnownChannels();
    if (std::find(known.begin(), known.end(), q.channel) == known.end()) {
      std::string list;
      for (const std::string& c : known) list += (list.empty() ? "" : ", ") + c;
      return Status::Invalid(field_prefix + "channel: unknown channel " + Quote(q.channel) + " (known: " + list + ")");
    }
  }
  if (q.limit < 0) {
    return Status::Invalid(field_prefix + "limit must be 0 (no limit) or more (got " + std::to_string(q.limit) + ")");
  }
  DeadLetterSelection sel;
  DeadLetterFilter& f = sel.filter;
  if (Status s = ParseTimeBound(field_prefix + "since", q.since, now, f.since); !s.ok()) return s;
  if (Status s = ParseTimeBound(field_prefix + "until", q.until, now, f.until); !s.ok()) return s;
  f.channel = q.channel;
  f.reason = q.reason;
  f.event_type = q.type;
  f.user_id = q.user;
  sel.limit = q.limit;
  sel.echo = nlohmann::json::object();
  if (!q.channel.empty()) sel.echo["channel"] = q.channel;
  if (!q.reason.empty()) sel.echo["reason"] = q.reason;
  if (!q.type.empty()) sel.echo["type"] = q.type;
  if (!q.user.empty()) sel.echo["user"] = q.user;
  // Resolved times: "2h" means nothing once the audit record is read a week later.
  if (f.since) sel.echo["since"] = FormatRfc3339(*f.since);
  if (f.until) sel.echo["until"] = FormatRfc3339(*f.until);
  if (q.limit > 0) sel.echo["limit"] = q.limit;
  out = std::move(sel);
  return Status::Ok();
}

Status ForEachDeadLetter(Store& store, const DeadLetterSelection& sel,
                         const std::function<bool(const DeadLetter&)>& visit) {
  DeadLetterFilter f = sel.filter;
  f.after_id = 0;
  size_t left = sel.limit > 0 ? static_cast<size_t>(sel.limit) : std::numeric_limits<size_t>::max();
  std::vector<DeadLetter> page;
  while (left > 0) {
    f.limit = std::min(kPage, left);
    if (Status s = store.ListDeadLetters(f, page); !s.ok()) return WithContext(s, "reading dead letters");
    for (const DeadLetter& d : page) {
      if (sel.up_to_id && d.id > *sel.up_to_id) return Status::Ok();  // id order: the rest are newer too
      if (!visit(d)) return Status::Ok();
    }
    left -= page.size();
    if (page.size() < f.limit) break;
    f.after_id = page.back().id;
  }
  return Status::Ok();
}

Status CountDeadLetterSelection(Store& store, DeadLetterSelection& sel, size_t& count) {
  size_t n = 0;
  long long last_id = 0;
  Status s = ForEachDeadLetter(store, sel, [&](const DeadLetter& d) {
    ++n;
    last_id = d.id;
    return true;
  });
  if (!s.ok()) return s;
  count = n;
  sel.up_to_id = last_id;
  return Status::Ok();
}

Status RecordDeadLetterAudit(Store& store, const std::string& actor, const std::string& action,
                             const DeadLetterSelection& sel, size_t count, bool dry_run) {
  AuditRecord r;
  r.at = SystemClock::Instance().Now();
  r.actor = actor.empty() ? "unknown" : actor;
  r.action = action;
  r.filter_json = sel.echo.is_object() ? sel.echo.dump() : "{}";
  r.count = static_cast<long long>(count);
  r.dry_run = dry_run;
  if (Status s = store.PutAudit(r); !s.ok()) return WithContext(s, "cannot record the audit entry");
  return Status::Ok();
}

Status RewriteJob(const DeadLetter& d, std::string& body) {
  auto job = nlohmann::json::parse(d.job_json, nullptr, /*allow_exceptions=*/false);
  if (job.is_discarded() || !job.is_object()) return Status::Invalid("its job is not a JSON object");
  job["attempt"] = 1;
  job.erase("first_failed_at");
  job.erase("last_error");
  body = job.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return Status::Ok();
}

Status ReplayDeadLetters(Store& store, broker::Publisher& publisher, const DeadLetterSelection& sel,
                         const ReplayOptions& o, ReplayReport& report) {
  report = ReplayReport{};
  // Only rows selected now: a letter dead-lettered meanwhile (perhaps by a replayed job failing
  // again) must not be picked up by this same run.
  DeadLetterSelection pinned = sel;
  if (Status s = CountDeadLetterSelection(store, pinned, report.total); !s.ok()) return s;
  if (report.total == 0) return Status::Ok();

  using Clock = std::chrono::steady_clock;
  auto cancelled = [&] { return o.cancel && o.cancel->load(); };
  auto progress = [&] {
    if (o.on_progress) o.on_progress({report.total, report.replayed, report.failed, report.skipped});
  };
  auto problem = [&](long long id, const std::string& text) {
    if (o.on_problem) o.on_problem(id, text);
  };

  // Waiting for room below waits for confirms, which never come while the broker is unreachable:
  // fail clearly now rather than hang with the window full.
  const auto connect_deadline = Clock::now() + o.connect_timeout;
  while (!publisher.Connected() && !cancelled() && Clock::now() < connect_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (cancelled()) {
    report.cancelled = true;
    return Status::Ok();
  }
  if (!publisher.Connected()) {
    return Status::Unavailable("cannot reach the broker within " + FormatDuration(o.connect_timeout) +
                               "; nothing was replayed");
  }

  auto confirms = std::make_shared<Confirms>();
  // Handles the outcomes that arrived (rows are deleted here, on this thread: a publisher callback
  // must stay short, and a row may only go once its job is safely on the broker), then waits
  // while `room` or more of ours await a confirm. False if none arrived for stall_timeout: the
  // publisher reconnects on its own, so a slow broker is not a failure, but a dead one must not
  // hang us forever.
  auto settle = [&](size_t room) {
    for (;;) {
      std::vector<std::pair<long long, Status>> ready;
      {
        std::unique_lock lock(confirms->mu);
        if (confirms->done.empty() && confirms->waiting.size() >= room &&
            !confirms->cv.wait_for(lock, o.stall_timeout, [&] { return !confirms->done.empty(); })) {
          return false;
        }
        ready.swap(confirms->done);
        for (const auto& r : ready) confirms->waiting.erase(r.first);
      }
      for (const auto& [id, status] : ready) {
        if (!status.ok()) {
          ++report.failed;
          problem(id, "not replayed (kept): " + status.message());
        } else if (Status d = store.DeleteDeadLetter(id); !d.ok()) {
          // Replayed but still stored: a second replay is harmless (workers skip sent ids).
          ++report.replayed;
          problem(id, "replayed but not deleted: " + d.message());
        } else {
          ++report.replayed;
        }
      }
      if (!ready.empty()) progress();
      std::lock_guard lock(confirms->mu);
      if (confirms->waiting.size() < room) return true;
    }
  };
  constexpr size_t kNoWait = std::numeric_limits<size_t>::max();
  const size_t window = std::max<size_t>(1, o.window);

  TokenBucket bucket(o.rate, 1);
  // Sleeps until the next token is due; false if cancelled meanwhile.
  auto await_token = [&] {
    const auto due = Clock::now() + bucket.Reserve(Clock::now());
    while (Clock::now() < due) {
      if (cancelled()) return false;
      std::this_thread::sleep_for(std::min<Clock::duration>(due - Clock::now(), std::chrono::milliseconds(50)));
    }
    return true;
  };

  bool stalled = false;
  Status read = ForEachDeadLetter(store, pinned, [&](const DeadLetter& d) {
    if (cancelled() || !await_token()) {
      report.cancelled = true;
      return false;
    }
    std::string body;
    if (Status r = RewriteJob(d, body); !r.ok()) {
      ++report.skipped;
      problem(d.id, "skipped (kept): " + r.message());
      progress();
      return true;
    }
    broker::Message m;
    m.exchange = broker::kDeliverExchange;
    m.routing_key = d.channel;
    m.body = std::move(body);
    m.message_id = d.delivery_id;
    m.mandatory = true;  // a channel without a queue is an error, never a silent drop
    m.headers = {{"x-herald-event-id", d.event_id}, {"x-herald-user", d.user_id}, {"x-herald-channel", d.channel},
                 {"x-herald-replayed-from", d.id}};
    {
      std::lock_guard lock(confirms->mu);
      confirms->waiting.insert(d.id);
    }
    publisher.Publish(std::move(m), [confirms, id = d.id](const Status& st) {
      std::lock_guard lock(confirms->mu);
      confirms->done.emplace_back(id, st);
      confirms->cv.notify_all();
    });
    if (!settle(window)) {
      stalled = true;
      return false;
    }
    progress();
    return true;
  });
  // Confirms still in flight are waited for whatever stopped the loop: their rows are deleted, so
  // a later replay does not send them again.
  if (!stalled) stalled = !settle(1);
  size_t kept = 0;
  if (stalled) {
    settle(kNoWait);  // what arrived just after the deadline
    std::vector<long long> left;
    {
      std::lock_guard lock(confirms->mu);
      left.assign(confirms->waiting.begin(), confirms->waiting.end());
      confirms->waiting.clear();
    }
    std::sort(left.begin(), left.end());
    for (long long id : left) {
      ++report.failed;
      problem(id, "not replayed (kept): no confirm from the broker within " + FormatDuration(o.stall_timeout));
    }
    kept = left.size();
    progress();
  }
  if (!read.ok()) return read;
  if (stalled) {
    const size_t untried = report.total - report.replayed - report.failed - report.skipped;
    return Status::Unavailable("no confirm from the broker for " + FormatDuration(o.stall_timeout) + "; " +
                               std::to_string(kept) + " dead letter(s) awaiting one kept, " + std::to_string(untried) +
                               " not tried");
  }
  return Status::Ok();
}

Status PurgeDeadLetters(Store& store, const DeadLetterSelection& sel, size_t& deleted) {
  deleted = 0;
  Status failure;
  Status read = ForEachDeadLetter(store, sel, [&](const DeadLetter& d) {
    if (Status s = store.DeleteDeadLetter(d.id); !s.ok()) {
      failure = WithContext(s, "deleting dead letter " + std::to_string(d.id));
      return false;
    }
    ++deleted;
    return true;
  });
  return read.ok() ? failure : read;
}

}  // namespace herald
