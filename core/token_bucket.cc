#include "core/token_bucket.h"

#include <algorithm>
#include <thread>

namespace herald {

TokenBucket::TokenBucket(double rate, double burst, TimePoint start)
    : rate_(rate), burst_(std::max(1.0, burst)), tokens_(std::max(1.0, burst)), last_(start) {}

TokenBucket::Duration TokenBucket::Reserve(TimePoint now) {
  if (rate_ <= 0) return Duration::zero();
  std::lock_guard lock(mu_);
  if (now > last_) {
    tokens_ = std::min(burst_, tokens_ + std::chrono::duration<double>(now - last_).count() * rate_);
    last_ = now;
  }
  tokens_ -= 1;
  if (tokens_ >= 0) return Duration::zero();
  // The token is due when the deficit has been refilled, measured from last_ (>= now).
  auto wait = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(-tokens_ / rate_));
  return (last_ - now) + wait;
}

TokenBucket::Duration TokenBucket::Acquire() {
  Duration wait = Reserve(std::chrono::steady_clock::now());
  if (wait > Duration::zero()) std::this_thread::sleep_for(wait);
  return wait;
}

}  // namespace herald
