// kill -9 of heraldd in the middle of a fan-out, then a restart: nothing is lost, and repeats
// carry the same delivery id, so workers can refuse them.
#include <catch2/catch.hpp>
#include <csignal>
#include <map>
#include <set>

#include "engine/notification_engine.h"
#include "tests/support/ids.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;

TEST_CASE("Crash: heraldd killed mid fan-out of 10,000 recipients, after restart each has one delivery id") {
  Vhost vhost("crash");
  std::string dir = "/tmp/herald-test-" + std::to_string(::getpid()) + "-crash";
  std::vector<std::string> env = {"HERALD_BROKER_URL=" + vhost.url(), "HERALD_STORE_URL=sqlite://" + dir + "/herald.db",
                                  "HERALD_ENGINE_FANOUT_BATCH=50", "HERALD_BROKER_RECONNECT_MAX=1s"};
  std::vector<std::string> argv = {BinaryDir() + "/heraldd", "--config", SourceDir() + "/config/herald.yaml",
                                   "--roles", "engine"};
  nlohmann::json recipients = nlohmann::json::array();
  for (int i = 0; i < 10000; ++i) recipients.push_back("r-" + std::to_string(100000 + i));
  std::string event = nlohmann::json{{"specversion", "1.0"}, {"id", "evt-crash"}, {"source", "/t"},
                                     {"type", "social.post.liked"},
                                     {"data", {{"recipients", recipients}, {"vars", {{"who", "Ada"}}}}}}
                          .dump();
  Peek peek(vhost.url());
  long at_kill = 0;
  {
    Process first(argv, env, "heraldd-crash-1");
    REQUIRE(WaitFor([&] { return first.OutputContains("started"); }, 15s));
    peek.Publish("herald.events", "social.post.liked", event);
    REQUIRE(WaitFor([&] { return (at_kill = peek.Depth("herald.deliver.in_app")) > 0; }, 20s, 1ms));
    first.Signal(SIGKILL);
    REQUIRE(first.Wait(10s) == std::optional<int>(128 + SIGKILL));
    at_kill = peek.Depth("herald.deliver.in_app");
  }
  INFO("jobs on the queue when heraldd was killed: " << at_kill);
  REQUIRE(at_kill < 10000);  // it really was in the middle

  Process second(argv, env, "heraldd-crash-2");
  // The unacked event is redelivered and processed again to the end.
  REQUIRE(WaitFor([&] { return peek.Depth("herald.deliver.in_app") >= 10000; }, 60s, 50ms));
  std::string body;
  REQUIRE(WaitFor([&] {
    Management("GET", "/api/queues/" + vhost.name() + "/herald.engine", "", &body);
    auto q = nlohmann::json::parse(body, nullptr, false);
    return q.is_object() && q.value("messages", -1) == 0;
  }, 60s, 100ms));
  second.Signal(SIGTERM);
  REQUIRE(second.Wait(30s) == std::optional<int>(0));

  std::map<std::string, std::set<std::string>> ids_by_user;
  size_t total = 0;
  for (const broker::Message& m : peek.Drain("herald.deliver.in_app")) {
    auto job = nlohmann::json::parse(m.body);
    ids_by_user[job["user_id"]].insert(job["delivery_id"]);
    ++total;
  }
  CHECK(total >= 10000);
  REQUIRE(ids_by_user.size() == 10000);
  size_t wrong = 0;
  for (const auto& [user, ids] : ids_by_user) {
    if (ids.size() != 1 || !IsDeliveryOf(*ids.begin(), "evt-crash", user, "in_app")) ++wrong;
  }
  CHECK(wrong == 0);
  CHECK(peek.Depth("herald.deliver.push") == 0);  // no contacts: nothing else was chosen
}
