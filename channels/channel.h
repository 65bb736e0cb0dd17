// The channel plugin interface: how a worker hands one delivery job to a provider.
//
// Contract:
// - Send() is called concurrently from several worker threads: implementations are thread-safe.
// - A job may be sent more than once (at-least-once delivery, crashes between sending and
//   acknowledging). The worker refuses delivery ids it recorded as sent, and channels pass
//   job.delivery_id to providers that accept an idempotency key, so a repeat is harmless.
// - Send() never throws and never blocks longer than its configured timeout.
// - The result says what the worker does next:
//     ok               delivered (the provider accepted it): recorded as sent, acked
//     retryable        try again later (backoff tier; retry_after, when the provider gave one,
//                      picks the smallest tier not shorter than it), until max_attempts
//     permanent        will never work for this job: next channel of the fallback chain, else
//                      the dead-letter store
//     invalid_contact  the contact is gone (410, unregistered token): removed from the user's
//                      preferences, then as permanent
// - A channel with several contacts per user (push: every subscription and device) lists the
//   ones that are gone in invalid_contacts (endpoints or tokens), whatever the kind: the worker
//   removes those from the user's preferences even when the job succeeded through another one.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/time.h"

namespace herald {

struct StoreWrite;

// A delivery job as published by the engine (docs/delivery-jobs.md).
struct DeliveryJob {
  std::string delivery_id;
  std::string notification_id;
  std::string user_id;
  std::string channel;
  std::string locale;
  long long attempt = 1;
  nlohmann::json event;     // id, type, source, time, priority, category, critical[, expires_at]
  nlohmann::json contact;   // channel-specific
  nlohmann::json content;   // rendered template fields
  nlohmann::json data;      // the event's vars
  nlohmann::json fallback;  // array of {channel, delivery_id, locale, contact, content}
  // The compact JSON text of event, content and data as received, when Parse had it (empty: write
  // the parsed value): a channel that passes them on unchanged need not serialise them again.
  std::string event_text, content_text, data_text;

  // Parses a job body; Invalid names what is missing.
  static Status Parse(const std::string& body, DeliveryJob& out);
};

struct SendResult {
  enum class Kind { kOk, kRetryable, kPermanent, kInvalidContact };
  Kind kind = Kind::kOk;
  std::string error;                 // for logs, traces and dead letters: the provider's words
  std::optional<Millis> retry_after;  // the provider's Retry-After, if any
  std::vector<std::string> invalid_contacts;  // push: endpoints or tokens that are gone

  static SendResult Ok() { return {}; }
  static SendResult Retryable(std::string e, std::optional<Millis> after = std::nullopt) {
    return {Kind::kRetryable, std::move(e), after};
  }
  static SendResult Permanent(std::string e) { return {Kind::kPermanent, std::move(e), std::nullopt}; }
  static SendResult InvalidContact(std::string e) { return {Kind::kInvalidContact, std::move(e), std::nullopt}; }
  bool ok() const { return kind == Kind::kOk; }
  const char* KindName() const;
};

class Channel {
 public:
  virtual ~Channel() = default;
  Channel() = default;
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Delivers one job (see the contract above).
  virtual SendResult Send(const DeliveryJob& job) = 0;

  // A channel that keeps many sends in flight on a thread of its own (webhook: one libcurl multi
  // handle) says so here and implements SendAsync(): it starts the send without blocking and
  // calls `done` exactly once with the result, on its own thread, or at once on the caller's
  // when nothing was sent. `job` stays valid until then; `done` must not block for long. The
  // worker then takes jobs on its consumer's thread instead of a thread per send in flight.
  using SendDone = std::function<void(SendResult)>;
  virtual bool SendsAsync() const { return false; }
  virtual void SendAsync(const DeliveryJob& job, SendDone done) { done(Send(job)); }

  // A channel whose delivery is itself a store write (in-app) says so here and fills the write in
  // PrepareWrite() instead of being sent: the worker applies it in one transaction with the
  // attempt's "sent" record (the delivery and its mark cannot part), batched with other writes,
  // and calls Written() once it is durable. A failed write is a retryable failure. Such a channel
  // never waits on anything but the store, so its jobs are taken on the consumer's thread.
  virtual bool DeliversByWrite() const { return false; }
  virtual void PrepareWrite(const DeliveryJob& /*job*/, StoreWrite& /*write*/) {}
  virtual void Written(const StoreWrite& /*write*/) {}
};

}  // namespace herald
