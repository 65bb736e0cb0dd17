// kill -9 of heraldd's worker role while webhooks are being delivered to Debian's webhook
// server, then a restart: every job arrives; a repeat is possible only for the few sends that
// were in flight at the kill, and it carries the same Idempotency-Key.
#include <catch2/catch.hpp>
#include <csignal>
#include <fstream>
#include <iterator>
#include <map>

#include "broker/options.h"
#include "broker/topology.h"
#include "engine/notification_engine.h"
#include "store/store.h"
#include "tests/support/ids.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;
using nlohmann::json;

TEST_CASE("Worker crash: heraldd killed mid-delivery, after restart every webhook arrived, repeats only in flight") {
  const std::string log = TempFile("received.log", "");
  // The hook records the Idempotency-Key of every request that passed the signature check.
  WebhookServer server(RecordingHooks("deliver", "crash-secret", log));

  Vhost vhost("worker-crash");
  std::string dir = "/tmp/herald-test-" + std::to_string(::getpid()) + "-worker-crash";
  const long long concurrency = 4;
  std::vector<std::string> env = {"HERALD_BROKER_URL=" + vhost.url(), "HERALD_STORE_URL=sqlite://" + dir + "/herald.db",
                                  "HERALD_CHANNELS_WEBHOOK_SECRET=crash-secret",
                                  "HERALD_CHANNELS_WEBHOOK_ALLOW_PRIVATE_TARGETS=true",
                                  "HERALD_CHANNELS_WEBHOOK_RATE=40",
                                  "HERALD_CHANNELS_WEBHOOK_CONCURRENCY=" + std::to_string(concurrency),
                                  "HERALD_BROKER_RECONNECT_MAX=1s"};
  std::vector<std::string> argv = {BinaryDir() + "/heraldd", "--config", SourceDir() + "/config/herald.yaml",
                                   "--roles", "worker"};
  Config config = vhost.MakeConfig();
  broker::Publisher publisher(broker::PublisherOptionsFor(config, "worker crash test"));
  publisher.Start();
  const int n = 120;
  for (int i = 0; i < n; ++i) {
    std::string user = "u-" + std::to_string(i);
    json job = {{"v", 1}, {"delivery_id", DeliveryId("evt-wc", user, "webhook", SystemTime{})},
                {"notification_id", NotificationId("evt-wc", user, SystemTime{})},
                {"event", {{"id", "evt-wc"}, {"type", "billing.invoice.paid"}}}, {"user_id", user},
                {"channel", "webhook"}, {"contact", {{"url", server.Url("deliver")}}}, {"content", json::object()},
                {"data", {{"amount", "1"}}}, {"attempt", 1}, {"fallback", json::array()}};
    REQUIRE(publisher.PublishAndWait({broker::kDeliverExchange, "webhook", job.dump(), json::object(),
                                      "application/json", job["delivery_id"], true, true},
                                     10s)
                .ok());
  }
  size_t at_kill = 0;
  {
    Process first(argv, env, "heraldd-worker-1");
    REQUIRE(WaitFor([&] { return LineCounts(log).size() >= 30; }, 30s, 5ms));
    first.Signal(SIGKILL);
    REQUIRE(first.Wait(10s) == std::optional<int>(128 + SIGKILL));
    at_kill = LineCounts(log).size();
  }
  INFO("delivered when killed: " << at_kill);
  REQUIRE(at_kill < static_cast<size_t>(n));  // it really was in the middle

  Process second(argv, env, "heraldd-worker-2");
  REQUIRE(WaitFor([&] { return LineCounts(log).size() == static_cast<size_t>(n); }, 60s, 50ms));
  Peek peek(vhost.url());
  CHECK(WaitFor([&] { return peek.Depth("herald.deliver.webhook") == 0; }, 10s));
  second.Signal(SIGTERM);
  CHECK(second.Wait(30s) == std::optional<int>(0));

  auto received = LineCounts(log);
  int repeats = 0;
  for (const auto& [key, count] : received) repeats += count - 1;
  INFO("repeats: " << repeats);
  CHECK(received.size() == static_cast<size_t>(n));
  CHECK(repeats <= concurrency);  // only sends in flight at the kill can repeat, with the same key
  CHECK(peek.Depth("herald.dlq") == 0);
  publisher.Stop(1s);
}

TEST_CASE("End to end: an event becomes an inbox entry and a signed webhook at a real webhook server") {
  const std::string log = TempFile("e2e.log", "");
  WebhookServer server(json::array({{
      {"id", "user-hook"},
      {"execute-command", "/bin/sh"},
      {"pass-arguments-to-command", json::array({{{"source", "string"}, {"name", "-c"}},
                                                 {{"source", "string"}, {"name", "printf '%s\\n' \"$1\" >> " + log}},
                                                 {{"source", "string"}, {"name", "sh"}},
                                                 {{"source", "entire-payload"}}})},
      {"trigger-rule", {{"match", {{"type", "payload-hmac-sha256"}, {"secret", "e2e-secret"},
                                   {"parameter", {{"source", "header"}, {"name", "X-Herald-Signature"}}}}}}},
      {"trigger-rule-mismatch-http-response-code", 403},
  }}).dump());
  Vhost vhost("e2e");
  std::string store_url = "sqlite:///tmp/herald-test-" + std::to_string(::getpid()) + "-e2e/herald.db";
  std::vector<std::string> env = {"HERALD_BROKER_URL=" + vhost.url(), "HERALD_STORE_URL=" + store_url,
                                  "HERALD_CHANNELS_WEBHOOK_SECRET=e2e-secret",
                                  "HERALD_CHANNELS_WEBHOOK_ALLOW_PRIVATE_TARGETS=true"};
  std::string prefs = TempFile("prefs.json", json{{"locale", "de"}, {"contacts", {{"webhook", server.Url("user-hook")}}}}.dump());
  std::string out;
  REQUIRE(Run({BinaryDir() + "/herald", "prefs", "set", "u-1", "--file", prefs}, env, &out) == 0);
  Process d({BinaryDir() + "/heraldd", "--config", SourceDir() + "/config/herald.yaml"}, env, "heraldd-e2e");
  REQUIRE(WaitFor([&] { return d.OutputContains("started"); }, 15s));
  REQUIRE(Run({BinaryDir() + "/herald", "--config", SourceDir() + "/config/herald.yaml", "publish", "--type",
               "billing.invoice.paid", "--to", "u-1", "--var", "amount=12 EUR", "--id", "evt-e2e"},
              env, &out) == 0);
  // The webhook server only ran the command because our signature matched.
  REQUIRE(WaitFor([&] {
    std::ifstream in(log);
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return s.find("evt-e2e") != std::string::npos;
  }, 20s));
  std::ifstream in(log);
  std::string line;
  std::getline(in, line);
  json payload = json::parse(line);
  CHECK(payload["event"]["id"] == "evt-e2e");
  CHECK(payload["user_id"] == "u-1");
  CHECK(payload["data"]["amount"] == "12 EUR");
  CHECK(IsDeliveryOf(payload["delivery_id"], "evt-e2e", "u-1", "webhook"));

  std::unique_ptr<Store> store;
  REQUIRE(OpenStore(store_url, store).ok());
  std::vector<InboxEntry> inbox;
  REQUIRE(WaitFor([&] { return store->ListInbox("u-1", 0, 10, inbox).ok() && inbox.size() == 1; }, 20s));
  CHECK(inbox[0].title == "Rechnung bezahlt");
  CHECK(inbox[0].body == "Ihre Rechnung über 12 EUR wurde bezahlt.");
  d.Signal(SIGTERM);
  CHECK(d.Wait(30s) == std::optional<int>(0));
}
