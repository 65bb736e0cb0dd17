#include <catch2/catch.hpp>
#include <cstdio>

#include "core/time.h"

using namespace herald;
using namespace std::chrono;

TEST_CASE("Rfc3339: parses UTC, offsets and fractions") {
  auto t = ParseRfc3339("2026-11-22T10:00:00Z");
  REQUIRE(t);
  CHECK(FormatRfc3339(*t) == "2026-11-22T10:00:00.000Z");
  CHECK(FormatRfc3339(*ParseRfc3339("2026-11-22T11:00:00.250+01:00")) == "2026-11-22T10:00:00.250Z");
  CHECK(FormatRfc3339(*ParseRfc3339("2026-11-22T05:30:00-04:30")) == "2026-11-22T10:00:00.000Z");
  CHECK(ParseRfc3339("2024-02-29T00:00:00Z"));
}

TEST_CASE("Rfc3339: rejects what is not a full timestamp") {
  for (const char* bad : {"", "2026-11-22", "2026-11-22T10:00:00", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
                          "2025-02-29T00:00:00Z", "2026-11-22T24:00:00Z", "2026-11-22T10:00:00.Z",
                          "2026-11-22T10:00:00+0100", "2026-11-22T10:00:00Zjunk", "yesterday"}) {
    INFO(bad);
    CHECK_FALSE(ParseRfc3339(bad));
  }
}

TEST_CASE("Duration: parses units and formats the shortest exact form") {
  CHECK(ParseDuration("250ms") == Millis(250));
  CHECK(ParseDuration("30s") == Millis(30000));
  CHECK(ParseDuration("5m") == Millis(300000));
  CHECK(ParseDuration("24h") == Millis(86400000));
  CHECK(ParseDuration("0") == Millis(0));
  CHECK_FALSE(ParseDuration("5"));
  CHECK_FALSE(ParseDuration("s"));
  CHECK_FALSE(ParseDuration("1.5s"));
  CHECK_FALSE(ParseDuration("-1s"));
  CHECK(FormatDuration(Millis(1500)) == "1500ms");
  CHECK(FormatDuration(Millis(4000)) == "4s");
  CHECK(FormatDuration(Millis(120000)) == "2m");
  CHECK(FormatDuration(Millis(86400000)) == "1d");
}

TEST_CASE("Rfc3339: formatting writes what printf wrote, over the years and to the millisecond") {
  auto printf_form = [](SystemTime t) {
    auto ms = time_point_cast<milliseconds>(t);
    auto d = floor<days>(ms);
    year_month_day ymd(d);
    hh_mm_ss hms(ms - d);
    char buf[40];
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02ld:%02ld:%02lld.%03lldZ", int(ymd.year()), unsigned(ymd.month()),
                  unsigned(ymd.day()), long(hms.hours().count()), long(hms.minutes().count()),
                  static_cast<long long>(hms.seconds().count()), static_cast<long long>(hms.subseconds().count()));
    return std::string(buf);
  };
  // Over all a SystemTime holds (nanoseconds in 64 bits: 1677 to 2262), in steps that reach every
  // field's digits.
  for (long long ms = -9'200'000'000'000LL; ms < 9'200'000'000'000LL; ms += 1'000'003'777LL) {
    const SystemTime t{milliseconds(ms)};
    INFO(ms);
    REQUIRE(FormatRfc3339(t) == printf_form(t));
  }
  CHECK(FormatRfc3339(SystemTime{}) == "1970-01-01T00:00:00.000Z");
  CHECK(FormatRfc3339(SystemTime{milliseconds(7'258'118'399'999LL)}) == "2199-12-31T23:59:59.999Z");
  CHECK(FormatRfc3339(SystemTime{milliseconds(-1)}) == "1969-12-31T23:59:59.999Z");
}
