#include <catch2/catch.hpp>
#include <atomic>
#include <set>
#include <thread>

#include "broker/options.h"
#include "broker/publisher.h"
#include "broker/topology.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;

namespace {

broker::Publisher::Options Options(const Vhost& vhost, int window = 100) {
  auto o = broker::PublisherOptionsFor(vhost.MakeConfig(), "publisher test");
  o.window = window;
  return o;
}

broker::Message ToEngine(const std::string& body) {
  broker::Message m;
  m.exchange = broker::kEventsExchange;
  m.routing_key = "test.event";
  m.body = body;
  return m;
}

}  // namespace

TEST_CASE("Publisher: every message is confirmed, with many in flight at once") {
  Vhost vhost("pub-confirm");
  broker::Publisher pub(Options(vhost, 200));
  pub.Start();
  std::atomic<int> ok{0}, failed{0};
  const int n = 3000;
  for (int i = 0; i < n; ++i) {
    pub.Publish(ToEngine("m" + std::to_string(i)), [&](const Status& s) { (s.ok() ? ok : failed)++; });
  }
  REQUIRE(WaitFor([&] { return ok + failed == n; }, 60s));
  CHECK(ok == n);
  CHECK(pub.Pending() == 0);
  CHECK(pub.MaxInflight() > 1);    // windowed: never one round trip per message
  CHECK(pub.MaxInflight() <= 200); // and never more than the window
  Peek peek(vhost.url());
  CHECK(peek.Depth(broker::kEngineQueue) == n);
  CHECK(peek.Get(broker::kEngineQueue)->body == "m0");  // order kept
}

TEST_CASE("Publisher: an unroutable mandatory message is reported as rejected") {
  Vhost vhost("pub-return");
  broker::Publisher pub(Options(vhost));
  pub.Start();
  broker::Message m;
  m.exchange = broker::kDeliverExchange;
  m.routing_key = "no-such-channel";
  m.body = "job";
  m.mandatory = true;
  Status s = pub.PublishAndWait(m, 10s);
  CHECK(s.code() == Status::Code::kRejected);
  CHECK_THAT(s.message(), Catch::Matchers::Contains("unroutable") && Catch::Matchers::Contains("NO_ROUTE"));
  // A routable message on the same publisher still goes through.
  CHECK(pub.PublishAndWait(ToEngine("after"), 10s).ok());
}

TEST_CASE("Publisher: waits for an unreachable broker, then delivers") {
  Vhost vhost("pub-late");
  auto o = Options(vhost);
  // Nothing listens on this port at first.
  std::string url = vhost.url();
  o.connect.url = "amqp://guest:guest@127.0.0.1:1/";
  broker::Publisher down(o);
  down.Start();
  Status s = down.PublishAndWait(ToEngine("x"), 300ms);
  CHECK(s.code() == Status::Code::kTimeout);
  CHECK_THAT(s.message(), Catch::Matchers::Contains("not connected"));
  CHECK_FALSE(down.Connected());
  down.Stop(0s);
}

TEST_CASE("Publisher: a dropped connection is re-established and nothing confirmed is lost") {
  Vhost vhost("pub-reconnect");
  broker::Publisher pub(Options(vhost, 50));
  pub.Start();
  REQUIRE(pub.PublishAndWait(ToEngine("first"), 10s).ok());
  std::atomic<int> ok{0}, failed{0}, sent{0};
  std::atomic<bool> closed{false};
  // Publishes steadily until the connection has been closed under it, then 500 more.
  std::thread producer([&] {
    int after = 0;
    for (int i = 0; i < 100000 && after < 500; ++i) {
      pub.Publish(ToEngine(std::to_string(i)), [&](const Status& s) { (s.ok() ? ok : failed)++; });
      ++sent;
      if (closed) ++after;
      if (i % 20 == 0) std::this_thread::sleep_for(2ms);
    }
  });
  REQUIRE(WaitFor([&] { return ok > 200; }, 20s));
  CHECK(CloseConnections(vhost.name()) >= 1);
  closed = true;
  producer.join();
  const int n = sent;
  REQUIRE(WaitFor([&] { return ok + failed == n; }, 60s));
  CHECK(failed == 0);
  CHECK(pub.Connects() >= 2);
  // Republishing after a lost confirm may duplicate, never lose.
  Peek peek(vhost.url());
  std::set<std::string> seen;
  while (auto m = peek.Get(broker::kEngineQueue)) seen.insert(m->body);
  CHECK(seen.size() == static_cast<size_t>(n) + 1);
}

TEST_CASE("Publisher: stop fails what could not be sent instead of dropping it silently") {
  Vhost vhost("pub-stop");
  auto o = Options(vhost);
  o.connect.url = "amqp://guest:guest@127.0.0.1:1/";
  broker::Publisher pub(o);
  pub.Start();
  std::atomic<int> unavailable{0};
  for (int i = 0; i < 10; ++i) {
    pub.Publish(ToEngine("x"), [&](const Status& s) {
      if (s.code() == Status::Code::kUnavailable) ++unavailable;
    });
  }
  pub.Stop(100ms);
  CHECK(unavailable == 10);
  bool called = false;
  pub.Publish(ToEngine("late"), [&](const Status& s) { called = s.code() == Status::Code::kUnavailable; });
  CHECK(called);
}
