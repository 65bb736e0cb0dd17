// The e-mail channel: sends each delivery as one message over SMTP (through libcurl) to the
// address the user registered (job.contact["email"]).
//
// The message (BuildMessage): RFC 5322 with CRLF line endings, MIME 1.0; multipart/alternative
// with a text/plain and a text/html part when the template has html, else text/plain alone; both
// UTF-8 in quoted-printable, lines of at most 76 characters. Headers:
//   Date, From ("Name" <from_address>), To, Subject (RFC 2047 encoded-words only when needed),
//   Message-ID: <delivery_id@from-domain>   the same on every repeat, so a provider or a mail
//                                           client can spot a duplicate
//   MIME-Version, Content-Type[, Content-Transfer-Encoding]
//   Auto-Submitted: auto-generated         (RFC 3834: no vacation auto-replies)
//   List-Unsubscribe: <…>                  when configured
//   X-Herald-Delivery-Id: <delivery_id>
// Nothing from a job can reach a header as a line break: control characters in the subject and
// in ids are dropped (or the address is refused), so "\r\nBcc: x@evil" stays text.
//
// Results: the SMTP reply decides (read from the conversation, since libcurl's error code does
// not tell 4xx from 5xx): 2xx ok; 4xx, timeouts and connection errors retryable; 5xx permanent
// (535, authentication failed, included); an address that is not one (no '@', whitespace,
// control characters, no domain) invalid_contact without contacting the server. Errors carry the
// server's words: "SMTP 451 4.3.0 try later (in reply to RCPT TO)".
//
// TLS (tls): "none" plain SMTP; "starttls" STARTTLS when the server offers it, else plain
// (opportunistic: a network attacker can strip the offer, so credentials are only as safe as
// the path to the relay); "required" STARTTLS or fail; "smtps" implicit TLS (port 465).
// With a username, the server must offer AUTH: libcurl would otherwise silently send without
// logging in, so the channel stops before MAIL FROM and reports it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "channels/channel.h"
#include "core/status.h"
#include "core/time.h"

namespace herald {

struct EmailConfig {
  std::string host = "127.0.0.1";  // the SMTP relay
  int port = 25;
  std::string tls = "starttls";     // none | starttls | required | smtps
  std::string username;             // AUTH (libcurl picks the mechanism the server offers)
  std::string password;
  std::string from_address;         // envelope sender and From address; required
  std::string from_name;            // display name of From (UTF-8)
  // List-Unsubscribe (RFC 2369): one URL or mailto: URI, or several in <…> separated by commas.
  // "{{user_id}}" is replaced by the percent-encoded recipient user id.
  std::string list_unsubscribe;
  Millis timeout{30000};            // one message: connect, TLS, AUTH, transfer, final reply
  Millis connect_timeout{10000};    // name resolution and TCP (and implicit TLS) connect
  std::string ca_file;              // PEM bundle to verify the server with instead of the system's
  bool verify_peer = true;          // verify the server's certificate and host name
};

// Invalid naming the key (channels.email.<key>) of the first unusable setting.
Status ValidateEmailConfig(const EmailConfig& config);

class EmailChannel final : public Channel {
 public:
  explicit EmailChannel(EmailConfig config);

  // Thread-safe: each thread uses its own curl handle, kept so the SMTP connection is reused.
  SendResult Send(const DeliveryJob& job) override;

 private:
  EmailConfig config_;
  Status usable_;      // ValidateEmailConfig and curl's global initialisation
  std::uint64_t id_;   // tells a thread's curl handle which channel configured it
};

// The building blocks, public so tests can check them without a network.

// Empty if `address` is usable as an SMTP mailbox (local@domain, dot-atom local part, no
// whitespace or control characters, at most 254 bytes), else what is wrong with it.
std::string EmailAddressProblem(std::string_view address);

// The whole message as sent after DATA (before SMTP dot-stuffing, which libcurl does).
// Permanent-style problems (missing content.subject or content.text, no contact.email) give an
// empty string and `problem`.
std::string BuildMessage(const EmailConfig& config, const DeliveryJob& job, SystemTime now,
                         std::string* problem = nullptr);

// RFC 5322 date-time in UTC: "Sun, 22 Nov 2026 10:00:00 +0000".
std::string Rfc5322Date(SystemTime t);

// A header value that is text (Subject, display names): unchanged if it is printable ASCII,
// else RFC 2047 "B" encoded-words of at most 75 characters, never splitting a UTF-8 character,
// folded (CRLF SP) so no line exceeds 76 characters. `used` is how much of the first line the
// header name already takes ("Subject: " = 9). Control characters become spaces.
std::string EncodeHeaderText(std::string_view text, size_t used);

// Quoted-printable (RFC 2045 6.7) of UTF-8 text; line breaks (LF, CRLF or CR) become CRLF,
// lines are at most 76 characters. Ends with CRLF only if the text ends with a line break.
std::string QuotedPrintable(std::string_view text);

}  // namespace herald
