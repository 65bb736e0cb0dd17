#include "core/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace herald {
namespace {

std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// a="x",b="y"
std::string LabelPairs(const std::vector<std::string>& names, const std::vector<std::string>& values) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    if (i) out += ',';
    out += names[i] + "=\"" + EscapeLabel(values[i]) + "\"";
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  // The shortest form that reads back as the same double: 0.005, not 0.0050000000000000001.
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace

CounterFamily::CounterFamily(std::string name, std::string help, std::vector<std::string> labels)
    : name_(std::move(name)), help_(std::move(help)), labels_(std::move(labels)) {}

Counter& CounterFamily::With(const std::vector<std::string>& values) {
  std::lock_guard lock(mu_);
  auto& slot = series_[values];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

double CounterFamily::Value(const std::vector<std::string>& values) const {
  std::lock_guard lock(mu_);
  auto it = series_.find(values);
  return it == series_.end() ? 0 : it->second->Value();
}

void CounterFamily::Render(std::string& out) const {
  out += "# HELP " + name_ + " " + help_ + "\n# TYPE " + name_ + " counter\n";
  std::lock_guard lock(mu_);
  for (const auto& [values, counter] : series_) {
    std::string labels = LabelPairs(labels_, values);
    out += name_ + (labels.empty() ? "" : "{" + labels + "}") + ' ' + FormatValue(counter->Value()) + '\n';
  }
}

Histogram::Histogram(const std::vector<double>& bounds)
    : bounds_(bounds), buckets_(new std::atomic<uint64_t>[bounds.size()]) {
  for (size_t i = 0; i < bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  if (it != bounds_.end()) buckets_[static_cast<size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
  sum_.Inc(v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

uint64_t Histogram::CountAtOrBelow(double bound) const {
  uint64_t n = 0;
  for (size_t i = 0; i < bounds_.size() && bounds_[i] <= bound; ++i) n += buckets_[i].load(std::memory_order_relaxed);
  return n;
}

void Histogram::Render(const std::string& name, const std::string& labels, std::string& out) const {
  const std::string sep = labels.empty() ? "" : labels + ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    out += name + "_bucket{" + sep + "le=\"" + FormatValue(bounds_[i]) + "\"} " + std::to_string(cumulative) + '\n';
  }
  uint64_t count = count_.load(std::memory_order_relaxed);
  out += name + "_bucket{" + sep + "le=\"+Inf\"} " + std::to_string(std::max(count, cumulative)) + '\n';
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + braces + ' ' + FormatValue(sum_.Value()) + '\n';
  out += name + "_count" + braces + ' ' + std::to_string(std::max(count, cumulative)) + '\n';
}

HistogramFamily::HistogramFamily(std::string name, std::string help, std::vector<std::string> labels,
                                 std::vector<double> bounds)
    : name_(std::move(name)), help_(std::move(help)), labels_(std::move(labels)), bounds_(std::move(bounds)) {
  std::sort(bounds_.begin(), bounds_.end());
}

Histogram& HistogramFamily::With(const std::vector<std::string>& values) {
  std::lock_guard lock(mu_);
  auto& slot = series_[values];
  if (!slot) slot = std::make_unique<Histogram>(bounds_);
  return *slot;
}

void HistogramFamily::Render(std::string& out) const {
  out += "# HELP " + name_ + " " + help_ + "\n# TYPE " + name_ + " histogram\n";
  std::lock_guard lock(mu_);
  for (const auto& [values, h] : series_) h->Render(name_, LabelPairs(labels_, values), out);
}

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                              2.5,   5,    10,    30,   60,  120, 300, 900};
  return kBounds;
}

Metrics& Metrics::Global() {
  static Metrics* m = new Metrics();  // never destroyed: threads may count during exit
  return *m;
}

CounterFamily& Metrics::Counters(const std::string& name, const std::string& help, std::vector<std::string> labels) {
  std::lock_guard lock(mu_);
  auto& slot = counters_[name];
  if (!slot) slot = std::make_unique<CounterFamily>(name, help, std::move(labels));
  return *slot;
}

HistogramFamily& Metrics::Histograms(const std::string& name, const std::string& help, std::vector<std::string> labels,
                                     const std::vector<double>& bounds) {
  std::lock_guard lock(mu_);
  auto& slot = histograms_[name];
  if (!slot) slot = std::make_unique<HistogramFamily>(name, help, std::move(labels), bounds);
  return *slot;
}

void Metrics::Gauge(const std::string& name, const std::string& help, std::function<double()> read) {
  std::lock_guard lock(mu_);
  gauges_[name] = GaugeEntry{help, std::move(read)};
}

void Metrics::RemoveGauge(const std::string& name) {
  std::lock_guard lock(mu_);
  gauges_.erase(name);
}

std::string Metrics::Render() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& [name, family] : counters_) family->Render(out);
  for (const auto& [name, family] : histograms_) family->Render(out);
  for (const auto& [name, g] : gauges_) {
    out += "# HELP " + name + " " + g.help + "\n# TYPE " + name + " gauge\n" + name + ' ' + FormatValue(g.read()) + '\n';
  }
  return out;
}

}  // namespace herald
