// Collects deliveries as the sink, the inbox poller and the relay report them, for the phase
// (one measurement) under way. Thread-safe.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

namespace herald::bench {

enum ChannelIndex { kInApp = 0, kWebhook = 1, kChannels = 2 };

struct PhaseData {
  int id = -1;
  int64_t deliveries_per_event = 2;
  std::vector<uint32_t> counts;  // deliveries seen per event number
  int64_t completed = 0;         // events with every delivery seen
  int64_t deliveries[kChannels] = {0, 0};
  int64_t duplicates = 0;        // deliveries beyond what an event should get
  int64_t strays = 0;            // deliveries of other phases (arriving late): should stay 0
  // (sent_us, latency_us) per delivery.
  std::vector<std::pair<int64_t, int64_t>> latency[kChannels];
  int64_t last_arrival_us[kChannels] = {0, 0};
};

class Recorder {
 public:
  void Begin(int phase, int64_t deliveries_per_event) {
    std::lock_guard lock(mu_);
    data_ = PhaseData{};
    data_.id = phase;
    data_.deliveries_per_event = deliveries_per_event;
    completed_ = 0;
  }

  void Deliver(int64_t phase, int64_t n, int channel, int64_t sent_us, int64_t arrived_us) {
    std::lock_guard lock(mu_);
    if (phase != data_.id || n < 0 || channel < 0 || channel >= kChannels) {
      ++strays_total_;
      ++data_.strays;
      return;
    }
    auto i = static_cast<size_t>(n);
    if (i >= data_.counts.size()) data_.counts.resize(std::max(i + 1, data_.counts.size() * 2), 0);
    uint32_t& c = data_.counts[i];
    if (static_cast<int64_t>(c) >= data_.deliveries_per_event) {
      ++data_.duplicates;
      return;
    }
    if (static_cast<int64_t>(++c) == data_.deliveries_per_event) {
      ++data_.completed;
      completed_.store(data_.completed);
    }
    ++data_.deliveries[channel];
    data_.latency[channel].emplace_back(sent_us, std::max<int64_t>(0, arrived_us - sent_us));
    data_.last_arrival_us[channel] = std::max(data_.last_arrival_us[channel], arrived_us);
  }

  int64_t Completed() const { return completed_.load(); }
  int64_t Deliveries() {
    std::lock_guard lock(mu_);
    return data_.deliveries[0] + data_.deliveries[1];
  }

  // Ends the phase and hands over what it collected; later deliveries count as strays.
  PhaseData End() {
    std::lock_guard lock(mu_);
    PhaseData out = std::move(data_);
    data_ = PhaseData{};
    completed_ = 0;
    return out;
  }

  int64_t StraysTotal() {
    std::lock_guard lock(mu_);
    return strays_total_;
  }

 private:
  std::mutex mu_;
  PhaseData data_;
  std::atomic<int64_t> completed_{0};
  int64_t strays_total_ = 0;
};

// The q-quantile (0 < q <= 1) by the nearest-rank method; `v` is sorted in place. -1 if empty.
inline double Quantile(std::vector<int64_t>& v, double q, bool sorted = false) {
  if (v.empty()) return -1;
  if (!sorted) std::sort(v.begin(), v.end());
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return static_cast<double>(v[std::min(v.size(), std::max<size_t>(rank, 1)) - 1]);
}

}  // namespace herald::bench
