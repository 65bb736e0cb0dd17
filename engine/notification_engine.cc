#include "engine/notification_engine.h"

#include <spdlog/spdlog.h>

#include <map>

#include "broker/topology.h"
#include "core/ids.h"
#include "core/json_writer.h"
#include "core/metrics.h"
#include "core/thread_name.h"
#include "core/utf8.h"
#include "engine/decision.h"
#include "engine/templates.h"

namespace herald {
namespace {

CounterFamily& Deliveries() {
  static CounterFamily& f = Metrics::Global().Counters(
      "herald_deliveries_total", "Delivery outcomes by channel (skipped: decided against).", {"channel", "outcome"});
  return f;
}

Counter& Purged() {
  static Counter& c = Metrics::Global()
                          .Counters("herald_dedup_purged_total", "Expired event-id records deleted.", {})
                          .With({});
  return c;
}

// Hourly budget entries kept per user at most (a memory bound far above any configured budget).
constexpr size_t kBudgetEntriesMax = 10000;

// Expired de-duplication records are deleted at most this often (by any worker thread).
constexpr auto kPurgeEvery = std::chrono::minutes(10);
// Preference change-log entries are kept this long: every cache reads the log at least every
// PreferenceCache::kPollEvery while it is used, and one that read nothing for longer than this
// sees the gap and drops all it holds.
constexpr auto kPrefsChangesKept = std::chrono::hours(1);

Counter& Duplicates() {
  static Counter& c = Metrics::Global()
                          .Counters("herald_events_duplicate_total", "Events ignored as already processed.", {})
                          .With({});
  return c;
}

}  // namespace

long long Budget::Count(const std::string& user, SystemTime now) {
  std::lock_guard lock(mu_);
  auto it = sent_.find(user);
  if (it == sent_.end()) return 0;
  auto& q = it->second;
  while (!q.empty() && q.front() <= now - std::chrono::hours(1)) q.pop_front();
  return static_cast<long long>(q.size());
}

void Budget::Forget(const std::string& user, SystemTime at) {
  std::lock_guard lock(mu_);
  auto it = sent_.find(user);
  if (it == sent_.end()) return;
  auto& q = it->second;
  for (auto r = q.rbegin(); r != q.rend(); ++r) {
    if (*r == at) {
      q.erase(std::next(r).base());
      return;
    }
  }
}

void Budget::Record(const std::string& user, SystemTime now) {
  std::lock_guard lock(mu_);
  auto& q = sent_[user];
  q.push_back(now);
  // Entries leave by age. Not by count: a decision recorded and then taken back (Forget) must not
  // have pushed out an entry that still counts. The bound only guards memory.
  while (!q.empty() && q.front() <= now - std::chrono::hours(1)) q.pop_front();
  while (q.size() > std::max<size_t>(limit_ + 1, kBudgetEntriesMax)) q.pop_front();
  if (++ops_ % 65536 == 0) {
    for (auto it = sent_.begin(); it != sent_.end();) {
      if (it->second.empty() || it->second.back() <= now - std::chrono::hours(1)) it = sent_.erase(it);
      else ++it;
    }
  }
}

// Counts the jobs of one event in flight; reports the event done when the last is confirmed.
struct NotificationEngine::Tracker {
  Tracker(Done d, std::string id, Store& s) : done(std::move(d)), event_id(std::move(id)), store(s) {}
  Done done;
  std::string event_id;
  Store& store;
  std::atomic<long long> pending{1};  // 1 until every job has been handed to the publisher
  std::atomic<bool> duplicate{false};  // set before the last Release: ignored, nothing to mark
  std::mutex mu;
  Status error;  // the first failure

  void Fail(const Status& s) {
    std::lock_guard lock(mu);
    if (error.ok()) error = s;
  }
  void Release() {
    if (--pending != 0) return;
    Status result;
    {
      std::lock_guard lock(mu);
      result = error;
    }
    if (!result.ok() || duplicate) return done(result);
    // Marked done with other writes in one transaction (group commit); the event is acked after.
    StoreWrite w;
    w.finish_event = event_id;
    store.Submit(std::move(w), [done = std::move(done)](StoreWrite& w) { done(w.status); });
  }
};

NotificationEngine::NotificationEngine(const Config& config, Store& store, PreferenceCache& prefs, Presence& presence,
                                       broker::Publisher& publisher, const Clock& clock)
    : config_(config),
      store_(store),
      prefs_(prefs),
      presence_(presence),
      publisher_(publisher),
      clock_(clock),
      budget_(static_cast<size_t>(config.engine.budget_per_hour)),
      enabled_channels_(config.EnabledChannels()) {}

NotificationEngine::~NotificationEngine() { Stop(); }

void NotificationEngine::Start() {
  for (long long i = 0; i < config_.engine.workers; ++i) workers_.emplace_back([this] { Work(); });
}

void NotificationEngine::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  // The callbacks of batches still being written use this engine.
  std::unique_lock lock(mu_);
  written_cv_.wait(lock, [&] { return writing_ == 0; });
}

std::optional<Invalid> NotificationEngine::Check(const Event& event) const { return CheckEventType(config_, event); }

std::optional<Invalid> CheckEventType(const Config& config, const Event& event) {
  auto it = config.event_types.find(event.type);
  if (it == config.event_types.end()) {
    return Invalid{"type", "no event type \"" + event.type + "\" is configured (see event_types)"};
  }
  for (const std::string& var : it->second.required_vars) {
    if (!event.vars.contains(var)) {
      return Invalid{"data.vars", "missing \"" + var + "\", required by event type " + event.type};
    }
  }
  return std::nullopt;
}

void NotificationEngine::Handle(Event event, Done done) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      queue_.emplace_back(std::move(event), std::move(done));
      cv_.notify_one();
      return;
    }
  }
  done(Status::Unavailable("engine is stopping"));
}

void NotificationEngine::Work() {
  SetThreadName("engine");
  for (;;) {
    std::pair<Event, Done> item;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything taken is done
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    Process(item.first, std::move(item.second));
  }
}

void NotificationEngine::MaybePurge(SystemTime now) {
  SystemTime::rep last = last_purge_.load();
  if (now.time_since_epoch().count() - last < std::chrono::duration_cast<SystemTime::duration>(kPurgeEvery).count()) {
    return;
  }
  if (!last_purge_.compare_exchange_strong(last, now.time_since_epoch().count())) return;  // another worker does it
  size_t purged = 0;
  if (Status s = store_.PurgeDedup(now, purged); !s.ok()) {
    spdlog::warn("engine: purging expired event ids failed: {}", s.message());
    return;
  }
  Purged().Inc(static_cast<double>(purged));
  if (purged) spdlog::debug("engine: purged {} expired event id(s)", purged);
  // A job can be redelivered only while its event is still remembered, and retries end long
  // before twice that window: sent records older than that are no longer needed.
  size_t sent = 0;
  if (Status s = store_.PurgeSent(now - 2 * config_.events.dedup_window, sent); !s.ok()) {
    spdlog::warn("engine: purging old sent-delivery records failed: {}", s.message());
  } else if (sent) {
    spdlog::debug("engine: purged {} old sent-delivery record(s)", sent);
  }
  size_t changes = 0;
  if (Status s = store_.PurgePreferenceChanges(now - kPrefsChangesKept, changes); !s.ok()) {
    spdlog::warn("engine: purging old preference-change records failed: {}", s.message());
  } else if (changes) {
    spdlog::debug("engine: purged {} old preference-change record(s)", changes);
  }
}

void NotificationEngine::SetBegin(const Event& event, SystemTime now, StoreWrite& w) const {
  w.begin_event = event.id;
  w.begin_now = now;
  w.begin_expires_at = now + config_.events.dedup_window;
}

bool NotificationEngine::Proceed(const std::string& event_id, DedupState state) {
  if (state == DedupState::kDone) {
    Duplicates().Inc();
    spdlog::debug("engine: event {} was already processed; ignored (rule 1)", event_id);
    return false;
  }
  if (state == DedupState::kInProgress) {
    spdlog::info("engine: event {} is processed again after an interruption; job ids repeat", event_id);
  }
  return true;
}

void NotificationEngine::Process(Event& event, Done done) {
  MaybePurge(clock_.Now());
  auto tracker = std::make_shared<Tracker>(std::move(done), event.id, store_);
  const size_t batch = static_cast<size_t>(config_.engine.fanout_batch);
  // The de-duplication record is written with the first batch's traces, in one transaction:
  // a second store write per event would cost more than deciding a batch of a duplicate in vain.
  bool begun = false, duplicate = false;
  Status status;
  // An event of one batch (most have a recipient or a few) does not wait for its write: the
  // engine thread goes on to the next event, and the store's writer puts the write in a
  // transaction with others and publishes the jobs. Larger events wait for each batch's write,
  // since the first says whether to go on (a duplicate) and the wait bounds what is in memory.
  const bool one_batch = event.topic.empty() && event.recipients.size() <= batch;
  // When processing began: this moment for a new event; for one found half done (AfterWrite),
  // the moment its first processing began, so its delivery ids come out the same again.
  SystemTime begun_at = clock_.Now();
  auto run = [&](const std::vector<std::string>& users) {
    status = ProcessBatch(event, users, tracker, !begun, one_batch, begun_at, duplicate);
    begun = true;
    return status.ok() && !duplicate;
  };
  if (!event.topic.empty()) {
    std::string after;
    std::vector<std::string> page;
    do {
      if (!(status = store_.TopicPage(event.topic, after, batch, page)).ok()) break;
      if (page.empty()) break;
      after = page.back();
    } while (run(page) && page.size() == batch);
  } else {
    for (size_t i = 0; i < event.recipients.size(); i += batch) {
      std::vector<std::string> users(event.recipients.begin() + i,
                                     event.recipients.begin() + std::min(event.recipients.size(), i + batch));
      if (!run(users)) break;
    }
  }
  if (status.ok() && !begun) {  // no recipient (an empty topic): the record alone
    StoreWrite w;
    SetBegin(event, begun_at, w);
    status = store_.Write(w);
    duplicate = status.ok() && !Proceed(event.id, w.begin_state);
  }
  if (!status.ok()) tracker->Fail(status);
  if (duplicate) tracker->duplicate = true;
  spdlog::debug("engine: event {} of type {} decided; {} job(s) in flight", event.id, event.type,
                tracker->pending.load() - 1);
  tracker->Release();
}

Status NotificationEngine::ProcessBatch(const Event& event, const std::vector<std::string>& users,
                                        const std::shared_ptr<Tracker>& tracker, bool begin, bool async,
                                        SystemTime& begun, bool& duplicate) {
  auto batch = std::make_shared<Batch>();
  if (Status s = BuildBatch(event, users, begun, *batch); !s.ok()) return s;
  const SystemTime now = clock_.Now();
  for (const std::string& user : batch->budget_users) budget_.Record(user, now);
  // The traces are durable before any job leaves, so a job can always be explained.
  StoreWrite w;
  if (begin) {
    SetBegin(event, begun, w);
    w.renumber_traces = RenumberTraces;  // ids from the start the store records (an event found half done: its first)
  }
  w.traces = std::move(batch->traces);
  publisher_.WaitForRoom(PublishLimit());
  if (!async) {
    static_cast<void>(store_.Write(w));  // w.status says how it went
    Status s = AfterWrite(event.id, begin, w, *batch, now, tracker, duplicate);
    if (s.ok() && begin) begun = w.begin_first_seen;  // the later batches' ids (the same ms for a new event)
    return s;
  }
  ++tracker->pending;
  const size_t jobs = batch->jobs.size();
  {
    // The jobs waiting for their write count against the publisher's limit too (WaitForRoom sees
    // only those handed to it): a slow store holds the engine back instead of filling memory.
    std::unique_lock lock(mu_);
    written_cv_.wait(lock, [&] { return unpublished_ == 0 || unpublished_ + jobs <= PublishLimit(); });
    ++writing_;
    unpublished_ += jobs;
  }
  store_.Submit(std::move(w), [this, id = event.id, begin, batch, now, tracker, jobs](StoreWrite& w) {
    bool dup = false;
    Status s = AfterWrite(id, begin, w, *batch, now, tracker, dup);
    if (!s.ok()) tracker->Fail(s);
    if (dup) tracker->duplicate = true;
    tracker->Release();
    std::lock_guard lock(mu_);
    unpublished_ -= jobs;
    --writing_;
    written_cv_.notify_all();
  });
  return Status::Ok();
}

Status NotificationEngine::AfterWrite(const std::string& event_id, bool begin, StoreWrite& w, Batch& batch,
                                      SystemTime budget_at, const std::shared_ptr<Tracker>& tracker,
                                      bool& duplicate) {
  if (!w.status.ok() || (begin && w.begin_state == DedupState::kDone)) {
    for (const std::string& user : batch.budget_users) budget_.Forget(user, budget_at);
  }
  if (!w.status.ok()) return w.status;
  if (begin && !Proceed(event_id, w.begin_state)) {  // counts the duplicate
    duplicate = true;
    return Status::Ok();
  }
  if (begin && w.begin_state == DedupState::kInProgress) {
    // Processed before and interrupted: its jobs take the delivery ids they had then, so the
    // sent check recognises the ones already delivered.
    if (Status s = RenumberJobs(event_id, w.begin_first_seen, batch.jobs); !s.ok()) return s;
  }
  for (broker::Message& m : batch.jobs) {
    ++tracker->pending;
    publisher_.Publish(std::move(m), [tracker](const Status& s) {
      if (!s.ok()) tracker->Fail(s);
      tracker->Release();
    });
  }
  return Status::Ok();
}

void RenumberTraces(SystemTime begun, std::vector<TraceRecord>& traces) {
  for (TraceRecord& t : traces) t.notification_id = NotificationId(t.event_id, t.user_id, begun);
}

Status RenumberJobs(const std::string& event_id, SystemTime begun, std::vector<broker::Message>& jobs) {
  for (broker::Message& m : jobs) {
    auto job = nlohmann::json::parse(m.body, nullptr, /*allow_exceptions=*/false);
    if (!job.is_object() || !job.value("user_id", nlohmann::json()).is_string() ||
        !job.value("channel", nlohmann::json()).is_string()) {
      return Status::Internal("engine: a job of event " + event_id + " could not be read back to renumber it");
    }
    const std::string user = job["user_id"];
    job["notification_id"] = NotificationId(event_id, user, begun);
    m.message_id = DeliveryId(event_id, user, job["channel"], begun);
    job["delivery_id"] = m.message_id;
    if (job.contains("fallback") && job["fallback"].is_array()) {
      for (auto& f : job["fallback"]) {
        if (f.is_object() && f.value("channel", nlohmann::json()).is_string()) {
          f["delivery_id"] = DeliveryId(event_id, user, f["channel"], begun);
        }
      }
    }
    m.body = job.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return Status::Ok();
}

namespace {

bool AllUtf8(std::initializer_list<std::string_view> texts) {
  for (std::string_view t : texts) {
    if (FindInvalidUtf8(t) != std::string_view::npos) return false;
  }
  return true;
}

// What a job says of its event (docs/delivery-jobs.md), written directly: the same bytes as
// nlohmann's dump of the object (its keys in order), without building the object first; once per
// event, and bench_e2e's events have one recipient each. Text that is not UTF-8 (an event made in
// the process, not parsed) is written by nlohmann, with U+FFFD for the bad bytes.
std::string EventFragment(const Event& event, const EventTypeConfig& type) {
  const std::string time = FormatRfc3339(event.time);
  const std::string expires = event.expires_at ? FormatRfc3339(*event.expires_at) : "";
  if (!AllUtf8({event.id, event.type, event.source, type.category})) {
    nlohmann::json j = {{"id", event.id},       {"type", event.type},
                        {"source", event.source}, {"time", time},
                        {"priority", PriorityName(event.priority)},
                        {"category", type.category}, {"critical", type.critical}};
    if (event.expires_at) j["expires_at"] = expires;
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string out;
  out.reserve(160 + event.id.size() + event.type.size() + event.source.size());
  JsonWriter w(out);
  w.Open().Str("category", type.category).Bool("critical", type.critical);
  if (event.expires_at) w.Str("expires_at", expires);
  w.Str("id", event.id)
      .Str("priority", PriorityName(event.priority))
      .Str("source", event.source)
      .Str("time", time)
      .Str("type", event.type)
      .Close();
  return out;
}

// The rendered fields as a JSON object, the same way (TemplateFields is ordered by key).
std::string FieldsFragment(const TemplateFields& fields) {
  std::string out;
  JsonWriter w(out);
  w.Open();
  for (const auto& [field, text] : fields) {
    if (!AllUtf8({field, text})) {
      return nlohmann::json(fields).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    w.Str(field, text);
  }
  w.Close();
  return out;
}

}  // namespace

Status NotificationEngine::BuildBatch(const Event& event, const std::vector<std::string>& users, SystemTime begun,
                                      Batch& out) {
  const EventTypeConfig& type = config_.event_types.at(event.type);
  std::vector<PreferenceCache::Entry> prefs;
  if (Status s = prefs_.GetMany(users, prefs); !s.ok()) return s;
  const SystemTime now = clock_.Now();
  const std::string created_at = FormatRfc3339(now);
  std::vector<TraceRecord>& traces = out.traces;
  traces.clear();
  traces.reserve(users.size());
  std::vector<broker::Message>& jobs = out.jobs;
  jobs.clear();
  out.budget_users.clear();

  // What is the same for every recipient is serialised once per batch; per recipient only ids,
  // contacts and the decision are written (docs/delivery-jobs.md has the format).
  const std::string event_fragment = EventFragment(event, type);
  const std::string data_fragment = event.vars.dump();
  struct Content {
    std::string locale;
    std::string fragment;  // {"title":..,"body":..}
  };
  std::map<std::pair<std::string, std::string>, Content> rendered;  // (channel, user locale)
  auto content = [&](const std::string& channel, const std::string& locale) -> const Content& {
    auto key = std::make_pair(channel, locale);
    auto it = rendered.find(key);
    if (it != rendered.end()) return it->second;
    RenderedContent r;
    r.locale = locale;
    Render(type, channel, locale, config_.engine.default_locale, event.vars, r);  // NotFound: no content
    return rendered.emplace(key, Content{r.locale, FieldsFragment(r.fields)}).first->second;
  };
  auto append_contact = [](std::string& o, const std::string& channel, const Preferences& p) {
    JsonWriter w(o);
    w.Open();
    if (channel == "email") {
      w.Str("email", p.contacts.email);
    } else if (channel == "webhook") {
      w.Str("url", p.contacts.webhook);
    } else if (channel == "push") {
      w.Key("push").Raw("[");
      for (size_t i = 0; i < p.contacts.push.size(); ++i) {
        const PushContact& c = p.contacts.push[i];
        if (i) o += ',';
        JsonWriter e(o);
        e.Open().Str("kind", c.kind);
        if (c.kind == "webpush") e.Str("endpoint", c.endpoint).Str("p256dh", c.p256dh).Str("auth", c.auth);
        else e.Str("token", c.token);
        e.Close();
      }
      o += ']';
    }
    w.Close();
  };

  for (size_t i = 0; i < users.size(); ++i) {
    const std::string& user = users[i];
    const Preferences& p = *prefs[i];
    DecisionInput in{&event, &type, &p, &enabled_channels_, now};
    in.active = presence_.IsActive(user, now);
    in.loud_last_hour = budget_.Count(user, now);
    in.budget_per_hour = config_.engine.budget_per_hour;
    Decision d = Decide(in);
    if (d.uses_budget) out.budget_users.push_back(user);

    const std::string nid = NotificationId(event.id, user, begun);
    std::string trace;
    trace.reserve(512);
    d.AppendJsonOpen(trace);
    JsonWriter::Continuing(trace)
        .Str("event_id", event.id)
        .Str("user_id", user)
        .Str("decided_at", created_at)
        .Bool("active", in.active)
        .Close();
    traces.push_back({nid, event.id, event.type, user, now, std::move(trace)});
    for (const TraceStep& step : d.trace) {
      if (step.outcome == "skipped") Deliveries().With({step.channel, "skipped"}).Inc();
    }

    for (const std::string& channel : d.channels) {
      const Content& c = content(channel, p.locale);
      broker::Message m;
      m.message_id = DeliveryId(event.id, user, channel, begun);
      std::string& body = m.body;
      body.reserve(event_fragment.size() + data_fragment.size() + c.fragment.size() + 512);
      JsonWriter w(body);
      w.Open()
          .Int("v", 1)
          .Str("delivery_id", m.message_id)
          .Str("notification_id", nid)
          .Json("event", event_fragment)
          .Str("user_id", user)
          .Str("locale", c.locale)
          .Str("channel", channel)
          .Key("contact");
      append_contact(body, channel, p);
      w.Json("content", c.fragment).Json("data", data_fragment).Int("attempt", 1).Str("created_at", created_at);
      w.Key("fallback").Raw("[");
      if (channel == "push") {
        for (size_t k = 0; k < d.fallback.size(); ++k) {
          const std::string& f = d.fallback[k];
          const Content& fc = content(f, p.locale);
          if (k) body += ',';
          JsonWriter fw(body);
          fw.Open().Str("channel", f).Str("delivery_id", DeliveryId(event.id, user, f, begun)).Str("locale", fc.locale);
          fw.Key("contact");
          append_contact(body, f, p);
          fw.Json("content", fc.fragment).Close();
        }
      }
      body += ']';
      w.Close();
      m.exchange = broker::kDeliverExchange;
      m.routing_key = channel;
      m.mandatory = true;
      m.headers = {{"x-herald-event-id", event.id}, {"x-herald-user", user}, {"x-herald-channel", channel}};
      jobs.push_back(std::move(m));
    }
  }
  return Status::Ok();
}

}  // namespace herald
