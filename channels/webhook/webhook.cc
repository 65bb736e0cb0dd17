#include "channels/webhook/webhook.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "channels/curl_slist.h"
#include "channels/curl_support.h"
#include "core/json_writer.h"
#include "core/utf8.h"

namespace herald {
namespace {

using nlohmann::json;
using Steady = std::chrono::steady_clock;

constexpr const char* kPrivateKey = "channels.webhook.allow_private_targets";

// Compact JSON of a value; invalid UTF-8 becomes U+FFFD instead of an exception.
std::string Compact(const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); }

// ---------------------------------------------------------------------------------------------
// Addresses

// getaddrinfo has no timeout of its own, and Send must not block longer than its budget: it
// runs on a helper thread that finishes in the background if we stop waiting for it.
struct Resolution {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  int rc = 0;
  std::vector<Address> addresses;
};

Status Resolve(const std::string& host, Millis budget, std::vector<Address>& out) {
  auto state = std::make_shared<Resolution>();
  try {
    std::thread([state, host] {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* list = nullptr;
      int rc = getaddrinfo(host.c_str(), nullptr, &hints, &list);
      std::vector<Address> found;
      for (addrinfo* ai = list; rc == 0 && ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        Address a;
        std::memcpy(&a.storage, ai->ai_addr, std::min<size_t>(ai->ai_addrlen, sizeof a.storage));
        a.text = AddressText(a.sa());
        bool seen = std::any_of(found.begin(), found.end(), [&](const Address& b) { return b.text == a.text; });
        if (!seen) found.push_back(std::move(a));
      }
      if (list) freeaddrinfo(list);
      std::lock_guard lock(state->mu);
      state->rc = rc;
      state->addresses = std::move(found);
      state->done = true;
      state->cv.notify_all();
    }).detach();
  } catch (const std::system_error& e) {
    return Status::Unavailable("cannot resolve " + host + ": no thread for name resolution (" + e.what() + ")");
  }
  std::unique_lock lock(state->mu);
  if (!state->cv.wait_for(lock, budget, [&] { return state->done; })) {
    return Status::Timeout("resolving " + host + " timed out after " + FormatDuration(budget));
  }
  if (state->rc != 0) return Status::Unavailable("cannot resolve " + host + ": " + gai_strerror(state->rc));
  if (state->addresses.empty()) return Status::Unavailable("cannot resolve " + host + ": no IPv4 or IPv6 address");
  out = std::move(state->addresses);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Target URL

struct Target {
  std::string url;   // normalised, host in punycode
  std::string host;  // as curl resolves it: punycode, IPv6 without brackets
  std::string port;
  std::optional<Address> literal;  // the host is a numeric address
};

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

// Empty on success, else what is wrong with the contact.
std::string ParseTarget(const json& contact, Target& out) {
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
  std::optional<std::string> port = UrlPart(u.get(), CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if (!port || !normal) return "contact.url: cannot normalise the URL";
  out.url = *normal;
  out.port = *port;
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

std::string Refusal(const std::string& host, const Address& a, const char* why) {
  std::string where = host == a.text ? a.text : host + " (resolves to " + a.text + ")";
  return "refusing to deliver to " + where + ": " + why +
         " address; private targets are not allowed unless " + kPrivateKey + " is true";
}

// One easy handle per thread (see ThreadCurl); in production there is one webhook channel per
// process.
struct WebhookThread {
  ThreadCurl handle;
  std::string pinned;  // "host:port" this handle pinned last; the next request removes it
};
thread_local WebhookThread t_handle;

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
  std::string out;
  JsonWriter w(out);
  w.Open()
      .Json("delivery_id", Compact(job.delivery_id))
      .Json("notification_id", Compact(job.notification_id))
      .Json("user_id", Compact(job.user_id))
      .Json("event", Compact(job.event))
      .Json("content", Compact(job.content))
      .Json("data", Compact(job.data))
      .Int("attempt", job.attempt)
      .Close();
  return out;
}

std::string HmacSha256Hex(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  static const char kEmpty = 0;  // OpenSSL wants a non-null key even when it is empty
  const void* k = key.empty() ? &kEmpty : key.data();
  if (!HMAC(EVP_sha256(), k, static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
            data.size(), mac, &len)) {
    return "";
  }
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    hex += kHex[mac[i] >> 4];
    hex += kHex[mac[i] & 0xF];
  }
  return hex;
}

WebhookChannel::WebhookChannel(WebhookConfig config)
    : config_(std::move(config)), usable_(ValidateWebhookConfig(config_)), id_(NextCurlOwner()) {
  if (Status s = CurlGlobalInit(); usable_.ok() && !s.ok()) usable_ = s;
}

SendResult WebhookChannel::Send(const DeliveryJob& job) {
  const Steady::time_point start = Steady::now();
  const Steady::time_point deadline = start + config_.timeout;
  if (!usable_.ok()) return UnusableChannel("webhook", usable_);

  Target target;
  if (std::string problem = ParseTarget(job.contact, target); !problem.empty()) {
    return SendResult::Permanent(problem);
  }

  // The SSRF guard: every address must be public, and curl may only connect to those addresses.
  std::string pin_key = target.host + ":" + target.port;
  std::string pin;  // CURLOPT_RESOLVE entry "host:port:addr,addr"
  if (!config_.allow_private_targets) {
    if (target.literal) {
      if (const char* why = NonPublicAddressReason(target.literal->sa())) {
        return SendResult::Permanent(Refusal(target.host, *target.literal, why));
      }
    } else {
      std::vector<Address> addresses;
      Millis budget = std::min(config_.connect_timeout, config_.timeout);
      if (Status s = Resolve(target.host, budget, addresses); !s.ok()) {
        // DNS trouble is usually passing, and attempts are bounded: retry.
        return SendResult::Retryable(s.message());
      }
      for (const Address& a : addresses) {
        if (const char* why = NonPublicAddressReason(a.sa())) {
          return SendResult::Permanent(Refusal(target.host, a, why));
        }
      }
      pin = pin_key + ":";
      for (size_t i = 0; i < addresses.size(); ++i) {
        const Address& a = addresses[i];
        if (i) pin += ',';
        pin += a.storage.ss_family == AF_INET6 ? "[" + a.text + "]" : a.text;
      }
    }
  }

  const std::string body = WebhookBody(job);
  const std::string signature = HmacSha256Hex(config_.secret, body);
  if (signature.empty()) return SendResult::Retryable("webhook channel: HMAC-SHA256 signing failed (OpenSSL)");

  std::string event_type;
  if (job.event.is_object()) {
    auto t = job.event.find("type");
    if (t != job.event.end() && t->is_string()) event_type = HeaderValue(t->get_ref<const std::string&>());
  }
  const std::string delivery = HeaderValue(job.delivery_id);

  CurlSlist headers;
  CurlSlist resolve;
  bool lists_ok = Append(headers, "Content-Type: application/json") &&
                  Append(headers, "X-Herald-Signature: sha256=" + signature) &&
                  Append(headers, "Idempotency-Key: " + delivery) && Append(headers, "X-Herald-Delivery: " + delivery) &&
                  // curl would wait up to a second for "100 Continue" before sending larger bodies.
                  Append(headers, "Expect:");
  // (An empty "Name:" line would tell curl to remove the header, so none without a type.)
  if (lists_ok && !event_type.empty()) lists_ok = Append(headers, "X-Herald-Event-Type: " + event_type);
  // Drop the previous request's pin so the handle's DNS cache holds one pinned entry at most.
  if (lists_ok && !t_handle.pinned.empty() && t_handle.pinned != pin_key) lists_ok = Append(resolve, "-" + t_handle.pinned);
  if (lists_ok && !pin.empty()) lists_ok = Append(resolve, pin);
  if (!lists_ok) return SendResult::Retryable("webhook channel: out of memory building the request");

  auto remaining = std::chrono::ceil<Millis>(deadline - Steady::now());
  if (remaining <= Millis::zero()) {
    return SendResult::Retryable("timed out before connecting (channels.webhook.timeout " +
                                 FormatDuration(config_.timeout) + ")");
  }
  auto connect_budget = std::min(remaining, config_.connect_timeout - std::chrono::ceil<Millis>(Steady::now() - start));
  connect_budget = std::max(connect_budget, Millis(1));

  bool fresh = false;
  CURL* curl = ThreadHandle(t_handle.handle, id_, &fresh);
  if (fresh) t_handle.pinned.clear();
  if (!curl) return SendResult::Retryable("webhook channel: cannot create a curl handle");

  char errbuf[CURL_ERROR_SIZE] = "";
  std::string snippet;
  SocketGuard guard;
  guard.enforce = !config_.allow_private_targets;

  curl_easy_setopt(curl, CURLOPT_URL, target.url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // several threads; signals would hit any of them
  // The address checks are about the target itself: a proxy from the environment would bypass them.
  curl_easy_setopt(curl, CURLOPT_PROXY, "");
  // A redirect could lead anywhere, private addresses included; receivers must register the final URL.
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_POST, 1L);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl, CURLOPT_USERAGENT, config_.user_agent.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(remaining.count()));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect_budget.count()));
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, KeepSnippet);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &snippet);
  curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, OpenSocket);
  curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, &guard);
  if (resolve) curl_easy_setopt(curl, CURLOPT_RESOLVE, resolve.get());

  CURLcode rc = curl_easy_perform(curl);
  t_handle.pinned = pin.empty() ? "" : pin_key;
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  std::optional<std::string> retry_after_header = ResponseHeader(curl, "Retry-After");
  std::optional<std::string> location = ResponseHeader(curl, "Location");
  // Nothing may point at this call's stack or lists once it returns.
  curl_easy_reset(curl);

  if (!guard.refused.empty()) {
    Address a;
    a.text = guard.refused;
    return SendResult::Permanent(Refusal(target.host, a, guard.why));
  }
  // The status line is the provider's answer; a failure while reading the rest does not change it.
  if (rc != CURLE_OK && status == 0) {
    std::string what = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      return SendResult::Retryable("timeout (channels.webhook.timeout " + FormatDuration(config_.timeout) +
                                   ", connect_timeout " + FormatDuration(config_.connect_timeout) + "): " + what);
    }
    if (PermanentHttpError(rc)) return SendResult::Permanent(what);
    return SendResult::Retryable(what);
  }

  std::string error = "HTTP " + std::to_string(status);
  if (std::string text = ProviderText(snippet, kErrorBodyBytes); !text.empty()) error += ": " + text;
  if (status >= 200 && status <= 299) return SendResult::Ok();
  if (status >= 300 && status <= 399) {
    std::string to = location ? " (Location: " + ProviderText(*location, kErrorBodyBytes) + ")" : "";
    return SendResult::Permanent("HTTP " + std::to_string(status) +
                                 ": redirects are not followed; register the final URL" + to);
  }
  if (status == 408 || status == 429 || (status >= 500 && status <= 599)) {
    std::optional<Millis> after;
    if (retry_after_header) after = ParseRetryAfter(*retry_after_header, std::chrono::system_clock::now());
    return SendResult::Retryable(error, after);
  }
  // The receiver says the endpoint is gone for good (channel.h: removed from the preferences).
  if (status == 410) return SendResult::InvalidContact(error);
  if (status >= 400 && status <= 499) return SendResult::Permanent(error);
  return SendResult::Retryable(error + " (unexpected HTTP status)");
}

}  // namespace herald
