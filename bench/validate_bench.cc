// Measures the cost of Herald's event validation against a baseline that only parses the same
// JSON with the same library, in the same process. Run: build/bench_validate [seconds-per-case]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/time.h"
#include "engine/event.h"

using namespace herald;
using Steady = std::chrono::steady_clock;

namespace {

std::string MakeEvent(int recipients) {
  nlohmann::json r = nlohmann::json::array();
  for (int i = 0; i < recipients; ++i) r.push_back("user-" + std::to_string(100000 + i));
  return nlohmann::json{{"specversion", "1.0"}, {"id", "evt-7f3a-0001"}, {"source", "/billing"},
                        {"type", "billing.invoice.paid"}, {"time", "2026-11-22T10:00:00Z"}, {"priority", "high"},
                        {"data", {{"recipients", r}, {"vars", {{"amount", "12.00 EUR"}, {"invoice", "INV-2026-0042"}}}}}}
      .dump();
}

template <typename F>
double Rate(F&& f, double seconds) {
  long n = 0;
  auto start = Steady::now();
  auto end = start + std::chrono::duration<double>(seconds);
  while (Steady::now() < end) {
    for (int i = 0; i < 64; ++i) f();
    n += 64;
  }
  return n / std::chrono::duration<double>(Steady::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  EventLimits limits;
  limits.channels = {"email", "in_app", "push", "webhook"};
  SystemTime now = std::chrono::system_clock::now();
  std::printf("| event | bytes | parse only (events/s) | Herald validation (events/s) | Herald / baseline |\n");
  std::printf("|---|---|---|---|---|\n");
  for (int recipients : {2, 100, 10000}) {
    std::string body = MakeEvent(recipients);
    size_t sink = 0;
    double base = Rate([&] { sink += nlohmann::json::parse(body).size(); }, seconds);
    double herald = Rate([&] {
      Event e;
      if (ParseEvent(body, limits, now, e)) std::abort();
      sink += e.recipients.size();
    }, seconds);
    std::printf("| %d recipients | %zu | %.0f | %.0f | %.2f |\n", recipients, body.size(), base, herald, herald / base);
    if (sink == 0) std::puts("");
  }
}
