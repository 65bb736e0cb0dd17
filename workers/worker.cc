#include "workers/worker.h"

#include <spdlog/spdlog.h>

#include "broker/options.h"
#include "broker/topology.h"
#include "core/metrics.h"
#include "core/thread_name.h"
#include "engine/control.h"

namespace herald {
namespace {

CounterFamily& Deliveries() {
  static CounterFamily& f = Metrics::Global().Counters(
      "herald_deliveries_total", "Delivery outcomes by channel (skipped: decided against).", {"channel", "outcome"});
  return f;
}

CounterFamily& RateWait() {
  static CounterFamily& f = Metrics::Global().Counters(
      "herald_rate_limit_wait_seconds_total", "Time workers waited for a rate-limit token.", {"channel"});
  return f;
}

HistogramFamily& ProviderSeconds() {
  static HistogramFamily& f = Metrics::Global().Histograms(
      "herald_provider_request_seconds", "Duration of provider requests, whatever their outcome.", {"channel"});
  return f;
}

HistogramFamily& DeliveryLatency() {
  static HistogramFamily& f = Metrics::Global().Histograms(
      "herald_delivery_latency_seconds", "From the event's time to the provider accepting the delivery.", {"channel"});
  return f;
}

// The job's whole document, to derive a retry or fallback from (an object; empty if the body is
// not one). Parsed again: DeliveryJob keeps only its parts, and these paths are the rare ones.
nlohmann::json JobDocument(const broker::Delivery& d) {
  auto doc = nlohmann::json::parse(d.message.body, nullptr, false);
  return doc.is_object() ? doc : nlohmann::json::object();
}

// `key` of `object` if that is a string, else empty (a job's event is whatever was published).
std::string StringField(const nlohmann::json& object, const char* key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

bool HasFallback(const DeliveryJob& job) {
  return job.fallback.is_array() && !job.fallback.empty() && job.fallback[0].is_object();
}

}  // namespace

Millis RetryDelay(const std::vector<Millis>& tiers, long long failed_attempt, std::optional<Millis> retry_after) {
  if (tiers.empty()) return Millis(1000);
  if (retry_after) {
    for (Millis t : tiers) {
      if (t >= *retry_after) return t;
    }
    return tiers.back();
  }
  size_t i = static_cast<size_t>(std::max(1LL, failed_attempt) - 1);
  return tiers[std::min(i, tiers.size() - 1)];
}

ChannelWorker::ChannelWorker(const Config& config, std::string channel, Channel& impl, Store& store,
                             broker::Publisher& publisher, const Clock& clock)
    : config_(config),
      channel_(std::move(channel)),
      impl_(impl),
      store_(store),
      publisher_(publisher),
      clock_(clock),
      channel_config_(config.channels.at(channel_)),
      async_(impl_.SendsAsync()),
      bucket_(static_cast<double>(channel_config_.rate),
              static_cast<double>(channel_config_.burst ? channel_config_.burst
                                                        : std::max(1LL, channel_config_.rate / 10))) {
  auto o = broker::ConsumerOptionsFor(config, "heraldd worker " + channel_, broker::DeliverQueue(channel_));
  o.prefetch = static_cast<int>(channel_config_.prefetch);
  // Registered now, so /metrics lists every family before the first delivery.
  Deliveries();
  RateWait();
  ProviderSeconds();
  DeliveryLatency();
  // A channel that only writes to the store, unthrottled, is served on the consumer's thread: a
  // hand-off to the pool would cost more than the job. So is an asynchronous one: its sends
  // start there and finish on the channel's thread.
  const bool inline_jobs = (impl_.DeliversByWrite() && channel_config_.rate == 0) || async_;
  consumer_ = std::make_unique<broker::Consumer>(std::move(o), [this, inline_jobs](std::vector<broker::Delivery>& batch) {
    if (inline_jobs) return ProcessBatch(batch);
    {
      std::lock_guard lock(mu_);
      for (broker::Delivery& d : batch) queue_.push_back(std::move(d));
    }
    if (batch.size() == 1) {
      cv_.notify_one();
    } else {
      cv_.notify_all();
    }
  });
}

ChannelWorker::~ChannelWorker() { Stop(Millis(0)); }

void ChannelWorker::Start() {
  if (!async_) {
    for (long long i = 0; i < channel_config_.concurrency; ++i) pool_.emplace_back([this] { Work(); });
  } else if (channel_config_.rate > 0) {
    pool_.emplace_back([this] { Pace(); });
  }
  consumer_->Start();
}

void ChannelWorker::Stop(Millis grace) {
  consumer_->Stop(grace);  // waits for jobs in hand to be settled, while the pool still runs
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    // What was not started by now went back to the queue with the consumer's connection:
    // sending it here would only make a repeat.
    queue_.clear();
    waiting_.clear();
  }
  cv_.notify_all();
  for (std::thread& t : pool_) t.join();
  pool_.clear();
  // Their callbacks use this worker: wait for the sends still in flight (each ends by the
  // channel's timeout) and the records still being written.
  std::unique_lock lock(mu_);
  recorded_cv_.wait(lock, [&] { return recording_ == 0 && in_flight_ == 0 && !launching_; });
}

void ChannelWorker::Work() {
  SetThreadName("w:" + channel_);
  for (;;) {
    broker::Delivery d;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      d = std::move(queue_.front());
      queue_.pop_front();
    }
    Process(d);
  }
}

void ChannelWorker::Settle(const broker::DeliveryRef& ref, const Status& s) {
  if (s.ok()) {
    consumer_->Ack(ref);
  } else {
    spdlog::warn("worker {}: could not hand a job on ({}); it returns to the queue", channel_, s.ToString());
    consumer_->Reject(ref, /*requeue=*/true);
  }
}

void ChannelWorker::Process(broker::Delivery& d) {
  DeliveryJob job;
  if (Status s = DeliveryJob::Parse(d.message.body, job); !s.ok()) {
    return GiveUp(d, job, "invalid_job", s.message());
  }
  bool sent = false;
  // A channel that delivers by a write needs no sent check: its write is keyed by the notification
  // (the inbox entry), so a repeat writes nothing (Record). (A failed check sends: at least once.)
  if (Status s = impl_.DeliversByWrite() ? Status::Ok() : store_.WasSent(job.delivery_id, sent); !s.ok()) {
    sent = false;
  }
  Proceed(d, job, sent);
}

void ChannelWorker::ProcessBatch(std::vector<broker::Delivery>& batch) {
  if (batch.size() == 1 || impl_.DeliversByWrite()) {
    for (broker::Delivery& d : batch) Process(d);
    return;
  }
  std::vector<DeliveryJob> jobs(batch.size());
  std::vector<std::string> ids;  // ids[k]: the job of batch[at[k]]
  std::vector<size_t> at;
  ids.reserve(batch.size());
  at.reserve(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    if (Status s = DeliveryJob::Parse(batch[i].message.body, jobs[i]); !s.ok()) {
      GiveUp(batch[i], jobs[i], "invalid_job", s.message());
      continue;
    }
    ids.push_back(jobs[i].delivery_id);
    at.push_back(i);
  }
  std::vector<bool> sent;
  if (!store_.WasSent(ids, sent).ok()) sent.assign(ids.size(), false);  // as in Process: at least once
  for (size_t k = 0; k < at.size(); ++k) Proceed(batch[at[k]], jobs[at[k]], sent[k]);
}

void ChannelWorker::Proceed(broker::Delivery& d, DeliveryJob& job, bool sent) {
  if (sent) {
    spdlog::debug("worker {}: {} was already sent; not again", channel_, job.delivery_id);
    Deliveries().With({channel_, "skipped"}).Inc();
    return consumer_->Ack({d.tag, d.generation});
  }
  if (async_) return Launch(std::make_shared<Held>(Held{std::move(d), std::move(job)}), /*finished=*/false);
  WaitForToken();
  if (impl_.DeliversByWrite()) {
    StoreWrite w;
    impl_.PrepareWrite(job, w);
    w.attempt = Attempt(job, "sent", "", 0);
    return Record(d, job, std::move(w), /*by_write=*/true);
  }
  auto started = std::chrono::steady_clock::now();
  SendResult r = impl_.Send(job);
  Sent(d, job, r, std::chrono::steady_clock::now() - started);
}

void ChannelWorker::WaitForToken() {
  auto waited = bucket_.Acquire();
  if (waited.count() > 0) RateWait().With({channel_}).Inc(std::chrono::duration<double>(waited).count());
}

void ChannelWorker::Launch(std::shared_ptr<Held> job, bool finished) {
  std::unique_lock lock(mu_);
  if (finished) --in_flight_;
  if (job) waiting_.push_back(std::move(job));
  if (channel_config_.rate > 0) {
    cv_.notify_one();  // the pacing thread starts it when a token is due
    recorded_cv_.notify_all();  // (under the lock: Stop() cannot return before it is released)
    return;
  }
  if (launching_) return;  // that thread takes it
  launching_ = true;
  for (;;) {
    if (stopping_ || waiting_.empty() || in_flight_ >= channel_config_.concurrency) {
      launching_ = false;
      // Under the lock: Stop() cannot return (and free this worker) before it is released.
      recorded_cv_.notify_all();
      return;
    }
    std::shared_ptr<Held> next = std::move(waiting_.front());
    waiting_.pop_front();
    ++in_flight_;
    lock.unlock();
    // (A channel that sends nothing calls back at once, on this thread: its Launch returns at
    // once, leaving the next job to this loop.)
    StartSend(std::move(next));
    lock.lock();
  }
}

void ChannelWorker::Pace() {
  SetThreadName("pace:" + channel_);
  for (;;) {
    std::shared_ptr<Held> next;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || (!waiting_.empty() && in_flight_ < channel_config_.concurrency); });
      if (stopping_) return;
      next = std::move(waiting_.front());
      waiting_.pop_front();
      ++in_flight_;
    }
    WaitForToken();
    {
      std::lock_guard lock(mu_);
      if (stopping_) {
        // Its job went back to the queue with the consumer's connection.
        --in_flight_;
        recorded_cv_.notify_all();
        return;
      }
    }
    StartSend(std::move(next));
  }
}

void ChannelWorker::StartSend(std::shared_ptr<Held> job) {
  const auto started = std::chrono::steady_clock::now();
  const DeliveryJob& j = job->job;
  impl_.SendAsync(j, [this, job = std::move(job), started](SendResult r) {
    Sent(job->d, job->job, r, std::chrono::steady_clock::now() - started);
    Launch(nullptr, /*finished=*/true);
  });
}

void ChannelWorker::Sent(broker::Delivery& d, DeliveryJob& job, const SendResult& r,
                         std::chrono::steady_clock::duration took) {
  ProviderSeconds().With({channel_}).Observe(std::chrono::duration<double>(took).count());
  const long long took_ms = std::chrono::duration_cast<Millis>(took).count();
  if (r.kind == SendResult::Kind::kInvalidContact || !r.invalid_contacts.empty()) RemoveContact(job, r);
  switch (r.kind) {
    case SendResult::Kind::kOk: {
      if (job.delivery_id.empty()) return consumer_->Ack({d.tag, d.generation});  // nothing to record it by
      StoreWrite w;
      w.attempt = Attempt(job, "sent", "", took_ms);
      return Record(d, job, std::move(w), /*by_write=*/false);
    }
    default:
      return Failed(d, job, r, took_ms);
  }
}

void ChannelWorker::Failed(broker::Delivery& d, DeliveryJob& job, const SendResult& r, long long took_ms) {
  switch (r.kind) {
    case SendResult::Kind::kOk:
      break;  // not a failure
    case SendResult::Kind::kRetryable:
      if (job.attempt < config_.retry.max_attempts) {
        return RecordAttemptThen(d, job, "retried", r.error, took_ms,
                                 [this, r](broker::Delivery& d, DeliveryJob& job) { Retry(d, job, r); });
      }
      return GiveUp(d, job, "attempts_exhausted", r.error, took_ms);
    case SendResult::Kind::kPermanent:
      return GiveUp(d, job, "permanent", r.error, took_ms);
    case SendResult::Kind::kInvalidContact:
      return GiveUp(d, job, "invalid_contact", r.error, took_ms);
  }
}

void ChannelWorker::Record(broker::Delivery& d, DeliveryJob& job, StoreWrite write, bool by_write) {
  {
    std::lock_guard lock(mu_);
    ++recording_;
  }
  // The callback runs on the store's writer thread, which every write waits for: it gets what it
  // needs, not the job's parsed JSON (freeing that there was a measurable part of the writer's
  // time). std::function needs a copyable callable, hence the pointer.
  struct Recorded {
    broker::DeliveryRef ref;
    std::string delivery_id;
    std::optional<SystemTime> event_time;
    broker::Delivery message;  // by-write channels: what a failed write is retried from
  };
  auto held = std::make_shared<Recorded>();
  held->ref = {d.tag, d.generation};
  held->delivery_id = job.delivery_id;
  held->event_time = ParseRfc3339(StringField(job.event, "time"));
  if (by_write) held->message = std::move(d);
  store_.Submit(std::move(write), [this, held, by_write](StoreWrite& w) {
    if (!w.status.ok() && by_write) {
      // Nothing was delivered: the write was the delivery. (The job parsed before, so it does again.)
      broker::Delivery& d = held->message;
      DeliveryJob job;
      if (Status s = DeliveryJob::Parse(d.message.body, job); !s.ok()) {
        GiveUp(d, job, "invalid_job", s.message());
      } else {
        Failed(d, job, SendResult::Retryable(channel_ + " write failed: " + w.status.message()), 0);
      }
    } else {
      if (!w.status.ok()) {
        spdlog::error("worker {}: {} sent but not recorded ({}); a redelivery would send it again", channel_,
                      held->delivery_id, w.status.message());
      }
      if (by_write) impl_.Written(w);
      // The inbox entry was there: this notification was delivered before (the write changed nothing).
      const bool repeat = by_write && w.status.ok() && w.inbox && !w.inbox_created;
      if (repeat) spdlog::debug("worker {}: {} was already delivered; not again", channel_, held->delivery_id);
      Deliveries().With({channel_, repeat ? "skipped" : "sent"}).Inc();
      if (held->event_time && !repeat) {
        DeliveryLatency().With({channel_}).Observe(
            std::max(0.0, std::chrono::duration<double>(clock_.Now() - *held->event_time).count()));
      }
      consumer_->Ack(held->ref);
    }
    std::lock_guard lock(mu_);
    if (--recording_ == 0) recorded_cv_.notify_all();
  });
}

DeliveryAttempt ChannelWorker::Attempt(const DeliveryJob& job, const char* outcome, const std::string& error,
                                       long long took_ms) const {
  DeliveryAttempt a;
  a.notification_id = job.notification_id;
  a.delivery_id = job.delivery_id;
  a.channel = channel_;
  a.attempt = job.attempt;
  a.outcome = outcome;
  a.error = error;
  a.at = clock_.Now();
  a.duration_ms = took_ms;
  return a;
}

void ChannelWorker::RecordAttemptThen(broker::Delivery& d, DeliveryJob& job, const char* outcome,
                                      const std::string& error, long long took_ms, Next next) {
  if (job.delivery_id.empty()) return next(d, job);  // an unreadable job: nothing to attach it to
  StoreWrite w;
  w.attempt = Attempt(job, outcome, error, took_ms);
  {
    std::lock_guard lock(mu_);
    ++recording_;
  }
  auto held = std::make_shared<Held>(Held{std::move(d), std::move(job)});
  store_.Submit(std::move(w), [this, held, next = std::move(next)](StoreWrite& w) {
    if (!w.status.ok()) {
      spdlog::warn("worker {}: attempt {} of {} not recorded for the trace: {}", channel_, held->job.attempt,
                   held->job.delivery_id, w.status.message());
    }
    next(held->d, held->job);
    std::lock_guard lock(mu_);
    if (--recording_ == 0) recorded_cv_.notify_all();
  });
}

void ChannelWorker::Retry(broker::Delivery& d, DeliveryJob& job, const SendResult& r) {
  Millis delay = RetryDelay(config_.retry.tiers, job.attempt, r.retry_after);
  nlohmann::json next = JobDocument(d);
  next["attempt"] = job.attempt + 1;
  if (!next.contains("first_failed_at")) next["first_failed_at"] = FormatRfc3339(clock_.Now());
  next["last_error"] = r.error;
  broker::Message m;
  m.exchange = "";  // straight into the tier's queue; its TTL sends it back to herald.deliver
  m.routing_key = broker::RetryQueue(channel_, delay);
  m.body = next.dump();
  m.message_id = job.delivery_id;
  m.headers = d.message.headers;
  m.headers["x-herald-attempts"] = job.attempt;
  m.mandatory = true;
  spdlog::info("worker {}: {} attempt {} failed ({}); retry in {}", channel_, job.delivery_id, job.attempt, r.error,
               FormatDuration(delay));
  Deliveries().With({channel_, "retried"}).Inc();
  broker::DeliveryRef ref{d.tag, d.generation};
  publisher_.Publish(std::move(m), [this, ref](const Status& s) { Settle(ref, s); });
}

void ChannelWorker::GiveUp(broker::Delivery& d, DeliveryJob& job, const std::string& reason, const std::string& error,
                           long long took_ms) {
  RecordAttemptThen(d, job, HasFallback(job) ? "fallback" : "dead", reason + ": " + error, took_ms,
                    [this, reason, error](broker::Delivery& d, DeliveryJob& job) { HandOn(d, job, reason, error); });
}

void ChannelWorker::HandOn(broker::Delivery& d, DeliveryJob& job, const std::string& reason,
                           const std::string& error) {
  broker::DeliveryRef ref{d.tag, d.generation};
  const bool has_fallback = HasFallback(job);
  nlohmann::json doc = JobDocument(d);
  const std::string first_failed = doc.contains("first_failed_at") && doc["first_failed_at"].is_string()
                                       ? doc["first_failed_at"].get<std::string>()
                                       : FormatRfc3339(clock_.Now());
  if (has_fallback) {
    const nlohmann::json& f = job.fallback[0];
    nlohmann::json next = std::move(doc);
    next["channel"] = StringField(f, "channel");
    next["delivery_id"] = StringField(f, "delivery_id");
    const std::string locale = StringField(f, "locale");
    next["locale"] = locale.empty() ? job.locale : locale;
    next["contact"] = f.value("contact", nlohmann::json::object());
    next["content"] = f.value("content", nlohmann::json::object());
    next["fallback"] = nlohmann::json(job.fallback.begin() + 1, job.fallback.end());
    next["attempt"] = 1;
    next["fallback_from"] = {{"channel", channel_}, {"delivery_id", job.delivery_id}, {"reason", reason},
                             {"error", error}};
    next.erase("first_failed_at");
    next.erase("last_error");
    broker::Message m;
    m.exchange = broker::kDeliverExchange;
    m.routing_key = next["channel"];
    m.message_id = next["delivery_id"];
    m.body = next.dump();
    m.headers = {{"x-herald-event-id", StringField(job.event, "id")}, {"x-herald-user", job.user_id},
                 {"x-herald-channel", next["channel"]}};
    m.mandatory = true;
    spdlog::info("worker {}: {} failed for good ({}: {}); falling back to {}", channel_, job.delivery_id, reason, error,
                 next["channel"].get<std::string>());
    Deliveries().With({channel_, "fallback"}).Inc();
    publisher_.Publish(std::move(m), [this, ref](const Status& s) { Settle(ref, s); });
    return;
  }
  broker::Message m;
  m.exchange = "";
  m.routing_key = broker::kDeadLetterQueue;
  m.body = d.message.body;
  m.message_id = job.delivery_id;
  m.headers = d.message.headers.is_object() ? d.message.headers : nlohmann::json::object();
  m.headers["x-herald-reason"] = reason;
  m.headers["x-herald-error"] = error;
  m.headers["x-herald-attempts"] = job.attempt;
  m.headers["x-herald-channel"] = channel_;
  m.headers["x-herald-first-failed-at"] = first_failed;
  m.mandatory = true;
  spdlog::warn("worker {}: {} dead-lettered after {} attempt(s): {}: {}", channel_,
               job.delivery_id.empty() ? "a job" : job.delivery_id, job.attempt, reason, error);
  Deliveries().With({channel_, "dead"}).Inc();
  publisher_.Publish(std::move(m), [this, ref](const Status& s) { Settle(ref, s); });
}

void ChannelWorker::RemoveContact(const DeliveryJob& job, const SendResult& r) {
  Preferences p;
  if (!store_.GetPreferences(job.user_id, p).ok()) return;
  bool changed = false;
  const bool gone = r.kind == SendResult::Kind::kInvalidContact;
  if (channel_ == "email" && gone && !p.contacts.email.empty()) {
    p.contacts.email.clear();
    changed = true;
  } else if (channel_ == "webhook" && gone && !p.contacts.webhook.empty()) {
    p.contacts.webhook.clear();
    changed = true;
  } else if (channel_ == "push") {
    // The channel names the subscriptions that are gone (endpoint or token); the others stay.
    const std::vector<std::string>& bad = r.invalid_contacts;
    auto is_bad = [&](const std::string& id) { return !id.empty() && std::find(bad.begin(), bad.end(), id) != bad.end(); };
    auto& list = p.contacts.push;
    auto before = list.size();
    list.erase(std::remove_if(list.begin(), list.end(),
                              [&](const PushContact& c) { return is_bad(c.endpoint) || is_bad(c.token); }),
               list.end());
    changed = list.size() != before;
  }
  if (!changed) return;
  if (Status s = store_.PutPreferences(p); !s.ok()) {
    spdlog::warn("worker {}: could not remove {}'s invalid contact: {}", channel_, job.user_id, s.message());
    return;
  }
  spdlog::info("worker {}: removed {}'s invalid {} contact", channel_, job.user_id, channel_);
  broker::Message m;
  m.exchange = broker::kControlExchange;
  m.body = PrefsChangedSignal(job.user_id);
  m.persistent = false;
  publisher_.Publish(std::move(m), nullptr);
}

DeadLetterDrain::DeadLetterDrain(const Config& config, Store& store, const Clock& clock) : store_(store), clock_(clock) {
  auto o = broker::ConsumerOptionsFor(config, "heraldd dead-letter drain", broker::kDeadLetterQueue);
  o.prefetch = 100;
  consumer_ = std::make_unique<broker::Consumer>(std::move(o), [this](broker::Delivery&& d) {
    const nlohmann::json& h = d.message.headers;
    auto str = [&](const char* k) { return h.contains(k) && h[k].is_string() ? h[k].get<std::string>() : std::string(); };
    DeadLetter letter;
    auto job = nlohmann::json::parse(d.message.body, nullptr, false);
    letter.delivery_id = d.message.message_id;
    if (letter.delivery_id.empty()) letter.delivery_id = StringField(job, "delivery_id");
    if (letter.delivery_id.empty()) letter.delivery_id = "unknown-" + std::to_string(clock_.Now().time_since_epoch().count());
    letter.channel = str("x-herald-channel");
    letter.reason = str("x-herald-reason");
    letter.error = str("x-herald-error");
    letter.attempts = h.contains("x-herald-attempts") && h["x-herald-attempts"].is_number_integer()
                          ? h["x-herald-attempts"].get<long long>() : 0;
    if (job.is_object()) {
      const auto ev = job.find("event");
      letter.event_id = ev != job.end() ? StringField(*ev, "id") : "";
      letter.event_type = ev != job.end() ? StringField(*ev, "type") : "";
      letter.user_id = StringField(job, "user_id");
    }
    letter.dead_at = clock_.Now();
    letter.first_failed_at = ParseRfc3339(str("x-herald-first-failed-at")).value_or(letter.dead_at);
    letter.job_json = d.message.body;
    letter.headers_json = h.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    broker::DeliveryRef ref{d.tag, d.generation};
    if (Status s = store_.PutDeadLetter(letter); !s.ok()) {
      spdlog::error("dead letters: cannot store {} ({}); it stays on herald.dlq", letter.delivery_id, s.message());
      // A store that fails now likely fails at once again: pause before the message comes back,
      // rather than spinning (heartbeats allow far longer than this).
      std::this_thread::sleep_for(std::chrono::seconds(1));
      consumer_->Reject(ref, /*requeue=*/true);
      return;
    }
    consumer_->Ack(ref);
  });
}

void DeadLetterDrain::Start() { consumer_->Start(); }

void DeadLetterDrain::Stop(Millis grace) { consumer_->Stop(grace); }

}  // namespace herald
