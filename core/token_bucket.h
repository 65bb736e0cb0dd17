// A token bucket: `rate` tokens per second, at most `burst` saved up. Callers reserve a token
// and wait until its time, so a provider's limit is never exceeded and nobody is refused.
// Thread-safe. Time is passed in, so tests need no sleeping.
#pragma once

#include <chrono>
#include <mutex>

namespace herald {

class TokenBucket {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Duration = std::chrono::steady_clock::duration;

  // rate <= 0 means unlimited. A full bucket at `start`.
  TokenBucket(double rate, double burst, TimePoint start = std::chrono::steady_clock::now());

  // Takes a token: returns how long after `now` the caller may use it (zero if at once).
  Duration Reserve(TimePoint now);

  // Reserve() with the real clock, then sleeps until the token is due; returns the wait.
  Duration Acquire();

 private:
  const double rate_;
  const double burst_;
  std::mutex mu_;
  double tokens_;  // may go negative: tokens promised to callers who are waiting
  TimePoint last_;
};

}  // namespace herald
