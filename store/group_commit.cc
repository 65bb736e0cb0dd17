#include "store/group_commit.h"

#include <future>

#include "core/metrics.h"
#include "core/thread_name.h"

namespace herald {
namespace {

Histogram& BatchSizes() {
  static Histogram& h =
      Metrics::Global()
          .Histograms("herald_store_commit_writes", "Writes applied together in one store transaction (group commit).",
                      {}, {1, 2, 4, 8, 16, 32, 64, 128, 256, 512})
          .With({});
  return h;
}

Histogram& CommitSeconds() {
  static Histogram& h =
      Metrics::Global()
          .Histograms("herald_store_commit_seconds",
                      "Time the store's writer thread took to apply one group transaction, WAL checkpoints it ran included.",
                      {}, {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1})
          .With({});
  return h;
}

}  // namespace

GroupCommit::GroupCommit(Apply apply, size_t max_batch, std::chrono::microseconds linger)
    : apply_(std::move(apply)), max_batch_(std::max<size_t>(1, max_batch)), linger_(linger) {
  BatchSizes();  // registered now, so /metrics lists them before the first write
  CommitSeconds();
}

GroupCommit::~GroupCommit() { Drain(); }

void GroupCommit::Submit(StoreWrite write, Done done) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      if (!started_) {
        started_ = true;
        thread_ = std::thread([this] { Run(); });
      }
      queue_.push_back(Item{std::move(write), std::move(done)});
      if (idle_) {
        idle_ = false;
        cv_.notify_one();
      }
      return;
    }
  }
  std::vector<Item> one;
  one.push_back(Item{std::move(write), std::move(done)});
  ApplyNow(one);
}

Status GroupCommit::Write(StoreWrite& write) {
  if (std::this_thread::get_id() == writer_id_) {  // from a callback: the writer cannot wait for itself
    std::vector<Item> one;
    one.push_back(Item{std::move(write), nullptr});
    ApplyNow(one);
    write = std::move(one[0].write);
    return write.status;
  }
  std::promise<void> applied;
  Submit(std::move(write), [&](StoreWrite& w) {
    write = std::move(w);
    applied.set_value();
  });
  applied.get_future().wait();
  return write.status;
}

void GroupCommit::Drain() {
  std::thread t;
  {
    std::unique_lock lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    cv_.notify_one();
    t = std::move(thread_);
  }
  if (t.joinable()) t.join();  // the thread empties the queue before it ends
}

size_t GroupCommit::WritesApplied() const {
  std::lock_guard lock(mu_);
  return writes_;
}

size_t GroupCommit::Batches() const {
  std::lock_guard lock(mu_);
  return batches_;
}

void GroupCommit::Run() {
  SetThreadName("store-writer");
  writer_id_ = std::this_thread::get_id();
  std::vector<Item> batch;
  bool was_idle = true;  // the thread starts with the first write
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (queue_.empty() && !stopping_) {
        idle_ = true;
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        idle_ = false;
        was_idle = true;
      }
      if (was_idle && linger_.count() > 0 && !stopping_ && queue_.size() < max_batch_) {
        lock.unlock();
        std::this_thread::sleep_for(linger_);
        lock.lock();
      }
      was_idle = false;
      if (queue_.empty()) return;  // stopping, and nothing left
      const size_t n = std::min(queue_.size(), max_batch_);
      batch.clear();
      batch.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    ApplyNow(batch);
  }
}

void GroupCommit::ApplyNow(std::vector<Item>& items) {
  std::vector<StoreWrite*> writes;
  writes.reserve(items.size());
  for (Item& it : items) writes.push_back(&it.write);
  const auto began = std::chrono::steady_clock::now();
  apply_(writes);
  CommitSeconds().Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
  BatchSizes().Observe(static_cast<double>(items.size()));
  {
    std::lock_guard lock(mu_);
    writes_ += items.size();
    ++batches_;
  }
  for (Item& it : items) {
    if (it.done) it.done(it.write);
  }
}

// The writer thread of a store holds no more than this many writes per transaction: a
// transaction's locks keep other writers waiting.
constexpr size_t kMaxGroup = 256;
// How long an idle writer waits for more writes (bench/README.md, fourth round: at saturation
// heraldd's CPU per event fell by a fifth, latency at half load did not grow).
constexpr std::chrono::microseconds kLinger(300);

Store::Store()
    : group_(std::make_unique<GroupCommit>([this](std::vector<StoreWrite*>& w) { ApplyWrites(w); }, kMaxGroup, kLinger)) {}

Store::~Store() = default;

void Store::Submit(StoreWrite write, std::function<void(StoreWrite&)> done) {
  group_->Submit(std::move(write), std::move(done));
}

Status Store::ApplyWrite(StoreWrite& write) {
  std::vector<StoreWrite*> one{&write};
  ApplyWrites(one);
  return write.status;
}

Status Store::Write(StoreWrite& write) { return group_->Write(write); }

void Store::DrainWrites() { group_->Drain(); }

size_t Store::GroupWrites() const { return group_->WritesApplied(); }

size_t Store::GroupBatches() const { return group_->Batches(); }

}  // namespace herald
