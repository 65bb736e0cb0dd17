// The push channel: delivers each job to every push subscription and device of the user
// (job.contact["push"], docs/delivery-jobs.md), each through the provider its `kind` names:
//
//   webpush  Web Push (RFC 8030) to the subscription's endpoint: the payload encrypted per RFC
//            8291 (aes128gcm), VAPID (RFC 8292) "Authorization: vapid t=<ES256 JWT>, k=<key>"
//            with aud = the endpoint's origin, exp <= 24 h, sub = vapid_subject; headers TTL,
//            Urgency (from the event priority), Topic (from the template's collapse_key).
//   fcm      FCM HTTP v1 messages:send, authorised by an OAuth access token obtained with the
//            service account's RS256 assertion and cached until shortly before it expires.
//   apns     APNs over HTTP/2 with token auth (ES256, key id and team id; the token is reused
//            for apns_token_refresh, 20..59 minutes as Apple requires); headers apns-topic,
//            apns-push-type, apns-priority, apns-expiration, apns-collapse-id and apns-id (from
//            the delivery id).
//
// What each receives (PushPayload): title, body, notification_id, delivery_id, event type and
// the event's vars; at most 4096 bytes, checked before anything is sent (a permanent error that
// names the size).
//
// Requests of all Send calls run concurrently on two HttpMulti (one for user-chosen Web Push
// endpoints, guarded against private addresses; one for the configured FCM and APNs servers),
// so sends from several worker threads share HTTP/2 connections. Send blocks until each of its
// requests completed or timed out.
//
// Results, per subscription: Web Push 2xx ok; 404/410 gone; 400/401/403/413 and other 4xx
// permanent; 429, 5xx, timeouts and connection errors retryable (Retry-After honoured). FCM
// UNREGISTERED, SENDER_ID_MISMATCH gone; QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL retryable (a
// rejected access token is dropped and the send retried); others permanent. APNs 410 and
// BadDeviceToken gone; 429, 500, 503 retryable (ExpiredProviderToken: a new token, retryable);
// others permanent. For the job:
//   at least one accepted             ok (the others are not retried: that would repeat the
//                                     notification where it arrived)
//   else any retryable                retryable (the largest Retry-After)
//   else all gone                     invalid_contact
//   else                              permanent
// and whatever the kind, every gone subscription is listed in SendResult::invalid_contacts
// (its endpoint or token) for the worker to remove from the user's preferences. Invalid
// contact and permanent both continue the fallback chain (e-mail).
//
// Providers are configured by their keys: one with no keys is off (its contacts fail
// permanently, so the job falls back to e-mail; heraldd logs this at start); one with only
// some of its keys is a configuration error naming the missing key.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "channels/channel.h"
#include "core/clock.h"
#include "core/status.h"
#include "core/time.h"

namespace herald {

struct PushConfig {
  Millis timeout{10000};         // one send: every request it makes (a token exchange included)
  Millis connect_timeout{3000};  // name resolution and TCP (and TLS) connect
  Millis ttl{86400000};          // how long providers keep an undelivered message (TTL,
                                 // apns-expiration, android.ttl); clipped to the event's expiry
  std::string ca_file;           // PEM bundle to verify every push server with, instead of the system's
  // Lets Web Push endpoints use http:// and reach loopback and private addresses, and the FCM
  // URLs (fcm_url, the service account's token_uri) use http://. For local testing only.
  // (apns_url is always https://: APNs is HTTP/2, which libcurl multiplexes only over TLS.)
  bool allow_insecure_endpoints = false;

  // Web Push: VAPID key (a PEM file path, or the raw 32-byte private key in base64url as
  // `web-push generate-vapid-keys` prints it) and the contact push services may use.
  std::string vapid_private_key;
  std::string vapid_subject;      // "mailto:ops@example.org" or "https://example.org"
  Millis vapid_expiry{43200000};  // lifetime of a VAPID JWT (12 h); at most 24 h

  // FCM HTTP v1: the service account's JSON key file (project_id, client_email, private_key,
  // token_uri).
  std::string fcm_service_account_file;
  std::string fcm_url = "https://fcm.googleapis.com";  // messages:send is under {fcm_url}/v1/projects/

  // APNs token auth: the .p8 key, its key id, the team id, and the app's bundle id as topic.
  std::string apns_key_file;
  std::string apns_key_id;
  std::string apns_team_id;
  std::string apns_topic;
  std::string apns_url = "https://api.push.apple.com";  // sandbox: https://api.sandbox.push.apple.com
  std::string apns_push_type = "alert";
  Millis apns_token_refresh{2400000};  // 40 min; Apple wants 20..60 min
};

// Invalid naming the key (channels.push.<key>) of the first unusable setting, without reading
// key files (CreatePushChannel reads them).
Status ValidatePushConfig(const PushConfig& config);

class PushChannel final : public Channel {
 public:
  ~PushChannel() override;

  // Thread-safe; see the header comment.
  SendResult Send(const DeliveryJob& job) override;

  // "webpush", "fcm", "apns": the providers whose keys are configured.
  std::vector<std::string> Providers() const;

  // Tokens made so far, for tests of caching and refresh.
  struct TokenCounts {
    long vapid_jwts = 0;          // VAPID JWTs signed
    long fcm_token_requests = 0;  // OAuth token exchanges attempted
    long apns_jwts = 0;           // APNs provider tokens signed
  };
  TokenCounts Tokens() const;
  // Connections opened to FCM and APNs servers so far (HTTP/2 multiplexing shares them).
  long ProviderConnections() const;

  struct Impl;

 private:
  friend Status CreatePushChannel(PushConfig, const Clock&, std::unique_ptr<PushChannel>&);
  explicit PushChannel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Validates `config`, reads the keys it names and creates the channel. Invalid naming the key.
// `clock` (which must outlive the channel) decides JWT times and token lifetimes.
Status CreatePushChannel(PushConfig config, const Clock& clock, std::unique_ptr<PushChannel>& out);

// The building blocks, public so tests can check them without a network.

// What a provider's answer means for one subscription.
struct PushOutcome {
  SendResult::Kind kind = SendResult::Kind::kOk;  // kInvalidContact: the subscription is gone
  std::string error;
  std::optional<Millis> retry_after;
  bool renew_credentials = false;  // FCM 401, APNs ExpiredProviderToken/InvalidProviderToken
};
PushOutcome MapWebPushResponse(long status, const std::string& body, std::optional<Millis> retry_after);
PushOutcome MapFcmResponse(long status, const std::string& body, std::optional<Millis> retry_after);
PushOutcome MapApnsResponse(long status, const std::string& body, std::optional<Millis> retry_after);

// The JSON every Web Push subscription receives (encrypted) and the APNs payload's custom part:
// {"title","body","notification_id","delivery_id","type","data"}.
std::string PushPayload(const DeliveryJob& job);

// RFC 8030 Topic from a collapse key: kept if it is 1..32 base64url characters, else the first
// 32 characters of base64url(SHA-256(key)), so every key gives a valid, stable topic.
std::string WebPushTopic(const std::string& collapse_key);

// apns-id: a canonical UUID from the delivery id (its 32 hex digits when it has the engine's
// "d-<32 hex>" form, else SHA-256 of it), the same on every repeat.
std::string ApnsId(const std::string& delivery_id);

// The origin (scheme://host[:port], default port left out) of an absolute URL: VAPID's aud.
// Empty if the URL does not parse.
std::string UrlOrigin(const std::string& url);

}  // namespace herald
