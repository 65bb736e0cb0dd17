#include "channels/webhook/webhook.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>

#include <algorithm>
#include <cctype>
#include <memory>

#include "channels/curl_support.h"
#include "core/json_writer.h"
#include "core/utf8.h"

namespace herald {
namespace {

using nlohmann::json;

constexpr const char* kPrivateKey = "channels.webhook.allow_private_targets";

// Compact JSON of a value; invalid UTF-8 becomes U+FFFD instead of an exception.
std::string Compact(const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); }

// ---------------------------------------------------------------------------------------------
// Target URL

struct UrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};

std::optional<std::string> UrlPart(CURLU* u, CURLUPart part, unsigned flags) {
  char* p = nullptr;
  CURLUcode rc = curl_url_get(u, part, &p, flags);
  // libcurl 7.88 can fill `p` and still fail (CURLU_PUNYCODE): free it either way.
  std::optional<std::string> s;
  if (rc == CURLUE_OK && p) s = p;
  curl_free(p);
  return s;
}

}  // namespace

std::string ParseWebhookTarget(const json& contact, WebhookTarget& out) {
  // (A std::string, not a const char*: GCC 12 warns falsely (-Warray-bounds) about string +
  // literal once this is inlined.)
  const std::string kExpected = " (the webhook channel needs {\"url\": \"https://...\"})";
  if (!contact.is_object()) return "contact: not an object" + kExpected;
  auto it = contact.find("url");
  if (it == contact.end() || !it->is_string()) return "contact.url: missing or not a string" + kExpected;
  const std::string& url = it->get_ref<const std::string&>();
  if (url.empty()) return "contact.url: empty" + kExpected;

  std::unique_ptr<CURLU, UrlDeleter> u(curl_url());
  if (!u) return "contact.url: out of memory parsing the URL";
  if (CURLUcode rc = curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0); rc != CURLUE_OK) {
    return std::string("contact.url: not a valid URL (") + curl_url_strerror(rc) + ")";
  }
  std::string scheme = UrlPart(u.get(), CURLUPART_SCHEME, 0).value_or("");
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
  if (scheme != "http" && scheme != "https") {
    return "contact.url: scheme \"" + ProviderText(scheme, 32) + "\" is not allowed; use http:// or https://";
  }
  // Punycode, because that is the name curl resolves: the pinned entry must match it.
  std::optional<std::string> host = UrlPart(u.get(), CURLUPART_HOST, CURLU_PUNYCODE);
  std::optional<std::string> normal = UrlPart(u.get(), CURLUPART_URL, CURLU_PUNYCODE);
  if (!host || !normal) {
    // libcurl 7.88 cannot convert to punycode in a process without a UTF-8 locale (curl issue
    // 10984), and would fail the same way resolving the name itself. ASCII needs no conversion.
    host = UrlPart(u.get(), CURLUPART_HOST, 0);
    normal = UrlPart(u.get(), CURLUPART_URL, 0);
    if (host && std::any_of(host->begin(), host->end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
      return "contact.url: the internationalised host name \"" + ProviderText(*host, 128) +
             "\" cannot be converted to punycode here; register the URL with its xn-- form";
    }
  }
  if (!host || host->empty()) return "contact.url: no host name";
  if (!normal) return "contact.url: cannot normalise the URL";
  out.url = *normal;
  out.host = *host;
  if (out.host.size() >= 2 && out.host.front() == '[' && out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
    out.literal = ParseNumericAddress(out.host);
    if (!out.literal) return "contact.url: bad IPv6 address " + ProviderText(out.host, 64);
  } else {
    out.literal = ParseNumericAddress(out.host);
  }
  return "";
}

WebhookTargetCache::WebhookTargetCache(size_t capacity) : capacity_(std::max<size_t>(1, capacity)) {}

std::string WebhookTargetCache::Get(const json& contact, WebhookTarget& out) {
  const std::string* url = nullptr;
  if (contact.is_object()) {
    auto it = contact.find("url");
    if (it != contact.end() && it->is_string()) url = &it->get_ref<const std::string&>();
  }
  if (url) {
    std::lock_guard lock(mu_);
    if (auto hit = targets_.find(*url); hit != targets_.end()) {
      out = hit->second;
      return "";
    }
  }
  std::string problem = ParseWebhookTarget(contact, out);
  if (problem.empty() && url) {  // (a bad URL is not kept: it costs its parse each time, and is rare)
    std::lock_guard lock(mu_);
    if (targets_.size() >= capacity_) targets_.clear();
    targets_.emplace(*url, out);
  }
  return problem;
}

size_t WebhookTargetCache::Size() const {
  std::lock_guard lock(mu_);
  return targets_.size();
}

namespace {

std::string Refusal(const std::string& host, const Address& a, const char* why) {
  std::string where = host == a.text ? a.text : host + " (resolves to " + a.text + ")";
  return "refusing to deliver to " + where + ": " + why +
         " address; private targets are not allowed unless " + kPrivateKey + " is true";
}

}  // namespace

// -----------------------------------------------------------------------------------------------

Status ValidateWebhookConfig(const WebhookConfig& c) {
  if (c.secret.empty()) return Status::Invalid("channels.webhook.secret: required");
  if (c.timeout <= Millis::zero()) return Status::Invalid("channels.webhook.timeout: must be positive");
  if (c.connect_timeout <= Millis::zero()) return Status::Invalid("channels.webhook.connect_timeout: must be positive");
  if (HasControlChars(c.user_agent) || FindInvalidUtf8(c.user_agent) != std::string_view::npos) {
    return Status::Invalid("channels.webhook.user_agent: must be valid UTF-8 without control characters");
  }
  return Status::Ok();
}

std::string WebhookBody(const DeliveryJob& job) {
  // The job's own text of a member when Parse kept it (the same value, already compact), else the
  // parsed value written out.
  std::string scratch[3];
  auto text = [&](const std::string& kept, const json& value, std::string& spare) -> std::string_view {
    if (!kept.empty()) return kept;
    spare = Compact(value);
    return spare;
  };
  std::string out;
  out.reserve(job.event_text.size() + job.content_text.size() + job.data_text.size() + 256);
  JsonWriter w(out);
  w.Open()
      .Json("delivery_id", Compact(job.delivery_id))
      .Json("notification_id", Compact(job.notification_id))
      .Json("user_id", Compact(job.user_id))
      .Json("event", text(job.event_text, job.event, scratch[0]))
      .Json("content", text(job.content_text, job.content, scratch[1]))
      .Json("data", text(job.data_text, job.data, scratch[2]))
      .Int("attempt", job.attempt)
      .Close();
  return out;
}

std::string HmacSha256Hex(std::string_view key, std::string_view data) {
  // HMAC is fetched from OpenSSL's provider once, and each thread keeps a context with the last key
  // it used (in practice the one secret): HMAC() looked the algorithm up again under a lock and
  // set the key up on every call, three times the cost of the MAC of a webhook body.
  static EVP_MAC* const hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  struct Keyed {
    struct Free {
      void operator()(EVP_MAC_CTX* c) const { EVP_MAC_CTX_free(c); }
    };
    std::unique_ptr<EVP_MAC_CTX, Free> ctx;
    std::string key;
  };
  thread_local Keyed keyed;
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t len = 0;
  bool ok = false;
  if (hmac) {
    if (!keyed.ctx || keyed.key != key) {
      keyed.ctx.reset(EVP_MAC_CTX_new(hmac));
      char digest[] = "SHA256";
      const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                                   OSSL_PARAM_construct_end()};
      static const unsigned char kEmpty = 0;  // OpenSSL wants a non-null key even when it is empty
      const unsigned char* k = key.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(key.data());
      if (keyed.ctx && EVP_MAC_init(keyed.ctx.get(), k, key.size(), params) == 1) {
        keyed.key = key;
      } else {
        keyed.ctx.reset();
      }
      ok = keyed.ctx != nullptr;
    } else {
      ok = EVP_MAC_init(keyed.ctx.get(), nullptr, 0, nullptr) == 1;  // the same key again
    }
    ok = ok && EVP_MAC_update(keyed.ctx.get(), reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1 &&
         EVP_MAC_final(keyed.ctx.get(), mac, &len, sizeof mac) == 1;
    if (!ok) keyed.ctx.reset();
  }
  if (!ok) return "";
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * len);
  for (size_t i = 0; i < len; ++i) {
    hex += kHex[mac[i] >> 4];
    hex += kHex[mac[i] & 0xF];
  }
  return hex;
}

WebhookChannel::WebhookChannel(WebhookConfig config)
    : config_(std::move(config)), usable_(ValidateWebhookConfig(config_)), multi_("w:webhook", "the webhook channel") {
  if (Status s = CurlGlobalInit(); usable_.ok() && !s.ok()) usable_ = s;
}

SendResult WebhookChannel::Send(const DeliveryJob& job) {
  HttpRequest request;
  std::string host;
  if (std::optional<SendResult> early = Prepare(job, request, host)) return *early;
  return Outcome(host, multi_.Perform(std::move(request)));
}

void WebhookChannel::SendAsync(const DeliveryJob& job, SendDone done) {
  HttpRequest request;
  std::string host;
  if (std::optional<SendResult> early = Prepare(job, request, host)) return done(std::move(*early));
  multi_.Start(std::move(request), [this, host = std::move(host), done = std::move(done)](HttpResponse& r) {
    done(Outcome(host, r));
  });
}

std::optional<SendResult> WebhookChannel::Prepare(const DeliveryJob& job, HttpRequest& q, std::string& host) const {
  if (!usable_.ok()) return UnusableChannel("webhook", usable_);

  WebhookTarget target;
  if (std::string problem = targets_.Get(job.contact, target); !problem.empty()) {
    return SendResult::Permanent(problem);
  }
  // The SSRF guard: a numeric host is checked here; every address a name leads to is checked as
  // libcurl opens the socket (HttpRequest::public_only).
  if (!config_.allow_private_targets && target.literal) {
    if (const char* why = NonPublicAddressReason(target.literal->sa())) {
      return SendResult::Permanent(Refusal(target.host, *target.literal, why));
    }
  }

  q.body = WebhookBody(job);
  const std::string signature = HmacSha256Hex(config_.secret, q.body);
  if (signature.empty()) return SendResult::Retryable("webhook channel: HMAC-SHA256 signing failed (OpenSSL)");
  const std::string delivery = HeaderValue(job.delivery_id);
  q.headers = {"Content-Type: application/json", "X-Herald-Signature: sha256=" + signature,
               "Idempotency-Key: " + delivery, "X-Herald-Delivery: " + delivery};
  // (An empty "Name:" line would tell curl to remove the header, so none without a type.)
  if (job.event.is_object()) {
    auto t = job.event.find("type");
    if (t != job.event.end() && t->is_string()) {
      if (std::string type = HeaderValue(t->get_ref<const std::string&>()); !type.empty()) {
        q.headers.push_back("X-Herald-Event-Type: " + type);
      }
    }
  }
  q.url = std::move(target.url);
  q.timeout = config_.timeout;
  q.connect_timeout = config_.connect_timeout;
  q.public_only = !config_.allow_private_targets;
  q.user_agent = config_.user_agent;
  q.max_body = kErrorBodyBytes + 1;  // one byte past the limit tells ProviderText the body was cut
  host = std::move(target.host);
  return std::nullopt;
}

SendResult WebhookChannel::Outcome(const std::string& host, const HttpResponse& r) const {
  // A refused address with an answer after it: libcurl went on to a public address of the name.
  if (!r.refused.empty() && r.status == 0) {
    Address a;
    a.text = r.refused;
    return SendResult::Permanent(Refusal(host, a, r.refused_why ? r.refused_why : "non-public"));
  }
  // The status line is the provider's answer; a failure while reading the rest does not change it.
  if (r.rc != CURLE_OK && r.status == 0) {
    if (r.rc == CURLE_OPERATION_TIMEDOUT) {
      return SendResult::Retryable("timeout (channels.webhook.timeout " + FormatDuration(config_.timeout) +
                                   ", connect_timeout " + FormatDuration(config_.connect_timeout) + "): " + r.error);
    }
    if (PermanentHttpError(r.rc)) return SendResult::Permanent(r.error);
    return SendResult::Retryable(r.error);
  }

  const long status = r.status;
  std::string error = "HTTP " + std::to_string(status);
  if (std::string text = ProviderText(r.body, kErrorBodyBytes); !text.empty()) error += ": " + text;
  if (status >= 200 && status <= 299) return SendResult::Ok();
  if (status >= 300 && status <= 399) {
    const std::string location = r.Header("location");
    std::string to = location.empty() ? "" : " (Location: " + ProviderText(location, kErrorBodyBytes) + ")";
    return SendResult::Permanent("HTTP " + std::to_string(status) +
                                 ": redirects are not followed; register the final URL" + to);
  }
  if (status == 408 || status == 429 || (status >= 500 && status <= 599)) {
    std::optional<Millis> after;
    if (const std::string value = r.Header("retry-after"); !value.empty()) {
      after = ParseRetryAfter(value, std::chrono::system_clock::now());
    }
    return SendResult::Retryable(error, after);
  }
  // The receiver says the endpoint is gone for good (channel.h: removed from the preferences).
  if (status == 410) return SendResult::InvalidContact(error);
  if (status >= 400 && status <= 499) return SendResult::Permanent(error);
  return SendResult::Retryable(error + " (unexpected HTTP status)");
}

}  // namespace herald
