#include <catch2/catch.hpp>
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>

#include "broker/consumer.h"
#include "broker/options.h"
#include "broker/publisher.h"
#include "broker/topology.h"
#include "tests/support/test_env.h"

using namespace herald;
using namespace herald::test;

namespace {

struct Recorder {
  std::mutex mu;
  std::vector<broker::Delivery> got;
  size_t Count() {
    std::lock_guard l(mu);
    return got.size();
  }
};

broker::Consumer::Options Options(const Vhost& vhost, int prefetch, Millis heartbeat = 5s) {
  Config config = vhost.MakeConfig();
  config.broker.prefetch = prefetch;
  config.broker.heartbeat = heartbeat;
  return broker::ConsumerOptionsFor(config, "consumer test", broker::kEngineQueue);
}

void Fill(const Vhost& vhost, int n) {
  broker::Connection c({vhost.url(), 0s, 5s, "fill"});
  REQUIRE(c.Open().ok());
  REQUIRE(broker::DeclareTopology(c, broker::TopologySpec::FromConfig(vhost.MakeConfig())).ok());
  Peek peek(vhost.url());
  for (int i = 0; i < n; ++i) peek.Publish(broker::kEventsExchange, "t", std::to_string(i));
  REQUIRE(WaitFor([&] { return peek.Depth(broker::kEngineQueue) == n; }, 10s));
}

// Ready plus unacked messages, from the management API.
long Total(const Vhost& vhost) {
  std::string body;
  Management("GET", "/api/queues/" + vhost.name() + "/herald.engine", "", &body);
  auto j = nlohmann::json::parse(body, nullptr, false);
  return j.is_object() && j.contains("messages") ? j["messages"].get<long>() : -1;
}

}  // namespace

TEST_CASE("Consumer: prefetch bounds unsettled deliveries and acks free the window") {
  Vhost vhost("cons-prefetch");
  Fill(vhost, 50);
  Recorder rec;
  broker::Consumer consumer(Options(vhost, 10), [&](broker::Delivery&& d) {
    std::lock_guard l(rec.mu);
    rec.got.push_back(std::move(d));
  });
  consumer.Start();
  REQUIRE(WaitFor([&] { return rec.Count() == 10; }, 10s));
  std::this_thread::sleep_for(300ms);
  CHECK(rec.Count() == 10);  // the 11th waits for an ack
  {
    std::lock_guard l(rec.mu);
    for (auto& d : rec.got) consumer.Ack({d.tag, d.generation});
  }
  REQUIRE(WaitFor([&] { return rec.Count() == 20; }, 10s));
  // Settle everything as it arrives; the queue drains completely.
  std::atomic<bool> done{false};
  std::thread settler([&] {
    size_t next = 10;
    while (!done) {
      std::lock_guard l(rec.mu);
      for (; next < rec.got.size(); ++next) consumer.Ack({rec.got[next].tag, rec.got[next].generation});
    }
  });
  CHECK(WaitFor([&] { return rec.Count() == 50 && consumer.Unsettled() == 0; }, 10s));
  done = true;
  settler.join();
  CHECK(WaitFor([&] { return Total(vhost) == 0; }, 10s));
  consumer.Stop(1s);
}

TEST_CASE("Consumer: a batch handler gets every delivery once, in order, several at a time") {
  Vhost vhost("cons-batch");
  Fill(vhost, 200);
  std::mutex mu;
  std::vector<std::string> bodies;
  size_t batches = 0, largest = 0;
  std::unique_ptr<broker::Consumer> consumer;
  consumer = std::make_unique<broker::Consumer>(Options(vhost, 100), [&](std::vector<broker::Delivery>& batch) {
    std::lock_guard l(mu);
    ++batches;
    largest = std::max(largest, batch.size());
    for (broker::Delivery& d : batch) {
      bodies.push_back(d.message.body);
      consumer->Ack({d.tag, d.generation});
    }
  });
  consumer->Start();
  REQUIRE(WaitFor([&] {
    std::lock_guard l(mu);
    return bodies.size() == 200;
  }, 10s));
  CHECK(WaitFor([&] { return consumer->Unsettled() == 0 && Total(vhost) == 0; }, 10s));
  std::lock_guard l(mu);
  for (size_t i = 0; i < bodies.size(); ++i) CHECK(bodies[i] == std::to_string(i));
  INFO(batches << " batches, the largest " << largest);
  CHECK(largest > 1);  // the queue was full: reads found many deliveries waiting
  CHECK(batches < 200);
  consumer->Stop(1s);
}

TEST_CASE("Consumer: a rejected delivery with requeue comes back marked redelivered") {
  Vhost vhost("cons-requeue");
  Fill(vhost, 1);
  Recorder rec;
  broker::Consumer* self = nullptr;
  broker::Consumer consumer(Options(vhost, 5), [&](broker::Delivery&& d) {
    broker::DeliveryRef ref{d.tag, d.generation};
    bool first = !d.redelivered;
    {
      std::lock_guard l(rec.mu);
      rec.got.push_back(std::move(d));
    }
    if (first) self->Reject(ref, true);
    else self->Ack(ref);
  });
  self = &consumer;
  consumer.Start();
  REQUIRE(WaitFor([&] { return rec.Count() == 2; }, 10s));
  std::lock_guard l(rec.mu);
  CHECK(rec.got[0].message.body == "0");
  CHECK_FALSE(rec.got[0].redelivered);
  CHECK(rec.got[1].message.body == "0");
  CHECK(rec.got[1].redelivered);
}

TEST_CASE("Consumer: heartbeats are serviced while idle") {
  Vhost vhost("cons-heartbeat");
  // A 1 s heartbeat: the broker closes a connection that misses two in a row.
  broker::Consumer consumer(Options(vhost, 5, 1s), [](broker::Delivery&&) {});
  consumer.Start();
  REQUIRE(WaitFor([&] { return consumer.Consuming(); }, 10s));
  std::this_thread::sleep_for(4s);
  CHECK(consumer.Consuming());
  CHECK(consumer.Connects() == 1);
}

TEST_CASE("Consumer: reconnects and consumes again after the connection is closed") {
  Vhost vhost("cons-reconnect");
  Fill(vhost, 3);
  Recorder rec;
  broker::Consumer* self = nullptr;
  std::atomic<bool> ack{false};
  broker::Consumer consumer(Options(vhost, 10), [&](broker::Delivery&& d) {
    if (ack) self->Ack({d.tag, d.generation});
    std::lock_guard l(rec.mu);
    rec.got.push_back(std::move(d));
  });
  self = &consumer;
  consumer.Start();
  REQUIRE(WaitFor([&] { return rec.Count() == 3; }, 10s));
  // Unsettled at the drop: the broker requeues them and they come again on the new connection.
  ack = true;
  REQUIRE(CloseConnections(vhost.name()) >= 1);
  REQUIRE(WaitFor([&] { return rec.Count() == 6; }, 15s));
  CHECK(consumer.Connects() == 2);
  // Settles of deliveries from the old connection are ignored, not sent with stale tags.
  {
    std::lock_guard l(rec.mu);
    consumer.Ack({rec.got[0].tag, rec.got[0].generation});
    CHECK(rec.got[3].redelivered);
  }
  CHECK(WaitFor([&] { return Total(vhost) == 0; }, 10s));
  CHECK(consumer.Connects() == 2);
}

TEST_CASE("Consumer: stop waits for in-flight deliveries and acks them") {
  Vhost vhost("cons-stop");
  Fill(vhost, 5);
  Recorder rec;
  broker::Consumer consumer(Options(vhost, 10), [&](broker::Delivery&& d) {
    std::lock_guard l(rec.mu);
    rec.got.push_back(std::move(d));
  });
  consumer.Start();
  REQUIRE(WaitFor([&] { return rec.Count() == 5; }, 10s));
  // Settle from another thread only after Stop() has begun.
  std::thread late([&] {
    std::this_thread::sleep_for(300ms);
    std::lock_guard l(rec.mu);
    for (auto& d : rec.got) consumer.Ack({d.tag, d.generation});
  });
  consumer.Stop(10s);
  late.join();
  CHECK_FALSE(consumer.Consuming());
  CHECK(WaitFor([&] { return Total(vhost) == 0; }, 10s));
}
