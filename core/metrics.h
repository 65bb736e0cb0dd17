// A minimal in-process metrics registry rendered as Prometheus text (exposed by the API role).
// Counters are looked up once by label values and then incremented lock-free.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace herald {

class Counter {
 public:
  void Inc(double v = 1) {
    double cur = value_.load(std::memory_order_relaxed);
    while (!value_.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
    }
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A counter family: one name, a fixed list of label names, one Counter per label-value tuple.
class CounterFamily {
 public:
  CounterFamily(std::string name, std::string help, std::vector<std::string> labels);
  // Thread-safe. The reference stays valid for the family's lifetime.
  Counter& With(const std::vector<std::string>& values);
  double Value(const std::vector<std::string>& values) const;
  void Render(std::string& out) const;

 private:
  std::string name_, help_;
  std::vector<std::string> labels_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Counter>> series_;
};

class Metrics {
 public:
  static Metrics& Global();
  // Returns the family with this name, creating it on first use. Thread-safe.
  CounterFamily& Counters(const std::string& name, const std::string& help, std::vector<std::string> labels);
  std::string Render() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<CounterFamily>> counters_;
};

}  // namespace herald
