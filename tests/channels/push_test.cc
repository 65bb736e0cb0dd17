// The push channel: its cryptography against RFC 8291's own example and an implementation we did
// not write (npm http_ece), Web Push delivery to npm web-push-testing (a push service emulator
// that checks VAPID and decrypts) over HTTPS, FCM and APNs through stand-ins (tests/push/*.js)
// that verify the JWTs and answer with the providers' real errors, token caching and refresh on
// an injected clock, and the whole way through the worker: a gone subscription is removed and
// the notification arrives by e-mail instead.
#include "channels/push/push.h"

#include <curl/curl.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "channels/email/email.h"
#include "channels/push/push_crypto.h"
#include "engine/notification_engine.h"
#include "tests/support/smtp_server.h"
#include <fstream>
#include <sstream>

#include "tests/support/test_env.h"
#include "tests/support/worker_harness.h"
#include "workers/worker.h"

using namespace herald;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using nlohmann::json;
using K = SendResult::Kind;

namespace {

std::string PushDir() { return test::SourceDir() + "/tests/push"; }

std::string Node() {
  for (const char* p : {"/usr/bin/node", "/usr/local/bin/node"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  FAIL("node is not installed (scripts/setup.sh installs nodejs)");
  return "";
}

void RequireNodeModules() {
  INFO("the npm packages of tests/push are missing: run scripts/test.sh, or npm ci in tests/push");
  REQUIRE(::access((PushDir() + "/node_modules/web-push-testing/package.json").c_str(), R_OK) == 0);
}

// A node script from tests/push on a free port, ended by PID with the object.
class NodeServer {
 public:
  explicit NodeServer(const std::string& script, const std::vector<std::string>& args = {}) {
    RequireNodeModules();
    std::string failure;
    for (int attempt = 0; attempt < 3 && !process_; ++attempt) {
      port_ = test::FreePort();
      std::vector<std::string> argv = {Node(), PushDir() + "/" + script, std::to_string(port_)};
      argv.insert(argv.end(), args.begin(), args.end());
      auto p = std::make_unique<test::Process>(argv, std::vector<std::string>{}, script);
      test::WaitFor([&] { return p->OutputContains("listening on") || p->Wait(0ms).has_value(); }, 15s);
      if (!p->Wait(0ms) && p->OutputContains("listening on"))
        process_ = std::move(p);
      else
        failure = p->Output();
    }
    INFO(script << " did not start: " << failure);
    REQUIRE(process_);
  }
  int port() const { return port_; }
  std::string Output() const { return process_->Output(); }

 private:
  int port_ = 0;
  std::unique_ptr<test::Process> process_;
};

std::vector<json> JsonLines(const std::string& path) {
  std::vector<json> out;
  std::istringstream in(test::ReadFile(path).value_or(""));
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (!j.is_discarded()) out.push_back(j);
  }
  return out;
}

// POSTs JSON over HTTPS (trusting `ca`) and returns the answer's JSON (null if none).
json PostJson(const std::string& url, const json& body, const std::string& ca, long* status = nullptr) {
  CURL* c = curl_easy_init();
  REQUIRE(c);
  std::string out;
  std::string text = body.dump();
  curl_slist* h = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, text.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  if (!ca.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, ca.c_str());
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(
      c, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* u) {
        static_cast<std::string*>(u)->append(d, s * n);
        return s * n;
      });
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
  CURLcode rc = curl_easy_perform(c);
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  INFO(url << ": " << curl_easy_strerror(rc) << " " << out);
  REQUIRE(rc == CURLE_OK);
  if (status) *status = code;
  return json::parse(out, nullptr, false);
}

// A self-signed certificate for 127.0.0.1 (subjectAltName IP), fresh per test.
struct IpCert {
  test::TempDir dir;
  std::string cert = dir.path + "/cert.pem", key = dir.path + "/key.pem";
  IpCert() {
    std::string out;
    int rc = test::Run(
        {"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", key, "-out", cert},
        {}, &out);
    INFO(out);
    REQUIRE(rc == 0);
  }
};

// A fresh private key file from openssl: "EC" (P-256, PKCS#8 like an APNs .p8) or "RSA".
std::string KeyFile(const test::TempDir& dir, const std::string& name, const std::string& type) {
  std::string path = dir.path + "/" + name;
  std::vector<std::string> argv = {"/usr/bin/openssl", "genpkey", "-algorithm", type, "-out", path};
  if (type == "EC")
    argv.insert(argv.end(), {"-pkeyopt", "ec_paramgen_curve:P-256"});
  else
    argv.insert(argv.end(), {"-pkeyopt", "rsa_keygen_bits:2048"});
  std::string out;
  INFO(out);
  REQUIRE(test::Run(argv, {}, &out) == 0);
  return path;
}

// A VAPID key pair as `web-push generate-vapid-keys` makes it (base64url raw keys).
json VapidKeys() {
  std::string out;
  REQUIRE(test::Run({Node(), PushDir() + "/node_modules/web-push/src/cli.js", "generate-vapid-keys", "--json"}, {},
                    &out) == 0);
  return json::parse(out);
}

DeliveryJob PushJob(json subscriptions, const std::string& user = "u-1") {
  DeliveryJob j;
  j.delivery_id = DeliveryId("evt-push", user, "push", SystemTime{});
  j.notification_id = NotificationId("evt-push", user, SystemTime{});
  j.user_id = user;
  j.channel = "push";
  j.locale = "de";
  j.event = {{"id", "evt-push"},     {"type", "billing.invoice.paid"},
             {"source", "/billing"}, {"time", "2026-11-22T10:00:00.000Z"},
             {"priority", "high"},   {"category", "billing"},
             {"critical", false}};
  j.contact = {{"push", std::move(subscriptions)}};
  j.content = {{"title", "Rechnung bezahlt"}, {"body", "12,00 € erhalten. Danke!"}};
  j.data = {{"amount", "12,00 €"}};
  return j;
}

std::unique_ptr<PushChannel> MakeChannel(const PushConfig& c, const Clock& clock = SystemClock::Instance()) {
  std::unique_ptr<PushChannel> ch;
  Status s = CreatePushChannel(c, clock, ch);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return ch;
}

// web-push-testing over HTTPS with a VAPID key pair and a channel configured for it.
struct WebPushService {
  IpCert cert;
  json vapid = VapidKeys();
  NodeServer server{"webpush_service.js", {cert.cert, cert.key}};
  std::string base = "https://127.0.0.1:" + std::to_string(server.port());

  PushConfig Config() const {
    PushConfig c;
    c.vapid_private_key = vapid["privateKey"];
    c.vapid_subject = "mailto:ops@herald.example.org";
    c.ca_file = cert.cert;
    c.allow_insecure_endpoints = true;  // 127.0.0.1 is not a public address
    return c;
  }
  // A new subscription: {"kind","endpoint","p256dh","auth"} and its clientHash.
  std::pair<json, std::string> Subscribe() {
    json r = PostJson(base + "/subscribe", {{"applicationServerKey", vapid["publicKey"]}}, cert.cert);
    const json& d = r["data"];
    return {{{"kind", "webpush"},
             {"endpoint", d["endpoint"]},
             {"p256dh", d["keys"]["p256dh"]},
             {"auth", d["keys"]["auth"]}},
            d["clientHash"].get<std::string>()};
  }
  void Expire(const std::string& hash) {
    long status = 0;
    PostJson(base + "/expire-subscription/" + hash, json::object(), cert.cert, &status);
    REQUIRE(status == 200);
  }
  std::vector<std::string> Messages(const std::string& hash) {
    json r = PostJson(base + "/get-notifications", {{"clientHash", hash}}, cert.cert);
    return r["data"]["messages"].get<std::vector<std::string>>();
  }
};

// The FCM stand-in with a fresh service account.
struct FcmService {
  test::TempDir dir;
  std::string log = dir.path + "/fcm.jsonl";
  std::string account = dir.path + "/service-account.json";
  std::unique_ptr<NodeServer> server;
  json doc;
  FcmService() {
    doc = {{"type", "service_account"},
           {"project_id", "herald-test"},
           {"private_key_id", "k-1"},
           {"private_key", test::ReadFile(KeyFile(dir, "fcm.pem", "RSA")).value_or("")},
           {"client_email", "herald@herald-test.iam.gserviceaccount.com"}};
    std::ofstream(account) << doc.dump();
    // The stand-in reads the key at start; its token_uri is known once it listens.
    server = std::make_unique<NodeServer>("fcm_standin.js", std::vector<std::string>{account, log});
    doc["token_uri"] = Url() + "/token";
    std::ofstream(account) << doc.dump();
  }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(server->port()); }
  PushConfig Config() const {
    PushConfig c;
    c.fcm_service_account_file = account;
    c.fcm_url = Url();
    c.allow_insecure_endpoints = true;
    return c;
  }
  std::vector<json> Requests(const std::string& path_part) const {
    std::vector<json> out;
    for (const json& e : JsonLines(log)) {
      if (e.value("path", "").find(path_part) != std::string::npos) out.push_back(e);
    }
    return out;
  }
};

struct ApnsService {
  test::TempDir dir;
  IpCert cert;
  std::string log = dir.path + "/apns.jsonl";
  std::string key = KeyFile(dir, "AuthKey_K3Y1D00001.p8", "EC");
  NodeServer server{"apns_standin.js",
                    {key, "K3Y1D00001", "TEAM000001", "org.example.herald", log, cert.cert, cert.key}};
  PushConfig Config() const {
    PushConfig c;
    c.apns_key_file = key;
    c.apns_key_id = "K3Y1D00001";
    c.apns_team_id = "TEAM000001";
    c.apns_topic = "org.example.herald";
    c.apns_url = "https://127.0.0.1:" + std::to_string(server.port());
    c.ca_file = cert.cert;
    return c;
  }
  std::vector<json> Requests() const {
    std::vector<json> out;
    for (const json& e : JsonLines(log)) {
      if (e.contains("path")) out.push_back(e);
    }
    return out;
  }
  long Sessions() const {
    long n = 0;
    for (const json& e : JsonLines(log)) n += e.contains("session");
    return n;
  }
};

json With(json j, const char* key, json value) {
  j[key] = std::move(value);
  return j;
}

json Fcm(const std::string& token) { return {{"kind", "fcm"}, {"token", token}}; }
json Apns(const std::string& token) { return {{"kind", "apns"}, {"token", token}}; }
const std::string kDevice = "5a0b8f6c0d1e2f30415263748596a7b8c9d0e1f2031425364758697a8b9c0d1e";

}  // namespace

// ---------------------------------------------------------------------------------------------
// Cryptography

TEST_CASE("Push: base64url encodes without padding and refuses what is not base64url") {
  CHECK(Base64UrlEncode("") == "");
  CHECK(Base64UrlEncode("\xfb\xff") == "-_8");
  CHECK(Base64UrlEncode("hello") == "aGVsbG8");
  CHECK(Base64UrlDecode("aGVsbG8") == std::optional<std::string>("hello"));
  CHECK(Base64UrlDecode("aGVsbG8=") == std::optional<std::string>("hello"));
  CHECK(Base64UrlDecode("-_8") == std::optional<std::string>("\xfb\xff"));
  CHECK_FALSE(Base64UrlDecode("a"));
  CHECK_FALSE(Base64UrlDecode("ab c"));
  CHECK_FALSE(Base64UrlDecode("ab\n"));
}

TEST_CASE("Push: RFC 8291's published example is reproduced byte for byte") {
  auto b = [](const char* s) { return *Base64UrlDecode(s); };
  EvpKey sender;
  REQUIRE(P256PrivateKeyFromRaw(b("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"), sender).ok());
  CHECK(Base64UrlEncode(P256PublicKeyRaw(sender.get())) ==
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8");
  std::string body;
  Status s =
      EncryptWebPush("When I grow up, I want to be a watermelon",
                     b("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"),
                     b("BTBZMqHH6r4Tts7J_aSIgg"), body, sender.get(), b("DGv6ra1nlYgDCS1FRnbzlw"));
  REQUIRE(s.ok());
  CHECK(Base64UrlEncode(body) ==
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_"
        "c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_"
        "yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN");
}

TEST_CASE("Push: npm http_ece decrypts what we encrypt, up to the largest payload a record holds") {
  RequireNodeModules();
  std::string out;
  REQUIRE(test::Run({Node(), PushDir() + "/ece_decrypt.js", "keys"}, {}, &out) == 0);
  json keys = json::parse(out);
  const std::string p256dh = *Base64UrlDecode(keys["p256dh"].get<std::string>());
  const std::string auth = *Base64UrlDecode(keys["auth"].get<std::string>());
  std::string largest(kWebPushMaxPlaintext, 'x');
  for (const std::string& plain : {std::string(""), std::string("{\"title\":\"Grüße aus Köln ✓\"}"), largest}) {
    std::string body;
    REQUIRE(EncryptWebPush(plain, p256dh, auth, body).ok());
    CHECK(body.size() <= 4096);
    std::string file = test::TempFile("body.b64u", Base64UrlEncode(body));
    std::string decrypted;
    int rc = test::Run({"/bin/sh", "-c", "exec \"$0\" \"$1\" decrypt \"$2\" \"$3\" < \"$4\"", Node(),
                        PushDir() + "/ece_decrypt.js", keys["private"], keys["auth"], file},
                       {}, &decrypted);
    INFO(decrypted.substr(0, 300));
    CHECK(rc == 0);
    CHECK(decrypted == plain);
  }
  std::string body;
  CHECK(EncryptWebPush(largest + "x", p256dh, auth, body).code() == Status::Code::kInvalid);
}

TEST_CASE("Push: keys and subscription fields that are not usable are refused with the reason") {
  EvpKey k;
  CHECK(P256PrivateKeyFromRaw(std::string(31, '\x01'), k).code() == Status::Code::kInvalid);
  CHECK(P256PrivateKeyFromRaw(std::string(32, '\0'), k).code() == Status::Code::kInvalid);
  CHECK(P256PublicKeyFromRaw(std::string(65, '\x04'), k).code() == Status::Code::kInvalid);  // not on the curve
  CHECK(PrivateKeyFromPem("not a key", k).code() == Status::Code::kInvalid);
  CHECK(PrivateKeyFromPem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", k).code() ==
        Status::Code::kInvalid);
  std::string body;
  Status s = EncryptWebPush("x", "short", std::string(16, 'a'), body);
  CHECK_THAT(s.message(), Contains("p256dh"));
  EvpKey pub;
  REQUIRE(P256PrivateKeyFromRaw(std::string(32, '\x07'), pub).ok());
  s = EncryptWebPush("x", P256PublicKeyRaw(pub.get()), "too short", body);
  CHECK_THAT(s.message(), Contains("auth"));
}

// ---------------------------------------------------------------------------------------------
// Configuration and building blocks

TEST_CASE("Push: configuration problems name the key") {
  test::TempDir dir;
  auto problem = [](PushConfig c) {
    std::unique_ptr<PushChannel> ch;
    Status s = CreatePushChannel(std::move(c), SystemClock::Instance(), ch);
    CHECK(s.code() == Status::Code::kInvalid);
    return s.message();
  };
  PushConfig none;
  std::unique_ptr<PushChannel> ch;
  REQUIRE(CreatePushChannel(none, SystemClock::Instance(), ch).ok());  // no provider: allowed, all off
  CHECK(ch->Providers().empty());

  PushConfig c;
  c.vapid_private_key = "eTxtDcOkDgxj4SquJ2IOU3mNjpbhImVvsYnVrtKzYqk";
  CHECK_THAT(problem(c), Contains("channels.push.vapid_subject"));
  c.vapid_subject = "ops@example.org";
  CHECK_THAT(problem(c), Contains("channels.push.vapid_subject"));
  c.vapid_subject = "mailto:ops@example.org";
  c.vapid_private_key = "/nonexistent/vapid.pem";
  CHECK_THAT(problem(c), Contains("channels.push.vapid_private_key"));
  c.vapid_private_key = KeyFile(dir, "rsa.pem", "RSA");
  CHECK_THAT(problem(c), Contains("channels.push.vapid_private_key: not a P-256"));
  c.vapid_private_key = KeyFile(dir, "vapid.pem", "EC");  // a PEM file works as well as raw base64url
  REQUIRE(CreatePushChannel(c, SystemClock::Instance(), ch).ok());
  CHECK(ch->Providers() == std::vector<std::string>{"webpush"});
  c.vapid_expiry = 25h;
  CHECK_THAT(problem(c), Contains("channels.push.vapid_expiry"));

  PushConfig a;
  a.apns_key_file = KeyFile(dir, "apns.p8", "EC");
  a.apns_key_id = "K";
  CHECK_THAT(problem(a), Contains("channels.push.apns_team_id"));
  a.apns_team_id = "T";
  a.apns_topic = "org.example.app";
  a.apns_token_refresh = 10min;
  CHECK_THAT(problem(a), Contains("channels.push.apns_token_refresh"));
  a.apns_token_refresh = 40min;
  a.apns_url = "http://127.0.0.1:1";
  a.allow_insecure_endpoints = true;
  CHECK_THAT(problem(a), Contains("channels.push.apns_url"));
  a.apns_url = "https://127.0.0.1:1";
  REQUIRE(CreatePushChannel(a, SystemClock::Instance(), ch).ok());
  CHECK(ch->Providers() == std::vector<std::string>{"apns"});

  PushConfig f;
  f.fcm_service_account_file = test::TempFile("sa.json", "{\"project_id\": \"p\"}");
  CHECK_THAT(problem(f), Contains("channels.push.fcm_service_account_file: \"client_email\" missing"));
  f.fcm_service_account_file = test::TempFile("sa.json", "not json");
  CHECK_THAT(problem(f), Contains("channels.push.fcm_service_account_file"));
}

TEST_CASE("Push: provider answers map to results as each provider documents them") {
  using O = PushOutcome;
  auto kind = [](const O& o) { return o.kind; };
  CHECK(kind(MapWebPushResponse(201, "", std::nullopt)) == K::kOk);
  CHECK(kind(MapWebPushResponse(404, "", std::nullopt)) == K::kInvalidContact);
  CHECK(kind(MapWebPushResponse(410, "{\"reason\":\"gone\"}", std::nullopt)) == K::kInvalidContact);
  for (long s : {400L, 401L, 403L, 413L}) CHECK(kind(MapWebPushResponse(s, "", std::nullopt)) == K::kPermanent);
  O busy = MapWebPushResponse(429, "", Millis(3000));
  CHECK(busy.kind == K::kRetryable);
  CHECK(busy.retry_after == Millis(3000));
  CHECK(kind(MapWebPushResponse(503, "", std::nullopt)) == K::kRetryable);

  auto fcm = [](long status, const std::string& code) {
    json e = {
        {"error",
         {{"code", status},
          {"message", "m"},
          {"status", "S"},
          {"details", {{{"@type", "type.googleapis.com/google.firebase.fcm.v1.FcmError"}, {"errorCode", code}}}}}}};
    return MapFcmResponse(status, e.dump(), Millis(7000));
  };
  CHECK(MapFcmResponse(200, "{\"name\":\"projects/p/messages/1\"}", std::nullopt).kind == K::kOk);
  CHECK(fcm(404, "UNREGISTERED").kind == K::kInvalidContact);
  CHECK(fcm(403, "SENDER_ID_MISMATCH").kind == K::kInvalidContact);
  CHECK(fcm(429, "QUOTA_EXCEEDED").kind == K::kRetryable);
  CHECK(fcm(429, "QUOTA_EXCEEDED").retry_after == Millis(7000));
  CHECK(fcm(503, "UNAVAILABLE").kind == K::kRetryable);
  CHECK(fcm(500, "INTERNAL").kind == K::kRetryable);
  CHECK(fcm(400, "INVALID_ARGUMENT").kind == K::kPermanent);
  CHECK_THAT(fcm(404, "UNREGISTERED").error, Contains("UNREGISTERED"));
  O unauth =
      MapFcmResponse(401, "{\"error\":{\"code\":401,\"message\":\"m\",\"status\":\"UNAUTHENTICATED\"}}", std::nullopt);
  CHECK(unauth.kind == K::kRetryable);
  CHECK(unauth.renew_credentials);

  CHECK(MapApnsResponse(200, "", std::nullopt).kind == K::kOk);
  CHECK(MapApnsResponse(410, "{\"reason\":\"Unregistered\",\"timestamp\":1}", std::nullopt).kind == K::kInvalidContact);
  CHECK(MapApnsResponse(400, "{\"reason\":\"BadDeviceToken\"}", std::nullopt).kind == K::kInvalidContact);
  for (long s : {429L, 500L, 503L}) CHECK(MapApnsResponse(s, "{\"reason\":\"x\"}", std::nullopt).kind == K::kRetryable);
  O expired = MapApnsResponse(403, "{\"reason\":\"ExpiredProviderToken\"}", std::nullopt);
  CHECK(expired.kind == K::kRetryable);
  CHECK(expired.renew_credentials);
  CHECK(MapApnsResponse(403, "{\"reason\":\"InvalidProviderToken\"}", std::nullopt).kind == K::kPermanent);
  CHECK(MapApnsResponse(400, "{\"reason\":\"DeviceTokenNotForTopic\"}", std::nullopt).kind == K::kPermanent);
  CHECK(MapApnsResponse(413, "{\"reason\":\"PayloadTooLarge\"}", std::nullopt).kind == K::kPermanent);
}

TEST_CASE("Push: Topic, apns-id and the VAPID audience are derived as the protocols require") {
  CHECK(WebPushTopic("invoice-42") == "invoice-42");
  std::string hashed = WebPushTopic("invoice 42 for user u-1, a key longer than thirty-two characters");
  CHECK(hashed.size() == 32);
  CHECK(hashed.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
        std::string::npos);
  CHECK(WebPushTopic("invoice 42 for user u-1, a key longer than thirty-two characters") == hashed);
  CHECK(ApnsId("d-5e0c2b7f00112233445566778899aabb") == "5E0C2B7F-0011-2233-4455-66778899AABB");
  CHECK(ApnsId("other id").size() == 36);
  CHECK(ApnsId("other id") == ApnsId("other id"));
  CHECK(UrlOrigin("https://fcm.googleapis.com/fcm/send/abc:def") == "https://fcm.googleapis.com");
  CHECK(UrlOrigin("https://Push.Example.org:443/x") == "https://push.example.org");
  CHECK(UrlOrigin("https://127.0.0.1:8443/notify/1") == "https://127.0.0.1:8443");
  CHECK(UrlOrigin("not a url").empty());
}

TEST_CASE("Push: unusable contacts are permanent errors naming the field, never a crash") {
  test::TempDir dir;
  PushConfig c;
  c.vapid_private_key = "eTxtDcOkDgxj4SquJ2IOU3mNjpbhImVvsYnVrtKzYqk";
  c.vapid_subject = "mailto:ops@example.org";
  c.apns_key_file = KeyFile(dir, "apns.p8", "EC");
  c.apns_key_id = "K";
  c.apns_team_id = "T";
  c.apns_topic = "t";
  auto ch = MakeChannel(c);
  auto send = [&](json contact) {
    DeliveryJob j = PushJob(json::array());
    j.contact = std::move(contact);
    return ch->Send(j);
  };
  json sub = {{"kind", "webpush"},
              {"endpoint", "https://push.example.org/x"},
              {"p256dh", "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"},
              {"auth", "BTBZMqHH6r4Tts7J_aSIgg"}};
  struct Case {
    json contact;
    const char* says;
  };
  std::vector<Case> cases = {
      {json::object(), "contact.push: missing"},
      {{{"push", "x"}}, "contact.push: missing or not an array"},
      {{{"push", json::array()}}, "no push subscriptions"},
      {{{"push", json::array({42})}}, "contact.push[0].kind"},
      {{{"push", json::array({json{{"kind", "sms"}}})}}, "contact.push[0].kind: \"sms\""},
      {{{"push", json::array({With(sub, "p256dh", "!!")})}}, "contact.push[0].p256dh"},
      {{{"push", json::array({With(sub, "p256dh", "AAAA")})}}, "contact.push[0].p256dh"},
      {{{"push", json::array({With(sub, "auth", "AAAA")})}}, "contact.push[0].auth"},
      {{{"push", json::array({With(sub, "endpoint", "http://push.example.org/x")})}}, "contact.push[0].endpoint"},
      {{{"push", json::array({With(sub, "endpoint", 7)})}}, "contact.push[0].endpoint"},
      {{{"push", json::array({Apns("not-hex!")})}}, "contact.push[0].token"},
      {{{"push", json::array({Fcm("t")})}},
       "push provider fcm is not configured (channels.push.fcm_service_account_file)"},
  };
  for (const Case& k : cases) {
    SendResult r = send(k.contact);
    INFO(k.contact.dump() << " -> " << r.error);
    CHECK(r.kind == K::kPermanent);
    CHECK_THAT(r.error, Contains(k.says));
    CHECK(r.invalid_contacts.empty());
  }
  DeliveryJob big = PushJob(json::array({sub, Apns(kDevice)}));
  big.data = {{"blob", std::string(5000, 'x')}};
  SendResult r = ch->Send(big);
  CHECK(r.kind == K::kPermanent);
  CHECK_THAT(r.error, Contains("Web Push payload is"));
  CHECK_THAT(r.error, Contains("APNs payload is"));
  CHECK(ch->Tokens().apns_jwts == 0);  // refused before anything was signed or sent
}

// ---------------------------------------------------------------------------------------------
// Web Push against web-push-testing

TEST_CASE("Push: Web Push to web-push-testing over HTTPS: VAPID accepted, payload decrypted, JWT reused per origin") {
  WebPushService svc;
  auto [sub1, hash1] = svc.Subscribe();
  auto [sub2, hash2] = svc.Subscribe();
  auto ch = MakeChannel(svc.Config());
  DeliveryJob job = PushJob(json::array({sub1, sub2}));
  job.content["collapse_key"] = "invoice 42 for u-1, longer than a Topic may be";
  SendResult r = ch->Send(job);
  INFO(r.error << "\n" << svc.server.Output());
  REQUIRE(r.kind == K::kOk);
  CHECK(r.error.empty());
  for (const std::string& hash : {hash1, hash2}) {
    std::vector<std::string> m = svc.Messages(hash);
    REQUIRE(m.size() == 1);
    json got = json::parse(m[0]);
    CHECK(got == json::parse(PushPayload(job)));
    CHECK(got["title"] == "Rechnung bezahlt");
    CHECK(got["data"]["amount"] == "12,00 €");
  }
  CHECK(ch->Tokens().vapid_jwts == 1);  // one origin, one JWT for both
  REQUIRE(ch->Send(job).ok());
  CHECK(ch->Tokens().vapid_jwts == 1);
}

TEST_CASE("Push: Web Push endpoints at private addresses are refused unless allow_insecure_endpoints") {
  WebPushService svc;
  auto [sub, hash] = svc.Subscribe();
  PushConfig c = svc.Config();
  c.allow_insecure_endpoints = false;
  auto ch = MakeChannel(c);
  SendResult r = ch->Send(PushJob(json::array({sub})));
  CHECK(r.kind == K::kPermanent);
  CHECK_THAT(r.error, Contains("refusing to connect to 127.0.0.1: loopback"));
  CHECK_THAT(r.error, Contains("channels.push.allow_insecure_endpoints"));
  CHECK(svc.Messages(hash).empty());
}

TEST_CASE("Push: an expired subscription among live ones is reported gone while the job succeeds") {
  WebPushService svc;
  auto [live, live_hash] = svc.Subscribe();
  auto [dead, dead_hash] = svc.Subscribe();
  svc.Expire(dead_hash);
  auto ch = MakeChannel(svc.Config());
  SendResult r = ch->Send(PushJob(json::array({dead, live})));
  CHECK(r.kind == K::kOk);
  CHECK(r.invalid_contacts == std::vector<std::string>{dead["endpoint"].get<std::string>()});
  CHECK_THAT(r.error, Contains("HTTP 410"));
  CHECK(svc.Messages(live_hash).size() == 1);

  SendResult gone = ch->Send(PushJob(json::array({dead})));
  CHECK(gone.kind == K::kInvalidContact);
  // Gone plus busy (429, Retry-After: 3): retried later, and the gone one removed meanwhile.
  json busy = live;
  busy["endpoint"] = svc.base + "/notify/busy-1";
  SendResult mixed = ch->Send(PushJob(json::array({dead, busy})));
  CHECK(mixed.kind == K::kRetryable);
  CHECK(mixed.retry_after == Millis(3000));
  CHECK(mixed.invalid_contacts.size() == 1);
}

TEST_CASE("Push worker: an expired Web Push subscription is removed and the notification arrives by e-mail") {
  WebPushService svc;
  auto [sub, hash] = svc.Subscribe();
  auto [kept, kept_hash] = svc.Subscribe();  // another user's, untouched
  test::SmtpServer smtp;
  test::WorkerHarness h("push-410-email");
  Preferences p = DefaultPreferences("u-1");
  p.contacts.email = "ada@example.org";
  PushContact pc;
  pc.kind = "webpush";
  pc.endpoint = sub["endpoint"];
  pc.p256dh = sub["p256dh"];
  pc.auth = sub["auth"];
  p.contacts.push = {pc};
  REQUIRE(h.store->PutPreferences(p).ok());
  svc.Expire(hash);

  auto push = MakeChannel(svc.Config());
  EmailChannel email(smtp.Config());
  auto wp = h.Worker("push", *push);
  auto we = h.Worker("email", email);
  DeliveryJob j = PushJob(json::array({sub}));
  const std::string email_id = DeliveryId("evt-push", "u-1", "email", SystemTime{});
  json job = {{"v", 1},
              {"delivery_id", j.delivery_id},
              {"notification_id", j.notification_id},
              {"event", j.event},
              {"user_id", "u-1"},
              {"locale", "de"},
              {"channel", "push"},
              {"contact", j.contact},
              {"content", j.content},
              {"data", j.data},
              {"attempt", 1},
              {"fallback",
               {{{"channel", "email"},
                 {"delivery_id", email_id},
                 {"locale", "de"},
                 {"contact", {{"email", "ada@example.org"}}},
                 {"content", {{"subject", "Rechnung bezahlt"}, {"text", "12,00 € erhalten.\n"}}}}}}};
  h.PublishJob("push", job);

  REQUIRE(test::WaitFor([&] { return !smtp.MessageFor(email_id).empty(); }, 30s));
  Preferences after;
  REQUIRE(h.store->GetPreferences("u-1", after).ok());
  CHECK(after.contacts.push.empty());
  CHECK(after.contacts.email == "ada@example.org");
  // The sent record is written after the mail went out (the store's group commit): wait for it.
  bool sent = false;
  CHECK(test::WaitFor([&] { return h.store->WasSent(email_id, sent).ok() && sent; }, 10s));
  REQUIRE(h.store->WasSent(j.delivery_id, sent).ok());
  CHECK_FALSE(sent);
  CHECK(svc.Messages(hash).empty());
}

// ---------------------------------------------------------------------------------------------
// FCM against the stand-in

TEST_CASE("Push: FCM access token is exchanged once, cached, renewed before it expires and after a 401") {
  FcmService fcm;
  ManualClock clock(std::chrono::system_clock::now());
  auto ch = MakeChannel(fcm.Config(), clock);
  auto send = [&] { return ch->Send(PushJob(json::array({Fcm("device-token-1")}))); };
  SendResult r = send();
  INFO(r.error << "\n" << fcm.server->Output());
  REQUIRE(r.ok());
  REQUIRE(send().ok());
  clock.Advance(50min);
  REQUIRE(send().ok());
  CHECK(ch->Tokens().fcm_token_requests == 1);
  CHECK(fcm.Requests("/token").size() == 1);
  clock.Advance(6min);  // 56 min: within five minutes of the token's 3599 s
  REQUIRE(send().ok());
  CHECK(ch->Tokens().fcm_token_requests == 2);
  CHECK(fcm.Requests("/token").size() == 2);

  PostJson(fcm.Url() + "/revoke", json::object(), "");
  SendResult refused = send();
  CHECK(refused.kind == K::kRetryable);
  CHECK_THAT(refused.error, Contains("UNAUTHENTICATED"));
  REQUIRE(send().ok());
  CHECK(ch->Tokens().fcm_token_requests == 3);

  std::vector<json> sends = fcm.Requests("messages:send");
  REQUIRE(sends.size() == 6);
  json body = json::parse(sends[0]["body"].get<std::string>());
  CHECK(body["message"]["token"] == "device-token-1");
  CHECK(body["message"]["notification"]["title"] == "Rechnung bezahlt");
  CHECK(body["message"]["android"]["priority"] == "HIGH");
  CHECK(json::parse(body["message"]["data"]["data"].get<std::string>())["amount"] == "12,00 €");
}

TEST_CASE("Push: FCM errors from the stand-in: gone tokens listed, quota and outages retryable") {
  FcmService fcm;
  auto ch = MakeChannel(fcm.Config());
  auto send = [&](std::vector<json> subs) { return ch->Send(PushJob(json(std::move(subs)))); };
  SendResult gone = send({Fcm("unregistered-1"), Fcm("mismatch-1")});
  CHECK(gone.kind == K::kInvalidContact);
  CHECK(gone.invalid_contacts == std::vector<std::string>{"unregistered-1", "mismatch-1"});
  CHECK_THAT(gone.error, Contains("UNREGISTERED"));
  CHECK_THAT(gone.error, Contains("SENDER_ID_MISMATCH"));
  SendResult quota = send({Fcm("quota-1")});
  CHECK(quota.kind == K::kRetryable);
  CHECK(quota.retry_after == Millis(7000));
  CHECK(send({Fcm("unavailable-1")}).kind == K::kRetryable);
  CHECK(send({Fcm("internal-1")}).kind == K::kRetryable);
  CHECK(send({Fcm("invalid-1")}).kind == K::kPermanent);
  SendResult partly = send({Fcm("unregistered-2"), Fcm("device-ok")});
  CHECK(partly.kind == K::kOk);
  CHECK(partly.invalid_contacts == std::vector<std::string>{"unregistered-2"});

  // The same account with another key: the assertion's signature does not verify.
  test::TempDir dir;
  json forged = fcm.doc;
  forged["private_key"] = test::ReadFile(KeyFile(dir, "other.pem", "RSA")).value_or("");
  PushConfig wrong = fcm.Config();
  wrong.fcm_service_account_file = test::TempFile("forged.json", forged.dump());
  auto bad = MakeChannel(wrong);
  SendResult refused = bad->Send(PushJob(json::array({Fcm("device-ok")})));
  INFO(refused.error);
  CHECK(refused.kind == K::kPermanent);
  CHECK_THAT(refused.error, Contains("invalid_grant"));
}

// ---------------------------------------------------------------------------------------------
// APNs against the stand-in

TEST_CASE("Push: APNs over HTTP/2 (TLS): headers, token reused for 40 minutes, then a new one the stand-in accepts") {
  ApnsService apns;
  ManualClock clock(std::chrono::system_clock::now());
  auto ch = MakeChannel(apns.Config(), clock);
  DeliveryJob job = PushJob(json::array({Apns(kDevice)}));
  job.content["collapse_key"] = "invoice-42";
  SendResult r = ch->Send(job);
  INFO(r.error << "\n" << apns.server.Output());
  REQUIRE(r.ok());
  std::vector<json> reqs = apns.Requests();
  REQUIRE(reqs.size() == 1);
  const json& hd = reqs[0]["headers"];
  CHECK(reqs[0]["path"] == "/3/device/" + kDevice);
  CHECK(hd["apns-topic"] == "org.example.herald");
  CHECK(hd["apns-push-type"] == "alert");
  CHECK(hd["apns-priority"] == "10");
  CHECK(hd["apns-collapse-id"] == "invoice-42");
  CHECK(hd["apns-id"] == ApnsId(job.delivery_id));
  long long expiration = std::stoll(hd["apns-expiration"].get<std::string>());
  CHECK(std::abs(expiration - std::chrono::duration_cast<std::chrono::seconds>(clock.Now().time_since_epoch()).count() -
                 86400) <= 2);
  json payload = json::parse(reqs[0]["body"].get<std::string>());
  CHECK(payload["aps"]["alert"]["title"] == "Rechnung bezahlt");
  CHECK(payload["herald"]["delivery_id"] == job.delivery_id);

  clock.Advance(39min);
  REQUIRE(ch->Send(job).ok());
  CHECK(ch->Tokens().apns_jwts == 1);
  clock.Advance(2min);  // 41 min: past apns_token_refresh (40 min), more than 20 after the last
  r = ch->Send(job);
  INFO(r.error);
  REQUIRE(r.ok());
  CHECK(ch->Tokens().apns_jwts == 2);
  reqs = apns.Requests();
  REQUIRE(reqs.size() == 3);
  CHECK(reqs[0]["headers"]["authorization"] == reqs[1]["headers"]["authorization"]);
  CHECK(reqs[1]["headers"]["authorization"] != reqs[2]["headers"]["authorization"]);

  // An event that expired meanwhile: deliver now or never.
  DeliveryJob expired = job;
  expired.event["expires_at"] = FormatRfc3339(clock.Now() - 1min);
  REQUIRE(ch->Send(expired).ok());
  CHECK(apns.Requests().back()["headers"]["apns-expiration"] == "0");
}

TEST_CASE("Push: APNs errors from the stand-in: 410 and BadDeviceToken gone, 429/500/503 retryable") {
  ApnsService apns;
  auto ch = MakeChannel(apns.Config());
  auto token = [](const std::string& prefix) { return prefix + kDevice.substr(prefix.size()); };
  SendResult gone = ch->Send(PushJob(json::array({Apns(token("dead")), Apns(token("bad0"))})));
  CHECK(gone.kind == K::kInvalidContact);
  CHECK(gone.invalid_contacts.size() == 2);
  CHECK_THAT(gone.error, Contains("Unregistered"));
  CHECK_THAT(gone.error, Contains("BadDeviceToken"));
  SendResult busy = ch->Send(PushJob(json::array({Apns(token("0429"))})));
  CHECK(busy.kind == K::kRetryable);
  CHECK(busy.retry_after == Millis(5000));
  CHECK(ch->Send(PushJob(json::array({Apns(token("0500"))}))).kind == K::kRetryable);
  CHECK(ch->Send(PushJob(json::array({Apns(token("0503"))}))).kind == K::kRetryable);

  ApnsService fresh;  // a new token within 20 minutes of the last would be TooManyProviderTokenUpdates
  PushConfig wrong_topic = fresh.Config();
  wrong_topic.apns_topic = "org.example.other";
  auto other = MakeChannel(wrong_topic);
  SendResult r = other->Send(PushJob(json::array({Apns(kDevice)})));
  CHECK(r.kind == K::kPermanent);  // a configuration problem must not delete every device
  CHECK_THAT(r.error, Contains("DeviceTokenNotForTopic"));
  CHECK(r.invalid_contacts.empty());
}

TEST_CASE("Push: 4 threads x 10 concurrent APNs sends share one HTTP/2 connection") {
  ApnsService apns;
  auto ch = MakeChannel(apns.Config());
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        if (ch->Send(PushJob(json::array({Apns(kDevice), Apns(kDevice)}), "u-" + std::to_string(t * 10 + i))).ok())
          ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(ok == 40);
  CHECK(apns.Requests().size() == 80);
  CHECK(apns.Sessions() == 1);
  CHECK(ch->ProviderConnections() == 1);
}

TEST_CASE("Push: several kinds at once: the job succeeds if one accepts, else retries, else fails over") {
  WebPushService web;
  FcmService fcm;
  ApnsService apns;
  PushConfig c = web.Config();
  PushConfig f = fcm.Config();
  PushConfig a = apns.Config();
  c.fcm_service_account_file = f.fcm_service_account_file;
  c.fcm_url = f.fcm_url;
  c.apns_key_file = a.apns_key_file;
  c.apns_key_id = a.apns_key_id;
  c.apns_team_id = a.apns_team_id;
  c.apns_topic = a.apns_topic;
  c.apns_url = a.apns_url;
  c.ca_file = test::TempFile("ca.pem", test::ReadFile(web.cert.cert).value_or("") + test::ReadFile(apns.cert.cert).value_or(""));
  auto ch = MakeChannel(c);
  CHECK(ch->Providers() == std::vector<std::string>{"webpush", "fcm", "apns"});
  auto [sub, hash] = web.Subscribe();
  SendResult all = ch->Send(PushJob(json::array({sub, Fcm("device-ok"), Apns(kDevice)})));
  INFO(all.error);
  CHECK(all.kind == K::kOk);
  CHECK(web.Messages(hash).size() == 1);
  CHECK(fcm.Requests("messages:send").size() == 1);
  CHECK(apns.Requests().size() == 1);
  SendResult retry = ch->Send(PushJob(json::array({Fcm("unregistered-9"), Apns("0503" + kDevice.substr(4))})));
  CHECK(retry.kind == K::kRetryable);
  CHECK(retry.invalid_contacts == std::vector<std::string>{"unregistered-9"});
  SendResult over = ch->Send(PushJob(json::array({Fcm("unregistered-9"), Fcm("invalid-9")})));
  CHECK(over.kind == K::kPermanent);  // fails over to e-mail; the gone one is still removed
  CHECK(over.invalid_contacts == std::vector<std::string>{"unregistered-9"});
}
