// Dead-letter operations shared by `herald dlq` and the HTTP API (/v1/dead-letters): select rows
// with a filter given as text, visit them a page at a time, record who acted, replay them to their
// channel with publisher confirms, and purge them.
//
// Every function is safe to call from any thread (the Store is thread-safe); none throws.
#pragma once

#include <atomic>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "broker/publisher.h"
#include "core/clock.h"
#include "core/status.h"
#include "core/time.h"
#include "store/store.h"

namespace herald {

// Filter fields as text, from command-line flags or HTTP query parameters / JSON bodies.
struct DeadLetterQuery {
  std::string channel, reason, type, user, since, until;  // empty = any; since/until: RFC 3339 or a duration ("2h" = 2h before now)
  long long limit = 0;                                     // 0 = every matching row
};

struct DeadLetterSelection {
  DeadLetterFilter filter;  // store filter (limit/after_id set by the iteration)
  long long limit = 0;
  nlohmann::json echo;      // the selection as given, times resolved to RFC 3339, for audit records and responses
  // Rows with a greater id are left alone (none: no bound). Set by CountDeadLetterSelection, so an
  // action that follows a count (a confirmation, an audit record) touches exactly the rows
  // counted, never one dead-lettered meanwhile.
  std::optional<long long> up_to_id;
};

// Checks and converts; on a bad field returns Status::Invalid whose message names the field as
// `field_prefix + name` (the CLI passes "--", the API passes ""), e.g.
//   --since: "x" is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration (2h, 30m)
//   channel: unknown channel "smsx" (known: email, in_app, push, webhook)
//   limit must be 0 (no limit) or more (got -1)
// `now` resolves durations. `out` is only written on success.
Status BuildDeadLetterSelection(const DeadLetterQuery& q, SystemTime now, const std::string& field_prefix,
                                DeadLetterSelection& out);

// Visits matching rows in id order a page at a time (bounded memory), at most sel.limit rows
// (0 = all) and none beyond sel.up_to_id (when set); visit returns false to stop. Returns the
// store's error if a page cannot be read (rows visited before it were visited).
Status ForEachDeadLetter(Store& store, const DeadLetterSelection& sel, const std::function<bool(const DeadLetter&)>& visit);

// Counts the selected rows and pins the selection to them: sets sel.up_to_id to the last id
// counted (0 when none was, which matches nothing).
Status CountDeadLetterSelection(Store& store, DeadLetterSelection& sel, size_t& count);

// Appends an audit record (action "replay" or "purge") with sel.echo as its filter. An empty
// actor is recorded as "unknown". Record it before acting: a replay killed halfway must still
// show who started it.
Status RecordDeadLetterAudit(Store& store, const std::string& actor, const std::string& action,
                             const DeadLetterSelection& sel, size_t count, bool dry_run);

// The job as it goes back to its channel: a fresh first attempt, without the retry bookkeeping the
// worker added (workers/worker.cc), so it gets the full retry schedule again. Invalid (saying why)
// when the stored job is not a JSON object.
Status RewriteJob(const DeadLetter& d, std::string& body);

struct ReplayProgress { size_t total = 0, replayed = 0, failed = 0, skipped = 0; };

struct ReplayOptions {
  double rate = 0;                      // replays per second, 0 = unlimited
  size_t window = 32;                   // replays awaiting their confirm at once
  Millis connect_timeout = Millis(10000);
  Millis stall_timeout = Millis(30000); // give up waiting for confirms after this long without progress
  std::function<void(const ReplayProgress&)> on_progress;  // called on the replaying thread after each step (may be empty)
  // A row kept (failed/skipped) or replayed-but-not-deleted, on the replaying thread (may be
  // empty). `problem` reads after "dead letter <id> ": "not replayed (kept): ...",
  // "skipped (kept): ...", "replayed but not deleted: ...".
  std::function<void(long long id, const std::string& problem)> on_problem;
  const std::atomic<bool>* cancel = nullptr;  // when set true, stops selecting new rows, waits for confirms in flight, returns
};

struct ReplayReport {
  size_t total = 0, replayed = 0, failed = 0, skipped = 0;
  bool cancelled = false;  // stopped by ReplayOptions::cancel; rows not tried are neither counted nor changed
};

// Republishes each selected row (only rows that existed when counting began: id <= last id
// counted) to herald.deliver with routing key = its channel, attempts reset (RewriteJob), header
// x-herald-replayed-from = row id, mandatory, with publisher confirms; deletes the row only after
// its confirm, so an interruption at any point loses nothing (a row replayed but not deleted is
// replayed again next time, and workers skip delivery ids already sent).
//
// Uses the given (started) publisher, which may be shared with other work in the process (e.g.
// heraldd's): it is never stopped or waited on as a whole, only this call's own messages are.
//
// Returns Unavailable if the broker cannot be reached within connect_timeout (nothing replayed),
// Unavailable if confirms stop arriving for stall_timeout (rows still awaiting theirs are counted
// failed and kept; their messages may still reach the broker later, which is harmless), or the
// store's error if the rows cannot be read; `report` says what happened either way. Nothing to
// replay is Ok without touching the broker.
Status ReplayDeadLetters(Store& store, broker::Publisher& publisher, const DeadLetterSelection& sel,
                         const ReplayOptions& o, ReplayReport& report);

// Deletes the selected rows; `deleted` says how many (also when a store error stops it midway).
Status PurgeDeadLetters(Store& store, const DeadLetterSelection& sel, size_t& deleted);

}  // namespace herald
