// A minimal in-process metrics registry rendered as Prometheus text (exposed by the API role at
// GET /metrics). Counters and histograms are looked up once by label values and then updated
// lock-free; gauges are read from a callback when the metrics are rendered.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
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

// A histogram with fixed upper bounds (seconds, for latencies): cumulative buckets, sum and count.
class Histogram {
 public:
  explicit Histogram(const std::vector<double>& bounds);
  void Observe(double v);
  // Renders the series `name` with `labels` ("a=\"x\"" pairs, may be empty).
  void Render(const std::string& name, const std::string& labels, std::string& out) const;
  uint64_t Count() const { return count_.load(std::memory_order_relaxed); }
  // Observations at or below `bound` (which must be one of the bounds), for tests.
  uint64_t CountAtOrBelow(double bound) const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // per bound, not cumulative; +Inf is count_
  std::atomic<uint64_t> count_{0};
  Counter sum_;
};

class HistogramFamily {
 public:
  HistogramFamily(std::string name, std::string help, std::vector<std::string> labels, std::vector<double> bounds);
  // Thread-safe. The reference stays valid for the family's lifetime.
  Histogram& With(const std::vector<std::string>& values);
  void Render(std::string& out) const;

 private:
  std::string name_, help_;
  std::vector<std::string> labels_;
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Histogram>> series_;
};

// Bounds for latencies from milliseconds to minutes.
const std::vector<double>& LatencyBuckets();

class Metrics {
 public:
  static Metrics& Global();
  // Return the family with this name, creating it on first use. Thread-safe.
  CounterFamily& Counters(const std::string& name, const std::string& help, std::vector<std::string> labels);
  HistogramFamily& Histograms(const std::string& name, const std::string& help, std::vector<std::string> labels,
                              const std::vector<double>& bounds = LatencyBuckets());
  // A gauge without labels whose value `read` returns at render time (replaces an earlier one of
  // the same name). `read` must be thread-safe and must not call Metrics.
  void Gauge(const std::string& name, const std::string& help, std::function<double()> read);
  void RemoveGauge(const std::string& name);
  std::string Render() const;

 private:
  struct GaugeEntry {
    std::string help;
    std::function<double()> read;
  };
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<CounterFamily>> counters_;
  std::map<std::string, std::unique_ptr<HistogramFamily>> histograms_;
  std::map<std::string, GaugeEntry> gauges_;
};

}  // namespace herald
