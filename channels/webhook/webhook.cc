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

#include "core/json_writer.h"
#include "channels/curl_slist.h"
#include "core/utf8.h"

namespace herald {
namespace {

using nlohmann::json;
using Steady = std::chrono::steady_clock;

constexpr size_t kErrorBodyBytes = 200;  // of a refusing provider's response, kept in the error
constexpr const char* kPrivateKey = "channels.webhook.allow_private_targets";

// ---------------------------------------------------------------------------------------------
// Text from providers and jobs (ProviderText is in core/utf8.h)

// A header value from job data: control characters (CR, LF above all) would let a job inject
// headers, so they are dropped. Ids are deterministic, so a repeat sends the same value.
std::string HeaderValue(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7F) out += c;
  }
  return out;
}

// Compact JSON of a value; invalid UTF-8 becomes U+FFFD instead of an exception.
std::string Compact(const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); }

// ---------------------------------------------------------------------------------------------
// Addresses

struct Ipv4Range {
  uint32_t net;
  int bits;
  const char* why;
};

constexpr Ipv4Range kBlockedIpv4[] = {
    {0x00000000, 8, "unspecified (0.0.0.0/8)"},
    {0x0A000000, 8, "private (10.0.0.0/8)"},
    {0x64400000, 10, "shared address space, carrier-grade NAT (100.64.0.0/10)"},
    {0x7F000000, 8, "loopback (127.0.0.0/8)"},
    {0xA9FE0000, 16, "link-local (169.254.0.0/16)"},
    {0xAC100000, 12, "private (172.16.0.0/12)"},
    {0xC0000000, 24, "IETF protocol assignments (192.0.0.0/24)"},
    {0xC0A80000, 16, "private (192.168.0.0/16)"},
    {0xC6120000, 15, "benchmarking (198.18.0.0/15)"},
    {0xE0000000, 4, "multicast (224.0.0.0/4)"},
    {0xF0000000, 4, "reserved or broadcast (240.0.0.0/4)"},
};

// `a` in host byte order.
const char* Ipv4Reason(uint32_t a) {
  for (const Ipv4Range& r : kBlockedIpv4) {
    uint32_t mask = ~uint32_t{0} << (32 - r.bits);
    if ((a & mask) == r.net) return r.why;
  }
  return nullptr;
}

uint32_t Ipv4At(const uint8_t* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

bool AllZero(const uint8_t* b, size_t n) {
  return std::all_of(b, b + n, [](uint8_t x) { return x == 0; });
}

const char* Ipv6Reason(const uint8_t* b) {
  // IPv4-mapped: the kernel connects to the IPv4 address, so judge that.
  if (AllZero(b, 10) && b[10] == 0xFF && b[11] == 0xFF) return Ipv4Reason(Ipv4At(b + 12));
  if (AllZero(b, 16)) return "unspecified (::)";
  if (AllZero(b, 15) && b[15] == 1) return "loopback (::1)";
  if (AllZero(b, 12)) return "IPv4-compatible (::/96, deprecated)";
  // NAT64 (DNS64 synthesises these for IPv4-only hosts): the gateway connects to the IPv4 address.
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B && AllZero(b + 4, 8)) {
    return Ipv4Reason(Ipv4At(b + 12));
  }
  if ((b[0] & 0xFE) == 0xFC) return "unique local (fc00::/7)";
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80) return "link-local (fe80::/10)";
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0) return "site-local (fec0::/10, deprecated)";
  if (b[0] == 0xFF) return "multicast (ff00::/8)";
  // Everything public is global unicast; the rest of the space is reserved or special-purpose.
  if ((b[0] & 0xE0) != 0x20) return "not global unicast (outside 2000::/3)";
  if (b[0] == 0x20 && b[1] == 0x02) return Ipv4Reason(Ipv4At(b + 2));  // 6to4 relays to that IPv4
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0) return "Teredo (2001::/32)";
  return nullptr;
}

struct Address {
  sockaddr_storage storage{};
  std::string text;  // numeric, without brackets
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

std::string AddressText(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
  } else if (sa->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

std::optional<Address> ParseNumericAddress(std::string_view text) {
  Address a;
  std::string s(text);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (inet_pton(AF_INET, s.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
  } else if (inet_pton(AF_INET6, s.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
  } else {
    return std::nullopt;
  }
  a.text = AddressText(a.sa());
  return a;
}

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
  const char* kExpected = " (the webhook channel needs {\"url\": \"https://...\"})";
  if (!contact.is_object()) return std::string("contact: not an object") + kExpected;
  auto it = contact.find("url");
  if (it == contact.end() || !it->is_string()) return std::string("contact.url: missing or not a string") + kExpected;
  const std::string& url = it->get_ref<const std::string&>();
  if (url.empty()) return std::string("contact.url: empty") + kExpected;

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

// ---------------------------------------------------------------------------------------------
// curl

std::once_flag g_curl_once;
CURLcode g_curl_init = CURLE_FAILED_INIT;
std::atomic<std::uint64_t> g_next_channel_id{1};

// One easy handle per thread: it keeps connections (and TLS sessions) alive between sends.
// A handle serves one channel at a time (owner) so two configurations never share a connection
// or a pinned address; in production there is one webhook channel per process.
struct ThreadHandle {
  CURL* curl = nullptr;
  std::uint64_t owner = 0;
  std::string pinned;  // "host:port" this handle pinned last; the next request removes it
  ~ThreadHandle() {
    if (curl) curl_easy_cleanup(curl);
  }
};
thread_local ThreadHandle t_handle;

CURL* HandleFor(std::uint64_t owner) {
  if (t_handle.curl && t_handle.owner != owner) {
    curl_easy_cleanup(t_handle.curl);
    t_handle.curl = nullptr;
  }
  if (!t_handle.curl) {
    t_handle.curl = curl_easy_init();
    t_handle.owner = owner;
    t_handle.pinned.clear();
  } else {
    // Options back to defaults; connections and the DNS cache stay.
    curl_easy_reset(t_handle.curl);
  }
  return t_handle.curl;
}


size_t KeepSnippet(char* data, size_t size, size_t n, void* user) {
  auto* out = static_cast<std::string*>(user);
  size_t len = size * n;
  // One byte past the limit tells ProviderText the body was cut.
  if (out->size() <= kErrorBodyBytes) out->append(data, std::min(len, kErrorBodyBytes + 1 - out->size()));
  return len;  // read the rest too, so the connection can be reused
}

// Checks every address curl is about to connect to: a second line of defence behind the pinned
// resolution, for any path that would bypass it.
struct SocketGuard {
  bool enforce = false;
  std::string refused;  // the address refused, if any
  const char* why = nullptr;
};

curl_socket_t OpenSocket(void* user, curlsocktype purpose, curl_sockaddr* address) {
  auto* guard = static_cast<SocketGuard*>(user);
  if (guard->enforce && purpose == CURLSOCKTYPE_IPCXN) {
    if (const char* why = NonPublicAddressReason(&address->addr)) {
      guard->refused = AddressText(&address->addr);
      guard->why = why;
      return CURL_SOCKET_BAD;
    }
  }
  return ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

// Transport failures that will not go away by retrying the same request.
bool PermanentCurlError(CURLcode rc) {
  switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_INVALIDCERTSTATUS:
      return true;
    default:
      return false;
  }
}

std::optional<std::string> ResponseHeader(CURL* curl, const char* name) {
  curl_header* h = nullptr;
  if (curl_easy_header(curl, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h || !h->value) return std::nullopt;
  return std::string(h->value);
}

// ---------------------------------------------------------------------------------------------
// HTTP dates (RFC 9110 5.6.7)

constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
constexpr const char* kDays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
constexpr const char* kLongDays[] = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};

class Cursor {
 public:
  explicit Cursor(std::string_view s) : s_(s) {}
  bool Lit(std::string_view t) {
    if (s_.substr(i_, t.size()) != t) return false;
    i_ += t.size();
    return true;
  }
  // Exactly `n` digits.
  bool Digits(size_t n, int& out) {
    if (i_ + n > s_.size()) return false;
    out = 0;
    for (size_t k = 0; k < n; ++k) {
      char c = s_[i_ + k];
      if (c < '0' || c > '9') return false;
      out = out * 10 + (c - '0');
    }
    i_ += n;
    return true;
  }
  // One of `names`; its index in `index`.
  template <size_t N>
  bool OneOf(const char* const (&names)[N], int& index) {
    for (size_t k = 0; k < N; ++k) {
      if (Lit(names[k])) {
        index = static_cast<int>(k);
        return true;
      }
    }
    return false;
  }
  bool AtEnd() const { return i_ == s_.size(); }
  size_t pos() const { return i_; }
  void Rewind(size_t pos) { i_ = pos; }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

bool TimeOfDay(Cursor& c, int& h, int& m, int& s) {
  return c.Digits(2, h) && c.Lit(":") && c.Digits(2, m) && c.Lit(":") && c.Digits(2, s) && h <= 23 && m <= 59 &&
         s <= 60;
}

std::optional<SystemTime> MakeTime(int year, int month, int day, int h, int m, int s) {
  using namespace std::chrono;
  year_month_day ymd{std::chrono::year{year}, std::chrono::month{static_cast<unsigned>(month)},
                     std::chrono::day{static_cast<unsigned>(day)}};
  if (!ymd.ok()) return std::nullopt;
  return time_point_cast<SystemTime::duration>(sys_days{ymd} + hours{h} + minutes{m} + seconds{s});
}

std::optional<SystemTime> ParseHttpDate(std::string_view v, SystemTime now) {
  int wd = 0, day = 0, mon = 0, year = 0, h = 0, m = 0, s = 0;
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
  {
    Cursor c(v);
    if (c.OneOf(kDays, wd) && c.Lit(", ") && c.Digits(2, day) && c.Lit(" ") && c.OneOf(kMonths, mon) &&
        c.Lit(" ") && c.Digits(4, year) && c.Lit(" ") && TimeOfDay(c, h, m, s) && c.Lit(" GMT") && c.AtEnd()) {
      return MakeTime(year, mon + 1, day, h, m, s);
    }
  }
  // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
  {
    Cursor c(v);
    if (c.OneOf(kLongDays, wd) && c.Lit(", ") && c.Digits(2, day) && c.Lit("-") && c.OneOf(kMonths, mon) &&
        c.Lit("-") && c.Digits(2, year) && c.Lit(" ") && TimeOfDay(c, h, m, s) && c.Lit(" GMT") && c.AtEnd()) {
      // RFC 9110: a two-digit year more than 50 years ahead is the most recent such year past.
      int this_year = static_cast<int>(
          std::chrono::year_month_day{std::chrono::floor<std::chrono::days>(now)}.year());
      int full = this_year - this_year % 100 + year;
      if (full > this_year + 50) full -= 100;
      return MakeTime(full, mon + 1, day, h, m, s);
    }
  }
  // asctime: "Sun Nov  6 08:49:37 1994"
  {
    Cursor c(v);
    if (c.OneOf(kDays, wd) && c.Lit(" ") && c.OneOf(kMonths, mon) && c.Lit(" ")) {
      size_t at = c.pos();
      if (!c.Digits(2, day)) {
        c.Rewind(at);
        if (!(c.Lit(" ") && c.Digits(1, day))) return std::nullopt;
      }
      if (c.Lit(" ") && TimeOfDay(c, h, m, s) && c.Lit(" ") && c.Digits(4, year) && c.AtEnd()) {
        return MakeTime(year, mon + 1, day, h, m, s);
      }
    }
  }
  return std::nullopt;
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

const char* NonPublicAddressReason(const sockaddr* addr) {
  if (!addr) return "not an address";
  if (addr->sa_family == AF_INET) {
    return Ipv4Reason(ntohl(reinterpret_cast<const sockaddr_in*>(addr)->sin_addr.s_addr));
  }
  if (addr->sa_family == AF_INET6) {
    return Ipv6Reason(reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr.s6_addr);
  }
  return "not an IPv4 or IPv6 address";
}

bool IsPublicAddress(const sockaddr* addr) { return NonPublicAddressReason(addr) == nullptr; }

bool IsPublicAddress(std::string_view numeric_address) {
  std::optional<Address> a = ParseNumericAddress(numeric_address);
  return a && IsPublicAddress(a->sa());
}

std::optional<Millis> ParseRetryAfter(std::string_view v, SystemTime now) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    // RFC 9111 caps overflowing delta-seconds at 2^31 - 1; so do we, to stay in range.
    constexpr long long kMax = 2147483647;
    long long secs = 0;
    for (char c : v) secs = std::min(kMax, secs * 10 + (c - '0'));
    return Millis(secs * 1000);
  }
  std::optional<SystemTime> at = ParseHttpDate(v, now);
  if (!at) return std::nullopt;
  if (*at <= now) return Millis(0);
  return std::chrono::ceil<Millis>(*at - now);
}

WebhookChannel::WebhookChannel(WebhookConfig config)
    : config_(std::move(config)), usable_(ValidateWebhookConfig(config_)), id_(g_next_channel_id++) {
  // Once per process, before any thread creates a handle (curl_global_init is not thread-safe).
  std::call_once(g_curl_once, [] { g_curl_init = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (usable_.ok() && g_curl_init != CURLE_OK) {
    usable_ = Status::Internal(std::string("libcurl initialisation failed: ") + curl_easy_strerror(g_curl_init));
  }
}

SendResult WebhookChannel::Send(const DeliveryJob& job) {
  const Steady::time_point start = Steady::now();
  const Steady::time_point deadline = start + config_.timeout;
  if (!usable_.ok()) {
    // Our configuration, not the job: retrying in this process cannot help, and the dead letter
    // can be replayed once the configuration is fixed.
    if (usable_.code() == Status::Code::kInvalid) return SendResult::Permanent("webhook channel: " + usable_.message());
    return SendResult::Retryable("webhook channel: " + usable_.message());
  }

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

  CURL* curl = HandleFor(id_);
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
    if (PermanentCurlError(rc)) return SendResult::Permanent(what);
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
