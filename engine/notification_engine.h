// NotificationEngine: the Engine that decides and fans out (DESIGN.md data flow, engine part).
//
// For each event: de-duplicate by id (store-backed, survives restarts), resolve recipients (the
// list, or a topic read page by page), and per batch of recipients: load preferences (cache),
// read presence and budget, decide (engine/decision.h), write the decision traces, render the
// templates once per channel and locale, and publish one delivery job per chosen channel to
// herald.deliver. The event is reported done only when every job is confirmed by the broker.
// Notification and delivery ids (core/ids.h) come from the event id, the user, the channel and when
// the event's processing first began, so processing an event again after a crash produces the same
// ids and workers can refuse what they already sent.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "broker/publisher.h"
#include "core/config.h"
#include "core/ids.h"
#include "engine/engine.h"
#include "engine/prefs_cache.h"
#include "engine/presence.h"
#include "store/store.h"

namespace herald {

// Checks that need the configuration: the type is configured and the event carries the type's
// required variables. Used by the engine (refused events go to herald.events.invalid) and by
// `herald publish`, which refuses them before they are sent.
std::optional<Invalid> CheckEventType(const Config& config, const Event& event);

// Gives jobs built with another start time the ids of an event whose processing first began at
// `begun` (core/ids.h): the notification id, and the delivery id in the message id, the job and its
// fallbacks. RenumberTraces does the same for the traces written with the jobs.
Status RenumberJobs(const std::string& event_id, SystemTime begun, std::vector<broker::Message>& jobs);
void RenumberTraces(SystemTime begun, std::vector<TraceRecord>& traces);

// Push + e-mail sent per user in a sliding hour (DESIGN.md rule 7), kept in memory.
class Budget {
 public:
  explicit Budget(size_t limit) : limit_(limit) {}
  long long Count(const std::string& user, SystemTime now);
  void Record(const std::string& user, SystemTime now);
  // Takes back a Record(user, at) whose notification will not go out (a duplicate event, a failed write).
  void Forget(const std::string& user, SystemTime at);

 private:
  const size_t limit_;
  std::mutex mu_;
  std::unordered_map<std::string, std::deque<SystemTime>> sent_;
  size_t ops_ = 0;
};

class NotificationEngine final : public Engine {
 public:
  // Everything passed must outlive the engine.
  NotificationEngine(const Config& config, Store& store, PreferenceCache& prefs, Presence& presence,
                     broker::Publisher& publisher, const Clock& clock);
  ~NotificationEngine() override;

  void Start();
  // Finishes the events already taken, then stops the workers.
  void Stop();

  std::optional<Invalid> Check(const Event& event) const override;
  void Handle(Event event, Done done) override;

  // The decisions, traces and delivery jobs for one batch of recipients, without touching the
  // broker or the store's traces (exposed for the benchmark). REQUIRES: Check(event) passed.
  struct Batch {
    std::vector<TraceRecord> traces;
    std::vector<broker::Message> jobs;
    // Recipients whose decision uses their hourly budget: recorded as soon as decided (the next
    // event for them must see it), taken back if the write finds the event a duplicate or fails.
    std::vector<std::string> budget_users;
  };
  // `begun`: when the event's processing first began (its delivery ids carry it).
  Status BuildBatch(const Event& event, const std::vector<std::string>& users, SystemTime begun, Batch& out);

 private:
  struct Tracker;
  void Work();
  void Process(Event& event, Done done);
  void MaybePurge(SystemTime now);
  // Decides one batch, writes its traces (with the event's de-duplication record if `begin`)
  // through the store's writer, then publishes its jobs. `async`: returns once the write is queued,
  // and the write's callback publishes (events of one batch); otherwise waits for the write.
  // `duplicate` comes back true if the event was done already; `begun` is updated for the batches
  // after the first when the event turns out half done.
  Status ProcessBatch(const Event& event, const std::vector<std::string>& users,
                      const std::shared_ptr<Tracker>& tracker, bool begin, bool async, SystemTime& begun,
                      bool& duplicate);
  // What follows a batch's write: nothing for a duplicate or a failed write (their budget taken
  // back), the jobs published otherwise.
  Status AfterWrite(const std::string& event_id, bool begin, StoreWrite& w, Batch& batch, SystemTime budget_at,
                    const std::shared_ptr<Tracker>& tracker, bool& duplicate);
  // Makes `w` begin the event (its de-duplication record, DESIGN.md rule 1).
  void SetBegin(const Event& event, SystemTime now, StoreWrite& w) const;
  // Rule 1 for what the de-duplication record said: false if the event is to be ignored.
  bool Proceed(const std::string& event_id, DedupState state);

  const Config& config_;
  Store& store_;
  PreferenceCache& prefs_;
  Presence& presence_;
  broker::Publisher& publisher_;
  const Clock& clock_;
  Budget budget_;
  std::vector<std::string> enabled_channels_;
  std::atomic<SystemTime::rep> last_purge_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Event, Done>> queue_;
  bool stopping_ = false;
  size_t writing_ = 0;      // batches submitted to the store whose callback has not finished
  size_t unpublished_ = 0;  // their jobs
  // Jobs the engine lets wait for the publisher's confirms at most (four publish windows).
  size_t PublishLimit() const { return static_cast<size_t>(config_.broker.publish_window) * 4; }
  std::condition_variable written_cv_;
  std::vector<std::thread> workers_;
};

}  // namespace herald
