// Dead letters end to end, with real provider targets: heraldd (engine and worker roles) as a
// process, the SMTP server (tests/support/smtp_server.py; STARTTLS and AUTH) refusing every
// message with a 5xx while it is "down", and a webhook target (Debian's webhook server) answering
// 503. Events become dead letters with their reasons; once the SMTP server is back, an operator's
// `herald dlq replay --channel email` gets each e-mail delivered exactly once and leaves the
// webhook dead letters alone.
#include <catch2/catch.hpp>
#include <csignal>
#include <map>
#include <set>

#include "store/store.h"
#include "tests/support/smtp_server.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;
using Catch::Matchers::Contains;
using nlohmann::json;

namespace {

std::vector<DeadLetter> Letters(Store& store, const std::string& channel) {
  DeadLetterFilter f;
  f.channel = channel;
  f.limit = 1000;
  std::vector<DeadLetter> rows;
  REQUIRE(store.ListDeadLetters(f, rows).ok());
  return rows;
}

}  // namespace

TEST_CASE("Dead letters end to end: providers down, dead-lettered with reasons, SMTP back, replay delivers each e-mail once",
          "[dlq]") {
  SmtpServer smtp(SmtpServer::Mode::kStartTls, {"--refuse", "554 5.3.2 not accepting mail (maintenance)"});
  // A hook whose rule never holds answers its mismatch code: a target that is down.
  WebhookServer hooks(json::array({{{"id", "down"},
                                    {"execute-command", "/bin/true"},
                                    {"trigger-rule", {{"match", {{"type", "value"}, {"value", "never"},
                                                                 {"parameter", {{"source", "header"}, {"name", "X-Never"}}}}}}},
                                    {"trigger-rule-mismatch-http-response-code", 503}}})
                          .dump());
  Vhost vhost("dlq-e2e");
  const std::string store_url = "sqlite://" + TempFile("dlq-e2e", "") + ".d/herald.db";
  const EmailConfig mail = smtp.Config();
  const std::vector<std::string> env = {
      "HERALD_BROKER_URL=" + vhost.url(), "HERALD_BROKER_RECONNECT_MAX=1s", "HERALD_STORE_URL=" + store_url,
      "HERALD_CHANNELS_EMAIL_HOST=" + mail.host, "HERALD_CHANNELS_EMAIL_PORT=" + std::to_string(mail.port),
      "HERALD_CHANNELS_EMAIL_TLS=" + mail.tls, "HERALD_CHANNELS_EMAIL_USERNAME=" + mail.username,
      "HERALD_CHANNELS_EMAIL_PASSWORD=" + mail.password, "HERALD_CHANNELS_EMAIL_CA_FILE=" + mail.ca_file,
      "HERALD_CHANNELS_EMAIL_FROM_ADDRESS=" + mail.from_address,
      "HERALD_CHANNELS_WEBHOOK_SECRET=dlq-e2e-secret", "HERALD_CHANNELS_WEBHOOK_ALLOW_PRIVATE_TARGETS=true",
      // Short tiers, so the webhook's retries are used up in well under a second.
      "HERALD_RETRY_TIERS=100ms,200ms", "HERALD_RETRY_MAX_ATTEMPTS=3"};
  const std::string config = SourceDir() + "/config/herald.yaml";
  const std::vector<std::string> users = {"u-1", "u-2", "u-3"};
  std::string out;
  for (const std::string& u : users) {
    // No push contact: e-mail is the personal channel; the webhook gets every notification too.
    std::string prefs = TempFile("prefs.json", json{{"contacts", {{"email", u + "@example.org"},
                                                                  {"webhook", hooks.Url("down")}}}}.dump());
    REQUIRE(Run({BinaryDir() + "/herald", "prefs", "set", u, "--file", prefs}, env, &out) == 0);
  }
  Process heraldd({BinaryDir() + "/heraldd", "--config", config, "--roles", "engine,worker"}, env, "heraldd-dlq-e2e");
  REQUIRE(WaitFor([&] { return heraldd.OutputContains("started"); }, 15s));
  for (const std::string id : {"evt-dlq-e2e-1", "evt-dlq-e2e-2"}) {
    int rc = Run({BinaryDir() + "/herald", "--config", config, "publish", "--type", "billing.invoice.paid", "--to",
                  "u-1,u-2,u-3", "--var", "amount=12 EUR", "--id", id},
                 env, &out);
    INFO(out);
    REQUIRE(rc == 0);
  }

  std::unique_ptr<Store> store;
  REQUIRE(OpenStore(store_url, store).ok());
  {
    bool dead = WaitFor([&] { return Letters(*store, "email").size() == 6 && Letters(*store, "webhook").size() == 6; },
                        30s, 100ms);
    INFO(heraldd.Output());
    REQUIRE(dead);
  }
  std::set<std::string> email_ids;
  for (const DeadLetter& d : Letters(*store, "email")) {
    CHECK(d.reason == "permanent");
    CHECK_THAT(d.error, Contains("SMTP 554 5.3.2 not accepting mail (maintenance)"));
    CHECK(d.attempts == 1);
    email_ids.insert(d.delivery_id);
  }
  CHECK(email_ids.size() == 6);
  const std::vector<DeadLetter> webhook_before = Letters(*store, "webhook");
  for (const DeadLetter& d : webhook_before) {
    CHECK(d.reason == "attempts_exhausted");
    CHECK_THAT(d.error, Contains("503"));
    CHECK(d.attempts == 3);
  }
  REQUIRE(Run({BinaryDir() + "/herald", "dlq", "list", "--summary", "--json"}, env, &out) == 0);
  CHECK(json::parse(out) == json::array({{{"channel", "email"}, {"reason", "permanent"}, {"count", 6}},
                                         {{"channel", "webhook"}, {"reason", "attempts_exhausted"}, {"count", 6}}}));
  CHECK(smtp.Messages().empty());
  CHECK(smtp.Events("mail").size() == 6);  // each tried once, refused for good

  // The provider is back.
  smtp.Restart();
  int rc = Run({BinaryDir() + "/herald", "dlq", "replay", "--channel", "email", "--actor", "ops-e2e"}, env, &out);
  INFO(out);
  REQUIRE(rc == 0);
  CHECK_THAT(out, Contains("replayed 6 of 6 dead letter(s)"));

  REQUIRE(WaitFor([&] { return smtp.Messages().size() == 6; }, 30s, 50ms));
  Peek peek(vhost.url());
  CHECK(WaitFor([&] { return peek.Depth("herald.deliver.email") == 0; }, 10s));
  // A graceful stop finishes every job in hand: after it, nothing more can arrive.
  heraldd.Signal(SIGTERM);
  REQUIRE(heraldd.Wait(30s) == std::optional<int>(0));
  CHECK(peek.Depth("herald.deliver.email") == 0);

  // Exactly once: one message per recipient per event, one per dead letter replayed.
  std::map<std::string, int> per_recipient;
  for (const json& e : smtp.Events("data")) {
    for (const auto& to : e["rcpt"]) ++per_recipient[to.get<std::string>()];
  }
  CHECK(per_recipient == std::map<std::string, int>{{"u-1@example.org", 2}, {"u-2@example.org", 2}, {"u-3@example.org", 2}});
  CHECK(smtp.Messages().size() == 6);
  std::set<std::string> stored;
  for (const std::string& id : email_ids) {
    INFO(id);
    std::string path = smtp.MessageFor(id);
    CHECK_FALSE(path.empty());
    stored.insert(path);
  }
  CHECK(stored.size() == 6);

  // No e-mail dead letters are left; the webhook's are exactly as they were.
  CHECK(Letters(*store, "email").empty());
  const std::vector<DeadLetter> webhook_after = Letters(*store, "webhook");
  REQUIRE(webhook_after.size() == webhook_before.size());
  for (size_t i = 0; i < webhook_after.size(); ++i) {
    CHECK(webhook_after[i].id == webhook_before[i].id);
    CHECK(webhook_after[i].delivery_id == webhook_before[i].delivery_id);
    CHECK(webhook_after[i].dead_at == webhook_before[i].dead_at);
  }
  CHECK(peek.Depth("herald.deliver.webhook") == 0);
  std::vector<AuditRecord> audit;
  REQUIRE(store->ListAudit(10, audit).ok());
  REQUIRE(audit.size() == 1);
  CHECK(audit[0].actor == "ops-e2e");
  CHECK(audit[0].count == 6);
  CHECK(json::parse(audit[0].filter_json) == json{{"channel", "email"}});
}
