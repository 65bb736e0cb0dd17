// The e-mail channel: pure building blocks (addresses, header encoding, quoted-printable, the
// message), then deliveries to a real SMTP server (aiosmtpd, tests/support/smtp_server.py) that
// requires STARTTLS and AUTH, stores what it accepts in a Maildir and refuses chosen recipients.
// Stored messages are decoded by Python's email package, a MIME parser we did not write.
#include "channels/email/email.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "core/time.h"
#include "tests/support/smtp_server.h"
#include "tests/support/test_env.h"
#include "tests/support/worker_harness.h"
#include "engine/notification_engine.h"
#include "workers/worker.h"

using namespace herald;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using nlohmann::json;

namespace {

using test::SmtpServer;
using Mode = SmtpServer::Mode;
const std::string kFrom = SmtpServer::kFrom;

std::string ReadFile(const std::string& path) { return test::ReadFile(path).value_or(""); }

// Python's email package on one stored message (smtp_server.py parse).
json Parse(const std::string& path) {
  std::string out;
  int rc = test::Run({"/usr/bin/python3", test::SourceDir() + "/tests/support/smtp_server.py", "parse", path}, {}, &out);
  INFO(out);
  REQUIRE(rc == 0);
  return json::parse(out);
}

// Parses a message given as text (BuildMessage's output), without a server.
json ParseText(const std::string& message) { return Parse(test::TempFile("message.eml", message)); }

DeliveryJob MailJob(const std::string& to, const std::string& id = "d-5e0c2b7f00112233445566778899aabb") {
  DeliveryJob j;
  j.delivery_id = id;
  j.notification_id = "n-" + id;
  j.user_id = "u-1";
  j.channel = "email";
  j.locale = "de";
  j.event = {{"id", "evt-7f3a"}, {"type", "billing.invoice.paid"}, {"source", "/billing"},
             {"time", "2026-11-22T10:00:00.000Z"}, {"priority", "high"}, {"category", "billing"},
             {"critical", false}};
  j.contact = {{"email", to}};
  j.content = {{"subject", "Ihre Rechnung über 12,00 € wurde bezahlt"},
               {"text", "Hallo Jürgen,\n\nwir haben 12,00 € erhalten. Grüße aus Köln!\n"},
               {"html", "<p>Hallo J&uuml;rgen,</p>\n<p>wir haben <b>12,00 €</b> erhalten. Grüße aus Köln!</p>\n"}};
  j.data = {{"amount", "12,00 €"}};
  return j;
}

std::string Unfold(std::string s) {
  for (size_t at = s.find("\r\n "); at != std::string::npos; at = s.find("\r\n ")) s.erase(at, 2);
  return s;
}

std::string NoCr(std::string s) {
  s.erase(std::remove(s.begin(), s.end(), '\r'), s.end());
  return s;
}

const SystemTime kNow = *ParseRfc3339("2026-11-22T10:00:05Z");

}  // namespace

// ---------------------------------------------------------------------------------------------
// Building blocks

TEST_CASE("Email: address syntax") {
  for (const char* a : {"a@example.org", "ada.lovelace+tag@mail.example.co.uk", "x@localhost", "o'brien@example.ie",
                        "user@[192.0.2.1]", "jürgen@müller.de", "a-b_c@x-y.example"}) {
    INFO(a);
    CHECK(EmailAddressProblem(a).empty());
  }
  std::vector<std::pair<std::string, std::string>> bad = {
      {"", "empty"},
      {"no-at-sign.example.org", "no '@'"},
      {"a@", "no domain"},
      {"@example.org", "nothing before"},
      {"a b@example.org", "whitespace"},
      {"a@example.org\r\nRCPT TO:<x@evil>", "control character"},
      {"a\t@example.org", "control character"},
      {"a@exa mple.org", "whitespace"},
      {"a..b@example.org", "'.'"},
      {".a@example.org", "'.'"},
      {"a@example..org", "empty label"},
      {"a@example.org.", "empty label"},
      {"<a@example.org>", "character '<'"},
      {"a@b@example.org", "character '@'"},
      {"a@-example.org", "'-'"},
      {"a@exa_mple.org", "character '_'"},
      {std::string(65, 'a') + "@example.org", "64"},
      {"a@" + std::string(250, 'b') + ".org", "254"},
      {std::string("a\xff@example.org"), "UTF-8"},
  };
  for (const auto& [address, why] : bad) {
    INFO(address);
    CHECK_THAT(EmailAddressProblem(address), Contains(why));
  }
}

TEST_CASE("Email: configuration validation") {
  EmailConfig c;
  CHECK(c.host == "127.0.0.1");
  CHECK(c.port == 25);
  CHECK(c.tls == "starttls");
  CHECK(c.timeout == Millis(30000));
  CHECK(c.connect_timeout == Millis(10000));
  CHECK(c.verify_peer);
  CHECK(ValidateEmailConfig(c).message() == "channels.email.from_address: required");
  c.from_address = kFrom;
  CHECK(ValidateEmailConfig(c).ok());

  auto problem = [&](auto change) {
    EmailConfig d = c;
    change(d);
    Status s = ValidateEmailConfig(d);
    CHECK(s.code() == Status::Code::kInvalid);
    return s.message();
  };
  CHECK_THAT(problem([](EmailConfig& d) { d.tls = "ssl"; }), StartsWith("channels.email.tls: \"ssl\""));
  CHECK_THAT(problem([](EmailConfig& d) { d.port = 0; }), StartsWith("channels.email.port"));
  CHECK_THAT(problem([](EmailConfig& d) { d.host = ""; }), StartsWith("channels.email.host"));
  CHECK_THAT(problem([](EmailConfig& d) { d.host = "smtp.example.org/x"; }), StartsWith("channels.email.host"));
  CHECK_THAT(problem([](EmailConfig& d) { d.username = "u"; }), StartsWith("channels.email.password"));
  CHECK_THAT(problem([](EmailConfig& d) { d.password = "p"; }), StartsWith("channels.email.username"));
  CHECK_THAT(problem([](EmailConfig& d) { d.from_address = "noreply"; }), StartsWith("channels.email.from_address"));
  CHECK_THAT(problem([](EmailConfig& d) { d.from_name = "Herald\r\nBcc: x@evil"; }),
             StartsWith("channels.email.from_name"));
  CHECK_THAT(problem([](EmailConfig& d) { d.list_unsubscribe = "https://x/\r\nBcc: x@evil"; }),
             StartsWith("channels.email.list_unsubscribe"));
  CHECK_THAT(problem([](EmailConfig& d) { d.list_unsubscribe = "unsubscribe-me"; }),
             StartsWith("channels.email.list_unsubscribe"));
  CHECK_THAT(problem([](EmailConfig& d) { d.timeout = 0ms; }), StartsWith("channels.email.timeout"));
  CHECK_THAT(problem([](EmailConfig& d) { d.connect_timeout = 0ms; }), StartsWith("channels.email.connect_timeout"));
  CHECK_THAT(problem([](EmailConfig& d) { d.ca_file = "/nonexistent/ca.pem"; }), StartsWith("channels.email.ca_file"));

  // A channel built anyway refuses to send, permanently and saying why.
  EmailChannel broken{EmailConfig{}};
  SendResult r = broken.Send(MailJob("a@example.org"));
  CHECK(r.kind == SendResult::Kind::kPermanent);
  CHECK_THAT(r.error, Contains("channels.email.from_address: required"));
}

TEST_CASE("Email: RFC 2047 header text") {
  SECTION("ASCII stays readable") {
    CHECK(EncodeHeaderText("Your invoice was paid", 9) == "Your invoice was paid");
    std::string long_subject;
    for (int i = 0; i < 30; ++i) long_subject += "word" + std::to_string(i) + " ";
    long_subject += "end";
    std::string folded = EncodeHeaderText(long_subject, 9);
    CHECK(folded.find("\r\n ") != std::string::npos);
    CHECK(Unfold(folded) == long_subject);
    size_t first = folded.find("\r\n");
    CHECK(first + 9 <= 78);
  }
  SECTION("non-ASCII becomes encoded-words of at most 75 characters on lines of at most 76") {
    std::string subject = "Ihre Rechnung über 12,00 € wurde bezahlt — vielen Dank für Ihre Bestellung bei Müller & Söhne";
    std::string encoded = EncodeHeaderText(subject, 9);
    CHECK_THAT(encoded, StartsWith("=?UTF-8?B?"));
    std::string line;
    std::istringstream lines("Subject: " + encoded);
    size_t words = 0;
    while (std::getline(lines, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      INFO(line);
      CHECK(line.size() <= 76);
      for (size_t at = line.find("=?"); at != std::string::npos; at = line.find("=?", at + 2)) {
        size_t end = line.find("?=", at + 10);
        REQUIRE(end != std::string::npos);
        CHECK(end + 2 - at <= 75);
        ++words;
        at = end;
      }
    }
    CHECK(words >= 2);
    // Python decodes it back.
    json m = ParseText("Subject: " + encoded + "\r\n\r\nx\r\n");
    CHECK(m["headers"]["Subject"] == subject);
  }
  SECTION("control characters never break the line") {
    std::string encoded = EncodeHeaderText("Hi\r\nBcc: x@evil", 9);
    CHECK(encoded.find('\r') == std::string::npos);
    CHECK(encoded.find('\n') == std::string::npos);
    CHECK(EncodeHeaderText("Grüße\r\nBcc: x@evil", 9).find("\r\nBcc") == std::string::npos);
  }
  SECTION("text that looks like an encoded-word is encoded") {
    CHECK_THAT(EncodeHeaderText("=?UTF-8?B?SGk=?=", 9), StartsWith("=?UTF-8?B?"));
  }
}

TEST_CASE("Email: quoted-printable") {
  CHECK(QuotedPrintable("plain text") == "plain text");
  CHECK(QuotedPrintable("a=b") == "a=3Db");
  CHECK(QuotedPrintable("trailing space \nnext") == "trailing space=20\r\nnext");
  CHECK(QuotedPrintable("one\r\ntwo\rthree\n") == "one\r\ntwo\r\nthree\r\n");
  CHECK(QuotedPrintable("Grüße €") == "Gr=C3=BC=C3=9Fe =E2=82=AC");
  std::string long_line(200, 'x');
  long_line += "ü€";
  std::string qp = QuotedPrintable(long_line);
  std::istringstream lines(qp);
  std::string line, decoded;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    CHECK(line.size() <= 76);
  }
  // No "=XX" escape is ever split by a soft line break.
  CHECK(qp.find("=\r\n") != std::string::npos);
  for (size_t at = qp.find('='); at != std::string::npos; at = qp.find('=', at + 1)) {
    bool soft = qp.compare(at, 3, "=\r\n") == 0;
    bool escape = at + 2 < qp.size() && std::isxdigit(static_cast<unsigned char>(qp[at + 1])) &&
                  std::isxdigit(static_cast<unsigned char>(qp[at + 2]));
    CHECK((soft || escape));
  }
}

TEST_CASE("Email: the message") {
  EmailConfig c;
  c.from_address = kFrom;
  c.from_name = "Herald Benachrichtigungen";
  c.list_unsubscribe = "https://herald.example.org/unsubscribe?user={{user_id}}";
  DeliveryJob job = MailJob("ada@example.org");

  SECTION("headers and both MIME parts, decoded by Python's email package") {
    std::string problem;
    std::string m = BuildMessage(c, job, kNow, &problem);
    REQUIRE(problem.empty());
    json p = ParseText(m);
    INFO(m);
    CHECK(p["crlf_only"] == true);
    CHECK(p["max_line"].get<int>() <= 78);
    CHECK(p["defects"].empty());
    CHECK(p["headers"]["Date"] == "Sun, 22 Nov 2026 10:00:05 +0000");
    CHECK(p["headers"]["From"] == "Herald Benachrichtigungen <noreply@herald.example.org>");
    CHECK(p["headers"]["To"] == "ada@example.org");
    CHECK(p["headers"]["Subject"] == "Ihre Rechnung über 12,00 € wurde bezahlt");
    CHECK(p["headers"]["Message-ID"] == "<d-5e0c2b7f00112233445566778899aabb@herald.example.org>");
    CHECK(p["headers"]["MIME-Version"] == "1.0");
    CHECK(p["headers"]["Auto-Submitted"] == "auto-generated");
    CHECK(p["headers"]["List-Unsubscribe"] == "<https://herald.example.org/unsubscribe?user=u-1>");
    CHECK(p["headers"]["X-Herald-Delivery-Id"] == "d-5e0c2b7f00112233445566778899aabb");
    CHECK(p["content_type"] == "multipart/alternative");
    REQUIRE(p["parts"].size() == 2);
    CHECK(p["parts"][0]["content_type"] == "text/plain");
    CHECK(p["parts"][0]["charset"] == "utf-8");
    CHECK(p["parts"][0]["transfer_encoding"] == "quoted-printable");
    CHECK(NoCr(p["parts"][0]["content"]) == job.content["text"]);
    CHECK(p["parts"][1]["content_type"] == "text/html");
    CHECK(p["parts"][1]["charset"] == "utf-8");
    CHECK(NoCr(p["parts"][1]["content"]) == job.content["html"]);
    // The Subject is encoded (it is not ASCII); the same delivery always gets the same message.
    CHECK(m.find("Subject: =?UTF-8?B?") != std::string::npos);
    CHECK(BuildMessage(c, job, kNow) == m);
  }
  SECTION("text only, ASCII subject left readable, no List-Unsubscribe unless configured") {
    c.list_unsubscribe.clear();
    c.from_name = "Herald \"Bot\"";
    job.content = {{"subject", "Invoice paid"}, {"text", "Thanks."}};
    std::string m = BuildMessage(c, job, kNow);
    CHECK(m.find("\r\nSubject: Invoice paid\r\n") != std::string::npos);
    CHECK(m.find("List-Unsubscribe") == std::string::npos);
    json p = ParseText(m);
    CHECK(p["content_type"] == "text/plain");
    REQUIRE(p["parts"].size() == 1);
    CHECK(p["parts"][0]["charset"] == "utf-8");
    CHECK(NoCr(p["parts"][0]["content"]) == "Thanks.");
    CHECK(p["headers"]["From"] == "\"Herald \\\"Bot\\\"\" <noreply@herald.example.org>");
  }
  SECTION("a non-ASCII display name is encoded") {
    c.from_name = "Jürgen von Herald";
    json p = ParseText(BuildMessage(c, job, kNow));
    CHECK(p["headers"]["From"] == "Jürgen von Herald <noreply@herald.example.org>");
  }
  SECTION("nothing from the job injects a header") {
    job.content["subject"] = "Hallo\r\nBcc: x@evil\r\n\r\nbody";
    job.delivery_id = "d-1\r\nBcc: y@evil";
    job.user_id = "u-1\r\nBcc: z@evil";
    std::string m = BuildMessage(c, job, kNow);
    std::string headers = m.substr(0, m.find("\r\n\r\n"));
    CHECK(headers.find("\nBcc") == std::string::npos);
    json p = ParseText(m);
    for (const auto& name : p["header_names"]) CHECK(name != "Bcc");
    CHECK(p["headers"]["Subject"] == "Hallo  Bcc: x@evil    body");
    CHECK(p["headers"]["X-Herald-Delivery-Id"] == "d-1Bcc:y@evil");
    CHECK_THAT(p["headers"]["List-Unsubscribe"].get<std::string>(), Contains("u-1%0D%0ABcc%3A%20z%40evil"));
    CHECK(p["defects"].empty());
  }
  SECTION("jobs the channel cannot send say what is missing") {
    std::string problem;
    DeliveryJob j = job;
    j.content.erase("text");
    CHECK(BuildMessage(c, j, kNow, &problem).empty());
    CHECK(problem == "content.text: missing or not a string");
    j = job;
    j.content.erase("subject");
    CHECK(BuildMessage(c, j, kNow, &problem).empty());
    CHECK(problem == "content.subject: missing or not a string");
    j = job;
    j.contact = json::object();
    CHECK(BuildMessage(c, j, kNow, &problem).empty());
    CHECK_THAT(problem, StartsWith("contact.email: missing"));
  }
}

// ---------------------------------------------------------------------------------------------
// A real SMTP server

TEST_CASE("Email: delivery over STARTTLS with AUTH to a real SMTP server") {
  SmtpServer server;
  EmailConfig config = server.Config();
  config.list_unsubscribe = "mailto:unsubscribe@herald.example.org?subject={{user_id}}";
  EmailChannel channel(config);

  DeliveryJob job = MailJob("ada@example.org", "d-0001");
  SendResult r = channel.Send(job);
  INFO(r.error << "\n" << server.Log());
  REQUIRE(r.ok());

  std::string path = server.MessageFor("d-0001");
  REQUIRE_FALSE(path.empty());
  json p = Parse(path);
  INFO(p.dump(2));
  CHECK(p["crlf_only"] == true);
  CHECK(p["max_line"].get<int>() <= 78);
  CHECK(p["defects"].empty());
  CHECK(p["headers"]["Subject"] == "Ihre Rechnung über 12,00 € wurde bezahlt");
  CHECK(p["headers"]["From"] == "Herald Benachrichtigungen <noreply@herald.example.org>");
  CHECK(p["headers"]["To"] == "ada@example.org");
  CHECK(p["headers"]["Message-ID"] == "<d-0001@herald.example.org>");
  CHECK_FALSE(p["headers"]["Date"].get<std::string>().empty());
  CHECK(p["headers"]["List-Unsubscribe"] == "<mailto:unsubscribe@herald.example.org?subject=u-1>");
  CHECK(p["headers"]["X-Herald-Delivery-Id"] == "d-0001");
  REQUIRE(p["parts"].size() == 2);
  CHECK(NoCr(p["parts"][0]["content"]) == job.content["text"]);
  CHECK(NoCr(p["parts"][1]["content"]) == job.content["html"]);

  // The envelope: over TLS, logged in, one recipient.
  std::vector<json> mails = server.Events("mail");
  REQUIRE(mails.size() == 1);
  CHECK(mails[0]["address"] == kFrom);
  CHECK(mails[0]["tls"] == true);
  CHECK(mails[0]["authenticated"] == true);
  std::vector<json> data = server.Events("data");
  REQUIRE(data.size() == 1);
  CHECK(data[0]["rcpt"] == json::array({"ada@example.org"}));

  SECTION("the next messages of this thread reuse the connection") {
    REQUIRE(channel.Send(MailJob("bob@example.org", "d-0002")).ok());
    REQUIRE(channel.Send(MailJob("eve@example.org", "d-0003")).ok());
    std::vector<json> all = server.Events("mail");
    REQUIRE(all.size() == 3);
    CHECK(all[1]["peer_port"] == all[0]["peer_port"]);
    CHECK(all[2]["peer_port"] == all[0]["peer_port"]);
    CHECK(server.Events("auth").size() == 1);
    CHECK(server.Messages().size() == 3);
  }
  SECTION("a variable with CRLF does not inject a header") {
    DeliveryJob evil = MailJob("ada@example.org", "d-evil");
    evil.content["subject"] = "Rechnung 12,00 €\r\nBcc: x@evil";
    evil.user_id = "u-1\r\nBcc: y@evil";
    REQUIRE(channel.Send(evil).ok());
    std::string evil_path = server.MessageFor("d-evil");
    REQUIRE_FALSE(evil_path.empty());
    json e = Parse(evil_path);
    for (const auto& name : e["header_names"]) CHECK(name != "Bcc");
    CHECK(e["headers"]["Subject"] == "Rechnung 12,00 €  Bcc: x@evil");
    CHECK(server.Events("data").back()["rcpt"] == json::array({"ada@example.org"}));
    std::string raw = ReadFile(evil_path);
    CHECK(raw.find("\nBcc:") == std::string::npos);
  }
}

TEST_CASE("Email: the server's refusals decide the result") {
  SmtpServer server;
  EmailChannel channel(server.Config());

  SECTION("451 is retryable with the server's words, and the retry is delivered") {
    SendResult r = channel.Send(MailJob("tempfail-1@example.org", "d-temp"));
    INFO(server.Log());
    CHECK(r.kind == SendResult::Kind::kRetryable);
    CHECK_THAT(r.error, Contains("SMTP 451 4.3.0 try later"));
    CHECK_THAT(r.error, Contains("RCPT TO"));
    CHECK(server.Messages().empty());
    SendResult again = channel.Send(MailJob("tempfail-1@example.org", "d-temp"));
    INFO(again.error);
    CHECK(again.ok());
    CHECK_FALSE(server.MessageFor("d-temp").empty());
  }
  SECTION("550 is permanent with the server's words") {
    SendResult r = channel.Send(MailJob("reject@example.org", "d-rej"));
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK_THAT(r.error, StartsWith("SMTP 550 5.1.1 no such user"));
    CHECK(server.Messages().empty());
    // The connection the refusal left behind does not hurt the next message.
    SendResult next = channel.Send(MailJob("ada@example.org", "d-after"));
    INFO(next.error);
    CHECK(next.ok());
  }
  SECTION("an invalid address is an invalid contact, and the server never hears of it") {
    for (const char* to : {"not-an-address", "a b@example.org", "a@", "ada@example.org\r\nRCPT TO:<x@evil>"}) {
      INFO(to);
      SendResult r = channel.Send(MailJob(to, "d-bad"));
      CHECK(r.kind == SendResult::Kind::kInvalidContact);
      CHECK_THAT(r.error, StartsWith("contact.email:"));
    }
    CHECK(server.Events().empty());
  }
  SECTION("a missing address or content is permanent") {
    DeliveryJob j = MailJob("ada@example.org");
    j.contact = json::object();
    CHECK(channel.Send(j).kind == SendResult::Kind::kPermanent);
    j = MailJob("ada@example.org");
    j.content.erase("subject");
    SendResult r = channel.Send(j);
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK(r.error == "content.subject: missing or not a string");
    CHECK(server.Events().empty());
  }
}

TEST_CASE("Email: authentication and TLS modes") {
  SmtpServer server;

  SECTION("a wrong password is refused permanently with the 535") {
    EmailConfig c = server.Config();
    c.password = "wrong";
    SendResult r = EmailChannel(c).Send(MailJob("ada@example.org"));
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK_THAT(r.error, Contains("SMTP 535"));
    CHECK_THAT(r.error, Contains("Authentication credentials invalid"));
    CHECK(server.Events("mail").empty());
  }
  SECTION("plain SMTP with credentials against a server that offers AUTH only after STARTTLS") {
    EmailConfig c = server.Config();
    c.tls = "none";
    SendResult r = EmailChannel(c).Send(MailJob("ada@example.org"));
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK_THAT(r.error, Contains("did not offer AUTH"));
    CHECK_THAT(r.error, Contains("STARTTLS"));
    CHECK(server.Events("mail").empty());  // stopped before MAIL FROM
  }
  SECTION("plain SMTP without credentials: the server's 530 says why") {
    EmailConfig c = server.Config();
    c.tls = "none";
    c.username.clear();
    c.password.clear();
    SendResult r = EmailChannel(c).Send(MailJob("ada@example.org"));
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK_THAT(r.error, StartsWith("SMTP 530 Must issue a STARTTLS command first (in reply to MAIL FROM)"));
    CHECK_THAT(r.error, Contains("channels.email.tls"));
  }
  SECTION("opportunistic STARTTLS upgrades when offered") {
    EmailConfig c = server.Config();
    c.tls = "starttls";
    SendResult r = EmailChannel(c).Send(MailJob("ada@example.org", "d-opp"));
    INFO(r.error);
    CHECK(r.ok());
    CHECK(server.Events("mail").at(0)["tls"] == true);
  }
  SECTION("the certificate is verified: without the test CA the send fails permanently") {
    EmailConfig c = server.Config();
    c.ca_file.clear();
    SendResult r = EmailChannel(c).Send(MailJob("ada@example.org"));
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK_THAT(r.error, Contains("certificate"));
    CHECK(server.Events().empty());
  }
  SECTION("the host name is verified too") {
    EmailConfig c = server.Config();
    c.host = "127.0.0.1";  // not the certificate's name
    SendResult r = EmailChannel(c).Send(MailJob("ada@example.org"));
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK(server.Events().empty());
    c.verify_peer = false;  // explicitly off: then it goes through
    SendResult off = EmailChannel(c).Send(MailJob("ada@example.org", "d-noverify"));
    INFO(off.error);
    CHECK(off.ok());
  }
}

TEST_CASE("Email: implicit TLS, plain servers and unreachable ones") {
  SECTION("smtps") {
    SmtpServer server(Mode::kSmtps);
    EmailConfig c = server.Config();
    c.tls = "smtps";
    SendResult r = EmailChannel(c).Send(MailJob("ada@example.org", "d-smtps"));
    INFO(r.error << "\n" << server.Log());
    CHECK(r.ok());
    CHECK_FALSE(server.MessageFor("d-smtps").empty());
  }
  SECTION("a server without STARTTLS: required fails permanently, starttls falls back to plain") {
    SmtpServer server(Mode::kPlain);
    EmailConfig c = server.Config();
    c.username.clear();
    c.password.clear();
    SendResult r = EmailChannel(c).Send(MailJob("ada@example.org", "d-req"));
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK_THAT(r.error, Contains("does not offer STARTTLS"));
    CHECK(server.Messages().empty());
    c.tls = "starttls";
    SendResult plain = EmailChannel(c).Send(MailJob("ada@example.org", "d-plain"));
    INFO(plain.error);
    CHECK(plain.ok());
    CHECK(server.Events("mail").at(0)["tls"] == false);
  }
  SECTION("nobody listening is retryable") {
    EmailConfig c;
    c.from_address = kFrom;
    c.port = test::FreePort();
    SendResult r = EmailChannel(c).Send(MailJob("ada@example.org"));
    CHECK(r.kind == SendResult::Kind::kRetryable);
    CHECK_THAT(r.error, Contains(std::to_string(c.port)));
  }
  SECTION("a server that never greets times out, retryable, within the timeout") {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 8) == 0);  // the kernel accepts connections; nobody ever answers
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    EmailConfig c;
    c.from_address = kFrom;
    c.port = ntohs(a.sin_port);
    c.timeout = 1s;
    auto start = std::chrono::steady_clock::now();
    SendResult r = EmailChannel(c).Send(MailJob("ada@example.org"));
    auto took = std::chrono::steady_clock::now() - start;
    ::close(fd);
    CHECK(r.kind == SendResult::Kind::kRetryable);
    CHECK_THAT(r.error, StartsWith("timeout (channels.email.timeout 1s"));
    CHECK(took < 3s);
  }
}

TEST_CASE("Email: 4 threads x 10 messages concurrently") {
  SmtpServer server;
  EmailChannel channel(server.Config());
  std::vector<std::thread> threads;
  std::vector<std::vector<std::string>> errors(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        std::string id = "d-t" + std::to_string(t) + "-m" + std::to_string(i);
        SendResult r = channel.Send(MailJob("user" + std::to_string(t) + "@example.org", id));
        if (!r.ok()) errors[t].push_back(id + ": " + r.error);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& e : errors) {
    for (const auto& line : e) FAIL_CHECK(line);
  }
  std::vector<std::string> stored = server.Messages();
  CHECK(stored.size() == 40);
  std::set<std::string> ids;
  for (const std::string& path : stored) {
    std::string raw = ReadFile(path);
    size_t at = raw.find("\r\nMessage-ID: <");
    REQUIRE(at != std::string::npos);
    ids.insert(raw.substr(at + 2, raw.find("\r\n", at + 2) - at - 2));
  }
  CHECK(ids.size() == 40);
  CHECK(ids.count("Message-ID: <d-t3-m9@herald.example.org>") == 1);
  // One connection (and one login) per thread, reused for its 10 messages.
  std::set<long long> ports;
  for (const json& m : server.Events("mail")) ports.insert(m["peer_port"].get<long long>());
  CHECK(ports.size() == 4);
  CHECK(server.Events("auth").size() == 4);
}

// ---- through the worker and the real broker (the issue's delivery scenarios) ----


namespace {

nlohmann::json MailJobJson(const std::string& to, const std::string& user) {
  const std::string id = DeliveryId("evt-mail", user, "email", SystemTime{});
  return {{"v", 1}, {"delivery_id", id}, {"notification_id", NotificationId("evt-mail", user, SystemTime{})},
          {"event", {{"id", "evt-mail"}, {"type", "account.welcome"}}}, {"user_id", user}, {"locale", "en"},
          {"channel", "email"}, {"contact", {{"email", to}}},
          {"content", {{"subject", "Welcome"}, {"text", "Hello " + user}, {"html", "<p>Hello</p>"}}},
          {"data", nlohmann::json::object()}, {"attempt", 1}, {"fallback", nlohmann::json::array()}};
}

}  // namespace

TEST_CASE("Email worker: a 451 is retried with backoff and the mail delivered once") {
  SmtpServer server;
  test::WorkerHarness h("mail-451", {Millis(300), Millis(600)});
  EmailChannel channel(server.Config());
  auto w = h.Worker("email", channel);
  auto job = MailJobJson("tempfail-2@example.org", "u-1");
  h.PublishJob("email", job);
  bool sent = false;
  REQUIRE(test::WaitFor([&] { return h.store->WasSent(job["delivery_id"], sent).ok() && sent; }, 20s));
  CHECK(server.Messages().size() == 1);
  CHECK_FALSE(server.MessageFor(job["delivery_id"]).empty());
  CHECK(server.Events("rcpt").size() == 3);  // 451, 451, accepted
}

TEST_CASE("Email worker: a 550 is dead-lettered with the server's reply as the error") {
  SmtpServer server;
  test::WorkerHarness h("mail-550");
  EmailChannel channel(server.Config());
  auto w = h.Worker("email", channel);
  DeadLetterDrain drain(h.config, *h.store, SystemClock::Instance());
  drain.Start();
  h.PublishJob("email", MailJobJson("reject@example.org", "u-1"));
  std::vector<DeadLetter> rows;
  REQUIRE(test::WaitFor([&] { return h.store->ListDeadLetters({}, rows).ok() && rows.size() == 1; }, 20s));
  CHECK(rows[0].reason == "permanent");
  CHECK_THAT(rows[0].error, Catch::Matchers::StartsWith("SMTP 550 5.1.1 no such user"));
  CHECK(server.Messages().empty());
  drain.Stop(1s);
}

TEST_CASE("Email worker: 100 welcome mails in one burst at 30/s all arrive, none above the limit in a second") {
  SmtpServer server;
  test::WorkerHarness h("mail-burst");
  h.config.channels["email"].rate = 30;
  h.config.channels["email"].burst = 5;
  h.config.channels["email"].concurrency = 4;
  for (int i = 0; i < 100; ++i) h.PublishJob("email", MailJobJson("user" + std::to_string(i) + "@example.org", "u-" + std::to_string(i)));
  // The bucket decides when each send starts; the server's accept times add the jitter of each
  // SMTP transaction, so the limit is checked where it is enforced: at the start of every send.
  class Timed final : public Channel {
   public:
    explicit Timed(Channel& inner) : inner_(inner) {}
    SendResult Send(const DeliveryJob& job) override {
      {
        std::lock_guard l(mu_);
        starts_.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count());
      }
      return inner_.Send(job);
    }
    std::vector<double> Starts() {
      std::lock_guard l(mu_);
      return starts_;
    }

   private:
    Channel& inner_;
    std::mutex mu_;
    std::vector<double> starts_;
  };
  EmailChannel channel(server.Config());
  Timed timed(channel);
  auto w = h.Worker("email", timed);
  REQUIRE(test::WaitFor([&] { return server.Messages().size() == 100; }, 30s));
  std::vector<double> at = timed.Starts();
  REQUIRE(at.size() == 100);
  std::sort(at.begin(), at.end());
  size_t most = 0, lo = 0;
  for (size_t hi = 0; hi < at.size(); ++hi) {
    while (at[hi] - at[lo] >= 1.0) ++lo;
    most = std::max(most, hi - lo + 1);
  }
  INFO("most sends started in one second: " << most << "; spread " << at.back() - at.front() << " s");
  CHECK(most <= 30 + 5);
  std::set<std::string> ids;
  for (const auto& e : server.Events("data")) ids.insert(e.dump());
  CHECK(ids.size() == 100);
}
