// ChannelWorker: delivers the jobs of one channel queue (herald.deliver.<channel>).
//
// For each job, with up to `channels.<name>.concurrency` sends in flight (a pool of that many
// threads; a channel that sends asynchronously needs none: its jobs are started on the
// consumer's thread, or by one pacing thread when rate-limited, and finish on the channel's):
//   already sent (delivery id recorded)   -> acked, nothing sent (at-least-once made exactly-once)
//   wait for a token of the channel's bucket (the provider's rate is never exceeded)
//   Send():  ok                            -> recorded as sent (group commit: the thread goes on
//                                             to its next job), acked once the record is durable
//            (in-app: the inbox row is written with that record, in the same transaction)
//            retryable, attempts left      -> to herald.retry.<channel>.<tier> with attempt + 1
//            retryable, none left; permanent; invalid contact (removed from preferences first)
//            (push: subscriptions listed in invalid_contacts are removed whatever the result)
//                                          -> the next channel of the job's fallback chain,
//                                             else herald.dlq with x-herald-* headers
// The job is acked only after whatever replaces it (retry, fallback, dead letter) is confirmed
// by the broker, so a crash at any point redelivers rather than loses it.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <thread>

#include "broker/consumer.h"
#include "broker/publisher.h"
#include "channels/channel.h"
#include "core/config.h"
#include "core/token_bucket.h"
#include "store/store.h"

namespace herald {

// The backoff before attempt `failed_attempt + 1`: tiers[failed_attempt - 1] (the last tier once
// they run out); with a provider's Retry-After, the smallest tier not shorter than it (else the
// longest).
Millis RetryDelay(const std::vector<Millis>& tiers, long long failed_attempt, std::optional<Millis> retry_after);

class ChannelWorker {
 public:
  // Everything passed must outlive the worker.
  ChannelWorker(const Config& config, std::string channel, Channel& impl, Store& store, broker::Publisher& publisher,
                const Clock& clock);
  ~ChannelWorker();

  void Start();
  // Stops taking jobs, finishes those in hand (up to `grace`), then stops the pool.
  void Stop(Millis grace);
  bool Consuming() const { return consumer_->Consuming(); }

 private:
  void Work();
  void Process(broker::Delivery& d);
  // Jobs taken on the consumer's thread: all parsed, then one sent check for the batch.
  void ProcessBatch(std::vector<broker::Delivery>& batch);
  // A parsed job after its sent check (`sent`: recorded as sent before, so acked, not sent again).
  void Proceed(broker::Delivery& d, DeliveryJob& job, bool sent);
  // The job, once sent (or refused without a request): recorded, retried, handed on.
  void Sent(broker::Delivery& d, DeliveryJob& job, const SendResult& r, std::chrono::steady_clock::duration took);
  // Asynchronous channels: queues `job` (if any; `finished`: a send ended) and starts queued jobs
  // while fewer than `concurrency` are in flight.
  struct Held {
    broker::Delivery d;
    DeliveryJob job;
  };
  void Launch(std::shared_ptr<Held> job, bool finished);
  // Rate-limited asynchronous channels: the thread that starts queued jobs as tokens come due.
  void Pace();
  void StartSend(std::shared_ptr<Held> job);
  // Takes a token of the channel's bucket, waiting for it if need be.
  void WaitForToken();
  void Settle(const broker::DeliveryRef& ref, const Status& s);
  // Submits the "sent" record (with the channel's own write, `by_write`) and acks the job once
  // it is applied; a failed write of a by-write channel is a retryable failure.
  void Record(broker::Delivery& d, DeliveryJob& job, StoreWrite write, bool by_write);
  DeliveryAttempt Attempt(const DeliveryJob& job, const char* outcome, const std::string& error,
                          long long took_ms) const;
  // What a failed send leads to: a retry while attempts are left, else the fallback or a dead letter.
  void Failed(broker::Delivery& d, DeliveryJob& job, const SendResult& r, long long took_ms);
  void Retry(broker::Delivery& d, DeliveryJob& job, const SendResult& r);
  // Hands the job to its next fallback channel, else to herald.dlq, once the failed attempt is
  // recorded. `took_ms`: the failed send.
  void GiveUp(broker::Delivery& d, DeliveryJob& job, const std::string& reason, const std::string& error,
              long long took_ms = 0);
  void HandOn(broker::Delivery& d, DeliveryJob& job, const std::string& reason, const std::string& error);
  // Appends a failed attempt to the store for the trace (through the group commit: no thread
  // waits for it), then runs `next` with the job on the store's writer thread, so what follows
  // (a retry, a fallback, a dead letter) is never seen before the attempt that led to it.
  using Next = std::function<void(broker::Delivery&, DeliveryJob&)>;
  void RecordAttemptThen(broker::Delivery& d, DeliveryJob& job, const char* outcome, const std::string& error,
                         long long took_ms, Next next);
  // Removes what `r` says is gone (an invalid contact; push: r.invalid_contacts) from the user's
  // preferences and tells every process to drop its cached copy.
  void RemoveContact(const DeliveryJob& job, const SendResult& r);

  const Config& config_;
  const std::string channel_;
  Channel& impl_;
  Store& store_;
  broker::Publisher& publisher_;
  const Clock& clock_;
  const ChannelConfig& channel_config_;
  const bool async_;  // impl_.SendsAsync()
  TokenBucket bucket_;
  std::unique_ptr<broker::Consumer> consumer_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<broker::Delivery> queue_;
  bool stopping_ = false;
  size_t recording_ = 0;  // jobs whose record is submitted and not yet applied
  std::condition_variable recorded_cv_;
  // Asynchronous channels: jobs waiting for a send slot, sends started and not yet finished, and
  // whether a thread is starting jobs (the others leave it to that one).
  std::deque<std::shared_ptr<Held>> waiting_;
  long long in_flight_ = 0;
  bool launching_ = false;
  std::vector<std::thread> pool_;
};

// Drains herald.dlq into the store's dead-letter table, acking each message only once its row
// is written.
class DeadLetterDrain {
 public:
  DeadLetterDrain(const Config& config, Store& store, const Clock& clock);
  void Start();
  void Stop(Millis grace);
  bool Consuming() const { return consumer_->Consuming(); }

 private:
  Store& store_;
  const Clock& clock_;
  std::unique_ptr<broker::Consumer> consumer_;
};

}  // namespace herald
