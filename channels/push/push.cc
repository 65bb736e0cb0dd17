#include "channels/push/push.h"

#include <openssl/sha.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "channels/curl_support.h"
#include "channels/public_address.h"
#include "channels/http_multi.h"
#include "channels/push/push_crypto.h"
#include "core/utf8.h"

namespace herald {
namespace {

using nlohmann::json;
using Steady = std::chrono::steady_clock;

constexpr size_t kPayloadLimit = 4096;  // FCM, APNs, and an encrypted Web Push record
constexpr const char* kFcmScope = "https://www.googleapis.com/auth/firebase.messaging";
constexpr const char* kDefaultTokenUri = "https://oauth2.googleapis.com/token";
constexpr const char* kInsecureKey = "channels.push.allow_insecure_endpoints";

std::string Key(const char* key) { return std::string("channels.push.") + key; }

Status ReadFile(const std::string& path, const char* key, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Invalid(Key(key) + ": cannot read " + ProviderText(path, 200) + ": " + std::strerror(errno));
  std::stringstream buf;
  buf << in.rdbuf();
  out = buf.str();
  return Status::Ok();
}

// Compact JSON; invalid UTF-8 becomes U+FFFD instead of an exception.
std::string Dump(const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string StringField(const json& obj, const char* key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

long long UnixSeconds(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// A base URL from configuration: https://, or http:// when insecure endpoints are allowed.
Status CheckBaseUrl(const std::string& url, const char* key, bool allow_http) {
  if (url.rfind("https://", 0) == 0 && url.size() > 8) return Status::Ok();
  if (allow_http && url.rfind("http://", 0) == 0 && url.size() > 7) return Status::Ok();
  return Status::Invalid(Key(key) + ": \"" + ProviderText(url, 200) + "\" must be an https:// URL" +
                         (allow_http ? " or http:// URL" : " (http:// only with " + std::string(kInsecureKey) + ")"));
}

std::string TrimSlash(std::string s) {
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

std::string Sha256(std::string_view data) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return std::string(reinterpret_cast<char*>(md), sizeof md);
}

// The JSON error of an FCM or APNs response, for messages: its reason, else the body's text.
std::string Quoted(const std::string& body) { return ProviderText(body, kErrorBodyBytes); }

// ---------------------------------------------------------------------------------------------
// What the job says

struct JobFacts {
  std::string priority = "normal";  // critical | high | normal | low
  long long ttl_seconds = 0;        // config ttl clipped to the event's expiry, >= 0
  SystemTime expires_at;            // now + ttl_seconds
  std::string collapse_key;         // content.collapse_key, if the template has one
};

JobFacts Facts(const DeliveryJob& job, const PushConfig& c, SystemTime now) {
  JobFacts f;
  if (std::string p = StringField(job.event, "priority"); !p.empty()) f.priority = p;
  auto ttl = std::chrono::duration_cast<std::chrono::seconds>(c.ttl);
  if (std::optional<SystemTime> exp = ParseRfc3339(StringField(job.event, "expires_at"))) {
    ttl = std::min(ttl, std::chrono::duration_cast<std::chrono::seconds>(*exp - now));
  }
  f.ttl_seconds = std::max<long long>(0, ttl.count());
  f.expires_at = now + std::chrono::seconds(f.ttl_seconds);
  f.collapse_key = StringField(job.content, "collapse_key");
  return f;
}

bool Urgent(const JobFacts& f) { return f.priority == "critical" || f.priority == "high"; }

json ApnsPayload(const DeliveryJob& job) {
  json alert = {{"title", StringField(job.content, "title")}, {"body", StringField(job.content, "body")}};
  return {{"aps", {{"alert", alert}}},
          {"herald",
           {{"notification_id", job.notification_id},
            {"delivery_id", job.delivery_id},
            {"type", StringField(job.event, "type")},
            {"data", job.data}}}};
}

// The FCM message without its token (the size limit is about this part).
json FcmMessage(const DeliveryJob& job, const JobFacts& f) {
  json data = {{"notification_id", job.notification_id},
               {"delivery_id", job.delivery_id},
               {"type", StringField(job.event, "type")},
               {"data", Dump(job.data)}};  // FCM data values are strings
  json android = {{"priority", Urgent(f) ? "HIGH" : "NORMAL"}, {"ttl", std::to_string(f.ttl_seconds) + "s"}};
  if (!f.collapse_key.empty()) android["collapse_key"] = f.collapse_key;
  return {{"notification", {{"title", StringField(job.content, "title")}, {"body", StringField(job.content, "body")}}},
          {"data", std::move(data)},
          {"android", std::move(android)}};
}

std::string TooLarge(const char* what, size_t size, size_t limit) {
  return std::string(what) + " payload is " + std::to_string(size) + " bytes, more than the provider's " +
         std::to_string(limit) + "; shorten the push template or the event's vars";
}

// One subscription of the job.
struct Target {
  std::string field;  // "contact.push[1]"
  std::string kind;
  std::string id;     // endpoint or token: what the worker removes if it is gone
  std::string label;  // for errors: kind and host or token prefix, never the whole capability URL
  HttpRequest request;
  HttpMulti* multi = nullptr;
  HttpMulti::Call call;
  std::optional<PushOutcome> outcome;  // decided without (or after) a request
};

PushOutcome Fail(SendResult::Kind kind, std::string error) {
  PushOutcome o;
  o.kind = kind;
  o.error = std::move(error);
  return o;
}

PushOutcome Transport(const HttpResponse& r, const PushConfig& c) {
  if (!r.refused.empty()) {
    return Fail(SendResult::Kind::kPermanent,
                "refusing to connect to " + r.refused + ": " + (r.refused_why ? r.refused_why : "non-public") +
                    " address; push endpoints must be public unless " + kInsecureKey + " is true");
  }
  std::string what = ProviderText(r.error, kErrorBodyBytes);
  if (r.rc == CURLE_OPERATION_TIMEDOUT) {
    return Fail(SendResult::Kind::kRetryable, "timeout (channels.push.timeout " + FormatDuration(c.timeout) +
                                                  ", connect_timeout " + FormatDuration(c.connect_timeout) +
                                                  "): " + what);
  }
  return Fail(PermanentHttpError(r.rc) ? SendResult::Kind::kPermanent : SendResult::Kind::kRetryable, what);
}

std::optional<Millis> RetryAfterOf(const HttpResponse& r) {
  std::string v = r.Header("retry-after");
  if (v.empty()) return std::nullopt;
  return ParseRetryAfter(v, std::chrono::system_clock::now());
}

std::string HttpError(long status, const std::string& body) {
  std::string e = "HTTP " + std::to_string(status);
  if (std::string text = Quoted(body); !text.empty()) e += ": " + text;
  return e;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Building blocks

PushOutcome MapWebPushResponse(long status, const std::string& body, std::optional<Millis> retry_after) {
  using K = SendResult::Kind;
  std::string e = HttpError(status, body);
  if (status >= 200 && status <= 299) return Fail(K::kOk, "");
  if (status == 404 || status == 410) return Fail(K::kInvalidContact, e + " (the subscription is gone)");
  if (status == 429 || (status >= 500 && status <= 599)) {
    PushOutcome o = Fail(K::kRetryable, e);
    o.retry_after = retry_after;
    return o;
  }
  if (status == 413) return Fail(K::kPermanent, e + " (payload too large)");
  if (status == 401 || status == 403)
    return Fail(K::kPermanent, e + " (the push service refused our VAPID credentials)");
  if (status >= 300 && status <= 499) return Fail(K::kPermanent, e);
  return Fail(K::kRetryable, e + " (unexpected HTTP status)");
}

PushOutcome MapFcmResponse(long status, const std::string& body, std::optional<Millis> retry_after) {
  using K = SendResult::Kind;
  if (status >= 200 && status <= 299) return Fail(K::kOk, "");
  // {"error": {"code", "message", "status", "details": [{"@type": "...FcmError", "errorCode"}]}}
  json doc = json::parse(body, nullptr, false);
  std::string code, message, state;
  if (doc.is_object() && doc.contains("error") && doc["error"].is_object()) {
    const json& err = doc["error"];
    message = StringField(err, "message");
    state = StringField(err, "status");
    if (err.contains("details") && err["details"].is_array()) {
      for (const json& d : err["details"]) {
        if (std::string c = StringField(d, "errorCode"); !c.empty()) code = c;
      }
    }
  }
  if (code.empty()) code = state;
  std::string e =
      "FCM HTTP " + std::to_string(status) + (code.empty() ? "" : " " + code) +
      (message.empty() ? (code.empty() ? ": " + Quoted(body) : "") : ": " + ProviderText(message, kErrorBodyBytes));
  if (code == "UNREGISTERED" || code == "SENDER_ID_MISMATCH") return Fail(K::kInvalidContact, e);
  if (code == "QUOTA_EXCEEDED" || code == "UNAVAILABLE" || code == "INTERNAL" || status == 429 ||
      (status >= 500 && status <= 599)) {
    PushOutcome o = Fail(K::kRetryable, e);
    o.retry_after = retry_after;
    return o;
  }
  if (status == 401 || code == "UNAUTHENTICATED") {
    // Our access token was refused (revoked, expired early): a new one on the next attempt.
    PushOutcome o = Fail(K::kRetryable, e + " (the access token is renewed)");
    o.renew_credentials = true;
    return o;
  }
  if (status >= 300 && status <= 499) return Fail(K::kPermanent, e);
  return Fail(K::kRetryable, e + " (unexpected HTTP status)");
}

PushOutcome MapApnsResponse(long status, const std::string& body, std::optional<Millis> retry_after) {
  using K = SendResult::Kind;
  if (status == 200) return Fail(K::kOk, "");
  json doc = json::parse(body, nullptr, false);
  std::string reason = doc.is_object() ? StringField(doc, "reason") : "";
  std::string e =
      "APNs HTTP " + std::to_string(status) + ": " + (reason.empty() ? Quoted(body) : ProviderText(reason, 100));
  if (status == 410 || reason == "Unregistered" || reason == "BadDeviceToken") return Fail(K::kInvalidContact, e);
  if (status == 429 || status == 500 || status == 503 || (status >= 500 && status <= 599)) {
    PushOutcome o = Fail(K::kRetryable, e);
    o.retry_after = retry_after;
    return o;
  }
  if (reason == "ExpiredProviderToken") {
    PushOutcome o = Fail(K::kRetryable, e + " (a new provider token is made)");
    o.renew_credentials = true;
    return o;
  }
  if (reason == "InvalidProviderToken") {
    // Key id, team id or key wrong: a new token will not help, the configuration must change.
    return Fail(K::kPermanent, e + " (check channels.push.apns_key_file, apns_key_id, apns_team_id)");
  }
  return Fail(K::kPermanent, e);
}

std::string PushPayload(const DeliveryJob& job) {
  return Dump({{"title", StringField(job.content, "title")},
               {"body", StringField(job.content, "body")},
               {"notification_id", job.notification_id},
               {"delivery_id", job.delivery_id},
               {"type", StringField(job.event, "type")},
               {"data", job.data}});
}

std::string WebPushTopic(const std::string& key) {
  bool fits = !key.empty() && key.size() <= 32 && std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
  return fits ? key : Base64UrlEncode(Sha256(key)).substr(0, 32);
}

std::string ApnsId(const std::string& delivery_id) {
  std::string hex;
  bool engine_form = delivery_id.size() == 34 && delivery_id.rfind("d-", 0) == 0 &&
                     std::all_of(delivery_id.begin() + 2, delivery_id.end(),
                                 [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
  if (engine_form) {
    hex = delivery_id.substr(2);
  } else {
    static const char kHex[] = "0123456789abcdef";
    for (unsigned char b : Sha256(delivery_id).substr(0, 16)) {
      hex += kHex[b >> 4];
      hex += kHex[b & 0xF];
    }
  }
  std::transform(hex.begin(), hex.end(), hex.begin(), [](unsigned char c) { return std::toupper(c); });
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" +
         hex.substr(20, 12);
}

std::string UrlOrigin(const std::string& url) {
  struct UrlDeleter {
    void operator()(CURLU* u) const { curl_url_cleanup(u); }
  };
  std::unique_ptr<CURLU, UrlDeleter> u(curl_url());
  if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return "";
  auto part = [&](CURLUPart p) {
    char* v = nullptr;
    std::string s;
    if (curl_url_get(u.get(), p, &v, 0) == CURLUE_OK && v) s = v;
    curl_free(v);
    return s;
  };
  std::string scheme = part(CURLUPART_SCHEME), host = part(CURLUPART_HOST), port = part(CURLUPART_PORT);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
  std::transform(host.begin(), host.end(), host.begin(), [](unsigned char c) { return std::tolower(c); });
  if (scheme.empty() || host.empty()) return "";
  if ((scheme == "https" && port == "443") || (scheme == "http" && port == "80")) port.clear();
  return scheme + "://" + host + (port.empty() ? "" : ":" + port);
}

Status ValidatePushConfig(const PushConfig& c) {
  if (c.timeout <= Millis::zero()) return Status::Invalid(Key("timeout") + ": must be positive");
  if (c.connect_timeout <= Millis::zero()) return Status::Invalid(Key("connect_timeout") + ": must be positive");
  if (c.ttl < Millis::zero()) return Status::Invalid(Key("ttl") + ": must not be negative");
  if (!c.ca_file.empty() && ::access(c.ca_file.c_str(), R_OK) != 0) {
    return Status::Invalid(Key("ca_file") + ": cannot read " + ProviderText(c.ca_file, 200) + ": " +
                           std::strerror(errno));
  }
  // Web Push
  if (!c.vapid_private_key.empty() || !c.vapid_subject.empty()) {
    if (c.vapid_private_key.empty())
      return Status::Invalid(Key("vapid_private_key") + ": required when vapid_subject is set");
    if (c.vapid_subject.empty()) {
      return Status::Invalid(Key("vapid_subject") +
                             ": required with a VAPID key (mailto:you@example.org or https://...)");
    }
    if (c.vapid_subject.rfind("mailto:", 0) != 0 && c.vapid_subject.rfind("https://", 0) != 0) {
      return Status::Invalid(Key("vapid_subject") + ": \"" + ProviderText(c.vapid_subject, 100) +
                             "\" must be a mailto: or https: URI (RFC 8292 2.1)");
    }
  }
  if (c.vapid_expiry < Millis(60000) || c.vapid_expiry > Millis(86400000)) {
    return Status::Invalid(Key("vapid_expiry") + ": must be between 1m and 24h (RFC 8292 2: at most 24 hours)");
  }
  // FCM
  if (Status s = CheckBaseUrl(c.fcm_url, "fcm_url", c.allow_insecure_endpoints); !s.ok()) return s;
  // APNs
  const bool apns =
      !c.apns_key_file.empty() || !c.apns_key_id.empty() || !c.apns_team_id.empty() || !c.apns_topic.empty();
  if (apns) {
    for (auto [key, value] : {std::pair{"apns_key_file", &c.apns_key_file},
                              {"apns_key_id", &c.apns_key_id},
                              {"apns_team_id", &c.apns_team_id},
                              {"apns_topic", &c.apns_topic}}) {
      if (value->empty()) {
        return Status::Invalid(Key(key) +
                               ": required for APNs (apns_key_file, apns_key_id, apns_team_id and apns_topic "
                               "go together)");
      }
      if (HasControlChars(*value)) return Status::Invalid(Key(key) + ": control characters");
    }
  }
  if (Status s = CheckBaseUrl(c.apns_url, "apns_url", false); !s.ok()) return s;  // HTTP/2 needs TLS here
  static const char* const kPushTypes[] = {"alert", "background", "voip",         "complication", "fileprovider",
                                           "mdm",   "location",   "liveactivity", "pushtotalk"};
  if (std::none_of(std::begin(kPushTypes), std::end(kPushTypes),
                   [&](const char* t) { return c.apns_push_type == t; })) {
    return Status::Invalid(Key("apns_push_type") + ": \"" + ProviderText(c.apns_push_type, 32) +
                           "\" is not an APNs push type (alert, background, voip, ...)");
  }
  if (c.apns_token_refresh < Millis(20 * 60000) || c.apns_token_refresh > Millis(59 * 60000)) {
    return Status::Invalid(Key("apns_token_refresh") +
                           ": must be between 20m and 59m (Apple refuses tokens older than an hour and "
                           "renewals more often than every 20 minutes)");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------

struct PushChannel::Impl {
  PushConfig config;
  const Clock& clock;
  // User-chosen endpoints and configured servers never share a connection: a subscription naming
  // the FCM host of a private deployment must not ride on its unguarded connection.
  HttpMulti endpoints{"herald-push-web", "the push channel"};
  HttpMulti providers{"herald-push-api", "the push channel"};

  // Web Push
  EvpKey vapid_key;
  std::string vapid_public;  // base64url of the uncompressed point: the "k" parameter
  struct Vapid {
    std::string jwt;
    SystemTime issued;
  };
  std::map<std::string, Vapid> vapid_by_origin;

  // FCM
  struct Fcm {
    std::string project_id, client_email, private_key_id, token_uri;
    EvpKey key;
    std::string access_token;
    SystemTime access_expires;
  };
  std::optional<Fcm> fcm;
  std::mutex fcm_mu;  // held across a token exchange, so concurrent sends wait for one

  // APNs
  EvpKey apns_key;
  std::string apns_jwt;
  SystemTime apns_issued;

  mutable std::mutex mu;  // vapid_by_origin, apns_*, counts
  TokenCounts counts;

  Impl(PushConfig c, const Clock& k) : config(std::move(c)), clock(k) {}

  Status LoadKeys();
  bool Has(const std::string& kind) const {
    return (kind == "webpush" && vapid_key) || (kind == "fcm" && fcm) || (kind == "apns" && apns_key);
  }
  std::string VapidJwt(const std::string& origin);
  std::string ApnsJwt(bool renew);
  std::optional<PushOutcome> FcmToken(Steady::time_point deadline, std::string& token);
  void DropFcmToken();

  void PrepareWebPush(Target& t, const json& entry, const std::string& payload, const JobFacts& f);
  void PrepareApns(Target& t, const std::string& payload, const JobFacts& f, const DeliveryJob& job);
  HttpRequest Request(std::string url, Steady::time_point deadline) const {
    HttpRequest r;
    r.url = std::move(url);
    r.timeout = std::chrono::ceil<Millis>(deadline - Steady::now());
    r.connect_timeout = config.connect_timeout;
    r.ca_file = config.ca_file;
    return r;
  }
};

Status PushChannel::Impl::LoadKeys() {
  const PushConfig& c = config;
  if (!c.vapid_private_key.empty()) {
    std::optional<std::string> raw = Base64DecodeLenient(c.vapid_private_key);
    if (raw && raw->size() == 32 && c.vapid_private_key.find('/') == std::string::npos) {
      if (Status s = P256PrivateKeyFromRaw(*raw, vapid_key); !s.ok()) {
        return Status::Invalid(Key("vapid_private_key") + ": " + s.message());
      }
    } else {
      std::string pem;
      if (Status s = ReadFile(c.vapid_private_key, "vapid_private_key", pem); !s.ok()) {
        return Status::Invalid(s.message() + " (give a PEM file or the raw key in base64url)");
      }
      if (Status s = PrivateKeyFromPem(pem, vapid_key); !s.ok()) {
        return Status::Invalid(Key("vapid_private_key") + ": " + ProviderText(c.vapid_private_key, 200) + ": " +
                               s.message());
      }
    }
    if (!IsP256Key(vapid_key.get()))
      return Status::Invalid(Key("vapid_private_key") + ": not a P-256 (prime256v1) key");
    vapid_public = Base64UrlEncode(P256PublicKeyRaw(vapid_key.get()));
  }
  if (!c.fcm_service_account_file.empty()) {
    const char* k = "fcm_service_account_file";
    std::string text;
    if (Status s = ReadFile(c.fcm_service_account_file, k, text); !s.ok()) return s;
    json doc = json::parse(text, nullptr, false);
    if (!doc.is_object())
      return Status::Invalid(Key(k) + ": not a JSON object (download the service account's JSON key)");
    Fcm f;
    f.project_id = StringField(doc, "project_id");
    f.client_email = StringField(doc, "client_email");
    f.private_key_id = StringField(doc, "private_key_id");
    f.token_uri = StringField(doc, "token_uri");
    if (f.token_uri.empty()) f.token_uri = kDefaultTokenUri;
    for (auto [field, value] : {std::pair{"project_id", &f.project_id}, {"client_email", &f.client_email}}) {
      if (value->empty()) return Status::Invalid(Key(k) + ": \"" + field + "\" missing in the service account file");
    }
    if (Status s = CheckBaseUrl(f.token_uri, k, c.allow_insecure_endpoints); !s.ok()) {
      return Status::Invalid(s.message() + " (its token_uri)");
    }
    if (Status s = PrivateKeyFromPem(StringField(doc, "private_key"), f.key); !s.ok()) {
      return Status::Invalid(Key(k) + ": \"private_key\": " + s.message());
    }
    if (!IsRsaKey(f.key.get())) return Status::Invalid(Key(k) + ": \"private_key\" is not an RSA key");
    fcm = std::move(f);
  }
  if (!c.apns_key_file.empty()) {
    std::string pem;
    if (Status s = ReadFile(c.apns_key_file, "apns_key_file", pem); !s.ok()) return s;
    if (Status s = PrivateKeyFromPem(pem, apns_key); !s.ok())
      return Status::Invalid(Key("apns_key_file") + ": " + s.message());
    if (!IsP256Key(apns_key.get()))
      return Status::Invalid(Key("apns_key_file") + ": not a P-256 key (an APNs .p8 key is)");
  }
  return Status::Ok();
}

std::string PushChannel::Impl::VapidJwt(const std::string& origin) {
  const SystemTime now = clock.Now();
  std::lock_guard lock(mu);
  auto it = vapid_by_origin.find(origin);
  // Reused for half its lifetime, so a push service never sees one about to expire.
  if (it != vapid_by_origin.end() && now >= it->second.issued && now - it->second.issued < config.vapid_expiry / 2) {
    return it->second.jwt;
  }
  json claims = {{"aud", origin}, {"exp", UnixSeconds(now + config.vapid_expiry)}, {"sub", config.vapid_subject}};
  std::string jwt = SignJwt({{"typ", "JWT"}}, claims, vapid_key.get());
  if (jwt.empty()) return "";
  ++counts.vapid_jwts;
  if (vapid_by_origin.size() >= 1000) vapid_by_origin.clear();  // a handful of push services in practice
  vapid_by_origin[origin] = {jwt, now};
  return jwt;
}

std::string PushChannel::Impl::ApnsJwt(bool renew) {
  const SystemTime now = clock.Now();
  std::lock_guard lock(mu);
  if (!renew && !apns_jwt.empty() && now >= apns_issued && now - apns_issued < config.apns_token_refresh) {
    return apns_jwt;
  }
  std::string jwt =
      SignJwt({{"kid", config.apns_key_id}}, {{"iss", config.apns_team_id}, {"iat", UnixSeconds(now)}}, apns_key.get());
  if (jwt.empty()) return "";
  ++counts.apns_jwts;
  apns_jwt = jwt;
  apns_issued = now;
  return jwt;
}

void PushChannel::Impl::DropFcmToken() {
  std::lock_guard lock(fcm_mu);
  fcm->access_token.clear();
}

std::optional<PushOutcome> PushChannel::Impl::FcmToken(Steady::time_point deadline, std::string& token) {
  using K = SendResult::Kind;
  std::lock_guard lock(fcm_mu);
  const SystemTime now = clock.Now();
  if (!fcm->access_token.empty() && now < fcm->access_expires) {
    token = fcm->access_token;
    return std::nullopt;
  }
  {
    std::lock_guard c(mu);
    ++counts.fcm_token_requests;
  }
  json header = {{"typ", "JWT"}};
  if (!fcm->private_key_id.empty()) header["kid"] = fcm->private_key_id;
  std::string assertion = SignJwt(header,
                                  {{"iss", fcm->client_email},
                                   {"scope", kFcmScope},
                                   {"aud", fcm->token_uri},
                                   {"iat", UnixSeconds(now)},
                                   {"exp", UnixSeconds(now + std::chrono::hours(1))}},
                                  fcm->key.get());
  if (assertion.empty()) return Fail(K::kRetryable, "FCM: signing the OAuth assertion failed (OpenSSL)");
  HttpRequest r = Request(fcm->token_uri, deadline);
  r.headers = {"Content-Type: application/x-www-form-urlencoded"};
  r.body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=" + assertion;
  HttpResponse resp = providers.Perform(std::move(r));
  if (resp.status == 0) {
    PushOutcome o = Transport(resp, config);
    o.error = "FCM OAuth token exchange: " + o.error;
    return o;
  }
  json doc = json::parse(resp.body, nullptr, false);
  if (resp.status == 200 && doc.is_object() && doc.contains("access_token") && doc["access_token"].is_string()) {
    long long lifetime = doc.value("expires_in", 3600LL);
    if (!doc.contains("expires_in") || !doc["expires_in"].is_number_integer()) lifetime = 3600;
    // Renewed five minutes before it expires (sooner for short-lived tokens): a request under
    // way never carries one that is about to lapse.
    auto margin = std::min<long long>(300, lifetime / 2);
    fcm->access_token = doc["access_token"].get<std::string>();
    fcm->access_expires = now + std::chrono::seconds(lifetime - margin);
    token = fcm->access_token;
    return std::nullopt;
  }
  std::string why = doc.is_object() ? StringField(doc, "error") : "";
  std::string detail = doc.is_object() ? StringField(doc, "error_description") : "";
  std::string e = "FCM OAuth token exchange at " + fcm->token_uri + ": HTTP " + std::to_string(resp.status) + ": " +
                  (why.empty() ? Quoted(resp.body) : ProviderText(why + (detail.empty() ? "" : ": " + detail), 200));
  if (resp.status == 429 || resp.status >= 500) {
    PushOutcome o = Fail(K::kRetryable, e);
    o.retry_after = RetryAfterOf(resp);
    return o;
  }
  // invalid_grant, invalid_client: the service account key is wrong or revoked.
  return Fail(K::kPermanent, e + " (check " + Key("fcm_service_account_file") + ")");
}

void PushChannel::Impl::PrepareWebPush(Target& t, const json& entry, const std::string& payload, const JobFacts& f) {
  using K = SendResult::Kind;
  const std::string endpoint = StringField(entry, "endpoint");
  t.id = endpoint;
  const std::string origin = UrlOrigin(endpoint);
  const bool https = origin.rfind("https://", 0) == 0;
  const bool http = origin.rfind("http://", 0) == 0;
  t.label = t.field + " (webpush " + ProviderText(origin, 100) + ")";
  if (endpoint.empty()) return void(t.outcome = Fail(K::kPermanent, t.field + ".endpoint: missing or not a string"));
  if (!https && !(http && config.allow_insecure_endpoints)) {
    return void(t.outcome =
                    Fail(K::kPermanent, t.field + ".endpoint: must be an https:// URL" +
                                            (http ? std::string(" (http:// only with ") + kInsecureKey + ")" : "")));
  }
  std::optional<std::string> p256dh = Base64DecodeLenient(StringField(entry, "p256dh"));
  std::optional<std::string> auth = Base64DecodeLenient(StringField(entry, "auth"));
  if (!p256dh) return void(t.outcome = Fail(K::kPermanent, t.field + ".p256dh: missing or not base64url"));
  if (!auth) return void(t.outcome = Fail(K::kPermanent, t.field + ".auth: missing or not base64url"));
  std::string body;
  if (Status s = EncryptWebPush(payload, *p256dh, *auth, body); !s.ok()) {
    K kind = s.code() == Status::Code::kInvalid ? K::kPermanent : K::kRetryable;
    return void(t.outcome = Fail(kind, t.field + "." + s.message()));
  }
  std::string jwt = VapidJwt(origin);
  if (jwt.empty()) return void(t.outcome = Fail(K::kRetryable, "VAPID: signing the JWT failed (OpenSSL)"));
  t.request.url = endpoint;
  t.request.body = std::move(body);
  t.request.headers = {"Content-Type: application/octet-stream", "Content-Encoding: aes128gcm",
                       "TTL: " + std::to_string(f.ttl_seconds),
                       std::string("Urgency: ") + (Urgent(f)             ? "high"
                                                   : f.priority == "low" ? "low"
                                                                         : "normal"),
                       "Authorization: vapid t=" + jwt + ", k=" + vapid_public};
  if (!f.collapse_key.empty()) t.request.headers.push_back("Topic: " + WebPushTopic(f.collapse_key));
  t.request.public_only = !config.allow_insecure_endpoints;
  t.multi = &endpoints;
}

void PushChannel::Impl::PrepareApns(Target& t, const std::string& payload, const JobFacts& f, const DeliveryJob& job) {
  using K = SendResult::Kind;
  if (t.id.empty() ||
      !std::all_of(t.id.begin(), t.id.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); })) {
    return void(t.outcome = Fail(K::kPermanent, t.field + ".token: an APNs device token is hexadecimal"));
  }
  std::string jwt = ApnsJwt(false);
  if (jwt.empty()) return void(t.outcome = Fail(K::kRetryable, "APNs: signing the provider token failed (OpenSSL)"));
  t.request.url = TrimSlash(config.apns_url) + "/3/device/" + t.id;
  t.request.body = payload;
  t.request.headers = {
      "Content-Type: application/json", "authorization: bearer " + jwt, "apns-topic: " + HeaderValue(config.apns_topic),
      "apns-push-type: " + config.apns_push_type, std::string("apns-priority: ") + (Urgent(f) ? "10" : "5"),
      // 0: deliver now or never (a time already past would say the same less clearly)
      "apns-expiration: " + (f.ttl_seconds == 0 ? std::string("0") : std::to_string(UnixSeconds(f.expires_at))),
      "apns-id: " + ApnsId(job.delivery_id)};
  if (!f.collapse_key.empty()) {
    std::string id = HeaderValue(f.collapse_key);
    if (id.size() > 64) id = Base64UrlEncode(Sha256(id));  // apns-collapse-id: at most 64 bytes
    t.request.headers.push_back("apns-collapse-id: " + id);
  }
  t.multi = &providers;
}

PushChannel::PushChannel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PushChannel::~PushChannel() = default;

std::vector<std::string> PushChannel::Providers() const {
  std::vector<std::string> out;
  for (const char* k : {"webpush", "fcm", "apns"}) {
    if (impl_->Has(k)) out.push_back(k);
  }
  return out;
}

PushChannel::TokenCounts PushChannel::Tokens() const {
  std::lock_guard lock(impl_->mu);
  return impl_->counts;
}

long PushChannel::ProviderConnections() const { return impl_->providers.ConnectionsOpened(); }

Status CreatePushChannel(PushConfig config, const Clock& clock, std::unique_ptr<PushChannel>& out) {
  if (Status s = ValidatePushConfig(config); !s.ok()) return s;
  if (Status s = CurlGlobalInit(); !s.ok()) return s;
  auto impl = std::make_unique<PushChannel::Impl>(std::move(config), clock);
  if (Status s = impl->LoadKeys(); !s.ok()) return s;
  out.reset(new PushChannel(std::move(impl)));
  return Status::Ok();
}

SendResult PushChannel::Send(const DeliveryJob& job) {
  using K = SendResult::Kind;
  Impl& m = *impl_;
  const Steady::time_point deadline = Steady::now() + m.config.timeout;
  const char* kExpected = " (the push channel needs {\"push\": [{\"kind\": \"webpush\"|\"fcm\"|\"apns\", ...}]})";
  const json* list = job.contact.is_object() && job.contact.contains("push") ? &job.contact["push"] : nullptr;
  if (!list || !list->is_array())
    return SendResult::Permanent(std::string("contact.push: missing or not an array") + kExpected);
  if (list->empty()) return SendResult::Permanent("contact.push: the user has no push subscriptions");

  const JobFacts facts = Facts(job, m.config, m.clock.Now());
  const std::string payload = PushPayload(job);
  const std::string apns_payload = Dump(ApnsPayload(job));
  json fcm_message = FcmMessage(job, facts);
  const size_t fcm_size = Dump(fcm_message).size();

  std::vector<Target> targets(list->size());
  bool any_fcm = false;
  for (size_t i = 0; i < list->size(); ++i) {
    const json& entry = (*list)[i];
    Target& t = targets[i];
    t.field = "contact.push[" + std::to_string(i) + "]";
    t.kind = StringField(entry, "kind");
    t.id = StringField(entry, "token");
    t.label = t.field + " (" + (t.kind.empty() ? "?" : ProviderText(t.kind, 16)) +
              (t.id.empty() ? "" : " " + ProviderText(t.id.substr(0, 8), 8) + "...") + ")";
    t.request = m.Request("", deadline);
    if (t.kind != "webpush" && t.kind != "fcm" && t.kind != "apns") {
      t.outcome =
          Fail(K::kPermanent, t.field + ".kind: \"" + ProviderText(t.kind, 32) + "\" is not webpush, fcm or apns");
    } else if (!m.Has(t.kind)) {
      t.outcome = Fail(K::kPermanent, "push provider " + t.kind + " is not configured (" +
                                          (t.kind == "webpush" ? Key("vapid_private_key")
                                           : t.kind == "fcm"   ? Key("fcm_service_account_file")
                                                               : Key("apns_key_file")) +
                                          ")");
    } else if (t.kind == "webpush") {
      if (payload.size() > kWebPushMaxPlaintext)
        t.outcome = Fail(K::kPermanent, TooLarge("Web Push", payload.size(), kWebPushMaxPlaintext));
      else
        m.PrepareWebPush(t, entry, payload, facts);
    } else if (t.kind == "apns") {
      if (apns_payload.size() > kPayloadLimit)
        t.outcome = Fail(K::kPermanent, TooLarge("APNs", apns_payload.size(), kPayloadLimit));
      else
        m.PrepareApns(t, apns_payload, facts, job);
    } else if (t.id.empty()) {
      t.outcome = Fail(K::kPermanent, t.field + ".token: missing or not a string");
    } else if (fcm_size > kPayloadLimit) {
      t.outcome = Fail(K::kPermanent, TooLarge("FCM", fcm_size, kPayloadLimit));
    } else {
      any_fcm = true;
    }
    if (!t.outcome && t.multi) t.call = t.multi->Start(t.request);
  }
  if (any_fcm) {
    std::string token;
    std::optional<PushOutcome> problem = m.FcmToken(deadline, token);
    const std::string url = TrimSlash(m.config.fcm_url) + "/v1/projects/" + m.fcm->project_id + "/messages:send";
    for (Target& t : targets) {
      if (t.kind != "fcm" || t.outcome) continue;
      if (problem) {
        t.outcome = problem;
        continue;
      }
      fcm_message["token"] = t.id;
      t.request.url = url;
      t.request.timeout = std::chrono::ceil<Millis>(deadline - Steady::now());
      t.request.body = Dump({{"message", fcm_message}});
      t.request.headers = {"Content-Type: application/json; charset=UTF-8", "Authorization: Bearer " + token};
      t.multi = &m.providers;
      t.call = t.multi->Start(t.request);
    }
  }

  SendResult result;
  std::string errors;
  bool any_ok = false, any_retry = false, all_gone = true;
  for (Target& t : targets) {
    if (!t.outcome) {
      HttpResponse r = t.multi->Wait(t.call);
      if (r.status == 0) {
        t.outcome = Transport(r, m.config);
      } else if (t.kind == "webpush") {
        t.outcome = MapWebPushResponse(r.status, r.body, RetryAfterOf(r));
      } else if (t.kind == "fcm") {
        t.outcome = MapFcmResponse(r.status, r.body, RetryAfterOf(r));
        if (t.outcome->renew_credentials) m.DropFcmToken();
      } else if (r.http_version != CURL_HTTP_VERSION_2_0) {
        t.outcome = Fail(K::kPermanent, "APNs answered HTTP " + std::to_string(r.status) +
                                            " over HTTP/1; APNs speaks HTTP/2 only (is " + Key("apns_url") +
                                            " an APNs server?)");
      } else {
        t.outcome = MapApnsResponse(r.status, r.body, RetryAfterOf(r));
        if (t.outcome->renew_credentials) m.ApnsJwt(true);
      }
    }
    const PushOutcome& o = *t.outcome;
    any_ok |= o.kind == K::kOk;
    any_retry |= o.kind == K::kRetryable;
    all_gone &= o.kind == K::kInvalidContact;
    if (o.kind == K::kInvalidContact && !t.id.empty()) result.invalid_contacts.push_back(t.id);
    if (o.kind == K::kRetryable && o.retry_after && (!result.retry_after || *o.retry_after > *result.retry_after)) {
      result.retry_after = o.retry_after;
    }
    if (o.kind != K::kOk) errors += (errors.empty() ? "" : "; ") + t.label + ": " + o.error;
  }
  result.error = errors;
  result.kind = any_ok ? K::kOk : any_retry ? K::kRetryable : all_gone ? K::kInvalidContact : K::kPermanent;
  if (result.kind != K::kRetryable) result.retry_after.reset();
  return result;
}

}  // namespace herald
