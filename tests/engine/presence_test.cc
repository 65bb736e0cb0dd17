#include <catch2/catch.hpp>

#include "core/time.h"
#include "engine/presence.h"

using namespace herald;
using namespace std::chrono_literals;

TEST_CASE("Presence: heartbeats count for the TTL, background and expiry make the user inactive") {
  const SystemTime t0 = *ParseRfc3339("2026-11-22T10:00:00Z");
  LocalPresence p(60s);
  CHECK_FALSE(p.IsActive("u-1", t0));
  p.Heartbeat("u-1", true, t0);
  CHECK(p.IsActive("u-1", t0 + 59s));
  CHECK_FALSE(p.IsActive("u-1", t0 + 60s));
  p.Heartbeat("u-1", true, t0 + 30s);
  p.Heartbeat("u-1", false, t0 + 31s);
  CHECK_FALSE(p.IsActive("u-1", t0 + 32s));
  CHECK_FALSE(p.IsActive("u-2", t0));
}

TEST_CASE("Presence: an open stream marks the user active until closed or backgrounded") {
  const SystemTime t0 = *ParseRfc3339("2026-11-22T10:00:00Z");
  LocalPresence p(60s);
  p.StreamOpened("u-1");
  p.StreamOpened("u-1");
  CHECK(p.IsActive("u-1", t0 + 24h));
  p.StreamClosed("u-1");
  CHECK(p.IsActive("u-1", t0 + 24h));  // one stream still open
  p.Heartbeat("u-1", false, t0);
  CHECK_FALSE(p.IsActive("u-1", t0));  // the app went to the background
  p.StreamOpened("u-1");
  CHECK(p.IsActive("u-1", t0));
  p.StreamClosed("u-1");
  p.StreamClosed("u-1");
  p.StreamClosed("u-1");  // more closes than opens are harmless
  CHECK_FALSE(p.IsActive("u-1", t0 + 1h));
}
