// GroupCommit: many small writes, few transactions.
//
// Callers hand a StoreWrite (everything one delivery or one event needs written together) with a
// callback and go on with their next job. One writer thread takes every write waiting at that
// moment (up to `max_batch`) and applies them through `apply` in one transaction, then calls each
// write's callback with its own result. Under load batches grow by themselves, and the fixed cost
// of a commit (locks, WAL frames, the pages every write touches) is paid once for all of them.
// When the writer was idle it waits `linger` for more before it begins: a write then waits that
// much longer, and at a moderate rate the writes of several events share a transaction (and a
// wake-up) instead of each paying for its own. Submitters wake the writer only when it is idle.
//
// Callbacks run on the writer thread, one after another: they must be short (ack a message, wake
// a stream) and must not wait for another write of this GroupCommit (Write() from a callback
// applies inline instead of deadlocking). Nothing submitted is dropped: Drain() applies what is
// queued before it returns, and a Submit after Drain applies on the caller's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "store/store.h"

namespace herald {

class GroupCommit {
 public:
  // Applies every write of the batch, setting each one's status (Store::ApplyWrites).
  using Apply = std::function<void(std::vector<StoreWrite*>&)>;
  using Done = std::function<void(StoreWrite&)>;

  // `linger`: when a write arrives while the writer is idle, how long the writer waits for
  // others before it begins the transaction (0: at once).
  GroupCommit(Apply apply, size_t max_batch, std::chrono::microseconds linger = std::chrono::microseconds(0));
  ~GroupCommit();  // Drain()
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  // Queues the write; `done` (may be empty) runs once it is applied. Thread-safe.
  void Submit(StoreWrite write, Done done);
  // Queues the write and waits for it; returns write.status.
  Status Write(StoreWrite& write);
  // Applies everything queued, then stops the thread (a later Submit applies inline). Idempotent.
  void Drain();

  // Writes applied and transactions used since start (for metrics and tests).
  size_t WritesApplied() const;
  size_t Batches() const;

 private:
  struct Item {
    StoreWrite write;
    Done done;
  };

  void Run();
  void ApplyNow(std::vector<Item>& items);

  const Apply apply_;
  const size_t max_batch_;
  const std::chrono::microseconds linger_;
  mutable std::mutex mu_;
  std::condition_variable cv_;       // work arrived, or stop
  std::deque<Item> queue_;
  bool started_ = false;
  bool stopping_ = false;
  bool idle_ = false;  // the writer waits for work: a Submit must wake it
  size_t writes_ = 0, batches_ = 0;
  std::thread thread_;
  std::atomic<std::thread::id> writer_id_{};
};

}  // namespace herald
