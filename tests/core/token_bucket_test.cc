#include <catch2/catch.hpp>
#include <algorithm>
#include <vector>

#include "core/token_bucket.h"

using namespace herald;
using namespace std::chrono;

namespace {
// The most uses in any window of `width`, given sorted use times.
size_t MaxInWindow(const std::vector<TokenBucket::TimePoint>& t, TokenBucket::Duration width) {
  size_t best = 0, lo = 0;
  for (size_t hi = 0; hi < t.size(); ++hi) {
    while (t[hi] - t[lo] >= width) ++lo;
    best = std::max(best, hi - lo + 1);
  }
  return best;
}
}  // namespace

TEST_CASE("TokenBucket: a burst of 100 at 30/s is all served, never above 30 + burst in a second") {
  const TokenBucket::TimePoint t0{};
  TokenBucket bucket(30, 5, t0);
  std::vector<TokenBucket::TimePoint> uses;
  for (int i = 0; i < 100; ++i) uses.push_back(t0 + bucket.Reserve(t0));  // all arrive at once
  std::sort(uses.begin(), uses.end());
  CHECK(uses.size() == 100);
  CHECK(MaxInWindow(uses, seconds(1)) <= 30 + 5);
  // The first `burst` go at once; the rest follow at the rate: 95 more take ~3.17 s.
  CHECK(uses[4] == t0);
  CHECK(uses[5] > t0);
  CHECK(duration<double>(uses.back() - t0).count() == Approx(95.0 / 30).epsilon(0.01));
}

TEST_CASE("TokenBucket: steady arrivals below the rate never wait, a quiet bucket refills to burst") {
  const TokenBucket::TimePoint t0{};
  TokenBucket bucket(10, 3, t0);
  for (int i = 0; i < 50; ++i) CHECK(bucket.Reserve(t0 + milliseconds(200) * i) == TokenBucket::Duration::zero());
  TokenBucket drained(10, 3, t0);
  for (int i = 0; i < 3; ++i) drained.Reserve(t0);
  CHECK(drained.Reserve(t0) > TokenBucket::Duration::zero());  // empty now
  const auto later = t0 + seconds(60);                            // refills, but only to 3
  for (int i = 0; i < 3; ++i) CHECK(drained.Reserve(later) == TokenBucket::Duration::zero());
  CHECK(drained.Reserve(later) == duration_cast<TokenBucket::Duration>(milliseconds(100)));
}

TEST_CASE("TokenBucket: rate 0 means unlimited") {
  TokenBucket bucket(0, 0);
  for (int i = 0; i < 1000; ++i) CHECK(bucket.Reserve(std::chrono::steady_clock::now()) == TokenBucket::Duration::zero());
}
