#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/json_parse.h"

using namespace herald;
using nlohmann::json;

namespace {

// Same document, down to the kind of number (unsigned, integer, float) and the bits of a float.
bool Same(const json& a, const json& b) {
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case json::value_t::object: {
      if (a.size() != b.size()) return false;
      for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib) {
        if (ia.key() != ib.key() || !Same(*ia, *ib)) return false;
      }
      return true;
    }
    case json::value_t::array: {
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i) {
        if (!Same(a[i], b[i])) return false;
      }
      return true;
    }
    case json::value_t::number_float: {
      const double x = a.get<double>(), y = b.get<double>();
      return std::memcmp(&x, &y, sizeof x) == 0;
    }
    default:
      return a == b;
  }
}

// ParseJson and nlohmann agree on `text`: both refuse it, or both read the same document.
void Agree(const std::string& text) {
  INFO("text: " << json(text).dump(-1, ' ', true, json::error_handler_t::replace));
  json ours;
  const bool ok = ParseJson(text, ours);
  const json theirs = json::parse(text, nullptr, false);
  if (text.find('\0') != std::string::npos) {
    // nlohmann stops reading at a NUL outside a string; a NUL is never valid JSON text.
    CHECK_FALSE(ok);
    return;
  }
  REQUIRE(ok == !theirs.is_discarded());
  if (ok) {
    CHECK(Same(ours, theirs));
  } else {
    CHECK(ours.is_discarded());
  }
}

// White space between tokens (not inside a string).
bool SpacedOutsideStrings(std::string_view text) {
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      return true;
    }
  }
  return false;
}

const std::vector<std::string>& Seeds() {
  static const std::vector<std::string> seeds = {
      R"({"v":1,"delivery_id":"d-19ab2f3c4d17ed5969d728d4298cbba9","notification_id":"n-19ab2f3c4d125435176961123f0abe74",)"
      R"("event":{"id":"evt-1","type":"social.post.liked","source":"/bench","time":"2026-11-22T10:00:00.000Z",)"
      R"("priority":"normal","category":"social","critical":false},"user_id":"u-1","locale":"en","channel":"webhook",)"
      R"("contact":{"url":"http://127.0.0.1:1/h"},"content":{},"data":{"actor":"a","n":[1,-2,3.5e2,null,true]},)"
      R"("attempt":1,"created_at":"2026-11-22T10:00:00.120Z","fallback":[]})",
      R"({"specversion":"1.0","id":"e","source":"/s","type":"t","data":{"recipients":["u-1","u-2"],"vars":{"x":"gr\u00fc\u00df \ud83d\udd14"}}})",
      R"([0,-0,1,-1,18446744073709551615,18446744073709551616,-9223372036854775808,-9223372036854775809,1.5,-1.5e-3,1E400,2e-400])",
      "\"esc: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0000 \\u001f \\u20ac\"",
      " \t\r\n{ \"a\" : [ ] , \"b\" : { } , \"a\" : \"dup\" } \n",
      "\xEF\xBB\xBF{\"bom\":true}",
      "\"gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x94\x94\"",
  };
  return seeds;
}

}  // namespace

TEST_CASE("ParseJson: reads what nlohmann reads, into the same document") {
  for (const std::string& s : Seeds()) Agree(s);
  for (const char* s : {"0", "-0", "123", "true", "false", "null", "\"\"", "[]", "{}", "[[[]]]", "1.0", "1e5", "1E+5",
                        "-1e-5", "0.5", "9223372036854775807", "9223372036854775808", "-9223372036854775807",
                        "123456789012345678901234567890", "{\"k\":{\"k\":{\"k\":[1,{\"z\":null}]}}}",
                        "\"\\ud800\\udc00\"", "\"\\uDBFF\\uDFFF\"", "\"\\u00e9\\u00E9\"", "4.9e-324", "1.7976931348623157e308"}) {
    Agree(s);
  }
  json doc;
  REQUIRE(ParseJson(R"({"a":1,"a":2})", doc));
  CHECK(doc["a"] == 2);  // the last of duplicate keys
  REQUIRE(ParseJson("[1,-1,1.5]", doc));
  CHECK(doc[0].is_number_unsigned());
  CHECK(doc[1].is_number_integer());
  CHECK(doc[2].is_number_float());
}

TEST_CASE("ParseJson: refuses what nlohmann refuses") {
  for (const char* s :
       {"", " ", "{", "}", "[", "]", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "[1 2]", "01", "-", "+1", ".5", "1.",
        "1e", "1e+", "-01", "0x10", "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "tru", "nul", "True", "[1]x",
        "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\u12g4\"", "\"\\ud800\"", "\"\\ud800x\"", "\"\\ud800\\u0041\"",
        "\"\\udc00\"", "\"tab\there\"", "\"nl\nhere\"", "// c\n1", "/* c */ 1", "[1]//", "'single'", "\xEF\xBB", "\xEF\xBB{}",
        "{\"a\":1}{", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xe2\x82\"", "\"\xff\"", "\"\x80\"",
        "[\xc3\xa9]"}) {
    Agree(s);
  }
  Agree(std::string("\"a\0b\"", 5));  // a raw NUL in a string
  Agree(std::string("[1]\0", 4));     // and after the document (which nlohmann ignores)
  Agree(std::string("[1]\0xyz", 7));
}

TEST_CASE("ParseJson: agrees with nlohmann on thousands of damaged documents") {
  // Deterministic: the same damage on every run. Each case starts from a seed and changes 1-4
  // bytes: flipped bits, bytes that matter to JSON inserted, runs deleted or repeated.
  std::mt19937 rng(20261123);
  const std::string specials = "{}[]\",:\\u0123456789eE+-.tfn \t\r\n\x80\xbf\xc3\xed\xf0\xf4\xff";
  int refused = 0, read = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s = Seeds()[rng() % Seeds().size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const size_t at = rng() % s.size();
      switch (rng() % 4) {
        case 0: s[at] = static_cast<char>(s[at] ^ (1 << (rng() % 8))); break;
        case 1: s.insert(at, 1, specials[rng() % specials.size()]); break;
        case 2: s.erase(at, 1 + rng() % 3); break;
        default: s.insert(at, s.substr(at, 1 + rng() % 6)); break;
      }
    }
    json ours;
    JsonMemberTexts texts;
    const bool ok = ParseJson(s, ours, kJsonMaxDepth, &texts);
    const json theirs = json::parse(s, nullptr, false);
    // Every member text listed is the text of that member's value.
    for (const auto& [key, text] : texts.members) {
      json member;
      if (!ParseJson(text, member) || !ours.contains(key) || !Same(member, ours[key]) || SpacedOutsideStrings(text)) {
        FAIL("member text of " << key << " is not its compact value: " << text);
      }
    }
    const bool nul = s.find('\0') != std::string::npos;
    if (nul ? ok : (ok != !theirs.is_discarded() || (ok && !Same(ours, theirs)))) {
      Agree(s);  // reports the case
      FAIL("disagreement");
    }
    (ok ? read : refused)++;
  }
  // The damage must produce both outcomes, or the comparison tested little.
  CHECK(read > 1000);
  CHECK(refused > 1000);
}

TEST_CASE("ParseJson: nesting deeper than the limit is refused, without exhausting the stack") {
  auto nested = [](size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  json doc;
  CHECK(ParseJson(nested(kJsonMaxDepth), doc));
  CHECK_FALSE(ParseJson(nested(kJsonMaxDepth + 1), doc));
  CHECK(doc.is_discarded());
  CHECK_FALSE(ParseJson(std::string(1000000, '['), doc));
  CHECK_FALSE(ParseJson(std::string(100000, '{'), doc));
  CHECK(ParseJson("{\"a\":{\"b\":[1]}}", doc, 3));
  CHECK_FALSE(ParseJson("{\"a\":{\"b\":[1]}}", doc, 2));
}

TEST_CASE("ParseJson: the texts of a top-level object's members, when compact and unambiguous") {
  json doc;
  JsonMemberTexts texts;
  const std::string text = R"({"a":{"x":1,"y":[true,null]},"b":[1, 2],"c":"s p","d":{"k":1,"k":2},"e":-1.5e3})";
  REQUIRE(ParseJson(text, doc, kJsonMaxDepth, &texts));
  CHECK(texts.Find("a") == R"({"x":1,"y":[true,null]})");
  CHECK(texts.Find("b").empty());  // white space in it
  CHECK(texts.Find("c") == R"("s p")");  // (inside a string is not white space between tokens)
  CHECK(texts.Find("d").empty());  // a repeated key in it
  CHECK(texts.Find("e") == "-1.5e3");
  CHECK(texts.Find("missing").empty());
  // White space between the top-level members does not matter.
  REQUIRE(ParseJson(" { \"a\" : {\"x\":1} , \"b\":2 } ", doc, kJsonMaxDepth, &texts));
  CHECK(texts.Find("a") == R"({"x":1})");
  CHECK(texts.Find("b") == "2");
  // A repeated top-level key: nothing is listed.
  REQUIRE(ParseJson(R"({"a":{"x":1},"a":{"x":2}})", doc, kJsonMaxDepth, &texts));
  CHECK(texts.members.empty());
  REQUIRE(ParseJson(R"([{"a":1}])", doc, kJsonMaxDepth, &texts));
  CHECK(texts.members.empty());
  CHECK_FALSE(ParseJson(R"({"a":{"x":1},)", doc, kJsonMaxDepth, &texts));
  CHECK(texts.members.empty());
}
