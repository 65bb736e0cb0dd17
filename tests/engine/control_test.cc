#include <catch2/catch.hpp>

#include "broker/options.h"
#include "engine/control.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;
using Catch::Matchers::Contains;

TEST_CASE("Control: a preference change made with herald prefs set reaches every cache within a second") {
  Vhost vhost("control");
  std::string dir = "/tmp/herald-test-" + std::to_string(::getpid()) + "-control";
  std::string store_url = "sqlite://" + dir + "/herald.db";
  Config config = vhost.MakeConfig();
  config.store.url = store_url;
  std::unique_ptr<Store> store;
  REQUIRE(OpenStore(store_url, store).ok());
  // Two "processes": each with its own cache and listener; a long TTL, so only the signal helps.
  PreferenceCache a(*store, 100, Millis(3600000), SystemClock::Instance());
  PreferenceCache b(*store, 100, Millis(3600000), SystemClock::Instance());
  ControlListener la(config, a), lb(config, b);
  la.Start();
  lb.Start();
  REQUIRE(WaitFor([&] { return la.Listening() && lb.Listening(); }, 15s));
  PreferenceCache::Entry e;
  REQUIRE(a.Get("u-1", e).ok());
  CHECK(e->contacts.email.empty());
  REQUIRE(b.Get("u-1", e).ok());

  std::string file = TempFile("prefs.json", R"({"locale":"de","contacts":{"email":"ada@example.org"}})");
  std::string out;
  std::vector<std::string> env = {"HERALD_BROKER_URL=" + vhost.url(), "HERALD_STORE_URL=" + store_url};
  REQUIRE(Run({BinaryDir() + "/herald", "prefs", "set", "u-1", "--file", file}, env, &out) == 0);
  CHECK_THAT(out, Contains("saved preferences of u-1"));
  auto seen = [](PreferenceCache& c) {
    PreferenceCache::Entry p;
    return c.Get("u-1", p).ok() && p->contacts.email == "ada@example.org";
  };
  CHECK(WaitFor([&] { return seen(a) && seen(b); }, 1s, 10ms));

  REQUIRE(Run({BinaryDir() + "/herald", "prefs", "get", "u-1"}, env, &out) == 0);
  CHECK_THAT(out, Contains("\"email\": \"ada@example.org\"") && Contains("\"locale\": \"de\""));
  std::string bad = TempFile("bad.json", R"({"channels":{"sms":true}})");
  CHECK(Run({BinaryDir() + "/herald", "prefs", "set", "u-1", "--file", bad}, env, &out) == 2);
  CHECK_THAT(out, Contains("preferences are invalid: channels"));
  la.Stop();
  lb.Stop();
}

TEST_CASE("Control: the cache keeps what it holds when the listener connects and reconnects") {
  Vhost vhost("control-keep");
  std::string store_url = "sqlite:///tmp/herald-test-" + std::to_string(::getpid()) + "-control-keep/herald.db";
  Config config = vhost.MakeConfig();
  config.store.url = store_url;
  std::unique_ptr<Store> store;
  REQUIRE(OpenStore(store_url, store).ok());
  for (const char* u : {"u-1", "u-2", "u-3"}) REQUIRE(store->PutPreferences(DefaultPreferences(u)).ok());
  PreferenceCache cache(*store, 100, Millis(3600000), SystemClock::Instance());
  size_t loaded = 0;
  REQUIRE(cache.Warm(loaded).ok());
  REQUIRE(loaded == 3);
  // heraldd warms the cache while the listener makes its first connection: what was loaded stays.
  ControlListener listener(config, cache);
  listener.Start();
  REQUIRE(WaitFor([&] { return listener.Listening(); }, 15s));
  CHECK(cache.Size() == 3);
  REQUIRE(CloseConnections(vhost.name()) >= 1);
  REQUIRE(WaitFor([&] { return listener.Connects() == 2 && listener.Listening(); }, 15s));
  CHECK(cache.Size() == 3);
  // After the reconnect a signal still drops the one user it names.
  broker::Publisher publisher(broker::PublisherOptionsFor(config, "test publisher"));
  publisher.Start();
  REQUIRE(AnnouncePrefsChanged(publisher, "u-2", Millis(10000)).ok());
  CHECK(WaitFor([&] { return cache.Size() == 2; }, 10s));
  publisher.Stop(Millis(1000));
  listener.Stop();
}

TEST_CASE("Control: herald topic subscribe, list and unsubscribe") {
  std::string dir = "/tmp/herald-test-" + std::to_string(::getpid()) + "-topic-cli";
  std::vector<std::string> env = {"HERALD_STORE_URL=sqlite://" + dir + "/herald.db"};
  std::string out;
  REQUIRE(Run({BinaryDir() + "/herald", "topic", "subscribe", "followers-of-u-9", "u-1,u-2", "u-3"}, env, &out) == 0);
  CHECK_THAT(out, Contains("subscribed 3 user(s) to followers-of-u-9"));
  REQUIRE(Run({BinaryDir() + "/herald", "topic", "unsubscribe", "followers-of-u-9", "u-2"}, env, &out) == 0);
  REQUIRE(Run({BinaryDir() + "/herald", "topic", "list", "followers-of-u-9"}, env, &out) == 0);
  CHECK_THAT(out, Contains("u-1\nu-3\n") && Contains("2 subscriber(s)"));
  CHECK(Run({BinaryDir() + "/herald", "topic", "subscribe", "t", "bad user"}, env, &out) == 2);
}
