// Consumer: consumes one queue on its own connection and thread, with prefetch and manual acks.
//
// Contract (at least once): the handler receives each delivery on the consumer thread and must
// eventually settle it exactly once with Ack() or Reject(), from any thread. Settled deliveries
// are acked in batches (one multiple-ack for a contiguous run). If the connection drops before a
// delivery is settled, the broker redelivers it and the late settle is ignored. After a lost
// connection the consumer reconnects with backoff, runs `on_connect` and consumes again.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "broker/amqp.h"

namespace herald::broker {

struct Delivery {
  uint64_t tag = 0;
  uint64_t generation = 0;  // which connection it came on
  bool redelivered = false;
  Message message;          // exchange and routing key as published
};

struct DeliveryRef {
  uint64_t tag = 0;
  uint64_t generation = 0;
};

class Consumer {
 public:
  // Runs on the consumer thread. Must not block for long (hand work off); it must not call Stop().
  using Handler = std::function<void(Delivery&&)>;
  // The same for every delivery that had arrived when the thread read its connection (in order,
  // at most 1,024): a handler that does something once per batch (one store read for all) takes
  // this form. It owns what it is given.
  using BatchHandler = std::function<void(std::vector<Delivery>&)>;

  struct Options {
    ConnectOptions connect;
    std::string queue;           // empty: a private queue, see bind_exchange
    // With an empty `queue`: consume a server-named, exclusive queue of this process, bound to
    // this (fanout) exchange and gone with the connection: signals, not work.
    std::string bind_exchange;
    int prefetch = 500;
    Millis reconnect_min{100};
    Millis reconnect_max{10000};
    std::function<Status(Connection&)> on_connect;  // runs before consuming after every connect
  };

  Consumer(Options options, Handler handler);
  Consumer(Options options, BatchHandler handler);
  ~Consumer();  // Stop(0)
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  void Start();

  // Thread-safe. Settle a delivery: ack, or reject (requeue=true puts it back on the queue).
  void Ack(DeliveryRef ref);
  void Reject(DeliveryRef ref, bool requeue);

  // Cancels consumption, waits up to `grace` for every delivered message to be settled, sends the
  // acks, then closes. Unsettled messages return to the queue. Idempotent; not from the handler.
  void Stop(Millis grace);

  bool Consuming() const { return consuming_.load(); }
  uint64_t Connects() const { return connects_.load(); }
  size_t Unsettled() const { return unsettled_.load(); }

 private:
  struct Settle {
    DeliveryRef ref;
    bool ack;
    bool requeue;
  };

  void Run();
  Status Connect();
  bool ReadFrames();
  bool ReadAvailableFrames();
  void ApplySettles();
  void Wake();

  Options options_;
  Handler handler_;            // one of these two
  BatchHandler batch_handler_;
  std::vector<Delivery> batch_;  // consumer thread: what ReadFrames read for batch_handler_
  Connection conn_;
  std::thread thread_;
  int wake_fd_ = -1;

  std::mutex mu_;
  std::vector<Settle> settles_;  // guarded by mu_
  bool stop_requested_ = false;  // guarded by mu_
  std::chrono::steady_clock::time_point stop_deadline_;

  // Consumer thread only.
  uint64_t generation_ = 0;
  std::set<uint64_t> outstanding_;  // delivered, not yet acked, on this connection
  bool cancel_sent_ = false;
  std::string consumer_tag_;

  std::atomic<bool> consuming_{false};
  std::atomic<uint64_t> connects_{0};
  std::atomic<size_t> unsettled_{0};
};

}  // namespace herald::broker
