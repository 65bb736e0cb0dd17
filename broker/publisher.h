// Publisher: publishes with windowed publisher confirms on its own connection and thread.
//
// Publish() only queues; the publisher thread keeps up to `window` messages unconfirmed on the
// wire and reports each one's outcome through its callback. When the connection drops it
// reconnects with backoff, runs `on_connect` (e.g. declares topology) and republishes every
// unconfirmed message in the original order before anything newer. A message whose confirm was
// lost with the connection is therefore published again: delivery is at least once, and
// consumers must be idempotent.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "broker/amqp.h"

namespace herald::broker {

class Publisher {
 public:
  // Outcome of one message: Ok when the broker confirmed it; Rejected when it was nacked or,
  // being mandatory, returned as unroutable; Unavailable when the publisher stopped first.
  // Runs on the publisher thread: keep it short and never call Publisher methods that wait.
  using Callback = std::function<void(const Status&)>;

  struct Options {
    ConnectOptions connect;
    int window = 1000;
    Millis reconnect_min{100};
    Millis reconnect_max{10000};
    std::function<Status(Connection&)> on_connect;  // runs after every (re)connect; may be empty
  };

  explicit Publisher(Options options);
  ~Publisher();  // Stop(0)
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  void Start();

  // Thread-safe, never blocks. After Stop() the callback runs at once with Unavailable.
  void Publish(Message message, Callback done);

  // Thread-safe convenience: publishes and waits for the outcome, at most `timeout`.
  Status PublishAndWait(Message message, Millis timeout);

  // Blocks until fewer than `limit` messages are queued or unconfirmed. Thread-safe; must not
  // be called from a Callback.
  void WaitForRoom(size_t limit);

  // Stops accepting, waits up to `grace` for queued and unconfirmed messages to be confirmed,
  // then closes and fails whatever is left with Unavailable. Idempotent.
  void Stop(Millis grace);

  bool Connected() const { return connected_.load(); }
  size_t Pending() const { return pending_.load(); }
  // How many times a connection was (re)established, for tests and metrics.
  uint64_t Connects() const { return connects_.load(); }
  // The most messages ever unconfirmed at once: above 1 shows confirms are windowed.
  size_t MaxInflight() const { return max_inflight_.load(); }

 private:
  struct Item {
    Message message;
    Callback done;
    bool returned = false;
    bool settled = false;
    std::string return_reason;
  };

  void Run();
  Status Connect();
  bool SendQueued();
  bool ReadFrames();
  void Confirm(uint64_t tag, bool multiple, bool ack);
  void HandleReturn(const amqp_frame_t& frame);
  void Finish(Item& item, const Status& status);
  void Wake();

  Options options_;
  Connection conn_;
  std::thread thread_;
  int wake_fd_ = -1;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;  // not yet on the wire (guarded by mu_)
  bool stopping_ = false;
  std::chrono::steady_clock::time_point stop_deadline_;

  // Publisher thread only.
  std::deque<Item> inflight_;  // on the wire, unconfirmed; inflight_[i] has tag first_tag_ + i
  uint64_t first_tag_ = 1;

  std::atomic<bool> connected_{false};
  std::atomic<size_t> pending_{0};
  std::atomic<uint64_t> connects_{0};
  std::atomic<size_t> max_inflight_{0};
};

}  // namespace herald::broker
