#include "core/metrics.h"

#include <cstdio>

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

std::string FormatValue(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
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
    out += name_;
    if (!labels_.empty()) {
      out += '{';
      for (size_t i = 0; i < labels_.size() && i < values.size(); ++i) {
        if (i) out += ',';
        out += labels_[i] + "=\"" + EscapeLabel(values[i]) + "\"";
      }
      out += '}';
    }
    out += ' ' + FormatValue(counter->Value()) + '\n';
  }
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

std::string Metrics::Render() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& [name, family] : counters_) family->Render(out);
  return out;
}

}  // namespace herald
