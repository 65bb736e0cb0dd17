// The HTTP API as its callers meet it: heraldd runs as a real process against the test broker,
// and every request goes through libcurl.
#include <catch2/catch.hpp>
#include <curl/curl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <set>

#include "api/auth.h"
#include "engine/notification_engine.h"
#include "store/store.h"
#include "tests/support/http_client.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;
using Catch::Matchers::Contains;

namespace {

// config/herald.yaml's local keys and secret.
const std::string kPublisherKey = "local-publisher-key-0001";
const std::string kAdminKey = "local-admin-key-0000001";
const std::string kJwtSecret = "local-development-jwt-secret-0123456789";

std::string Token(const std::string& user, long long exp_offset_s = 3600, const std::string& secret = kJwtSecret) {
  long long now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  return api::SignJwtHs256({{"sub", user}, {"exp", now + exp_offset_s}}, secret);
}

std::vector<std::string> Bearer(const std::string& credential, const std::string& content_type = "application/json") {
  return {"Authorization: Bearer " + credential, "Content-Type: " + content_type};
}

// heraldd with the given roles on a vhost of its own, its API on a free port.
class Daemon {
 public:
  // Waits until /readyz says the broker and the store can be used, unless `wait_ready` is false.
  Daemon(const Vhost& vhost, const std::string& roles, std::vector<std::string> env = {},
         const std::string& store_name = "", bool wait_ready = true)
      : port_(FreePort()) {
    // Daemons given the same store name share the store.
    std::string store = "sqlite:///tmp/herald-test-" + std::to_string(::getpid()) + "-store-" +
                        (store_name.empty() ? vhost.name() : store_name) + "/herald.db";
    std::vector<std::string> e = {"HERALD_BROKER_URL=" + vhost.url(), "HERALD_BROKER_RECONNECT_MAX=1s",
                                  "HERALD_STORE_URL=" + store, "HERALD_API_LISTEN=127.0.0.1:" + std::to_string(port_),
                                  "HERALD_CHANNELS_EMAIL_PORT=9",  // nothing listens: e-mail stays queued
                                  "HERALD_CHANNELS_WEBHOOK_ENABLED=false", "HERALD_API_STREAM_KEEPALIVE=1s"};
    e.insert(e.end(), env.begin(), env.end());
    env_ = e;
    process_ = std::make_unique<Process>(
        std::vector<std::string>{BinaryDir() + "/heraldd", "--config", SourceDir() + "/config/herald.yaml", "--roles", roles},
        e, "heraldd-" + vhost.name());
    REQUIRE(WaitFor([&] { return process_->OutputContains("heraldd 0.1.0 started") || process_->Wait(0ms); }, 20s));
    INFO(process_->Output());
    REQUIRE(process_->OutputContains("api listening on"));
    if (wait_ready) REQUIRE(WaitFor([&] { return Http("GET", Url("/readyz")).status == 200; }, 15s));
  }
  std::string Url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  Process& process() { return *process_; }
  const std::vector<std::string>& env() const { return env_; }

 private:
  int port_;
  std::vector<std::string> env_;
  std::unique_ptr<Process> process_;
};

std::string EventBody(const std::string& id, const std::string& type, const std::vector<std::string>& to,
                  nlohmann::json vars = nlohmann::json::object()) {
  return nlohmann::json{{"specversion", "1.0"}, {"id", id}, {"source", "/tests"}, {"type", type},
                        {"data", {{"recipients", to}, {"vars", vars}}}}
      .dump();
}

std::string Invoice(const std::string& id, const std::string& user) {
  return EventBody(id, "billing.invoice.paid", {user}, {{"amount", "12.00 EUR"}});
}

HttpResponse PostEvent(const Daemon& d, const std::string& body) {
  return Http("POST", d.Url("/v1/events"), body, Bearer(kPublisherKey));
}

size_t InboxSize(const Daemon& d, const std::string& user) {
  auto r = Http("GET", d.Url("/v1/users/" + user + "/notifications?limit=100"), "", Bearer(Token(user)));
  auto j = r.Json();
  return r.status == 200 && j.contains("items") ? j["items"].size() : 0;
}

void CheckProblem(const HttpResponse& r, long status, const std::string& code) {
  INFO(r.status << " " << r.body);
  CHECK(r.status == status);
  CHECK(r.Header("content-type") == "application/problem+json");
  auto j = r.Json();
  REQUIRE(j.is_object());
  CHECK(j["code"] == code);
  CHECK(j["status"] == status);
  CHECK(j.contains("title"));
  CHECK(j.contains("detail"));
}

}  // namespace

TEST_CASE("api: health, readiness, metrics, unknown routes and methods are problems") {
  Vhost vhost("api-health");
  Daemon d(vhost, "engine,worker,api");
  auto h = Http("GET", d.Url("/healthz"));
  CHECK(h.status == 200);
  CHECK(h.Json()["status"] == "ok");
  REQUIRE(WaitFor([&] { return Http("GET", d.Url("/readyz")).status == 200; }, 10s));
  auto ready = Http("GET", d.Url("/readyz")).Json();
  CHECK(ready["checks"]["broker"] == "ok");
  CHECK(ready["checks"]["store"] == "ok");

  // One delivery, so the per-channel series exist.
  REQUIRE(PostEvent(d, Invoice("evt-metrics-1", "u-m")).status == 202);
  REQUIRE(WaitFor([&] { return InboxSize(d, "u-m") == 1; }, 10s));
  auto m = Http("GET", d.Url("/metrics"));
  CHECK(m.status == 200);
  CHECK_THAT(m.Header("content-type"), Contains("text/plain"));
  for (const char* name : {"herald_events_received_total{type=\"billing.invoice.paid\"} 1",
                           "herald_deliveries_total{channel=\"in_app\",outcome=\"sent\"} 1",
                           "# TYPE herald_delivery_latency_seconds histogram",
                           "herald_delivery_latency_seconds_count{channel=\"in_app\"} 1",
                           "herald_delivery_latency_seconds_bucket{channel=\"in_app\",le=\"+Inf\"} 1",
                           "# TYPE herald_provider_request_seconds histogram", "# TYPE herald_dead_letters gauge",
                           "herald_dead_letters 0", "# TYPE herald_prefs_cache_hits_total counter",
                           "# TYPE herald_prefs_cache_misses_total counter", "# TYPE herald_events_invalid_total counter",
                           "# TYPE herald_rate_limit_wait_seconds_total counter"}) {
    INFO(name);
    CHECK_THAT(m.body, Contains(name));
  }

  CheckProblem(Http("GET", d.Url("/v2/nothing")), 404, "route_not_found");
  auto wrong = Http("DELETE", d.Url("/v1/events"), "", Bearer(kAdminKey));
  CheckProblem(wrong, 405, "method_not_allowed");
  CHECK(wrong.Header("allow") == "POST");
}

TEST_CASE("api: credentials: missing, wrong, expired, another user's, lacking scope") {
  Vhost vhost("api-auth");
  Daemon d(vhost, "api");
  const std::string prefs = d.Url("/v1/users/u-1/preferences");
  auto none = Http("GET", prefs);
  CheckProblem(none, 401, "missing_credentials");
  CHECK_THAT(none.Header("www-authenticate"), Contains("Bearer"));
  CheckProblem(Http("GET", prefs, "", Bearer("not-a-configured-key-123")), 401, "invalid_credentials");
  CheckProblem(Http("GET", prefs, "", {"Authorization: Basic dTpw"}), 401, "invalid_credentials");
  CheckProblem(Http("GET", prefs, "", Bearer(Token("u-1", -120))), 401, "token_expired");
  CheckProblem(Http("GET", prefs, "", Bearer(Token("u-1", 3600, "another-secret-of-at-least-32-chars!!"))), 401,
               "invalid_token");
  // alg "none" with no signature is never accepted.
  std::string unsigned_token = "eyJhbGciOiJub25lIn0." + Token("u-1").substr(Token("u-1").find('.') + 1);
  unsigned_token = unsigned_token.substr(0, unsigned_token.rfind('.') + 1);
  CheckProblem(Http("GET", prefs, "", Bearer(unsigned_token)), 401, "invalid_token");
  CheckProblem(Http("GET", prefs, "", Bearer("a.b.c")), 401, "invalid_token");

  // Another user's token: 403 on every user route, reading or writing.
  const std::string other = Token("u-2");
  CheckProblem(Http("GET", prefs, "", Bearer(other)), 403, "forbidden");
  CheckProblem(Http("PATCH", prefs, R"({"locale":"de"})", Bearer(other)), 403, "forbidden");
  CheckProblem(Http("GET", d.Url("/v1/users/u-1/notifications"), "", Bearer(other)), 403, "forbidden");
  CheckProblem(Http("POST", d.Url("/v1/users/u-1/presence"), R"({"state":"active"})", Bearer(other)), 403, "forbidden");
  CheckProblem(Http("GET", d.Url("/v1/users/u-1/stream"), "", Bearer(other)), 403, "forbidden");
  CheckProblem(Http("GET", d.Url("/v1/users/u-1/notifications/unread-count"), "", Bearer(other)), 403, "forbidden");

  // Scopes: the publisher key may not touch dead letters; a user token may not publish.
  CheckProblem(Http("GET", d.Url("/v1/dead-letters"), "", Bearer(kPublisherKey)), 403, "insufficient_scope");
  CheckProblem(Http("POST", d.Url("/v1/events"), Invoice("e-1", "u-1"), Bearer(Token("u-1"))), 403, "insufficient_scope");
  CheckProblem(Http("GET", d.Url("/v1/notifications/n-1/trace"), "", Bearer(Token("u-1"))), 403, "forbidden");
  CheckProblem(Http("GET", d.Url("/v1/traces?event_id=e-1&user_id=u-1"), "", Bearer(Token("u-1"))), 403, "forbidden");
  // A service key is not a user: user-only routes refuse it.
  CheckProblem(Http("GET", d.Url("/v1/users/u-1/notifications"), "", Bearer(kAdminKey)), 403, "forbidden");

  // The right ones.
  CHECK(Http("GET", prefs, "", Bearer(Token("u-1"))).status == 200);
  CHECK(Http("GET", prefs, "", Bearer(kPublisherKey)).status == 200);
  CHECK(Http("GET", prefs, "", Bearer(kAdminKey)).status == 200);
  // Keys never reach the log.
  CHECK_THAT(d.process().Output(), !Contains(kPublisherKey) && !Contains(kAdminKey) && !Contains("not-a-configured-key"));
}

TEST_CASE("api: POST /v1/events validates like the engine and answers 202 after the confirm") {
  Vhost vhost("api-events");
  Daemon d(vhost, "engine,worker,api");
  auto ok = PostEvent(d, Invoice("evt-api-1", "u-1"));
  INFO(ok.body);
  REQUIRE(ok.status == 202);
  CHECK(ok.Json()["id"] == "evt-api-1");
  REQUIRE(WaitFor([&] { return InboxSize(d, "u-1") == 1; }, 10s));
  // The same id again is accepted and recognised as a repeat: still one notification.
  CHECK(PostEvent(d, Invoice("evt-api-1", "u-1")).status == 202);

  CheckProblem(Http("POST", d.Url("/v1/events"), "{\"specversion\": ", Bearer(kPublisherKey)), 400, "malformed_json");
  CheckProblem(Http("POST", d.Url("/v1/events"), Invoice("e-2", "u-1"), Bearer(kPublisherKey, "text/plain")), 415,
               "unsupported_media_type");
  auto missing = PostEvent(d, EventBody("e-3", "billing.invoice.paid", {"u-1"}));  // no amount
  CheckProblem(missing, 422, "invalid_event");
  CHECK(missing.Json()["field"] == "data.vars");
  CHECK_THAT(missing.Json()["detail"].get<std::string>(), Contains("amount"));
  auto type = PostEvent(d, EventBody("e-4", "Not A Type", {"u-1"}));
  CheckProblem(type, 422, "invalid_event");
  CHECK(type.Json()["field"] == "type");
  auto unknown = PostEvent(d, EventBody("e-5", "no.such.type", {"u-1"}));
  CheckProblem(unknown, 422, "invalid_event");
  std::string huge = EventBody("e-6", "billing.invoice.paid", {"u-1"}, {{"amount", std::string(1100 * 1024, 'x')}});
  CheckProblem(PostEvent(d, huge), 413, "payload_too_large");
  CHECK(Http("GET", d.Url("/healthz")).status == 200);  // still serving
  CHECK(InboxSize(d, "u-1") == 1);
}

TEST_CASE("api: POST /v1/events answers 503 with Retry-After while the broker is unreachable") {
  Vhost vhost("api-nobroker");
  Daemon d(vhost, "api", {"HERALD_BROKER_URL=amqp://guest:guest@127.0.0.1:" + std::to_string(FreePort()) + "/"}, "",
           /*wait_ready=*/false);
  auto r = PostEvent(d, Invoice("evt-down-1", "u-1"));
  CheckProblem(r, 503, "broker_unavailable");
  CHECK(!r.Header("retry-after").empty());
  auto ready = Http("GET", d.Url("/readyz"));
  CHECK(ready.status == 503);
  CHECK(ready.Json()["checks"]["broker"] == "not connected");
  CHECK(ready.Json()["checks"]["store"] == "ok");
  CHECK(Http("GET", d.Url("/healthz")).status == 200);  // alive, just not ready
}

TEST_CASE("api: preferences GET, PUT, PATCH, errors name the field, other processes drop their cache") {
  Vhost vhost("api-prefs");
  // Two processes on one store: the API here, the engine there with a cache that would keep a
  // stale copy for 10 minutes unless the change is announced.
  Daemon api(vhost, "api", {}, vhost.name());
  Daemon engine(vhost, "engine,worker,api", {"HERALD_ENGINE_PREFS_CACHE_TTL=10m"}, vhost.name());
  const std::string url = api.Url("/v1/users/u-7/preferences");
  const auto user = Bearer(Token("u-7"));

  auto def = Http("GET", url, "", user);
  REQUIRE(def.status == 200);
  CHECK(def.Json()["user_id"] == "u-7");

  // The engine reads (and caches) u-7's defaults: in-app on.
  REQUIRE(PostEvent(engine, Invoice("evt-p-1", "u-7")).status == 202);
  REQUIRE(WaitFor([&] { return InboxSize(engine, "u-7") == 1; }, 10s));

  nlohmann::json doc = {{"locale", "de"}, {"timezone", "Europe/Berlin"}, {"contacts", {{"email", "u7@example.org"}}},
                        {"channels", {{"in_app", false}}}};
  auto put = Http("PUT", url, doc.dump(), user);
  INFO(put.body);
  REQUIRE(put.status == 200);
  CHECK(put.Json()["locale"] == "de");
  CHECK(Http("GET", url, "", Bearer(kPublisherKey)).Json()["contacts"]["email"] == "u7@example.org");

  // The engine process got the signal: in-app is off now. Its trace says so (the cached copy
  // would have chosen in-app).
  REQUIRE(PostEvent(engine, Invoice("evt-p-2", "u-7")).status == 202);
  nlohmann::json t;
  REQUIRE(WaitFor([&] {
    t = Http("GET", engine.Url("/v1/traces?event_id=evt-p-2&user_id=u-7"), "", Bearer(kPublisherKey)).Json();
    return t.contains("decision");
  }, 10s));
  INFO(t.dump());
  CHECK(t["decision"]["channels"] == nlohmann::json::array({"email"}));
  CHECK(InboxSize(engine, "u-7") == 1);

  // PATCH is a JSON merge patch: null deletes, objects merge.
  auto patch = Http("PATCH", url, R"({"channels":{"in_app":true},"contacts":{"email":null}})",
                    Bearer(Token("u-7"), "application/merge-patch+json"));
  INFO(patch.body);
  REQUIRE(patch.status == 200);
  CHECK(patch.Json()["locale"] == "de");
  CHECK_FALSE(patch.Json()["contacts"].contains("email"));
  REQUIRE(PostEvent(engine, Invoice("evt-p-3", "u-7")).status == 202);
  REQUIRE(WaitFor([&] { return InboxSize(engine, "u-7") == 2; }, 10s));

  auto unknown = Http("PUT", url, R"({"colour":"red"})", user);
  CheckProblem(unknown, 422, "invalid_field");
  CHECK(unknown.Json()["field"] == "colour");
  auto badzone = Http("PATCH", url, R"({"timezone":"Mars/Olympus"})", user);
  CheckProblem(badzone, 422, "invalid_field");
  CHECK(badzone.Json()["field"] == "timezone");
  auto other = Http("PUT", url, R"({"user_id":"u-8"})", user);
  CheckProblem(other, 422, "invalid_field");
  CHECK(other.Json()["field"] == "user_id");
  CheckProblem(Http("PUT", url, "[1,2]", user), 422, "invalid_field");
  CheckProblem(Http("PUT", url, "{nope", user), 400, "malformed_json");
  CheckProblem(Http("PUT", url, std::string(70 * 1024, ' ') + "{}", user), 413, "payload_too_large");
  CHECK(Http("GET", url, "", user).Json()["locale"] == "de");  // nothing changed by the failures
}

TEST_CASE("api: presence heartbeats steer the engine (rule 5)") {
  Vhost vhost("api-presence");
  Daemon d(vhost, "engine,worker,api");
  const auto user = Bearer(Token("u-p"));
  REQUIRE(Http("PUT", d.Url("/v1/users/u-p/preferences"), R"({"contacts":{"email":"p@example.org"}})", user).status == 200);
  auto trace_of = [&](const std::string& event_id) {
    // Notification ids are not guessable by clients; the inbox tells them.
    nlohmann::json found;
    WaitFor([&] {
      auto items = Http("GET", d.Url("/v1/users/u-p/notifications"), "", user).Json()["items"];
      for (const auto& it : items) {
        if (it["event_id"] == event_id) found = Http("GET", d.Url("/v1/notifications/" + it["id"].get<std::string>() + "/trace"),
                                                     "", Bearer(kPublisherKey)).Json();
      }
      return !found.is_null();
    }, 10s);
    return found;
  };

  auto active = Http("POST", d.Url("/v1/users/u-p/presence"), R"({"state":"active"})", user);
  REQUIRE(active.status == 200);
  CHECK(active.Json()["ttl_seconds"] == 60);
  REQUIRE(PostEvent(d, Invoice("evt-pr-1", "u-p")).status == 202);
  auto t1 = trace_of("evt-pr-1");
  INFO(t1.dump());
  CHECK(t1["decision"]["channels"] == nlohmann::json::array({"in_app"}));

  REQUIRE(Http("POST", d.Url("/v1/users/u-p/presence"), R"({"state":"background"})", user).status == 200);
  REQUIRE(PostEvent(d, Invoice("evt-pr-2", "u-p")).status == 202);
  auto t2 = trace_of("evt-pr-2");
  INFO(t2.dump());
  CHECK(t2["decision"]["channels"] == nlohmann::json::array({"in_app", "email"}));

  CheckProblem(Http("POST", d.Url("/v1/users/u-p/presence"), R"({"state":"asleep"})", user), 422, "invalid_field");
  CheckProblem(Http("POST", d.Url("/v1/users/u-p/presence"), R"({"state":"active","x":1})", user), 422, "invalid_field");
}

TEST_CASE("api: inbox paging newest first, read state idempotent, unread count") {
  Vhost vhost("api-inbox");
  Daemon d(vhost, "engine,worker,api");
  const auto user = Bearer(Token("u-i"));
  for (int i = 1; i <= 5; ++i) REQUIRE(PostEvent(d, Invoice("evt-i-" + std::to_string(i), "u-i")).status == 202);
  REQUIRE(WaitFor([&] { return InboxSize(d, "u-i") == 5; }, 15s));

  std::vector<std::string> seen;
  std::vector<long long> seqs;
  std::string cursor;
  int pages = 0;
  do {
    auto r = Http("GET", d.Url("/v1/users/u-i/notifications?limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor)), "", user);
    REQUIRE(r.status == 200);
    auto j = r.Json();
    for (const auto& it : j["items"]) {
      seen.push_back(it["id"]);
      seqs.push_back(it["seq"]);
      CHECK(it["read_at"].is_null());
      CHECK(it["title"] == "Invoice paid");
    }
    cursor = j["next_cursor"].is_null() ? "" : j["next_cursor"].get<std::string>();
    ++pages;
  } while (!cursor.empty() && pages < 10);
  CHECK(pages == 3);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 5);
  CHECK(std::is_sorted(seqs.rbegin(), seqs.rend()));  // newest first

  const std::string read = d.Url("/v1/users/u-i/notifications/" + seen[0] + "/read");
  CHECK(Http("POST", read, "", user).status == 204);
  CHECK(Http("POST", read, "", user).status == 204);  // again: no change, no error
  CHECK(Http("GET", d.Url("/v1/users/u-i/notifications/unread-count"), "", user).Json()["unread"] == 4);
  CheckProblem(Http("POST", d.Url("/v1/users/u-i/notifications/n-nope/read"), "", user), 404, "not_found");
  auto all = Http("POST", d.Url("/v1/users/u-i/notifications/read-all"), "", user);
  CHECK(all.Json()["marked"] == 4);
  CHECK(Http("POST", d.Url("/v1/users/u-i/notifications/read-all"), "", user).Json()["marked"] == 0);
  CHECK(Http("GET", d.Url("/v1/users/u-i/notifications/unread-count"), "", user).Json()["unread"] == 0);

  CheckProblem(Http("GET", d.Url("/v1/users/u-i/notifications?cursor=bogus"), "", user), 400, "invalid_cursor");
  CheckProblem(Http("GET", d.Url("/v1/users/u-i/notifications?limit=0"), "", user), 400, "invalid_parameter");
  CheckProblem(Http("GET", d.Url("/v1/users/u-i/notifications?limit=1000"), "", user), 400, "invalid_parameter");
}

TEST_CASE("api: the stream delivers live, and resumes from Last-Event-ID without gap or repeat") {
  Vhost vhost("api-stream");
  Daemon d(vhost, "engine,worker,api");
  const std::string url = d.Url("/v1/users/u-s/stream");
  const auto user = Bearer(Token("u-s"));
  auto publish = [&](const std::string& id) {
    // A foreign AMQP client (python3-pika) publishes straight to the broker.
    REQUIRE(PikaPublish(vhost.url(), "herald.events", "billing.invoice.paid", Invoice(id, "u-s")) == 0);
  };
  std::string last_id;
  {
    SseClient s(url, user);
    REQUIRE(s.WaitOpen(5s));
    REQUIRE(s.Status() == 200);
    // An open stream makes the user active: in-app only.
    publish("evt-s-1");
    REQUIRE(s.WaitEvents(1, 10s));
    auto e = s.Events()[0];
    CHECK(e.event == "notification");
    auto data = nlohmann::json::parse(e.data);
    CHECK(data["event_id"] == "evt-s-1");
    CHECK(data["body"] == "Your invoice of 12.00 EUR was paid.");
    last_id = e.id;
    // Keep-alive comments arrive on an idle stream (HERALD_API_STREAM_KEEPALIVE=1s).
    size_t before = s.Comments();
    CHECK(WaitFor([&] { return s.Comments() >= before + 1; }, 5s));
  }
  for (int i = 2; i <= 4; ++i) publish("evt-s-" + std::to_string(i));
  REQUIRE(WaitFor([&] { return InboxSize(d, "u-s") == 4; }, 15s));

  auto headers = user;
  headers.push_back("Last-Event-ID: " + last_id);
  SseClient again(url, headers);
  REQUIRE(again.WaitEvents(3, 10s));
  publish("evt-s-5");  // and live ones keep coming after the catch-up
  REQUIRE(again.WaitEvents(4, 10s));
  auto events = again.Events();
  std::vector<std::string> ids;
  for (const auto& e : events) ids.push_back(nlohmann::json::parse(e.data)["event_id"]);
  CHECK(ids == std::vector<std::string>{"evt-s-2", "evt-s-3", "evt-s-4", "evt-s-5"});
  for (size_t i = 1; i < events.size(); ++i) CHECK(std::stoll(events[i].id) > std::stoll(events[i - 1].id));

  auto bad = headers;
  bad.back() = "Last-Event-ID: yesterday";
  CheckProblem(Http("GET", url, "", bad), 400, "invalid_parameter");
}

TEST_CASE("api: a stream ends when its token expires, then HEAD and OPTIONS answer") {
  Vhost vhost("api-expiry");
  Daemon d(vhost, "api", {"HERALD_API_JWT_LEEWAY=0s", "HERALD_API_STREAM_KEEPALIVE=1s"});
  SseClient s(d.Url("/v1/users/u-e/stream"), Bearer(Token("u-e", 2)));
  REQUIRE(s.WaitOpen(5s));
  CHECK(s.Status() == 200);
  CHECK_FALSE(s.WaitEnded(500ms));
  CHECK(s.WaitEnded(6s));  // at the first wake after exp
  CheckProblem(Http("GET", d.Url("/v1/users/u-e/notifications"), "", Bearer(Token("u-e", -1))), 401, "token_expired");

  auto head = Http("HEAD", d.Url("/healthz"));
  CHECK(head.status == 200);
  auto options = Http("OPTIONS", d.Url("/v1/users/u-e/preferences"));
  CHECK(options.status == 204);
  CHECK(options.Header("allow") == "GET, PUT, PATCH");
}

TEST_CASE("api: the trace shows the decision and every delivery attempt") {
  Vhost vhost("api-trace");
  Daemon d(vhost, "engine,worker,api");
  REQUIRE(PostEvent(d, Invoice("evt-t-1", "u-t")).status == 202);
  REQUIRE(WaitFor([&] { return InboxSize(d, "u-t") == 1; }, 10s));
  std::string nid = Http("GET", d.Url("/v1/users/u-t/notifications"), "", Bearer(Token("u-t"))).Json()["items"][0]["id"];
  nlohmann::json t;
  REQUIRE(WaitFor([&] {
    t = Http("GET", d.Url("/v1/notifications/" + nid + "/trace"), "", Bearer(kPublisherKey)).Json();
    return t.contains("attempts") && !t["attempts"].empty();
  }, 10s));
  INFO(t.dump(2));
  CHECK(t["event_id"] == "evt-t-1");
  CHECK(t["user_id"] == "u-t");
  CHECK(t["decision"]["channels"] == nlohmann::json::array({"in_app"}));
  CHECK(!t["decision"]["steps"].empty());
  CHECK(t["attempts"][0]["channel"] == "in_app");
  CHECK(t["attempts"][0]["outcome"] == "sent");
  CHECK(t["attempts"][0]["attempt"] == 1);
  CheckProblem(Http("GET", d.Url("/v1/notifications/n-unknown/trace"), "", Bearer(kPublisherKey)), 404, "not_found");

  // A service finds the same trace by what it published: the event id and the user id.
  auto by_event = Http("GET", d.Url("/v1/traces?event_id=evt-t-1&user_id=u-t"), "", Bearer(kPublisherKey));
  REQUIRE(by_event.status == 200);
  CHECK(by_event.Json()["notification_id"] == nid);
  CHECK(by_event.Json()["attempts"] == t["attempts"]);
  CheckProblem(Http("GET", d.Url("/v1/traces?event_id=evt-t-1&user_id=u-other"), "", Bearer(kPublisherKey)), 404,
               "not_found");
  auto missing = Http("GET", d.Url("/v1/traces?event_id=evt-t-1"), "", Bearer(kPublisherKey));
  CheckProblem(missing, 400, "invalid_parameter");
  CHECK(missing.Json()["field"] == "user_id");
  // Ids may hold any printable character; query encoding carries them.
  REQUIRE(PostEvent(d, Invoice("evt/t 2?&", "u-t")).status == 202);
  REQUIRE(WaitFor([&] { return InboxSize(d, "u-t") == 2; }, 10s));
  auto odd = Http("GET", d.Url("/v1/traces?event_id=evt%2Ft%202%3F%26&user_id=u-t"), "", Bearer(kPublisherKey));
  INFO(odd.body);
  REQUIRE(odd.status == 200);
  CHECK(odd.Json()["event_id"] == "evt/t 2?&");
}

// Load, bounded: 1,000 streams held open by one client thread (curl multi) while /healthz is timed.
TEST_CASE("api: 1,000 open streams do not delay other requests") {
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  if (nofile.rlim_cur < 2200 && nofile.rlim_max >= 2200) {
    nofile.rlim_cur = 2200;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  Vhost vhost("api-load");
  Daemon d(vhost, "api", {"HERALD_API_STREAM_KEEPALIVE=5s"});
  constexpr int kStreams = 1000;
  auto time_healthz = [&](const std::function<void()>& between) {
    std::vector<double> ms;
    for (int i = 0; i < 50; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      auto r = Http("GET", d.Url("/healthz"), "", {}, 5s);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      REQUIRE(r.status == 200);
      between();
    }
    std::sort(ms.begin(), ms.end());
    return ms;
  };
  auto baseline = time_healthz([] {});
  CURLM* multi = curl_multi_init();
  std::vector<CURL*> handles;
  std::vector<std::string> tokens;
  std::vector<curl_slist*> lists;
  std::atomic<int> greeted{0};
  std::vector<char> got(kStreams, 0);
  struct Ctx {
    std::atomic<int>* greeted;
    char* got;
  };
  std::vector<Ctx> ctx(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    std::string user = "load-" + std::to_string(i);
    CURL* h = curl_easy_init();
    curl_slist* l = curl_slist_append(nullptr, ("Authorization: Bearer " + Token(user)).c_str());
    lists.push_back(l);
    ctx[i] = {&greeted, &got[i]};
    curl_easy_setopt(h, CURLOPT_URL, d.Url("/v1/users/" + user + "/stream").c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &ctx[i]);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, +[](char*, size_t s, size_t n, void* p) -> size_t {
      auto* c = static_cast<Ctx*>(p);
      if (!*c->got) {
        *c->got = 1;
        ++*c->greeted;
      }
      return s * n;
    });
    curl_multi_add_handle(multi, h);
    handles.push_back(h);
  }
  auto started = std::chrono::steady_clock::now();
  auto pump = [&](Millis for_how_long) {
    auto until = std::chrono::steady_clock::now() + for_how_long;
    while (std::chrono::steady_clock::now() < until) {
      int running = 0;
      curl_multi_perform(multi, &running);
      curl_multi_poll(multi, nullptr, 0, 20, nullptr);
    }
  };
  while (greeted < kStreams && std::chrono::steady_clock::now() - started < 60s) pump(100ms);
  double open_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  REQUIRE(greeted == kStreams);

  // /healthz while all of them stay open (the streams are pumped between requests).
  auto ms = time_healthz([&] { pump(10ms); });
  auto metrics = Http("GET", d.Url("/metrics")).body;
  WARN("1000 streams opened in " << open_s << " s; /healthz with them open: p50 " << ms[25] << " ms, max " << ms.back()
                                 << " ms; without streams: p50 " << baseline[25] << " ms, max " << baseline.back()
                                 << " ms; p50 ratio " << ms[25] / baseline[25]);
  CHECK_THAT(metrics, Contains("herald_api_streams_open 1000"));
  CHECK(ms[25] < 100);
  CHECK(ms.back() < 1000);

  for (size_t i = 0; i < handles.size(); ++i) {
    curl_multi_remove_handle(multi, handles[i]);
    curl_easy_cleanup(handles[i]);
    curl_slist_free_all(lists[i]);
  }
  curl_multi_cleanup(multi);
  // Closed streams are noticed at the next keep-alive and released.
  auto closed_at = std::chrono::steady_clock::now();
  CHECK(WaitFor([&] { return Http("GET", d.Url("/metrics")).body.find("herald_api_streams_open 0") != std::string::npos; },
                30s));
  WARN("streams released " << std::chrono::duration<double>(std::chrono::steady_clock::now() - closed_at).count()
                           << " s after the client closed them");
}

TEST_CASE("api: dead letters: list with filters and cursor, replay (dry run, then for real), purge, audit") {
  Vhost vhost("api-dlq");
  Daemon d(vhost, "api", {}, vhost.name());
  std::unique_ptr<Store> store;
  REQUIRE(OpenStore("sqlite:///tmp/herald-test-" + std::to_string(::getpid()) + "-store-" + vhost.name() + "/herald.db",
                    store).ok());
  const SystemTime base = *ParseRfc3339("2026-11-20T10:00:00Z");
  struct Row {
    const char* channel;
    const char* reason;
    const char* type;
  };
  const std::vector<Row> rows = {{"email", "permanent", "billing.invoice.paid"},
                                 {"webhook", "attempts_exhausted", "billing.invoice.paid"},
                                 {"email", "attempts_exhausted", "social.post.liked"},
                                 {"webhook", "attempts_exhausted", "social.post.liked"},
                                 {"push", "invalid_contact", "social.post.liked"}};
  for (size_t i = 0; i < rows.size(); ++i) {
    DeadLetter l;
    l.delivery_id = "d-" + std::to_string(i);
    l.channel = rows[i].channel;
    l.reason = rows[i].reason;
    l.error = "provider said no";
    l.attempts = 6;
    l.event_id = "evt-" + std::to_string(i);
    l.event_type = rows[i].type;
    l.user_id = "u-" + std::to_string(i);
    l.first_failed_at = base + std::chrono::minutes(i);
    l.dead_at = base + std::chrono::hours(i);
    l.job_json = nlohmann::json{{"v", 1}, {"delivery_id", l.delivery_id}, {"channel", l.channel}, {"attempt", 6},
                                {"last_error", "x"}}.dump();
    l.headers_json = "{}";
    REQUIRE(store->PutDeadLetter(l).ok());
  }
  const auto admin = Bearer(kAdminKey);
  auto list = [&](const std::string& query) {
    auto r = Http("GET", d.Url("/v1/dead-letters" + query), "", admin);
    INFO(r.body);
    REQUIRE(r.status == 200);
    return r.Json();
  };
  auto ids = [](const nlohmann::json& page) {
    std::vector<std::string> out;
    for (const auto& it : page["items"]) out.push_back(it["delivery_id"]);
    return out;
  };
  CHECK(ids(list("")) == std::vector<std::string>{"d-0", "d-1", "d-2", "d-3", "d-4"});
  CHECK(ids(list("?channel=email")) == std::vector<std::string>{"d-0", "d-2"});
  CHECK(ids(list("?reason=attempts_exhausted&type=social.post.liked")) == std::vector<std::string>{"d-2", "d-3"});
  CHECK(ids(list("?since=2026-11-20T11:00:00Z&until=2026-11-20T13:00:00Z")) == std::vector<std::string>{"d-1", "d-2"});
  CHECK(ids(list("?user=u-4")) == std::vector<std::string>{"d-4"});
  // Cursor paging visits each row once.
  std::vector<std::string> paged;
  std::string cursor;
  for (int i = 0; i < 10; ++i) {
    auto page = list("?limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
    for (const auto& id : ids(page)) paged.push_back(id);
    if (page["next_cursor"].is_null()) break;
    cursor = page["next_cursor"];
  }
  CHECK(paged == std::vector<std::string>{"d-0", "d-1", "d-2", "d-3", "d-4"});
  CHECK(list("?channel=email")["items"][0]["job"]["attempt"] == 6);

  auto bad_channel = Http("GET", d.Url("/v1/dead-letters?channel=sms"), "", admin);
  CheckProblem(bad_channel, 400, "invalid_filter");
  CHECK(bad_channel.Json()["field"] == "channel");
  auto bad_since = Http("GET", d.Url("/v1/dead-letters?since=last-tuesday"), "", admin);
  CheckProblem(bad_since, 400, "invalid_filter");
  CHECK(bad_since.Json()["field"] == "since");
  CheckProblem(Http("GET", d.Url("/v1/dead-letters?cursor=xyz"), "", admin), 400, "invalid_cursor");

  const std::string replay = d.Url("/v1/dead-letters/replay");
  auto dry = Http("POST", replay, R"({"channel":"email","dry_run":true})", admin);
  INFO(dry.body);
  REQUIRE(dry.status == 200);
  CHECK(dry.Json()["selected"] == 2);
  CHECK(list("")["items"].size() == 5);  // a dry run changes nothing
  CheckProblem(Http("POST", replay, R"({"channel":"email","colour":"red"})", admin), 422, "invalid_field");
  auto none = Http("POST", replay, R"({"channel":"email","user":"nobody"})", admin);
  CHECK(none.status == 200);
  CHECK(none.Json()["selected"] == 0);

  auto done = Http("POST", replay, R"({"channel":"email"})", admin);
  INFO(done.body);
  REQUIRE(done.status == 200);
  CHECK(done.Json()["replayed"] == 2);
  CHECK(ids(list("")) == std::vector<std::string>{"d-1", "d-3", "d-4"});  // other channels untouched
  // The jobs wait in the e-mail delivery queue as first attempts, marked as replays.
  Peek peek(vhost.url());
  auto jobs = peek.Drain("herald.deliver.email");
  REQUIRE(jobs.size() == 2);
  for (const auto& m : jobs) {
    CHECK(nlohmann::json::parse(m.body)["attempt"] == 1);
    CHECK(m.headers.contains("x-herald-replayed-from"));
  }

  const std::string purge = d.Url("/v1/dead-letters");
  CheckProblem(Http("DELETE", purge, "", admin), 400, "filter_required");
  auto purged = Http("DELETE", purge + "?channel=webhook", "", admin);
  REQUIRE(purged.status == 200);
  CHECK(purged.Json()["deleted"] == 2);
  CHECK(ids(list("")) == std::vector<std::string>{"d-4"});

  std::vector<AuditRecord> audit;
  REQUIRE(store->ListAudit(10, audit).ok());
  REQUIRE(audit.size() >= 3);
  CHECK(audit[0].action == "purge");
  CHECK(audit[0].actor == "local_admin");
  CHECK(audit[0].count == 2);
  CHECK(audit[1].action == "replay");
  CHECK(audit[1].count == 2);
  CHECK_FALSE(audit[1].dry_run);
}
