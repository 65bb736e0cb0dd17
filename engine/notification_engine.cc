#include "engine/notification_engine.h"

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <map>

#include "broker/topology.h"
#include "core/metrics.h"
#include "engine/decision.h"
#include "engine/templates.h"

namespace herald {
namespace {

std::string HashId(const char* prefix, std::initializer_list<const std::string*> parts) {
  std::string input;
  for (const std::string* p : parts) {
    input += *p;
    input += '\n';  // cannot appear in ids (control characters are refused)
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(input.data(), input.size(), md, &len, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out = prefix;
  for (int i = 0; i < 16; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

nlohmann::json ContactFor(const std::string& channel, const Preferences& p) {
  if (channel == "email") return {{"email", p.contacts.email}};
  if (channel == "webhook") return {{"url", p.contacts.webhook}};
  if (channel == "push") {
    nlohmann::json list = nlohmann::json::array();
    for (const PushContact& c : p.contacts.push) {
      nlohmann::json j = {{"kind", c.kind}};
      if (c.kind == "webpush") {
        j["endpoint"] = c.endpoint;
        j["p256dh"] = c.p256dh;
        j["auth"] = c.auth;
      } else {
        j["token"] = c.token;
      }
      list.push_back(std::move(j));
    }
    return {{"push", list}};
  }
  return nlohmann::json::object();
}

CounterFamily& Deliveries() {
  static CounterFamily& f = Metrics::Global().Counters(
      "herald_deliveries_total", "Delivery outcomes by channel (skipped: decided against).", {"channel", "outcome"});
  return f;
}

Counter& Duplicates() {
  static Counter& c = Metrics::Global()
                          .Counters("herald_events_duplicate_total", "Events ignored as already processed.", {})
                          .With({});
  return c;
}

}  // namespace

std::string NotificationId(const std::string& event_id, const std::string& user) {
  return HashId("n-", {&event_id, &user});
}

std::string DeliveryId(const std::string& event_id, const std::string& user, const std::string& channel) {
  return HashId("d-", {&event_id, &user, &channel});
}

long long Budget::Count(const std::string& user, SystemTime now) {
  std::lock_guard lock(mu_);
  auto it = sent_.find(user);
  if (it == sent_.end()) return 0;
  auto& q = it->second;
  while (!q.empty() && q.front() <= now - std::chrono::hours(1)) q.pop_front();
  return static_cast<long long>(q.size());
}

void Budget::Record(const std::string& user, SystemTime now) {
  std::lock_guard lock(mu_);
  auto& q = sent_[user];
  q.push_back(now);
  while (q.size() > limit_ + 1) q.pop_front();  // more than the limit is never needed
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
    if (result.ok()) result = store.FinishEvent(event_id);
    done(result);
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
}

std::optional<Invalid> NotificationEngine::Check(const Event& event) const {
  auto it = config_.event_types.find(event.type);
  if (it == config_.event_types.end()) {
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

void NotificationEngine::Process(Event& event, Done done) {
  const EventTypeConfig& type = config_.event_types.at(event.type);
  const SystemTime now = clock_.Now();
  Store::DedupState state;
  if (Status s = store_.BeginEvent(event.id, now, now + config_.events.dedup_window, state); !s.ok()) {
    return done(s);
  }
  if (state == Store::DedupState::kDone) {
    Duplicates().Inc();
    spdlog::debug("engine: event {} was already processed; ignored (rule 1)", event.id);
    return done(Status::Ok());
  }
  if (state == Store::DedupState::kInProgress) {
    spdlog::info("engine: event {} is processed again after an interruption; job ids repeat", event.id);
  }
  auto tracker = std::make_shared<Tracker>(std::move(done), event.id, store_);
  const size_t batch = static_cast<size_t>(config_.engine.fanout_batch);
  Status status;
  if (!event.topic.empty()) {
    std::string after;
    std::vector<std::string> page;
    do {
      if (!(status = store_.TopicPage(event.topic, after, batch, page)).ok()) break;
      if (page.empty()) break;
      after = page.back();
      status = ProcessBatch(event, type, page, tracker);
    } while (status.ok() && page.size() == batch);
  } else {
    for (size_t i = 0; i < event.recipients.size() && status.ok(); i += batch) {
      std::vector<std::string> users(event.recipients.begin() + i,
                                     event.recipients.begin() + std::min(event.recipients.size(), i + batch));
      status = ProcessBatch(event, type, users, tracker);
    }
  }
  if (!status.ok()) tracker->Fail(status);
  spdlog::debug("engine: event {} of type {} decided; {} job(s) in flight", event.id, event.type,
                tracker->pending.load() - 1);
  tracker->Release();
}

Status NotificationEngine::ProcessBatch(const Event& event, const EventTypeConfig& type,
                                        const std::vector<std::string>& users, const std::shared_ptr<Tracker>& tracker) {
  std::vector<PreferenceCache::Entry> prefs;
  if (Status s = prefs_.GetMany(users, prefs); !s.ok()) return s;
  const SystemTime now = clock_.Now();
  const std::string event_time = FormatRfc3339(event.time);
  const std::string created_at = FormatRfc3339(now);

  std::vector<TraceRecord> traces;
  traces.reserve(users.size());
  std::vector<broker::Message> jobs;
  std::map<std::pair<std::string, std::string>, RenderedContent> rendered;  // (channel, locale)
  auto content = [&](const std::string& channel, const std::string& locale) -> const RenderedContent& {
    auto key = std::make_pair(channel, locale);
    auto it = rendered.find(key);
    if (it != rendered.end()) return it->second;
    RenderedContent out;
    out.locale = locale;
    Render(type, channel, locale, config_.engine.default_locale, event.vars, out);  // NotFound: no content
    return rendered.emplace(key, std::move(out)).first->second;
  };
  nlohmann::json event_json = {{"id", event.id},           {"type", event.type},
                               {"source", event.source},   {"time", event_time},
                               {"priority", PriorityName(event.priority)}, {"category", type.category},
                               {"critical", type.critical}};
  if (event.expires_at) event_json["expires_at"] = FormatRfc3339(*event.expires_at);

  for (size_t i = 0; i < users.size(); ++i) {
    const std::string& user = users[i];
    const Preferences& p = *prefs[i];
    DecisionInput in{&event, &type, &p, &enabled_channels_, now};
    in.active = presence_.IsActive(user, now);
    in.loud_last_hour = budget_.Count(user, now);
    in.budget_per_hour = config_.engine.budget_per_hour;
    Decision d = Decide(in);
    if (d.uses_budget) budget_.Record(user, now);

    const std::string nid = NotificationId(event.id, user);
    nlohmann::json decision = d.ToJson();
    decision["event_id"] = event.id;
    decision["user_id"] = user;
    decision["decided_at"] = created_at;
    decision["active"] = in.active;
    traces.push_back({nid, event.id, event.type, user, now, decision.dump()});
    for (const TraceStep& step : d.trace) {
      if (step.outcome == "skipped") Deliveries().With({step.channel, "skipped"}).Inc();
    }

    for (const std::string& channel : d.channels) {
      const RenderedContent& c = content(channel, p.locale);
      nlohmann::json job = {{"v", 1},
                            {"delivery_id", DeliveryId(event.id, user, channel)},
                            {"notification_id", nid},
                            {"event", event_json},
                            {"user_id", user},
                            {"locale", c.locale},
                            {"channel", channel},
                            {"contact", ContactFor(channel, p)},
                            {"content", c.fields},
                            {"data", event.vars},
                            {"attempt", 1},
                            {"created_at", created_at}};
      nlohmann::json fallback = nlohmann::json::array();
      if (channel == "push") {
        for (const std::string& f : d.fallback) {
          const RenderedContent& fc = content(f, p.locale);
          fallback.push_back({{"channel", f},
                              {"delivery_id", DeliveryId(event.id, user, f)},
                              {"locale", fc.locale},
                              {"contact", ContactFor(f, p)},
                              {"content", fc.fields}});
        }
      }
      job["fallback"] = std::move(fallback);
      broker::Message m;
      m.exchange = broker::kDeliverExchange;
      m.routing_key = channel;
      m.message_id = job["delivery_id"];
      m.body = job.dump();
      m.mandatory = true;
      m.headers = {{"x-herald-event-id", event.id}, {"x-herald-user", user}, {"x-herald-channel", channel}};
      jobs.push_back(std::move(m));
    }
  }

  // The traces are durable before any job leaves, so a job can always be explained.
  if (Status s = store_.PutTraces(traces); !s.ok()) return s;
  publisher_.WaitForRoom(static_cast<size_t>(config_.broker.publish_window) * 4);
  for (broker::Message& m : jobs) {
    ++tracker->pending;
    publisher_.Publish(std::move(m), [tracker](const Status& s) {
      if (!s.ok()) tracker->Fail(s);
      tracker->Release();
    });
  }
  return Status::Ok();
}

}  // namespace herald
