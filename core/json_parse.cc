#include "core/json_parse.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace herald {
namespace {

using nlohmann::json;

class Reader {
 public:
  Reader(std::string_view text, size_t max_depth, JsonMemberTexts* texts)
      : p_(text.data()), end_(text.data() + text.size()), max_depth_(max_depth), texts_(texts) {}

  bool Document(json& out) {
    // A byte order mark, and only a whole one, may open the text (as nlohmann allows).
    if (p_ != end_ && static_cast<unsigned char>(*p_) == 0xEF) {
      if (end_ - p_ < 3 || static_cast<unsigned char>(p_[1]) != 0xBB || static_cast<unsigned char>(p_[2]) != 0xBF) {
        return false;
      }
      p_ += 3;
    }
    SkipSpace();
    if (!Value(out, 0)) return false;
    SkipSpace();
    return p_ == end_;
  }

 private:
  void SkipSpace() {
    const char* from = p_;
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
    if (p_ != from) ++spaces_;
  }

  bool Literal(const char* word, size_t n) {
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return false;
    p_ += n;
    return true;
  }

  bool Value(json& out, size_t depth) {
    if (p_ == end_) return false;
    switch (*p_) {
      case '{': return Object(out, depth + 1);
      case '[': return Array(out, depth + 1);
      case '"': {
        out = json::string_t();
        return String(out.get_ref<json::string_t&>());
      }
      case 't':
        if (!Literal("true", 4)) return false;
        out = true;
        return true;
      case 'f':
        if (!Literal("false", 5)) return false;
        out = false;
        return true;
      case 'n':
        if (!Literal("null", 4)) return false;
        out = nullptr;
        return true;
      default:
        return Number(out);
    }
  }

  // Past the opening bracket of an object or array: false if too deep; `empty` if `close` follows.
  bool Open(char close, size_t depth, bool& empty) {
    if (depth > max_depth_) return false;
    ++p_;
    SkipSpace();
    empty = p_ != end_ && *p_ == close;
    if (empty) ++p_;
    return true;
  }

  // After a member or an item: a comma (`more`) or the closing bracket; false for anything else.
  bool Next(char close, bool& more) {
    SkipSpace();
    if (p_ == end_) return false;
    more = *p_ == ',';
    if (!more && *p_ != close) return false;
    ++p_;
    if (more) SkipSpace();
    return true;
  }

  bool Object(json& out, size_t depth) {
    out = json::object();
    auto& members = out.get_ref<json::object_t&>();
    bool empty = false, more = true;
    if (!Open('}', depth, empty)) return false;
    if (empty) return true;
    std::string key;
    while (more) {
      if (p_ == end_ || *p_ != '"') return false;
      key.clear();
      if (!String(key)) return false;
      SkipSpace();
      if (p_ == end_ || *p_ != ':') return false;
      ++p_;
      SkipSpace();
      json value;
      const char* value_at = p_;
      const size_t spaces = spaces_, repeats = repeats_;
      if (!Value(value, depth)) return false;
      if (texts_ && depth == 1 && spaces_ == spaces && repeats_ == repeats) {
        texts_->members.emplace_back(key, std::string_view(value_at, static_cast<size_t>(p_ - value_at)));
      }
      // A repeated key: the last wins.
      if (!members.insert_or_assign(std::move(key), std::move(value)).second) {
        ++repeats_;
        if (depth == 1) top_repeated_ = true;
      }
      if (!Next('}', more)) return false;
    }
    return true;
  }

  bool Array(json& out, size_t depth) {
    out = json::array();
    auto& items = out.get_ref<json::array_t&>();
    bool empty = false, more = true;
    if (!Open(']', depth, empty)) return false;
    if (empty) return true;
    while (more) {
      items.emplace_back();
      if (!Value(items.back(), depth) || !Next(']', more)) return false;
    }
    return true;
  }

  static int Hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Four hex digits after "\u"; -1 if they are not.
  int Hex4() {
    if (end_ - p_ < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = Hex(p_[i]);
      if (h < 0) return -1;
      v = v * 16 + h;
    }
    p_ += 4;
    return v;
  }

  static void AppendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // Length of the well-formed UTF-8 sequence (RFC 3629) starting at a lead byte >= 0x80, or 0.
  size_t Utf8Sequence(const char* s) const {
    const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
    const size_t left = static_cast<size_t>(end_ - s);
    const unsigned char c = b(0);
    auto cont = [&](size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
      return i < left && b(i) >= lo && b(i) <= hi;
    };
    if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
    if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
    if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;  // no surrogates
    if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
    return 0;
  }

  // A string starting at its opening quote, appended to `out`.
  bool String(std::string& out) {
    ++p_;  // '"'
    for (;;) {
      // The plain run up to the next quote, escape, control character or non-ASCII byte.
      const char* run = p_;
      while (p_ != end_) {
        const auto c = static_cast<unsigned char>(*p_);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++p_;
      }
      out.append(run, static_cast<size_t>(p_ - run));
      if (p_ == end_) return false;
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20) return false;  // control characters must be escaped
      if (c >= 0x80) {
        const size_t n = Utf8Sequence(p_);
        if (n == 0) return false;
        out.append(p_, n);
        p_ += n;
        continue;
      }
      ++p_;  // '\\'
      if (p_ == end_) return false;
      switch (*p_++) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          int cp = Hex4();
          if (cp < 0) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // a low surrogate without its high one
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return false;
            p_ += 2;
            const int low = Hex4();
            if (low < 0xDC00 || low > 0xDFFF) return false;
            AppendUtf8(out, 0x10000 + ((static_cast<uint32_t>(cp) - 0xD800) << 10) + (static_cast<uint32_t>(low) - 0xDC00));
          } else {
            AppendUtf8(out, static_cast<uint32_t>(cp));
          }
          break;
        }
        default:
          return false;
      }
    }
  }

  static bool Digit(char c) { return c >= '0' && c <= '9'; }

  bool Number(json& out) {
    const char* start = p_;
    const bool negative = *p_ == '-';
    if (negative) ++p_;
    if (p_ == end_ || !Digit(*p_)) return false;
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ != end_ && Digit(*p_)) ++p_;
    }
    const char* int_end = p_;
    bool is_float = false;
    if (p_ != end_ && *p_ == '.') {
      ++p_;
      if (p_ == end_ || !Digit(*p_)) return false;
      while (p_ != end_ && Digit(*p_)) ++p_;
      is_float = true;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || !Digit(*p_)) return false;
      while (p_ != end_ && Digit(*p_)) ++p_;
      is_float = true;
    }
    if (!is_float) {
      // Accumulated as unsigned; past 64 bits (or below INT64_MIN) it is a double, as nlohmann does.
      uint64_t v = 0;
      bool overflow = false;
      for (const char* d = negative ? start + 1 : start; d != int_end; ++d) {
        const auto digit = static_cast<uint64_t>(*d - '0');
        if (v > (UINT64_MAX - digit) / 10) {
          overflow = true;
          break;
        }
        v = v * 10 + digit;
      }
      if (!overflow && !negative) {
        out = static_cast<json::number_unsigned_t>(v);
        return true;
      }
      if (!overflow && v <= static_cast<uint64_t>(INT64_MAX) + 1) {
        out = v == static_cast<uint64_t>(INT64_MAX) + 1 ? INT64_MIN : -static_cast<json::number_integer_t>(v);
        return true;
      }
    }
    double d = 0;
    const auto [ptr, ec] = std::from_chars(start, p_, d);
    if (ec == std::errc::result_out_of_range) {
      // from_chars leaves `d` alone on overflow and on underflow: strtod tells them apart (a tiny
      // number becomes 0 or a subnormal, as in nlohmann; a huge one is an error there too).
      const std::string copy(start, p_);
      d = std::strtod(copy.c_str(), nullptr);
    } else if (ec != std::errc() || ptr != p_) {
      return false;
    }
    if (!std::isfinite(d)) return false;
    out = d;
    return true;
  }

  const char* p_;
  const char* const end_;
  const size_t max_depth_;
  JsonMemberTexts* const texts_;
  size_t spaces_ = 0;   // runs of white space skipped so far
  size_t repeats_ = 0;  // repeated object keys so far
  bool top_repeated_ = false;

 public:
  bool TopLevelRepeated() const { return top_repeated_; }
};

}  // namespace

bool ParseJson(std::string_view text, nlohmann::json& out, size_t max_depth, JsonMemberTexts* texts) {
  if (texts) texts->members.clear();
  Reader reader(text, max_depth, texts);
  if (reader.Document(out)) {
    // A top-level key seen twice would leave two texts for one value: none is listed.
    if (texts && reader.TopLevelRepeated()) texts->members.clear();
    return true;
  }
  if (texts) texts->members.clear();
  out = nlohmann::json(nlohmann::json::value_t::discarded);
  return false;
}

}  // namespace herald
