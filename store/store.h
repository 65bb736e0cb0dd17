// The store: durable state that is not on the broker. One interface, an SQLite implementation
// (one node; WAL) and later a PostgreSQL one (several nodes). Every method is thread-safe, returns
// a Status instead of throwing, and is idempotent where the comment says so, because delivery is
// at least once and the same event may be processed twice.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "engine/preferences.h"

namespace herald {

// The outcome of one recipient's decision, kept for GET /v1/notifications/{nid}/trace.
struct TraceRecord {
  std::string notification_id;  // deterministic: event id + user
  std::string event_id;
  std::string event_type;
  std::string user_id;
  SystemTime created_at;
  std::string decision_json;  // the decision and its rule-by-rule reasons (engine/decision.h)
};

// One in-app notification of a user's inbox.
struct InboxEntry {
  long long seq = 0;             // assigned by the store, increasing: cursor paging and stream resume
  std::string notification_id;   // unique: writing the same id again changes nothing
  std::string user_id;
  std::string event_id;
  std::string event_type;
  std::string title;
  std::string body;
  std::string data_json = "{}";  // the event's vars
  SystemTime created_at;
  std::optional<SystemTime> read_at;
};

// One try of one delivery, for the trace: what the worker did and what the provider said.
struct DeliveryAttempt {
  std::string notification_id;
  std::string delivery_id;
  std::string channel;
  long long attempt = 1;
  std::string outcome;  // sent, retried, fallback, dead (as herald_deliveries_total's outcome label)
  std::string error;    // the provider's words; empty when sent
  SystemTime at;
  long long duration_ms = 0;  // the provider request
};

// A delivery that failed for good (permanent error or attempts exhausted, no fallback left).
struct DeadLetter {
  long long id = 0;  // assigned by the store
  std::string delivery_id;
  std::string channel;
  std::string reason;   // "permanent", "attempts_exhausted", "invalid_contact", "invalid_job"
  std::string error;    // the provider's words
  long long attempts = 0;
  std::string event_id;
  std::string event_type;
  std::string user_id;
  SystemTime first_failed_at;
  SystemTime dead_at;
  std::string job_json;      // the full job, for inspection and replay
  std::string headers_json;  // the AMQP headers it carried
};

struct DeadLetterFilter {
  std::string channel, reason, event_type, user_id;  // empty = any
  std::optional<SystemTime> since, until;            // dead_at in [since, until)
  long long after_id = 0;                            // cursor: ids greater than this
  size_t limit = 100;
};

// One operator action on the dead letters (`herald dlq replay` or `purge`), kept for `herald dlq audit`.
struct AuditRecord {
  long long id = 0;  // assigned by the store
  SystemTime at;
  std::string actor;        // --actor, else $USER, else "unknown"
  std::string action;       // "replay" or "purge"
  std::string filter_json;  // the selection, as given on the command line
  long long count = 0;      // rows replayed or deleted (or that would be, on a dry run)
  bool dry_run = false;
};

// De-duplication state of an event id (DESIGN.md rule 1).
enum class DedupState { kNew, kInProgress, kDone };

// Everything one delivery or one event writes at once, applied in one transaction (and, through
// Store::Submit, in one transaction with other such writes). Empty parts are skipped.
struct StoreWrite {
  // As BeginEvent, first: when begin_state comes back kDone (processed already, and remembered)
  // nothing else of this write is made.
  std::string begin_event;
  SystemTime begin_now, begin_expires_at;
  DedupState begin_state = DedupState::kNew;
  SystemTime begin_first_seen;  // out: when the event was first begun (begin_now if it is new), to the ms
  // Called with begin_first_seen once the begin is written (kNew or kInProgress), before the
  // traces are written: ids derived from the start time (core/ids.h) take the first one's.
  std::function<void(SystemTime begin_first_seen, std::vector<TraceRecord>& traces)> renumber_traces;
  std::vector<TraceRecord> traces;         // as PutTraces
  std::optional<InboxEntry> inbox;         // as PutInbox: seq is filled, inbox_created says if new
  bool inbox_created = false;
  // As RecordAttempt ("sent" also records the delivery, except beside `inbox`: the inbox row is the
  // record of a delivery made by a write, and WasSent does not know it); not written when `inbox`
  // names an entry that exists already (the delivery this write makes was made before: nothing is new).
  std::optional<DeliveryAttempt> attempt;
  std::string finish_event;                // as FinishEvent
  Status status;                           // the result, once applied
};

class GroupCommit;

class Store {
 public:
  Store();
  virtual ~Store();

  // True if a write can be made now (for readiness checks).
  virtual Status CheckWritable() = 0;
  // The schema version the store is at.
  virtual int SchemaVersion() = 0;

  // ---- preferences ----
  // NotFound if the user has none stored.
  virtual Status GetPreferences(const std::string& user_id, Preferences& out) = 0;
  // Several users at once (for fan-out); users without stored preferences are absent from `out`.
  virtual Status GetPreferencesBatch(const std::vector<std::string>& user_ids,
                                     std::vector<Preferences>& out) = 0;
  // Replaces the stored preferences of p.user_id. Idempotent. Both also append the user to the
  // change log (PreferenceChanges) in the same transaction.
  virtual Status PutPreferences(const Preferences& p) = 0;
  virtual Status DeletePreferences(const std::string& user_id) = 0;
  // The change log, read by every process's preference cache: the users whose preferences were
  // written after change `after` (numbers increase by one per change, in commit order), oldest
  // first, at most `limit`, with each change's number. `head` is the newest change's number ever
  // made (0: none); changes older than PurgePreferenceChanges kept are gone, so a reader whose
  // `after` is below the oldest row left missed some.
  struct PreferenceChange {
    long long seq = 0;
    std::string user_id;
  };
  virtual Status PreferenceChanges(long long after, size_t limit, std::vector<PreferenceChange>& out,
                                   long long& head) = 0;
  // Deletes changes made before `before`; reports how many.
  virtual Status PurgePreferenceChanges(SystemTime before, size_t& purged) = 0;
  // Stored preferences in user id order, of users strictly after `after` (empty = from the
  // start), at most `limit`: keyset paging, for loading a cache.
  virtual Status PreferencesPage(const std::string& after, size_t limit, std::vector<Preferences>& out) = 0;

  // ---- topics ----
  virtual Status Subscribe(const std::string& topic, const std::string& user_id) = 0;    // idempotent
  virtual Status Unsubscribe(const std::string& topic, const std::string& user_id) = 0;  // idempotent
  // Subscribers of `topic` in user id order, strictly after `after` (empty = from the start), at
  // most `limit`: keyset paging, so a topic of any size is read in bounded memory.
  virtual Status TopicPage(const std::string& topic, const std::string& after, size_t limit,
                           std::vector<std::string>& out) = 0;

  // ---- event de-duplication (DESIGN.md rule 1) ----
  using DedupState = herald::DedupState;
  // Records that processing of `event_id` begins, unless a record exists that has not expired:
  // returns kNew (recorded now), kInProgress (begun earlier, not finished: e.g. a crash) or kDone.
  virtual Status BeginEvent(const std::string& event_id, SystemTime now, SystemTime expires_at,
                            DedupState& state) = 0;
  // Marks the event done. Idempotent.
  virtual Status FinishEvent(const std::string& event_id) = 0;
  // Deletes records that expired before `now`; reports how many.
  virtual Status PurgeDedup(SystemTime now, size_t& purged) = 0;

  // ---- decision traces (DESIGN.md rule 8) ----
  // Writes all records in one transaction; an existing notification id is replaced. Idempotent.
  virtual Status PutTraces(const std::vector<TraceRecord>& records) = 0;
  virtual Status GetTrace(const std::string& notification_id, TraceRecord& out) = 0;  // NotFound
  // The trace of event `event_id` for user `user_id` (NotFound if there is none).
  virtual Status GetTraceByEvent(const std::string& event_id, const std::string& user_id, TraceRecord& out) = 0;

  // ---- in-app inbox ----
  // Writes the entry unless its notification id exists; `created` says which. Fills entry.seq
  // either way (the existing row's seq if it existed). Idempotent.
  virtual Status PutInbox(InboxEntry& entry, bool& created) = 0;
  // Newest first: entries of `user` with seq < before_seq (0 = from the newest), at most `limit`.
  virtual Status ListInbox(const std::string& user, long long before_seq, size_t limit,
                           std::vector<InboxEntry>& out) = 0;
  // Oldest first: entries of `user` with seq > after_seq, at most `limit` (stream resume).
  virtual Status InboxSince(const std::string& user, long long after_seq, size_t limit,
                            std::vector<InboxEntry>& out) = 0;
  // Marks one entry read (idempotent; the first read time stays). `found` false if no such entry
  // belongs to `user`.
  virtual Status MarkRead(const std::string& user, const std::string& notification_id, SystemTime at,
                          bool& found) = 0;
  virtual Status MarkAllRead(const std::string& user, SystemTime at, size_t& changed) = 0;
  virtual Status UnreadCount(const std::string& user, size_t& out) = 0;

  // ---- delivery idempotency ----
  virtual Status WasSent(const std::string& delivery_id, bool& sent) = 0;
  // The same for several ids at once (sent[i] for ids[i]), in one read transaction where the store
  // has them: a worker checks a whole batch of jobs read from its queue with one.
  virtual Status WasSent(const std::vector<std::string>& ids, std::vector<bool>& sent) {
    sent.assign(ids.size(), false);
    for (size_t i = 0; i < ids.size(); ++i) {
      bool one = false;
      if (Status s = WasSent(ids[i], one); !s.ok()) return s;
      sent[i] = one;
    }
    return Status::Ok();
  }
  // Idempotent; the first record stays.
  virtual Status RecordSent(const std::string& delivery_id, const std::string& channel, SystemTime at) = 0;
  // Deletes records sent before `before` (no redelivery of their jobs can still arrive).
  virtual Status PurgeSent(SystemTime before, size_t& purged) = 0;

  // ---- delivery attempts (the trace's timeline) ----
  // Appends one attempt. With outcome "sent" it also records the delivery as sent (RecordSent),
  // in the same transaction: one write on the hot path.
  virtual Status RecordAttempt(const DeliveryAttempt& attempt) = 0;
  // The attempts of one notification's deliveries, oldest first.
  virtual Status ListAttempts(const std::string& notification_id, std::vector<DeliveryAttempt>& out) = 0;

  // ---- writes made together ----
  // Applies every write, setting each one's status: all in one transaction; if that fails, each
  // alone, so only a bad write fails. On the caller's thread.
  virtual void ApplyWrites(std::vector<StoreWrite*>& writes) = 0;
  // One write, on the caller's thread; returns write.status.
  Status ApplyWrite(StoreWrite& write);
  // Applies `write` on the store's writer thread in one transaction with whatever other writes
  // are waiting (group commit, store/group_commit.h), then calls `done` (may be empty) there with
  // the result: keep it short. Thread-safe; the thread starts with the first write.
  void Submit(StoreWrite write, std::function<void(StoreWrite&)> done);
  // The same, waiting for the result.
  Status Write(StoreWrite& write);
  // Applies every write submitted so far and stops the writer thread; later writes are applied
  // on the caller's thread. Implementations call it first in their destructor.
  void DrainWrites();
  // Writes and transactions of the writer thread so far.
  size_t GroupWrites() const;
  size_t GroupBatches() const;

  // ---- dead letters ----
  // Inserts, or replaces the row with the same delivery id (the latest failure wins); fills id.
  virtual Status PutDeadLetter(DeadLetter& letter) = 0;
  // Matching rows in id order.
  virtual Status ListDeadLetters(const DeadLetterFilter& filter, std::vector<DeadLetter>& out) = 0;
  virtual Status GetDeadLetter(long long id, DeadLetter& out) = 0;  // NotFound
  virtual Status DeleteDeadLetter(long long id) = 0;               // idempotent
  virtual Status CountDeadLetters(size_t& out) = 0;

  // ---- dead-letter audit ----
  // Appends one record; fills record.id.
  virtual Status PutAudit(AuditRecord& record) = 0;
  // Newest first, at most `limit`.
  virtual Status ListAudit(size_t limit, std::vector<AuditRecord>& out) = 0;

 private:
  std::unique_ptr<GroupCommit> group_;
};

// Opens the store named by `url` (sqlite:///abs/path or sqlite://rel/path), creating the file,
// its directory and the schema as needed. Fails with a message naming the path and the cause.
// `known_channels` is passed to ParsePreferences when stored documents are read back.
Status OpenStore(const std::string& url, std::unique_ptr<Store>& out,
                 const std::vector<std::string>& known_channels = {"email", "in_app", "push", "webhook"});

}  // namespace herald
