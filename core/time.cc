#include "core/time.h"

#include <charconv>
#include <cstring>
#include <type_traits>

namespace herald {
namespace {

bool Digits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

}  // namespace

std::optional<SystemTime> ParseRfc3339(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
  int year, month, day, hour, minute, second;
  if (s.size() < 20) return std::nullopt;
  if (!Digits(s, 0, 4, year) || s[4] != '-' || !Digits(s, 5, 2, month) || s[7] != '-' ||
      !Digits(s, 8, 2, day) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !Digits(s, 11, 2, hour) || s[13] != ':' || !Digits(s, 14, 2, minute) || s[16] != ':' ||
      !Digits(s, 17, 2, second)) {
    return std::nullopt;
  }
  size_t pos = 19;
  long long nanos = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t start = pos;
    long long scale = 100000000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (scale > 0) nanos += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == start) return std::nullopt;
  }
  if (pos >= s.size()) return std::nullopt;
  int offset_minutes = 0;
  if (s[pos] == 'Z' || s[pos] == 'z') {
    ++pos;
  } else if (s[pos] == '+' || s[pos] == '-') {
    int oh, om;
    if (!Digits(s, pos + 1, 2, oh) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
        !Digits(s, pos + 4, 2, om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset_minutes = (oh * 60 + om) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 60) return std::nullopt;
  using namespace std::chrono;
  year_month_day ymd{std::chrono::year(year), std::chrono::month(month), std::chrono::day(day)};
  if (!ymd.ok()) return std::nullopt;
  // A leap second (":60") is folded into the next second; system_clock has no leap seconds.
  auto t = sys_days(ymd) + hours(hour) + minutes(minute) + seconds(second) - minutes(offset_minutes);
  return time_point_cast<SystemTime::duration>(t + duration_cast<SystemTime::duration>(nanoseconds(nanos)));
}

std::string FormatRfc3339(SystemTime t) {
  using namespace std::chrono;
  auto ms = time_point_cast<milliseconds>(t);
  auto days = floor<std::chrono::days>(ms);
  year_month_day ymd(days);
  hh_mm_ss hms(ms - days);
  // A SystemTime counts nanoseconds in 64 bits: its years are 1677 to 2262, always four digits.
  static_assert(std::is_same_v<SystemTime::duration, std::chrono::nanoseconds>);
  // YYYY-MM-DDTHH:MM:SS.mmmZ by hand: snprintf was a tenth of the engine's instructions per event.
  auto put = [](char* at, long long v, int digits) {
    for (int i = digits - 1; i >= 0; --i, v /= 10) at[i] = static_cast<char>('0' + v % 10);
  };
  char buf[24];
  std::memcpy(buf, "0000-00-00T00:00:00.000Z", 24);
  put(buf, int(ymd.year()), 4);
  put(buf + 5, unsigned(ymd.month()), 2);
  put(buf + 8, unsigned(ymd.day()), 2);
  put(buf + 11, hms.hours().count(), 2);
  put(buf + 14, hms.minutes().count(), 2);
  put(buf + 17, hms.seconds().count(), 2);
  put(buf + 20, hms.subseconds().count(), 3);
  return std::string(buf, 24);
}

std::optional<Millis> ParseDuration(std::string_view s) {
  if (s == "0") return Millis(0);
  size_t i = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  if (i == 0 || i > 12) return std::nullopt;
  long long v = 0;
  std::from_chars(s.data(), s.data() + i, v);
  std::string_view unit = s.substr(i);
  if (unit == "ms") return Millis(v);
  if (unit == "s") return Millis(v * 1000);
  if (unit == "m") return Millis(v * 60'000);
  if (unit == "h") return Millis(v * 3'600'000);
  if (unit == "d") return Millis(v * 86'400'000);
  return std::nullopt;
}

std::string FormatDuration(Millis d) {
  long long ms = d.count();
  if (ms == 0) return "0s";
  struct Unit {
    long long ms;
    const char* name;
  };
  static const Unit kUnits[] = {{86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1000, "s"}};
  for (const Unit& u : kUnits) {
    if (ms % u.ms == 0) return std::to_string(ms / u.ms) + u.name;
  }
  return std::to_string(ms) + "ms";
}

}  // namespace herald
