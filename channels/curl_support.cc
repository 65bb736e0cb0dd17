#include "channels/curl_support.h"

#include <algorithm>
#include <atomic>
#include <mutex>

namespace herald {
namespace {

std::once_flag g_curl_once;
CURLcode g_curl_init = CURLE_FAILED_INIT;
std::atomic<std::uint64_t> g_next_owner{1};

constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
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
    if (c.OneOf(kDays, wd) && c.Lit(", ") && c.Digits(2, day) && c.Lit(" ") && c.OneOf(kMonths, mon) && c.Lit(" ") &&
        c.Digits(4, year) && c.Lit(" ") && TimeOfDay(c, h, m, s) && c.Lit(" GMT") && c.AtEnd()) {
      return MakeTime(year, mon + 1, day, h, m, s);
    }
  }
  // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
  {
    Cursor c(v);
    if (c.OneOf(kLongDays, wd) && c.Lit(", ") && c.Digits(2, day) && c.Lit("-") && c.OneOf(kMonths, mon) &&
        c.Lit("-") && c.Digits(2, year) && c.Lit(" ") && TimeOfDay(c, h, m, s) && c.Lit(" GMT") && c.AtEnd()) {
      // RFC 9110: a two-digit year more than 50 years ahead is the most recent such year past.
      int this_year = static_cast<int>(std::chrono::year_month_day{std::chrono::floor<std::chrono::days>(now)}.year());
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

Status CurlGlobalInit() {
  std::call_once(g_curl_once, [] { g_curl_init = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (g_curl_init == CURLE_OK) return Status::Ok();
  return Status::Internal(std::string("libcurl initialisation failed: ") + curl_easy_strerror(g_curl_init));
}

std::uint64_t NextCurlOwner() { return g_next_owner++; }

SendResult UnusableChannel(const std::string& channel, const Status& usable) {
  if (usable.code() == Status::Code::kInvalid) return SendResult::Permanent(channel + " channel: " + usable.message());
  return SendResult::Retryable(channel + " channel: " + usable.message());
}

CURL* ThreadHandle(ThreadCurl& slot, std::uint64_t owner, bool* fresh) {
  if (slot.curl && slot.owner != owner) {
    curl_easy_cleanup(slot.curl);
    slot.curl = nullptr;
  }
  if (fresh) *fresh = !slot.curl;
  if (!slot.curl) {
    slot.curl = curl_easy_init();
    slot.owner = owner;
  } else {
    // Options back to defaults; connections and the DNS cache stay.
    curl_easy_reset(slot.curl);
  }
  return slot.curl;
}

size_t KeepSnippet(char* data, size_t size, size_t n, void* user) {
  auto* out = static_cast<std::string*>(user);
  size_t len = size * n;
  // One byte past the limit tells ProviderText the body was cut.
  if (out->size() <= kErrorBodyBytes) out->append(data, std::min(len, kErrorBodyBytes + 1 - out->size()));
  return len;  // read the rest too, so the connection can be reused
}

std::optional<std::string> ResponseHeader(CURL* curl, const char* name) {
  curl_header* h = nullptr;
  if (curl_easy_header(curl, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h || !h->value) return std::nullopt;
  return std::string(h->value);
}

bool PermanentHttpError(CURLcode rc) {
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

std::string HeaderValue(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7F) out += c;
  }
  return out;
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

}  // namespace herald
