// The webhook channel: pure building blocks (signature, address classification, Retry-After),
// then deliveries to Debian's real `webhook` server (/usr/bin/webhook), which checks our
// signatures with its own HMAC code and hands the exact request body to a shell command.
#include "channels/webhook/webhook.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sched.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "core/time.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using nlohmann::json;

namespace {

const std::string kSecret = "s3cret-for-tests";

using test::FreePort;
using test::ReadFile;

// What the recording hooks write: one file per delivery id.
struct RecordDir : test::TempDir {
  RecordDir() : test::TempDir("herald-webhook") {}
  std::optional<std::string> Body(const std::string& id) const { return ReadFile(path + "/" + id); }
  std::optional<std::string> Headers(const std::string& id) const { return ReadFile(path + "/" + id + ".headers"); }
  size_t Count() const {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(path)) {
      if (e.path().extension().empty()) ++n;
    }
    return n;
  }
};

json Param(const std::string& source, const std::string& name) { return {{"source", source}, {"name", name}}; }

json SignatureRule(const std::string& secret) {
  return {{"match", {{"type", "payload-hmac-sha256"}, {"secret", secret}, {"parameter", Param("header", "X-Herald-Signature")}}}};
}

// A rule that never holds (the header is never sent), so the hook answers its mismatch code.
json NeverRule() {
  return {{"match", {{"type", "value"}, {"value", "never"}, {"parameter", Param("header", "X-Never")}}}};
}

// A hook that writes the delivery's headers, then (atomically, so a reader never sees half a file)
// the raw request body, named by X-Herald-Delivery. The server runs it after it answered.
json RecordingHook(const std::string& id, const std::string& dir) {
  std::string script = "d='" + dir +
                       "'; printf '%s\\n' \"$3\" \"$4\" \"$5\" \"$6\" \"$7\" > \"$d/$1.headers\""
                       " && printf '%s' \"$2\" > \"$d/$1.tmp\" && mv \"$d/$1.tmp\" \"$d/$1\"";
  return {{"id", id},
          {"execute-command", "/bin/sh"},
          {"include-command-output-in-response", false},
          {"pass-arguments-to-command",
           {Param("string", "-c"), Param("string", script), Param("string", "record"),
            Param("header", "X-Herald-Delivery"), {{"source", "raw-request-body"}}, Param("header", "Idempotency-Key"),
            Param("header", "X-Herald-Event-Type"), Param("header", "User-Agent"), Param("header", "Content-Type"),
            Param("header", "X-Herald-Signature")}}};
}

std::string Hooks(const std::string& dir) {
  json hooks = json::array();
  // The signature check as people configure it: a bad signature is an evaluation error.
  json verify = RecordingHook("verify", dir);
  verify["trigger-rule"] = SignatureRule(kSecret);
  hooks.push_back(verify);
  // A bad signature as a plain rule mismatch with an explicit status: webhook 2.8 only treats
  // signature errors as a mismatch under "or" with trigger-signature-soft-failures.
  json strict = RecordingHook("verify-strict", dir);
  strict["trigger-rule"] = {{"or", {SignatureRule(kSecret)}}};
  strict["trigger-signature-soft-failures"] = true;
  strict["trigger-rule-mismatch-http-response-code"] = 403;
  hooks.push_back(strict);
  for (int code : {301, 400, 408, 410, 422, 429, 500, 503}) {
    hooks.push_back({{"id", "status-" + std::to_string(code)},
                     {"execute-command", "/bin/true"},
                     {"trigger-rule", NeverRule()},
                     {"trigger-rule-mismatch-http-response-code", code}});
  }
  // Holds the response until the command ends.
  hooks.push_back({{"id", "slow"},
                   {"execute-command", "/bin/sleep"},
                   {"include-command-output-in-response", true},
                   {"pass-arguments-to-command", {Param("string", "3")}}});
  return hooks.dump(2);
}

using test::WebhookServer;

WebhookConfig LocalConfig(const std::string& secret = kSecret) {
  WebhookConfig c;
  c.secret = secret;
  c.allow_private_targets = true;  // the test server is on 127.0.0.1
  return c;
}

WebhookConfig LocalConfig(Millis timeout) {
  WebhookConfig c = LocalConfig();
  c.timeout = timeout;
  return c;
}

DeliveryJob Job(const std::string& url, const std::string& id = "d-1") {
  DeliveryJob j;
  j.delivery_id = id;
  j.notification_id = "n-" + id;
  j.user_id = "u-1";
  j.channel = "webhook";
  j.locale = "de";
  j.attempt = 2;
  j.event = {{"id", "evt-7f3a"}, {"type", "billing.invoice.paid"}, {"source", "/billing"},
             {"time", "2026-11-22T10:00:00.000Z"}, {"priority", "high"}, {"category", "billing"},
             {"critical", false}};
  j.contact = {{"url", url}};
  j.content = json::object();
  // Non-ASCII, quotes, a newline and a slash: the signed bytes must arrive unchanged.
  j.data = {{"amount", "12,00 €"}, {"note", "Grüße \"quoted\"\nline/two ✓"}};
  return j;
}

std::string HttpDate(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Building blocks

TEST_CASE("Webhook: HMAC-SHA256 matches RFC 4231 test case 2") {
  CHECK(HmacSha256Hex("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(HmacSha256Hex("", "") == "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

TEST_CASE("Webhook: HMAC-SHA256 follows a change of key and repeats of the same one") {
  const std::string case1_key(20, '\x0b');  // RFC 4231 test case 1
  const char* case1 = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";
  const char* case2 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  for (int round = 0; round < 3; ++round) {
    CHECK(HmacSha256Hex(case1_key, "Hi There") == case1);
    CHECK(HmacSha256Hex(case1_key, "Hi There") == case1);
    CHECK(HmacSha256Hex("Jefe", "what do ya want for nothing?") == case2);
  }
  std::string from_thread;
  std::thread([&] { from_thread = HmacSha256Hex("Jefe", "what do ya want for nothing?"); }).join();
  CHECK(from_thread == case2);
}

TEST_CASE("Webhook: address classification") {
  SECTION("public IPv4 and IPv6 are allowed, including IPv4 embedded in IPv6") {
    for (const char* a : {"8.8.8.8", "1.1.1.1", "93.184.216.34", "11.0.0.1", "100.63.255.255", "100.128.0.0",
                          "169.253.255.255", "172.15.255.255", "172.32.0.0", "192.167.255.255", "192.169.0.0",
                          "223.255.255.255", "2606:4700:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8",
                          "64:ff9b::808:808", "2002:808:808::1"}) {
      INFO(a);
      CHECK(IsPublicAddress(a));
    }
  }
  SECTION("every blocked range is refused") {
    for (const char* a :
         {"0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254", "127.0.0.1",
          "127.255.255.254", "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.168.1.1",
          "198.18.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "::", "::1",
          "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0", "::ffff:100.64.0.1",
          "::127.0.0.1", "fc00::1", "fd12:3456::1", "fe80::1", "febf::1", "fec0::1", "ff02::1", "64:ff9b::7f00:1",
          "2002:7f00:1::", "2002:c0a8:101::1", "2001::1", "100::1"}) {
      INFO(a);
      CHECK_FALSE(IsPublicAddress(a));
    }
  }
  SECTION("what is not a numeric address is not public") {
    for (const char* a : {"", "localhost", "example.org", "127.1", "1.2.3.4.5", "[::1]"}) {
      INFO(a);
      CHECK_FALSE(IsPublicAddress(a));
    }
  }
  SECTION("the reason names the range") {
    sockaddr_in v4{};
    v4.sin_family = AF_INET;
    REQUIRE(inet_pton(AF_INET, "127.0.0.1", &v4.sin_addr) == 1);
    CHECK_THAT(NonPublicAddressReason(reinterpret_cast<sockaddr*>(&v4)), Contains("loopback"));
    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    REQUIRE(inet_pton(AF_INET6, "::ffff:192.168.0.1", &v6.sin6_addr) == 1);
    CHECK_THAT(NonPublicAddressReason(reinterpret_cast<sockaddr*>(&v6)), Contains("192.168.0.0/16"));
    REQUIRE(inet_pton(AF_INET6, "2606:4700:4700::1111", &v6.sin6_addr) == 1);
    CHECK(NonPublicAddressReason(reinterpret_cast<sockaddr*>(&v6)) == nullptr);
  }
}

TEST_CASE("Webhook: Retry-After parsing") {
  const SystemTime now = *ParseRfc3339("2026-11-22T10:00:00Z");
  SECTION("delta-seconds") {
    CHECK(ParseRetryAfter("120", now) == Millis(120000));
    CHECK(ParseRetryAfter(" 7\t", now) == Millis(7000));
    CHECK(ParseRetryAfter("0", now) == Millis(0));
    CHECK(ParseRetryAfter("99999999999999999999", now) == Millis(2147483647LL * 1000));
  }
  SECTION("HTTP-date in all three forms, relative to now") {
    CHECK(ParseRetryAfter("Sun, 22 Nov 2026 10:02:00 GMT", now) == Millis(120000));
    CHECK(ParseRetryAfter("Sunday, 22-Nov-26 10:01:00 GMT", now) == Millis(60000));
    CHECK(ParseRetryAfter("Sun Nov 22 10:00:30 2026", now) == Millis(30000));
    CHECK(ParseRetryAfter("Sun Nov  6 08:49:37 1994", now) == Millis(0));  // in the past: now
    CHECK(ParseRetryAfter("Sun, 06 Nov 1994 08:49:37 GMT", now) == Millis(0));
  }
  SECTION("garbage is ignored") {
    for (const char* v : {"", " ", "soon", "-5", "+5", "1.5", "12abc", "0x10", "Sun, 22 Nov 2026 10:02:00 CET",
                          "Sun, 22 Nov 2026 10:02:00 GMT trailing", "Sun, 31 Nov 2026 10:00:00 GMT",
                          "Sun, 22 Nov 2026 25:00:00 GMT", "Sun, 22 Foo 2026 10:00:00 GMT", "22 Nov 2026 10:02:00 GMT",
                          "Sun, 22 Nov 2026"}) {
      INFO("\"" << v << "\"");
      CHECK_FALSE(ParseRetryAfter(v, now));
    }
  }
}

TEST_CASE("Webhook: configuration validation") {
  WebhookConfig c;
  CHECK(c.timeout == Millis(10000));
  CHECK(c.connect_timeout == Millis(3000));
  CHECK_FALSE(c.allow_private_targets);
  CHECK(c.user_agent == "Herald/0.1");
  Status s = ValidateWebhookConfig(c);
  CHECK(s.code() == Status::Code::kInvalid);
  CHECK(s.message() == "channels.webhook.secret: required");
  c.secret = "x";
  CHECK(ValidateWebhookConfig(c).ok());
  c.user_agent = "Herald\r\nX-Injected: 1";
  CHECK_THAT(ValidateWebhookConfig(c).message(), StartsWith("channels.webhook.user_agent"));
  c.user_agent = "Herald/0.1";
  c.timeout = Millis(0);
  CHECK_THAT(ValidateWebhookConfig(c).message(), StartsWith("channels.webhook.timeout"));

  // A channel built anyway refuses to send unsigned.
  WebhookChannel unsigned_channel{WebhookConfig{}};
  SendResult r = unsigned_channel.Send(Job("https://hooks.example.org/u-1"));
  CHECK(r.kind == SendResult::Kind::kPermanent);
  CHECK_THAT(r.error, Contains("channels.webhook.secret: required"));
}

TEST_CASE("Webhook: the body is compact JSON of the job") {
  DeliveryJob j = Job("https://hooks.example.org/u-1");
  CHECK(WebhookBody(j) ==
        R"({"delivery_id":"d-1","notification_id":"n-d-1","user_id":"u-1",)"
        R"("event":{"category":"billing","critical":false,"id":"evt-7f3a","priority":"high","source":"/billing",)"
        R"("time":"2026-11-22T10:00:00.000Z","type":"billing.invoice.paid"},"content":{},)"
        R"("data":{"amount":"12,00 €","note":"Grüße \"quoted\"\nline/two ✓"},"attempt":2})");
}

TEST_CASE("Webhook: a parsed job's body is the same whether its members' text is kept or written again") {
  const DeliveryJob built = Job("https://hooks.example.org/u-1");
  auto body_of = [](const json& doc) {
    DeliveryJob parsed;
    REQUIRE(DeliveryJob::Parse(doc.dump(), parsed).ok());
    return parsed;
  };
  json doc = {{"v", 1},           {"delivery_id", built.delivery_id}, {"notification_id", built.notification_id},
              {"user_id", "u-1"}, {"channel", "webhook"},             {"locale", "de"},
              {"attempt", 2},     {"event", built.event},             {"contact", built.contact},
              {"content", built.content}, {"data", built.data}};
  // As the engine writes jobs (compact): the kept text is used, and gives the same bytes.
  DeliveryJob kept = body_of(doc);
  CHECK_FALSE(kept.event_text.empty());
  CHECK_FALSE(kept.data_text.empty());
  CHECK(WebhookBody(kept) == WebhookBody(built));
  // A job written by hand with white space and a repeated key: the parsed value is written out.
  const std::string spaced = R"({"delivery_id":"d-1","notification_id":"n-d-1","user_id":"u-1","channel":"webhook",)"
                             R"("attempt":2,"event":{ "type" : "t" },"content":{},"data":{"k":1,"k":2}})";
  DeliveryJob hand;
  REQUIRE(DeliveryJob::Parse(spaced, hand).ok());
  CHECK(hand.event_text.empty());
  CHECK(hand.data_text.empty());
  CHECK(hand.content_text == "{}");
  CHECK(WebhookBody(hand) == R"({"delivery_id":"d-1","notification_id":"n-d-1","user_id":"u-1","event":{"type":"t"},)"
                             R"("content":{},"data":{"k":2},"attempt":2})");
  // An event that is not an object is replaced by {}: its text is not used.
  DeliveryJob odd;
  REQUIRE(DeliveryJob::Parse(R"({"delivery_id":"d","notification_id":"n","user_id":"u","channel":"webhook","event":[1]})", odd).ok());
  CHECK(odd.event_text.empty());
  CHECK(WebhookBody(odd).find(R"("event":{})") != std::string::npos);
}

TEST_CASE("Webhook: a contact without a usable URL is permanent") {
  WebhookChannel ch(LocalConfig());
  auto send = [&](const json& contact) {
    DeliveryJob j = Job("");
    j.contact = contact;
    return ch.Send(j);
  };
  struct Case {
    json contact;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {json::object(), "contact.url: missing or not a string"},
           {json::array(), "contact: not an object"},
           {{{"url", 42}}, "contact.url: missing or not a string"},
           {{{"url", ""}}, "contact.url: empty"},
           {{{"url", "ftp://hooks.example.org/x"}}, "scheme \"ftp\" is not allowed"},
           {{{"url", "hooks.example.org/x"}}, "contact.url: not a valid URL"},
           {{{"url", "http://exa mple.org/"}}, "contact.url: not a valid URL"},
           {{{"url", "http://:80/"}}, "contact.url: not a valid URL"},
           {{{"url", "http://example.org:99999/"}}, "contact.url: not a valid URL"},
       }) {
    INFO(c.contact.dump());
    SendResult r = send(c.contact);
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK_THAT(r.error, Contains(c.message));
  }
}

TEST_CASE("Webhook: the target cache gives what a fresh parse gives, keeps only good URLs and stays bounded") {
  WebhookTargetCache cache(3);
  auto same = [](const WebhookTarget& a, const WebhookTarget& b) {
    return a.url == b.url && a.host == b.host && a.literal.has_value() == b.literal.has_value() &&
           (!a.literal || a.literal->text == b.literal->text);
  };
  for (const char* url : {"http://127.0.0.1:8080/hook?a=1", "https://[::1]:9443/x", "https://Hooks.Example.org/u/1"}) {
    INFO(url);
    const json contact = {{"url", url}};
    WebhookTarget fresh, first, again;
    REQUIRE(ParseWebhookTarget(contact, fresh).empty());
    REQUIRE(cache.Get(contact, first).empty());
    REQUIRE(cache.Get(contact, again).empty());  // from the cache
    CHECK(same(first, fresh));
    CHECK(same(again, fresh));
  }
  CHECK(cache.Size() == 3);
  WebhookTarget t;
  CHECK(cache.Get({{"url", "https://hooks.example.org/u/1"}}, t).empty());  // normalised host: the same target
  CHECK(t.host == "hooks.example.org");
  CHECK(cache.Size() == 1);  // the fourth URL found the cache full: it started over
  // A bad URL is refused every time with the same words, and never kept.
  for (int i = 0; i < 2; ++i) {
    CHECK_THAT(cache.Get({{"url", "ftp://hooks.example.org/x"}}, t), Contains("scheme \"ftp\" is not allowed"));
    CHECK_THAT(cache.Get(json::array(), t), Contains("contact: not an object"));
  }
  CHECK(cache.Size() == 1);
}

TEST_CASE("Webhook: an internationalised host name is sent as punycode or refused clearly") {
  WebhookConfig c = LocalConfig();
  c.allow_private_targets = false;
  c.connect_timeout = 300ms;  // name resolution of a reserved TLD, should there be a resolver at all
  WebhookChannel ch(c);
  SendResult r = ch.Send(Job("https://bücher.invalid/hook"));
  INFO(r.error);
  // libcurl 7.88 cannot make punycode in a process without a UTF-8 locale; later ones can, and
  // then the reserved name does not resolve.
  if (r.kind == SendResult::Kind::kPermanent) {
    CHECK_THAT(r.error, Contains("xn--") && Contains("bücher.invalid"));
  } else {
    CHECK(r.kind == SendResult::Kind::kRetryable);
    CHECK_THAT(r.error, Contains("xn--bcher-kva.invalid"));
  }
}

// ---------------------------------------------------------------------------------------------
// Against /usr/bin/webhook

TEST_CASE("Webhook: the server verifies our signature and receives the exact signed body") {
  RecordDir dir;
  WebhookServer server(Hooks(dir.path));

  SECTION("a delivery with the right secret is accepted, body and headers as signed") {
    WebhookChannel ch(LocalConfig());
    DeliveryJob job = Job(server.Url("verify"));
    SendResult r = ch.Send(job);
    INFO(r.error << "\n" << server.Log());
    REQUIRE(r.kind == SendResult::Kind::kOk);
    // The server answers before it runs the command.
    REQUIRE(test::WaitFor([&] { return dir.Body("d-1").has_value(); }, 10s));
    std::string body = *dir.Body("d-1");
    CHECK(body == WebhookBody(job));
    json parsed = json::parse(body);
    CHECK(parsed["delivery_id"] == "d-1");
    CHECK(parsed["event"]["type"] == "billing.invoice.paid");
    CHECK(parsed["data"]["note"] == "Grüße \"quoted\"\nline/two ✓");
    CHECK(parsed["attempt"] == 2);
    CHECK(*dir.Headers("d-1") == "d-1\nbilling.invoice.paid\nHerald/0.1\napplication/json\nsha256=" +
                                     HmacSha256Hex(kSecret, body) + "\n");
  }

  SECTION("a wrong secret: webhook 2.8 answers 500 for a bad signature by default, so it is retried") {
    WebhookChannel ch(LocalConfig("not-the-secret"));
    SendResult r = ch.Send(Job(server.Url("verify")));
    CHECK(r.kind == SendResult::Kind::kRetryable);
    CHECK(r.error == "HTTP 500: Error occurred while evaluating hook rules.");
    CHECK_THAT(server.Log(), Contains("invalid payload signatures"));
    CHECK(dir.Count() == 0);
  }

  SECTION("a wrong secret against a hook that answers a mismatch with 403 is permanent") {
    WebhookChannel ch(LocalConfig("not-the-secret"));
    SendResult r = ch.Send(Job(server.Url("verify-strict")));
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK(r.error == "HTTP 403: Hook rules were not satisfied.");
    // The same hook accepts the right signature.
    WebhookChannel good(LocalConfig());
    CHECK(good.Send(Job(server.Url("verify-strict"), "d-2")).ok());
    CHECK(test::WaitFor([&] { return dir.Body("d-2").has_value(); }, 10s));
    CHECK(dir.Count() == 1);
  }
}

TEST_CASE("Webhook: 408, 429 and 5xx are retryable and honour Retry-After") {
  RecordDir dir;
  SECTION("delta-seconds (webhook -header sets it on every response)") {
    WebhookServer server(Hooks(dir.path), {"-header", "Retry-After=7"});
    WebhookChannel ch(LocalConfig());
    for (int code : {503, 429, 408, 500}) {
      INFO(code);
      SendResult r = ch.Send(Job(server.Url("status-" + std::to_string(code))));
      CHECK(r.kind == SendResult::Kind::kRetryable);
      CHECK(r.error == "HTTP " + std::to_string(code) + ": Hook rules were not satisfied.");
      CHECK(r.retry_after == Millis(7000));
    }
  }
  SECTION("an HTTP-date becomes a delay from now") {
    auto at = std::chrono::system_clock::now() + 120s;
    WebhookServer server(Hooks(dir.path), {"-header", "Retry-After=" + HttpDate(at)});
    WebhookChannel ch(LocalConfig());
    SendResult r = ch.Send(Job(server.Url("status-503")));
    CHECK(r.kind == SendResult::Kind::kRetryable);
    REQUIRE(r.retry_after);
    CHECK(*r.retry_after > Millis(110000));
    CHECK(*r.retry_after <= Millis(120000));
  }
  SECTION("an unparsable Retry-After is ignored") {
    WebhookServer server(Hooks(dir.path), {"-header", "Retry-After=soon"});
    WebhookChannel ch(LocalConfig());
    SendResult r = ch.Send(Job(server.Url("status-503")));
    CHECK(r.kind == SendResult::Kind::kRetryable);
    CHECK_FALSE(r.retry_after);
  }
  SECTION("without Retry-After") {
    WebhookServer server(Hooks(dir.path));
    WebhookChannel ch(LocalConfig());
    SendResult r = ch.Send(Job(server.Url("status-503")));
    CHECK(r.kind == SendResult::Kind::kRetryable);
    CHECK_FALSE(r.retry_after);
  }
}

TEST_CASE("Webhook: a response slower than the timeout is retryable and the call returns in time") {
  RecordDir dir;
  WebhookServer server(Hooks(dir.path));
  WebhookChannel ch(LocalConfig(1s));
  auto start = std::chrono::steady_clock::now();
  SendResult r = ch.Send(Job(server.Url("slow")));
  auto took = std::chrono::steady_clock::now() - start;
  CHECK(r.kind == SendResult::Kind::kRetryable);
  CHECK_THAT(r.error, Contains("timeout") && Contains("timed out"));
  CHECK(took >= 900ms);
  CHECK(took < 2s);
}

TEST_CASE("Webhook: other 4xx are permanent, 410 is an invalid contact, redirects are not followed") {
  RecordDir dir;
  WebhookServer server(Hooks(dir.path));
  WebhookChannel ch(LocalConfig());
  for (int code : {400, 422}) {
    SendResult r = ch.Send(Job(server.Url("status-" + std::to_string(code))));
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK(r.error == "HTTP " + std::to_string(code) + ": Hook rules were not satisfied.");
  }
  SendResult missing = ch.Send(Job(server.Url("no-such-hook")));
  CHECK(missing.kind == SendResult::Kind::kPermanent);
  CHECK(missing.error == "HTTP 404: Hook not found.");

  SendResult gone = ch.Send(Job(server.Url("status-410")));
  CHECK(gone.kind == SendResult::Kind::kInvalidContact);
  CHECK(gone.error == "HTTP 410: Hook rules were not satisfied.");

  SendResult moved = ch.Send(Job(server.Url("status-301")));
  CHECK(moved.kind == SendResult::Kind::kPermanent);
  CHECK_THAT(moved.error, StartsWith("HTTP 301: redirects are not followed"));
}

TEST_CASE("Webhook: private targets are refused before anything is sent") {
  RecordDir dir;
  WebhookServer server(Hooks(dir.path));
  WebhookConfig c = LocalConfig();
  c.allow_private_targets = false;
  WebhookChannel ch(c);
  std::string port = std::to_string(server.port());

  SendResult literal = ch.Send(Job("http://127.0.0.1:" + port + "/hooks/verify"));
  CHECK(literal.kind == SendResult::Kind::kPermanent);
  CHECK_THAT(literal.error, Contains("127.0.0.1") && Contains("loopback") &&
                                Contains("channels.webhook.allow_private_targets"));

  SendResult by_name = ch.Send(Job("http://localhost:" + port + "/hooks/verify"));
  CHECK(by_name.kind == SendResult::Kind::kPermanent);
  CHECK_THAT(by_name.error, Contains("localhost (resolves to ") && Contains("channels.webhook.allow_private_targets"));

  // Shorthand and numeric forms of loopback too (getaddrinfo and curl both understand them).
  for (const char* host : {"[::1]", "[::ffff:127.0.0.1]", "0.0.0.0", "169.254.169.254", "127.1", "2130706433",
                           "0x7f.0.0.1", "[::]"}) {
    SendResult r = ch.Send(Job(std::string("http://") + host + ":" + port + "/hooks/verify"));
    INFO(host);
    CHECK(r.kind == SendResult::Kind::kPermanent);
    CHECK_THAT(r.error, Contains("channels.webhook.allow_private_targets"));
  }

  CHECK_THAT(server.Log(), !Contains("incoming HTTP"));
  CHECK(dir.Count() == 0);
  // The log does show requests that are let through.
  WebhookChannel allowed(LocalConfig());
  CHECK(allowed.Send(Job(server.Url("verify"))).ok());
  CHECK(test::WaitFor([&] { return server.Log().find("incoming HTTP") != std::string::npos; }, 5s));
}

TEST_CASE("Webhook: a refused connection is retryable") {
  WebhookChannel ch(LocalConfig());
  int port = FreePort();  // nobody listens there
  SendResult r = ch.Send(Job("http://127.0.0.1:" + std::to_string(port) + "/hooks/verify"));
  CHECK(r.kind == SendResult::Kind::kRetryable);
  CHECK_THAT(r.error, Contains("onnect"));
  CHECK_FALSE(r.retry_after);
}

TEST_CASE("Webhook: concurrent sends from several threads all arrive signed") {
  RecordDir dir;
  WebhookServer server(Hooks(dir.path));
  WebhookChannel ch(LocalConfig());
  constexpr int kThreads = 4, kJobs = 25;
  std::vector<std::vector<SendResult>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kJobs; ++i) {
        results[t].push_back(ch.Send(Job(server.Url("verify"), "d-" + std::to_string(t) + "-" + std::to_string(i))));
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    for (const SendResult& r : results[t]) {
      INFO(r.KindName() << ": " << r.error);
      CHECK(r.ok());
    }
  }
  REQUIRE(test::WaitFor([&] { return dir.Count() == kThreads * kJobs; }, 20s));
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kJobs; ++i) {
      std::string id = "d-" + std::to_string(t) + "-" + std::to_string(i);
      INFO(id);
      CHECK(dir.Body(id) == WebhookBody(Job(server.Url("verify"), id)));
    }
  }
}

namespace {

// Results of SendAsync calls, as the callbacks deliver them.
struct AsyncResults {
  std::mutex mu;
  std::map<std::string, std::vector<SendResult>> by_id;  // every callback for a delivery id
  std::set<std::thread::id> threads;                      // the threads they came on
  Channel::SendDone For(const std::string& id) {
    return [this, id](SendResult r) {
      std::lock_guard lock(mu);
      by_id[id].push_back(std::move(r));
      threads.insert(std::this_thread::get_id());
    };
  }
  size_t Count() {
    std::lock_guard lock(mu);
    size_t n = 0;
    for (const auto& [id, results] : by_id) n += results.size();
    return n;
  }
};

}  // namespace

TEST_CASE("Webhook: asynchronous sends from one thread run at once, each answered once on the channel's thread") {
  RecordDir dir;
  WebhookServer server(Hooks(dir.path));
  WebhookChannel ch(LocalConfig(1s));
  AsyncResults results;
  constexpr int kJobs = 25, kSlow = 6;
  const auto start = std::chrono::steady_clock::now();
  std::vector<DeliveryJob> jobs;  // SendAsync wants them alive until answered
  for (int i = 0; i < kJobs; ++i) jobs.push_back(Job(server.Url("verify"), "d-async-" + std::to_string(i)));
  for (int i = 0; i < kSlow; ++i) jobs.push_back(Job(server.Url("slow"), "d-slow-" + std::to_string(i)));
  for (const DeliveryJob& j : jobs) ch.SendAsync(j, results.For(j.delivery_id));
  REQUIRE(test::WaitFor([&] { return results.Count() == jobs.size(); }, 10s));
  // Six responses that each take longer than the 1 s timeout, in about 1 s: they ran together
  // (one after another would take 6 s).
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took < 4s);
  std::lock_guard lock(results.mu);
  for (const DeliveryJob& j : jobs) {
    INFO(j.delivery_id);
    REQUIRE(results.by_id[j.delivery_id].size() == 1);
    const SendResult& r = results.by_id[j.delivery_id][0];
    if (j.delivery_id.rfind("d-slow-", 0) == 0) {
      CHECK(r.kind == SendResult::Kind::kRetryable);
      CHECK_THAT(r.error, Contains("timeout"));
    } else {
      INFO(r.error);
      CHECK(r.ok());
    }
  }
  CHECK(results.threads.size() == 1);
  CHECK(results.threads.count(std::this_thread::get_id()) == 0);
  REQUIRE(test::WaitFor([&] { return dir.Count() == kJobs; }, 10s));
  for (int i = 0; i < kJobs; ++i) CHECK(dir.Body(jobs[i].delivery_id) == WebhookBody(jobs[i]));
}

TEST_CASE("Webhook: a channel stopped with sends in flight answers each one, retryable") {
  RecordDir dir;
  WebhookServer server(Hooks(dir.path));
  auto ch = std::make_unique<WebhookChannel>(LocalConfig());  // 10 s timeout: the stop ends them
  AsyncResults results;
  const DeliveryJob slow = Job(server.Url("slow"), "d-stopped");
  ch->SendAsync(slow, results.For(slow.delivery_id));
  std::this_thread::sleep_for(300ms);  // under way: the hook holds its answer for 3 s
  CHECK(results.Count() == 0);
  const auto start = std::chrono::steady_clock::now();
  ch.reset();
  CHECK(std::chrono::steady_clock::now() - start < 1s);
  REQUIRE(results.Count() == 1);
  const SendResult& r = results.by_id["d-stopped"][0];
  CHECK(r.kind == SendResult::Kind::kRetryable);
  CHECK_THAT(r.error, Contains("the webhook channel is shutting down"));
}

TEST_CASE("Webhook: thousands of asynchronous sends that fail at once are each answered exactly once") {
  // A refused connection ends a transfer within microseconds of its start, so the channel's
  // thread often finishes a send before its caller has returned from starting it: all the more
  // with every thread on one core, where waking the channel's thread lets it run at once.
  cpu_set_t before, one;
  REQUIRE(sched_getaffinity(0, sizeof before, &before) == 0);
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu(), &one);
  REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);
  struct Restore {
    cpu_set_t& set;
    ~Restore() { sched_setaffinity(0, sizeof set, &set); }
  } restore{before};
  WebhookChannel ch(LocalConfig());  // its thread inherits the single core
  const std::string url = "http://127.0.0.1:" + std::to_string(FreePort()) + "/hooks/verify";  // nobody listens
  AsyncResults results;
  constexpr int kThreads = 8, kJobs = 500;
  std::vector<DeliveryJob> jobs;
  for (int i = 0; i < kThreads * kJobs; ++i) jobs.push_back(Job(url, "d-refused-" + std::to_string(i)));
  std::vector<std::thread> callers;
  for (int t = 0; t < kThreads; ++t) {
    callers.emplace_back([&, t] {
      for (int i = t * kJobs; i < (t + 1) * kJobs; ++i) ch.SendAsync(jobs[i], results.For(jobs[i].delivery_id));
    });
  }
  for (std::thread& c : callers) c.join();
  REQUIRE(test::WaitFor([&] { return results.Count() >= jobs.size(); }, 30s));
  std::this_thread::sleep_for(200ms);  // a second answer to any of them would come by now
  CHECK(results.Count() == jobs.size());
  std::lock_guard lock(results.mu);
  CHECK(results.by_id.size() == jobs.size());
  size_t repeated = 0;
  for (const auto& [id, answers] : results.by_id) {
    repeated += answers.size() != 1;
    CHECK(answers[0].kind == SendResult::Kind::kRetryable);
  }
  CHECK(repeated == 0);
}
