// Tests of the shipped programs as an operator meets them: heraldd and herald as processes.
#include <catch2/catch.hpp>
#include <csignal>

#include "store/store.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;
using Catch::Matchers::Contains;

namespace {

std::string Heraldd() { return BinaryDir() + "/heraldd"; }
std::string Herald() { return BinaryDir() + "/herald"; }

std::string StoreUrl(const std::string& name) {
  return "sqlite://" + TempFile(name, "") + ".d/herald.db";
}

std::vector<std::string> EnvFor(const Vhost& vhost) {
  return {"HERALD_BROKER_URL=" + vhost.url(), "HERALD_BROKER_RECONNECT_MAX=1s", "HERALD_LOG_LEVEL=debug",
          "HERALD_STORE_URL=" + StoreUrl(vhost.name())};
}

std::string ValidEvent(const std::string& id) {
  return nlohmann::json{{"specversion", "1.0"}, {"id", id}, {"source", "/t"}, {"type", "account.password.changed"},
                        {"data", {{"recipients", {"u-1"}}}}}
      .dump();
}

}  // namespace

TEST_CASE("heraldd: configuration errors stop start-up with the key, the line and exit code 2") {
  struct Case {
    std::string yaml;
    std::vector<std::string> env;
    std::vector<std::string> expect;
  };
  std::vector<Case> cases = {
      {"broker:\n  url: amqp://g:g@127.0.0.1:1/\n  prefech: 10\n", {}, {"herald.yaml:3", "unknown key broker.prefech"}},
      {"events:\n  max_recipients: many\n", {}, {"herald.yaml:2", "events.max_recipients: must be an integer"}},
      {"log:\n  format: xml\n", {}, {"log.format: must be one of text, json"}},
      {"{}\n", {"HERALD_BROKER_QUEUE_TYPE=fast"}, {"HERALD_BROKER_QUEUE_TYPE", "must be one of quorum, classic"}},
      {"{}\n", {"HERALD_BROKR_URL=amqp://x/"}, {"HERALD_BROKR_URL: does not name a configuration key"}},
  };
  cases.push_back({"channels:\n  webhook: { secret: \"\" }\n", {},
                   {"channels.webhook.secret: required", "channels.email.from_address: required",
                    "or set channels.email.enabled: false"}});
  for (const Case& c : cases) {
    INFO(c.yaml);
    std::string path = TempFile("herald.yaml", c.yaml);
    std::string out;
    CHECK(Run({Heraldd(), "--config", path}, c.env, &out) == 2);
    CHECK_THAT(out, Contains("configuration error"));
    for (const std::string& e : c.expect) CHECK_THAT(out, Contains(e));
  }
  std::string out;
  CHECK(Run({Heraldd(), "--config", "/nonexistent/herald.yaml"}, {}, &out) == 2);
  CHECK_THAT(out, Contains("/nonexistent/herald.yaml: No such file or directory"));
  CHECK(Run({Heraldd(), "--config", SourceDir() + "/config/herald.yaml", "--roles", "engine,mailer"}, {}, &out) == 2);
  CHECK_THAT(out, Contains("unknown role \"mailer\""));
}

TEST_CASE("heraldd: wrong broker credentials stop start-up with a clear message") {
  std::string url = "amqp://guest:wrong@127.0.0.1:" + std::to_string(BrokerPort()) + "/";
  std::string out;
  CHECK(Run({Heraldd(), "--config", SourceDir() + "/config/herald.yaml"},
            {"HERALD_BROKER_URL=" + url, "HERALD_STORE_URL=" + StoreUrl("creds")}, &out) == 1);
  CHECK_THAT(out, Contains("login") && Contains("amqp://guest:***@"));
  CHECK_THAT(out, !Contains("wrong"));  // the password is never printed
}

TEST_CASE("heraldd: consumes events from other clients and exits 0 on SIGTERM") {
  Vhost vhost("proc-run");
  std::vector<std::string> env = EnvFor(vhost);
  {
    // Loaded into the preference cache before the engine starts.
    std::unique_ptr<Store> store;
    REQUIRE(OpenStore(env.back().substr(std::string("HERALD_STORE_URL=").size()), store).ok());
    REQUIRE(store->PutPreferences(DefaultPreferences("u-9")).ok());
  }
  Process d({Heraldd(), "--config", SourceDir() + "/config/herald.yaml", "--roles", "engine"}, env, "heraldd");
  REQUIRE(WaitFor([&] { return d.OutputContains("heraldd 0.1.0 started"); }, 15s));
  INFO("heraldd's output:\n" << d.Output());  // the warm-up's line failed to appear once in CI: show why
  CHECK(d.OutputContains("engine: loaded the preferences of 1 user(s) into the cache"));
  Peek peek(vhost.url());
  // amqp-tools (rabbitmq-c's command-line client), not Herald's code, publishes here.
  std::string amqp_tools_url = vhost.url();
  std::string out;
  std::string file = TempFile("bad.json", R"({"specversion":"1.0","id":"e1","source":"/s","type":"a.b"})");
  REQUIRE(Run({"/bin/sh", "-c", "amqp-publish -u '" + amqp_tools_url + "' -e herald.events -r a.b < " + file}, {},
              &out) == 0);
  auto m = peek.WaitGet("herald.events.invalid", 10s);
  REQUIRE(m);
  CHECK(m->headers["x-herald-reason"] == "data: required");

  REQUIRE(Run({Herald(), "publish", "--type", "account.password.changed", "--to", "u-1,u-2", "--var", "ip=10.0.0.1",
               "--id", "evt-cli-1"},
              {"HERALD_BROKER_URL=" + vhost.url()}, &out) == 0);
  CHECK_THAT(out, Contains("published evt-cli-1 (type account.password.changed, 2 recipient(s))"));
  CHECK(WaitFor([&] { return d.OutputContains("event evt-cli-1 of type account.password.changed decided"); }, 10s));
  CHECK(WaitFor([&] { return peek.Depth("herald.engine") == 0; }, 10s));
  // u-1 and u-2 have no stored preferences: an inbox entry each, nothing louder.
  CHECK(WaitFor([&] { return peek.Depth("herald.deliver.in_app") == 2; }, 10s));
  auto job = peek.Get("herald.deliver.in_app");
  REQUIRE(job);
  CHECK(nlohmann::json::parse(job->body)["content"]["body"] == "Your password was changed from 10.0.0.1.");

  d.Signal(SIGTERM);
  auto code = d.Wait(20s);
  REQUIRE(code);
  CHECK(*code == 0);
  CHECK_THAT(d.Output(), Contains("received SIGTERM") && Contains("heraldd stopped"));
}

TEST_CASE("heraldd: an unusable store stops start-up with the path and exit code 1") {
  std::string file = TempFile("plain-file", "x");
  std::string out;
  CHECK(Run({Heraldd(), "--config", SourceDir() + "/config/herald.yaml"},
            {"HERALD_STORE_URL=sqlite://" + file + "/herald.db"}, &out) == 1);
  CHECK_THAT(out, Contains("cannot open the store") && Contains(file));
}

TEST_CASE("heraldd: JSON log lines are valid JSON objects") {
  Vhost vhost("proc-json");
  auto env = EnvFor(vhost);
  env.push_back("HERALD_LOG_FORMAT=json");
  Process d({Heraldd(), "--config", SourceDir() + "/config/herald.yaml"}, env, "heraldd-json");
  REQUIRE(WaitFor([&] { return d.OutputContains("started"); }, 15s));
  d.Signal(SIGINT);
  REQUIRE(d.Wait(20s) == std::optional<int>(0));
  std::istringstream lines(d.Output());
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    INFO(line);
    auto j = nlohmann::json::parse(line, nullptr, false);
    REQUIRE(j.is_object());
    CHECK(j.contains("ts"));
    CHECK(j.contains("level"));
    CHECK(j.contains("msg"));
    ++n;
  }
  CHECK(n >= 3);
}

TEST_CASE("herald publish: refuses an invalid event before it reaches the broker") {
  Vhost vhost("proc-cli-invalid");
  std::string out;
  CHECK(Run({Herald(), "publish", "--type", "Not Valid", "--to", "u-1"}, {"HERALD_BROKER_URL=" + vhost.url()}, &out) == 2);
  CHECK_THAT(out, Contains("event is invalid: type: must match"));
  CHECK(Run({Herald(), "publish", "--type", "a.b"}, {"HERALD_BROKER_URL=" + vhost.url()}, &out) == 2);
  CHECK_THAT(out, Contains("exactly one of --to"));
  CHECK(Run({Herald(), "publish", "--type", "a.b", "--to", "u", "--var", "novalue"}, {"HERALD_BROKER_URL=" + vhost.url()},
            &out) == 2);
  CHECK_THAT(out, Contains("--var must be KEY=VALUE"));
  // With the deployment's configuration, the event types are checked too.
  const std::string config = SourceDir() + "/config/herald.yaml";
  CHECK(Run({Herald(), "--config", config, "publish", "--type", "no.such.type", "--to", "u"},
            {"HERALD_BROKER_URL=" + vhost.url()}, &out) == 2);
  CHECK_THAT(out, Contains("type: no event type \"no.such.type\" is configured"));
  CHECK(Run({Herald(), "--config", config, "publish", "--type", "billing.invoice.paid", "--to", "u"},
            {"HERALD_BROKER_URL=" + vhost.url()}, &out) == 2);
  CHECK_THAT(out, Contains("data.vars: missing \"amount\""));
  Peek peek(vhost.url());
  CHECK(peek.Depth("herald.engine") <= 0);  // nothing published (the queue may not even exist)
}

TEST_CASE("herald publish --file: publishes the file as is, routed by its type") {
  Vhost vhost("proc-cli-file");
  std::string body = ValidEvent("evt-file-1");
  std::string out;
  REQUIRE(Run({Herald(), "publish", "--file", TempFile("event.json", body)}, {"HERALD_BROKER_URL=" + vhost.url()},
              &out) == 0);
  CHECK_THAT(out, Contains("published evt-file-1"));
  Peek peek(vhost.url());
  auto m = peek.WaitGet("herald.engine", 5s);
  REQUIRE(m);
  CHECK(m->body == body);
  CHECK(m->routing_key == "account.password.changed");
  CHECK(m->message_id == "evt-file-1");
}

TEST_CASE("herald publish: an unreachable broker fails within the timeout with exit code 1") {
  std::string out;
  CHECK(Run({Herald(), "publish", "--type", "social.post.liked", "--to", "u-1", "--timeout", "1"},
            {"HERALD_BROKER_URL=amqp://guest:guest@127.0.0.1:1/"}, &out) == 1);
  CHECK_THAT(out, Contains("cannot publish") && Contains("not connected to the broker"));
}

TEST_CASE("herald topology declare: creates the topology and can be run again") {
  Vhost vhost("proc-topology");
  std::string out;
  REQUIRE(Run({Herald(), "topology", "declare"}, {"HERALD_BROKER_URL=" + vhost.url()}, &out) == 0);
  CHECK_THAT(out, Contains("herald.deliver.email + retry tiers 1s 2s 4s 8s 16s 32s"));
  REQUIRE(Run({Herald(), "topology", "declare"}, {"HERALD_BROKER_URL=" + vhost.url()}, &out) == 0);
  Peek peek(vhost.url());
  CHECK(peek.Exists("herald.engine"));
  CHECK(peek.Exists("herald.retry.push.32s"));
  // A conflicting queue type is explained, with exit code 1.
  CHECK(Run({Herald(), "topology", "declare"},
            {"HERALD_BROKER_URL=" + vhost.url(), "HERALD_BROKER_QUEUE_TYPE=classic"}, &out) == 1);
  CHECK_THAT(out, Contains("inequivalent arg 'x-queue-type'"));
}
