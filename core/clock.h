// Clock: the source of wall time, injectable so tests control time instead of sleeping.
#pragma once

#include <atomic>
#include <chrono>

namespace herald {

using SystemTime = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  // Thread-safe.
  virtual SystemTime Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  SystemTime Now() const override { return std::chrono::system_clock::now(); }
  static const Clock& Instance() {
    static const SystemClock clock;
    return clock;
  }
};

// A clock that only moves when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(SystemTime start) : now_(start.time_since_epoch().count()) {}
  SystemTime Now() const override {
    return SystemTime(SystemTime::duration(now_.load(std::memory_order_acquire)));
  }
  void Advance(SystemTime::duration d) { now_.fetch_add(d.count(), std::memory_order_acq_rel); }
  void Set(SystemTime t) { now_.store(t.time_since_epoch().count(), std::memory_order_release); }

 private:
  std::atomic<SystemTime::rep> now_;
};

}  // namespace herald
