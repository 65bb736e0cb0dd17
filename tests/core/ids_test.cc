#include <catch2/catch.hpp>

#include <cstdio>
#include <thread>
#include <vector>

#include "core/ids.h"

using namespace herald;

// Ids must not change between versions: an event processed again after an upgrade must yield the
// ids its first processing stored (sent records, inbox entries, traces).
TEST_CASE("Ids: notification and delivery ids are the documented time and SHA-256 digits") {
  const SystemTime begun{std::chrono::milliseconds(1795435200123)};  // 0x1a20846fe7b
  // sha256("evt-1\nu-1\n") and sha256("evt-1\nu-1\nwebhook\n"), first 21 hex digits
  CHECK(NotificationId("evt-1", "u-1", begun) == "n-1a20846fe7b25435176961123f0abe74");
  CHECK(DeliveryId("evt-1", "u-1", "webhook", begun) == "d-1a20846fe7b7ed5969d728d4298cbba9");
  CHECK(NotificationId("evt-1", "u-1", SystemTime{}) == "n-0000000000025435176961123f0abe74");
}

TEST_CASE("Ids: threads computing ids at once get the same answers") {
  const SystemTime begun{std::chrono::milliseconds(1795435200123)};
  std::vector<std::string> got(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < got.size(); ++t) {
    threads.emplace_back([&, t] {
      std::string last;
      for (int i = 0; i < 2000; ++i) last = DeliveryId("evt-" + std::to_string(i % 7), "u-1", "webhook", begun);
      got[t] = DeliveryId("evt-1", "u-1", "webhook", begun) + "/" + last;
    });
  }
  for (std::thread& th : threads) th.join();
  for (const std::string& g : got) CHECK(g == got[0]);
  CHECK(got[0].rfind("d-1a20846fe7b7ed5969d728d4298cbba9/", 0) == 0);
}

TEST_CASE("Ids: the time digits are the ms in 11 hex digits, as \"%011llx\" wrote them") {
  // (A SystemTime holds nanoseconds in 64 bits: up to about 0x85f00000000 ms.)
  for (unsigned long long ms : {0ULL, 1ULL, 0xfULL, 0x10ULL, 0xabcULL, 1795435200123ULL, 0x7fedcba9876ULL}) {
    char want[16];
    std::snprintf(want, sizeof want, "%011llx", ms & 0xfffffffffffULL);
    const SystemTime begun{std::chrono::milliseconds(static_cast<long long>(ms))};
    INFO(ms);
    CHECK(NotificationId("e", "u", begun).substr(2, 11) == want);
    CHECK(DeliveryId("e", "u", "in_app", begun).substr(2, 11) == want);
    CHECK(NotificationId("e", "u", begun).size() == 34);
  }
}
