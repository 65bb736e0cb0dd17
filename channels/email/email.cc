#include "channels/email/email.h"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "channels/curl_slist.h"
#include "channels/curl_support.h"
#include "core/utf8.h"

namespace herald {
namespace {

using nlohmann::json;
using Steady = std::chrono::steady_clock;

constexpr size_t kReplyBytes = 300;  // of the server's refusal, kept in the error
constexpr size_t kLineMax = 76;      // RFC 2045 (quoted-printable) and RFC 2047 (encoded-words)
constexpr size_t kHardLineMax = 998;  // RFC 5322 2.1.1

// ---------------------------------------------------------------------------------------------
// Text from servers and jobs (ProviderText is in core/utf8.h)

// Valid UTF-8: every invalid byte becomes U+FFFD.
std::string ValidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    size_t bad = FindInvalidUtf8(s);
    out.append(s.substr(0, bad));
    if (bad == std::string_view::npos) break;
    out += "\xEF\xBF\xBD";
    s.remove_prefix(bad + 1);
  }
  return out;
}

// One line of header text: valid UTF-8, every control character (CR and LF above all, which
// would start a new header) a space.
std::string HeaderText(std::string_view s) {
  std::string out = ValidUtf8(s);
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) c = ' ';
  }
  return out;
}

// An id for a header: printable ASCII only, so nothing can break the line or need encoding.
std::string HeaderToken(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u > 0x20 && u < 0x7F) out += c;
  }
  return out;
}

bool IsAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

const char kHex[] = "0123456789ABCDEF";

std::string Base64(std::string_view in) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint32_t{static_cast<unsigned char>(in[i])} << 16) |
                 (uint32_t{static_cast<unsigned char>(in[i + 1])} << 8) | static_cast<unsigned char>(in[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (size_t rest = in.size() - i; rest > 0) {
    uint32_t v = uint32_t{static_cast<unsigned char>(in[i])} << 16;
    if (rest == 2) v |= uint32_t{static_cast<unsigned char>(in[i + 1])} << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// Bytes of the UTF-8 sequence starting with `lead` (the text is valid UTF-8).
size_t Utf8SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// A display name as an RFC 5322 phrase: a quoted string, or encoded-words when not ASCII.
std::string DisplayName(std::string_view name, size_t used) {
  std::string text = HeaderText(name);
  if (!IsAscii(text) || text.find("=?") != std::string::npos) return EncodeHeaderText(text, used);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string PercentEncode(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 0xF];
    }
  }
  return out;
}

std::string ReplaceAll(std::string s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Addresses

bool AtextChar(unsigned char c) {
  if (c >= 0x80) return true;  // UTF-8 (RFC 6531); validity is checked on the whole address
  if (std::isalnum(c)) return true;
  return c != 0 && std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr;
}

std::string CharacterProblem(char c, const char* where) {
  std::string out = "character '";
  out.push_back(c);
  out.append("' is not allowed in ");
  out.append(where);
  return out;
}

std::string DomainProblem(std::string_view d) {
  if (d.size() >= 2 && d.front() == '[' && d.back() == ']') {
    std::string_view lit = d.substr(1, d.size() - 2);
    if (lit.rfind("IPv6:", 0) == 0) lit.remove_prefix(5);
    bool ok = !lit.empty() && std::all_of(lit.begin(), lit.end(), [](char c) {
      return std::isxdigit(static_cast<unsigned char>(c)) || c == '.' || c == ':';
    });
    return ok ? "" : "bad address literal after '@'";
  }
  if (d.size() > 253) return "domain longer than 253 bytes";
  size_t start = 0;
  while (true) {
    size_t dot = d.find('.', start);
    std::string_view label = d.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty()) return "empty label in the domain";
    if (label.size() > 63) return "domain label longer than 63 bytes";
    if (label.front() == '-' || label.back() == '-') return "domain label starts or ends with '-'";
    for (char c : label) {
      auto u = static_cast<unsigned char>(c);
      if (!(std::isalnum(u) || c == '-' || u >= 0x80)) {
        return CharacterProblem(c, "the domain");
      }
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return "";
}

std::string DomainOf(std::string_view address) {
  size_t at = address.rfind('@');
  return at == std::string_view::npos ? "" : std::string(address.substr(at + 1));
}

// ---------------------------------------------------------------------------------------------
// curl

// One easy handle per thread (see ThreadCurl): it keeps the SMTP connection (logged in, TLS
// established) alive between messages; in production there is one email channel per process.
struct EmailThread {
  ThreadCurl handle;
  // What the current connection's EHLO offered and whether AUTH succeeded on it, kept across
  // messages because a reused connection does not say EHLO or AUTH again.
  bool offered_auth = false;
  bool offered_starttls = false;
  bool authenticated = false;
};
thread_local EmailThread t_handle;

struct Upload {
  std::string_view rest;
};

size_t ReadMessage(char* buffer, size_t size, size_t n, void* user) {
  auto* up = static_cast<Upload*>(user);
  size_t len = std::min(size * n, up->rest.size());
  std::memcpy(buffer, up->rest.data(), len);
  up->rest.remove_prefix(len);
  return len;
}

// The SMTP conversation of one send, as libcurl's debug callback shows it: the commands (verbs
// only: AUTH arguments are credentials) and the server's replies.
struct Conversation {
  bool need_auth = false;
  bool auth_missing = false;  // a username is set, but the connection did not log in
  bool any_reply = false;
  std::string command;        // the last command sent: what a reply answers
  // The first refusal (4xx or 5xx), possibly multi-line.
  int error_code = 0;
  std::string error_text;
  std::string error_command;
  int pending_code = 0;
  std::string pending_text;
};

std::string Upper(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::toupper(c); });
  return out;
}

void SeenCommand(Conversation& conv, std::string_view line) {
  std::string verb = Upper(line.substr(0, line.find_first_of(" \r\n")));
  static const char* const kVerbs[] = {"EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "RSET", "QUIT"};
  if (std::none_of(std::begin(kVerbs), std::end(kVerbs), [&](const char* v) { return verb == v; })) return;
  conv.command = verb == "MAIL" ? "MAIL FROM" : verb == "RCPT" ? "RCPT TO" : verb;
  if (verb == "EHLO" || verb == "HELO") {
    // A new session (a new connection, or the one after STARTTLS): forget the old offers.
    t_handle.offered_auth = t_handle.offered_starttls = t_handle.authenticated = false;
  }
}

void SeenReply(Conversation& conv, std::string_view line) {
  if (line.size() < 3 || !std::all_of(line.begin(), line.begin() + 3, [](char c) { return c >= '0' && c <= '9'; })) {
    return;
  }
  conv.any_reply = true;
  int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  bool more = line.size() > 3 && line[3] == '-';
  std::string_view text = line.size() > 4 ? line.substr(4) : std::string_view{};
  if (conv.command == "EHLO" && code == 250) {
    std::string cap = Upper(text.substr(0, text.find(' ')));
    if (cap == "AUTH") t_handle.offered_auth = true;
    if (cap == "STARTTLS") t_handle.offered_starttls = true;
  }
  if (code == 235) t_handle.authenticated = true;
  if (code == 354) conv.command = "end of data";
  if (code < 400 || conv.error_code != 0) return;
  if (conv.pending_code != code) {
    conv.pending_code = code;
    conv.pending_text.clear();
  }
  if (!text.empty()) {
    if (!conv.pending_text.empty()) conv.pending_text += ' ';
    conv.pending_text.append(text);
  }
  if (!more) {
    conv.error_code = code;
    conv.error_text = ProviderText(conv.pending_text, kReplyBytes);
    conv.error_command = conv.command;
  }
}

void ForEachLine(const char* data, size_t size, const std::function<void(std::string_view)>& f) {
  std::string_view s(data, size);
  while (!s.empty()) {
    size_t nl = s.find('\n');
    std::string_view line = s.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) f(line);
    if (nl == std::string_view::npos) break;
    s.remove_prefix(nl + 1);
  }
}

int Debug(CURL*, curl_infotype type, char* data, size_t size, void* user) {
  auto* conv = static_cast<Conversation*>(user);
  if (type == CURLINFO_HEADER_OUT) {
    ForEachLine(data, size, [&](std::string_view l) { SeenCommand(*conv, l); });
  } else if (type == CURLINFO_HEADER_IN) {
    ForEachLine(data, size, [&](std::string_view l) { SeenReply(*conv, l); });
  }
  return 0;
}

// Called after the connection is set up (greeting, EHLO, STARTTLS, AUTH) and before MAIL FROM.
int BeforeMail(void* user, char*, char*, int, int) {
  auto* conv = static_cast<Conversation*>(user);
  if (conv->need_auth && !t_handle.authenticated) {
    conv->auth_missing = true;
    return CURL_PREREQFUNC_ABORT;
  }
  return CURL_PREREQFUNC_OK;
}

// Transport failures that will not go away by retrying the same message.
bool PermanentCurlError(CURLcode rc) {
  return PermanentHttpError(rc) || rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_USE_SSL_FAILED ||
         rc == CURLE_LOGIN_DENIED;
}

// A reused connection the server had closed meanwhile: nothing was answered, so sending again
// on a fresh connection cannot duplicate the message.
bool StaleConnection(CURLcode rc, const Conversation& conv, long new_connections) {
  return new_connections == 0 && !conv.any_reply &&
         (rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING ||
          rc == CURLE_WEIRD_SERVER_REPLY);
}

}  // namespace

// -----------------------------------------------------------------------------------------------
// Building blocks

std::string EmailAddressProblem(std::string_view a) {
  if (a.empty()) return "empty";
  if (a.size() > 254) return "longer than 254 bytes";
  if (FindInvalidUtf8(a) != std::string_view::npos) return "not valid UTF-8";
  for (char c : a) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) return "contains a control character";
    if (c == ' ') return "contains whitespace";
  }
  size_t at = a.rfind('@');
  if (at == std::string_view::npos) return "no '@'";
  std::string_view local = a.substr(0, at);
  std::string_view domain = a.substr(at + 1);
  if (local.empty()) return "nothing before the '@'";
  if (domain.empty()) return "no domain after the '@'";
  if (local.size() > 64) return "local part longer than 64 bytes";
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos) {
    return "misplaced '.' in the local part";
  }
  for (char c : local) {
    if (c != '.' && !AtextChar(static_cast<unsigned char>(c))) {
      return CharacterProblem(c, "the local part");
    }
  }
  return DomainProblem(domain);
}

std::string Rfc5322Date(SystemTime t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  static const char* const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", kDays[tm.tm_wday % 7], tm.tm_mday,
                kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string EncodeHeaderText(std::string_view raw, size_t used) {
  const std::string text = HeaderText(raw);
  // Printable ASCII stays as it is, folded at spaces where a line would pass 78 characters,
  // unless a word could not fit a line or could be mistaken for an encoded-word.
  size_t longest = 0;
  for (size_t start = 0; start <= text.size();) {
    size_t sp = text.find(' ', start);
    size_t end = sp == std::string::npos ? text.size() : sp;
    longest = std::max(longest, end - start);
    start = end + 1;
  }
  if (IsAscii(text) && text.find("=?") == std::string::npos && used + longest + 1 <= kHardLineMax) {
    std::string out;
    size_t line = used;
    size_t start = 0;
    bool first = true;
    while (start <= text.size()) {
      size_t sp = text.find(' ', start);
      size_t end = sp == std::string::npos ? text.size() : sp;
      std::string_view word(text.data() + start, end - start);
      if (first) {
        out += word;
        line += word.size();
        first = false;
      } else if (!word.empty() && line + 1 + word.size() > 78) {
        out += "\r\n ";  // fold at the space: unfolding gives back the same text
        out += word;
        line = 1 + word.size();
      } else {
        out += ' ';
        out += word;
        line += 1 + word.size();
      }
      if (sp == std::string::npos) break;
      start = sp + 1;
    }
    return out;
  }
  // RFC 2047 "B" encoded-words: "=?UTF-8?B?" + base64 + "?=", each line at most 76 characters.
  constexpr size_t kOverhead = 12;
  constexpr size_t kNextLine = kLineMax - 1 - kOverhead;  // after the folding space
  // At least one character per word, even after a (hypothetical) very long header name.
  size_t avail = used + kOverhead + 8 <= kLineMax ? kLineMax - used - kOverhead : 8;
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t max_bytes = avail / 4 * 3;
    size_t end = pos;
    while (end < text.size()) {
      size_t n = Utf8SequenceLength(static_cast<unsigned char>(text[end]));
      if (end + n - pos > max_bytes && end > pos) break;
      end += n;
    }
    if (pos > 0) out += "\r\n ";
    out += "=?UTF-8?B?" + Base64(std::string_view(text).substr(pos, end - pos)) + "?=";
    pos = end;
    avail = kNextLine;
  }
  return out;
}

std::string QuotedPrintable(std::string_view raw) {
  const std::string text = ValidUtf8(raw);
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  size_t start = 0;
  while (start < text.size()) {
    size_t brk = text.find_first_of("\r\n", start);
    std::string_view line(text.data() + start, (brk == std::string::npos ? text.size() : brk) - start);
    size_t len = 0;
    for (size_t i = 0; i < line.size(); ++i) {
      auto c = static_cast<unsigned char>(line[i]);
      char tok[3];
      size_t n = 1;
      bool last = i + 1 == line.size();
      if ((c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !last)) {
        tok[0] = static_cast<char>(c);
      } else {
        tok[0] = '=';
        tok[1] = kHex[c >> 4];
        tok[2] = kHex[c & 0xF];
        n = 3;
      }
      // A soft line break ("=" CRLF) keeps the line within 76 characters, the "=" included.
      if (len + n > kLineMax - 1) {
        out += "=\r\n";
        len = 0;
      }
      out.append(tok, n);
      len += n;
    }
    if (brk == std::string::npos) break;
    out += "\r\n";  // a hard line break: the text's own
    start = brk + ((text[brk] == '\r' && brk + 1 < text.size() && text[brk + 1] == '\n') ? 2 : 1);
  }
  return out;
}

std::string BuildMessage(const EmailConfig& config, const DeliveryJob& job, SystemTime now, std::string* problem) {
  auto fail = [&](std::string why) {
    if (problem) *problem = std::move(why);
    return std::string();
  };
  auto field = [](const json& obj, const char* key) -> const std::string* {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_string()) return nullptr;
    return &it->get_ref<const std::string&>();
  };
  const std::string* to = field(job.contact, "email");
  if (!to) return fail("contact.email: missing or not a string (the email channel needs {\"email\": \"a@example.org\"})");
  if (std::string p = EmailAddressProblem(*to); !p.empty()) {
    return fail("contact.email: \"" + ProviderText(*to, 100) + "\" is not an e-mail address: " + p);
  }
  const std::string* subject = field(job.content, "subject");
  const std::string* text = field(job.content, "text");
  const std::string* html = field(job.content, "html");
  if (!subject) return fail("content.subject: missing or not a string");
  if (!text) return fail("content.text: missing or not a string");
  const std::string id = HeaderToken(job.delivery_id);
  if (id.empty()) return fail("delivery_id: missing");

  // Message-ID: the delivery id as a dot-atom (anything else hex-escaped with '='), so the
  // same delivery always gets the same id.
  std::string left;
  for (char c : job.delivery_id) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_') {
      left += c;
    } else {
      left += '=';
      left += kHex[u >> 4];
      left += kHex[u & 0xF];
    }
  }
  std::string domain = DomainOf(config.from_address);
  if (domain.empty() || !IsAscii(domain)) domain = "herald";

  std::string m;
  m.reserve(512 + text->size() * 3 + (html ? html->size() * 3 : 0));
  m += "Date: " + Rfc5322Date(now) + "\r\n";
  if (config.from_name.empty()) {
    m += "From: " + config.from_address + "\r\n";
  } else {
    std::string name = DisplayName(config.from_name, 6);
    bool folded = name.rfind("=?", 0) == 0;  // encoded-words: the address on a line of its own
    m += "From: " + name + (folded ? "\r\n <" : " <") + config.from_address + ">\r\n";
  }
  m += "To: " + *to + "\r\n";
  m += "Subject: " + EncodeHeaderText(*subject, 9) + "\r\n";
  m += "Message-ID: <" + left + "@" + domain + ">\r\n";
  m += "MIME-Version: 1.0\r\n";
  m += "Auto-Submitted: auto-generated\r\n";
  if (!config.list_unsubscribe.empty()) {
    std::string v = ReplaceAll(config.list_unsubscribe, "{{user_id}}", PercentEncode(job.user_id));
    v = HeaderToken(ReplaceAll(v, " ", ""));  // validated ASCII; this only guards the line
    if (v.front() != '<') v = "<" + v + ">";
    m += "List-Unsubscribe: " + v + "\r\n";
  }
  m += "X-Herald-Delivery-Id: " + id + "\r\n";

  static const char kPartHeaders[] = "; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n";
  if (!html) {
    m += std::string("Content-Type: text/plain") + kPartHeaders;
    m += QuotedPrintable(*text);
    return m;
  }
  // "=_" never occurs in quoted-printable, so the boundary cannot collide with the content.
  std::string boundary = "=_herald_" + left.substr(0, 48);
  m += "Content-Type: multipart/alternative;\r\n boundary=\"" + boundary + "\"\r\n\r\n";
  m += "This is a message in MIME format: a plain text and an HTML version.\r\n";
  // The CRLF before each delimiter belongs to the delimiter, not to the part (RFC 2046 5.1.1).
  m += "--" + boundary + "\r\n";
  m += std::string("Content-Type: text/plain") + kPartHeaders;
  m += QuotedPrintable(*text);
  m += "\r\n--" + boundary + "\r\n";
  m += std::string("Content-Type: text/html") + kPartHeaders;
  m += QuotedPrintable(*html);
  m += "\r\n--" + boundary + "--\r\n";
  return m;
}

Status ValidateEmailConfig(const EmailConfig& c) {
  if (c.host.empty()) return Status::Invalid("channels.email.host: required");
  for (char ch : c.host) {
    auto u = static_cast<unsigned char>(ch);
    if (u <= 0x20 || u == 0x7F || ch == '/' || ch == '@' || ch == '?' || ch == '#') {
      return Status::Invalid("channels.email.host: \"" + ProviderText(c.host, 100) +
                             "\" is not a host name or address");
    }
  }
  if (c.port < 1 || c.port > 65535) return Status::Invalid("channels.email.port: must be 1..65535");
  if (c.tls != "none" && c.tls != "starttls" && c.tls != "required" && c.tls != "smtps") {
    return Status::Invalid("channels.email.tls: \"" + ProviderText(c.tls, 32) +
                           "\" is not one of none, starttls, required, smtps");
  }
  if (!c.username.empty() && c.password.empty()) {
    return Status::Invalid("channels.email.password: required when channels.email.username is set");
  }
  if (c.username.empty() && !c.password.empty()) {
    return Status::Invalid("channels.email.username: required when channels.email.password is set");
  }
  if (HasControlChars(c.username)) return Status::Invalid("channels.email.username: control characters");
  if (c.from_address.empty()) return Status::Invalid("channels.email.from_address: required");
  if (std::string p = EmailAddressProblem(c.from_address); !p.empty()) {
    return Status::Invalid("channels.email.from_address: \"" + ProviderText(c.from_address, 100) +
                           "\" is not an e-mail address: " + p);
  }
  if (HasControlChars(c.from_name) || FindInvalidUtf8(c.from_name) != std::string_view::npos) {
    return Status::Invalid("channels.email.from_name: must be valid UTF-8 without control characters");
  }
  if (c.from_name.size() > 200) return Status::Invalid("channels.email.from_name: longer than 200 bytes");
  const std::string& u = c.list_unsubscribe;
  if (!u.empty()) {
    bool printable = std::all_of(u.begin(), u.end(), [](char ch) {
      auto b = static_cast<unsigned char>(ch);
      return b > 0x20 && b < 0x7F;
    });
    if (!printable) {
      return Status::Invalid("channels.email.list_unsubscribe: must be printable ASCII without spaces "
                             "(percent-encode the URL)");
    }
    if (u.find("mailto:") == std::string::npos && u.find("https://") == std::string::npos &&
        u.find("http://") == std::string::npos) {
      return Status::Invalid("channels.email.list_unsubscribe: needs a mailto:, https:// or http:// URI");
    }
    if (u.size() > 900) return Status::Invalid("channels.email.list_unsubscribe: longer than 900 bytes");
  }
  if (c.timeout <= Millis::zero()) return Status::Invalid("channels.email.timeout: must be positive");
  if (c.connect_timeout <= Millis::zero()) return Status::Invalid("channels.email.connect_timeout: must be positive");
  if (!c.ca_file.empty() && ::access(c.ca_file.c_str(), R_OK) != 0) {
    return Status::Invalid("channels.email.ca_file: cannot read " + ProviderText(c.ca_file, 200) + ": " +
                           std::strerror(errno));
  }
  return Status::Ok();
}

// -----------------------------------------------------------------------------------------------

EmailChannel::EmailChannel(EmailConfig config)
    : config_(std::move(config)), usable_(ValidateEmailConfig(config_)), id_(NextCurlOwner()) {
  if (Status s = CurlGlobalInit(); usable_.ok() && !s.ok()) usable_ = s;
}

SendResult EmailChannel::Send(const DeliveryJob& job) {
  const Steady::time_point start = Steady::now();
  const Steady::time_point deadline = start + config_.timeout;
  if (!usable_.ok()) return UnusableChannel("email", usable_);

  // The address first: a bad one never reaches the server.
  if (job.contact.is_object()) {
    auto it = job.contact.find("email");
    if (it != job.contact.end() && it->is_string()) {
      const std::string& to = it->get_ref<const std::string&>();
      if (std::string p = EmailAddressProblem(to); !p.empty()) {
        return SendResult::InvalidContact("contact.email: \"" + ProviderText(to, 100) +
                                          "\" is not an e-mail address: " + p);
      }
    }
  }
  std::string problem;
  const std::string message = BuildMessage(config_, job, std::chrono::system_clock::now(), &problem);
  if (message.empty()) return SendResult::Permanent(problem);
  const std::string to = job.contact.value("email", std::string());

  std::string url = config_.tls == "smtps" ? "smtps://" : "smtp://";
  url += config_.host.find(':') != std::string::npos ? "[" + config_.host + "]" : config_.host;
  url += ":" + std::to_string(config_.port);
  const std::string mail_from = "<" + config_.from_address + ">";
  CurlSlist rcpt;
  if (!Append(rcpt, "<" + to + ">")) return SendResult::Retryable("email channel: out of memory building the request");
  long use_ssl = config_.tls == "none"       ? CURLUSESSL_NONE
                 : config_.tls == "starttls" ? CURLUSESSL_TRY
                                             : CURLUSESSL_ALL;

  bool fresh = false;
  CURL* curl = ThreadHandle(t_handle.handle, id_, &fresh);
  if (fresh) t_handle.offered_auth = t_handle.offered_starttls = t_handle.authenticated = false;
  if (!curl) return SendResult::Retryable("email channel: cannot create a curl handle");

  CURLcode rc = CURLE_OK;
  Conversation conv;
  char errbuf[CURL_ERROR_SIZE] = "";
  long response = 0;
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto remaining = std::chrono::ceil<Millis>(deadline - Steady::now());
    if (remaining <= Millis::zero()) {
      return SendResult::Retryable("timed out before connecting (channels.email.timeout " +
                                   FormatDuration(config_.timeout) + ")");
    }
    auto connect_budget = std::max(Millis(1), std::min(remaining, config_.connect_timeout));
    if (attempt > 0) curl_easy_reset(curl);
    conv = Conversation{};
    conv.need_auth = !config_.username.empty();
    errbuf[0] = 0;
    Upload upload{message};

    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // several threads; signals would hit any of them
    curl_easy_setopt(curl, CURLOPT_PROXY, "");     // the relay is reached directly
    curl_easy_setopt(curl, CURLOPT_USE_SSL, use_ssl);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, config_.verify_peer ? 1L : 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, config_.verify_peer ? 2L : 0L);
    if (!config_.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, config_.ca_file.c_str());
    if (!config_.username.empty()) {
      curl_easy_setopt(curl, CURLOPT_USERNAME, config_.username.c_str());
      curl_easy_setopt(curl, CURLOPT_PASSWORD, config_.password.c_str());
      curl_easy_setopt(curl, CURLOPT_SASL_IR, 1L);
      // libcurl logs in only if EHLO offered AUTH; this stops before MAIL FROM when it did not.
      curl_easy_setopt(curl, CURLOPT_PREREQFUNCTION, BeforeMail);
      curl_easy_setopt(curl, CURLOPT_PREREQDATA, &conv);
    }
    curl_easy_setopt(curl, CURLOPT_MAIL_FROM, mail_from.c_str());
    curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpt.get());
    curl_easy_setopt(curl, CURLOPT_MAIL_RCPT_ALLLOWFAILS, 0L);  // one recipient: its refusal fails the send
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, ReadMessage);
    curl_easy_setopt(curl, CURLOPT_READDATA, &upload);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(message.size()));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(remaining.count()));
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect_budget.count()));
    curl_easy_setopt(curl, CURLOPT_MAXCONNECTS, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    // The conversation is how we learn the server's words (and what EHLO offered).
    curl_easy_setopt(curl, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(curl, CURLOPT_DEBUGFUNCTION, Debug);
    curl_easy_setopt(curl, CURLOPT_DEBUGDATA, &conv);
    if (attempt > 0) curl_easy_setopt(curl, CURLOPT_FRESH_CONNECT, 1L);

    rc = curl_easy_perform(curl);
    long new_connections = 0;
    curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &new_connections);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response);
    // Nothing may point at this call's stack or lists once it returns.
    curl_easy_reset(curl);
    if (rc == CURLE_OK || !StaleConnection(rc, conv, new_connections)) break;
  }

  if (rc == CURLE_OK) return SendResult::Ok();
  const std::string what = errbuf[0] ? ProviderText(errbuf, kReplyBytes) : curl_easy_strerror(rc);
  if (conv.auth_missing) {
    std::string hint = t_handle.offered_starttls && config_.tls == "none"
                           ? " (it offers STARTTLS: set channels.email.tls to required)"
                           : "";
    return SendResult::Permanent("SMTP server " + config_.host + ":" + std::to_string(config_.port) +
                                 " did not offer AUTH, but channels.email.username is set; not sending "
                                 "without logging in" + hint);
  }
  int code = conv.error_code;
  std::string reply = conv.error_text;
  std::string command = conv.error_command;
  if (code == 0 && response >= 400 && response <= 599) {
    // No refusal seen in the conversation: libcurl's record of the last reply code.
    code = static_cast<int>(response);
    reply = what;
  }
  if (code >= 400) {
    std::string error = "SMTP " + std::to_string(code);
    if (!reply.empty()) error += " " + reply;
    if (command.empty()) command = "the greeting";
    error += " (in reply to " + command + ")";
    if (code == 530 && config_.tls != "required" && config_.tls != "smtps" && t_handle.offered_starttls) {
      error += "; the server offers STARTTLS: set channels.email.tls to required";
    }
    if (code < 500) return SendResult::Retryable(error);
    return SendResult::Permanent(error);
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    return SendResult::Retryable("timeout (channels.email.timeout " + FormatDuration(config_.timeout) +
                                 ", connect_timeout " + FormatDuration(config_.connect_timeout) + "): " + what);
  }
  if (rc == CURLE_USE_SSL_FAILED) {
    return SendResult::Permanent("SMTP server " + config_.host + ":" + std::to_string(config_.port) +
                                 " does not offer STARTTLS, and channels.email.tls is " + config_.tls + ": " + what);
  }
  if (PermanentCurlError(rc)) return SendResult::Permanent(what);
  return SendResult::Retryable(what);
}

}  // namespace herald
