// The webhook channel: POSTs each delivery as signed JSON to the URL the user registered
// (job.contact["url"]).
//
// What a receiver gets:
//   POST <url>
//   Content-Type: application/json
//   X-Herald-Signature: sha256=<hex HMAC-SHA256(channels.webhook.secret, exact body bytes)>
//   Idempotency-Key: <delivery_id>      (also X-Herald-Delivery; the same on every repeat)
//   X-Herald-Event-Type: <event type>
//   {"delivery_id":…,"notification_id":…,"user_id":…,"event":{…},"content":{…},"data":{…},"attempt":N}
//
// Results: 2xx ok; 408, 429, 5xx, timeouts and connection errors retryable (Retry-After
// honoured); 410 invalid_contact (the endpoint is gone); 3xx (redirects are not followed) and
// other 4xx permanent.
//
// Users choose the URL, so it must not become a way into Herald's own network (SSRF): unless
// allow_private_targets, a numeric host must be public, and every address libcurl tries to
// connect to is checked as its socket is opened: a name that resolves, or later re-resolves, to a
// private address gets no connection there (permanent, unless another of its addresses is public
// and answers).
//
// Sends run on one libcurl multi handle and its thread ("w:webhook"): many in flight at once
// without a thread each (SendAsync), connections kept alive and, over TLS, HTTP/2 multiplexed.
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "channels/channel.h"
#include "channels/curl_support.h"    // ParseRetryAfter
#include "channels/http_multi.h"
#include "channels/public_address.h"  // NonPublicAddressReason, IsPublicAddress
#include "core/status.h"
#include "core/time.h"

namespace herald {

struct WebhookConfig {
  std::string secret;             // HMAC-SHA256 key of X-Herald-Signature; required
  Millis timeout{10000};          // the whole request: name resolution, connect, send, response
  Millis connect_timeout{3000};   // name resolution and TCP (and TLS) connect
  bool allow_private_targets = false;  // allow loopback, private, link-local, … targets
  std::string user_agent = "Herald/0.1";
};

// Invalid naming the key (channels.webhook.<key>) of the first unusable setting.
Status ValidateWebhookConfig(const WebhookConfig& config);

// Where a contact's webhook goes, from its URL.
struct WebhookTarget {
  std::string url;   // normalised, host in punycode
  std::string host;  // as curl resolves it: punycode, IPv6 without brackets
  std::optional<Address> literal;  // the host is a numeric address
};

// Reads {"url": "..."}: empty on success, else what is wrong with the contact (the text of a
// permanent failure).
std::string ParseWebhookTarget(const nlohmann::json& contact, WebhookTarget& out);

// ParseWebhookTarget with the targets of recent URLs kept, so a user's URL is parsed once rather
// than for every delivery (libcurl's URL parser and the three parts read back from it were about
// a tenth of the webhook thread's time per job: bench/README.md, eleventh round). Only URLs that
// parsed are kept, at most `capacity` (about 440 bytes each); when full it starts over. Webhooks
// usually go to a few endpoints per integration, which all fit; where every user has a URL of
// their own (as in bench_e2e), most lookups miss and cost what they did. Thread-safe.
class WebhookTargetCache {
 public:
  explicit WebhookTargetCache(size_t capacity = 4096);
  std::string Get(const nlohmann::json& contact, WebhookTarget& out);
  size_t Size() const;

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, WebhookTarget> targets_;
};

class WebhookChannel final : public Channel {
 public:
  explicit WebhookChannel(WebhookConfig config);

  // Thread-safe. Send() is SendAsync() and a wait.
  SendResult Send(const DeliveryJob& job) override;
  bool SendsAsync() const override { return true; }
  void SendAsync(const DeliveryJob& job, SendDone done) override;

 private:
  // The request for `job` (and its host, for errors), or the result when it cannot be sent.
  std::optional<SendResult> Prepare(const DeliveryJob& job, HttpRequest& request, std::string& host) const;
  SendResult Outcome(const std::string& host, const HttpResponse& response) const;

  WebhookConfig config_;
  Status usable_;    // ValidateWebhookConfig and curl's global initialisation
  mutable WebhookTargetCache targets_;
  HttpMulti multi_;  // last: stopped (failing what still runs) while the rest is intact
};

// The building blocks, public so tests can check them without a network.

// The request body: compact JSON, members in the order of the header comment above.
std::string WebhookBody(const DeliveryJob& job);

// Lower-case hex HMAC-SHA256 of `data` under `key` (empty on an OpenSSL failure).
std::string HmacSha256Hex(std::string_view key, std::string_view data);

}  // namespace herald
