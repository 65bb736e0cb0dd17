// JsonWriter writes what nlohmann's dump() writes, so text from either can be compared or spliced.
#include "core/json_writer.h"

#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

using namespace herald;

TEST_CASE("JsonWriter: strings are escaped byte for byte as nlohmann escapes them") {
  std::string every_control;
  for (int c = 0; c < 0x20; ++c) every_control += static_cast<char>(c);
  for (const std::string& s : {std::string(), std::string("plain"), every_control, std::string("quote \" back \\ slash /"),
                               std::string("del \x7f, caf\xc3\xa9, \xe2\x82\xac, \xf0\x9f\x98\x80"),
                               std::string("nul \0 inside", 13)}) {
    std::string out;
    AppendJsonString(out, s);
    CHECK(out == nlohmann::json(s).dump());
    CHECK(nlohmann::json::parse(out).get<std::string>() == s);
  }
}

TEST_CASE("JsonWriter: an object of strings, ints and bools in key order is nlohmann's dump of a map") {
  std::map<std::string, std::string> fields = {{"body", "line 1\nline 2\t\b\f"}, {"title", "\"T\""}, {"html", "<b>x</b>"}};
  std::string out;
  JsonWriter w(out);
  w.Open();
  for (const auto& [k, v] : fields) w.Str(k, v);
  w.Close();
  CHECK(out == nlohmann::json(fields).dump());
  out.clear();
  JsonWriter(out).Open().Bool("a", true).Int("b", -42).Str("c", "x").Close();
  CHECK(out == nlohmann::json{{"a", true}, {"b", -42}, {"c", "x"}}.dump());
}

TEST_CASE("JsonWriter: long strings with characters to escape anywhere, block edges included, match nlohmann") {
  // The scan takes 16 bytes at a time: every length around a block, each special at every place.
  const std::string specials = std::string("\"\\\n\x01\x1f\b", 6) + std::string(1, '\0');
  for (size_t len = 0; len <= 49; ++len) {
    for (size_t at = 0; at < len; ++at) {
      for (char c : specials) {
        std::string s(len, 'a');
        s[at] = c;
        std::string out;
        AppendJsonString(out, s);
        REQUIRE(out == nlohmann::json(s).dump());
      }
    }
  }
  // Random text: printable ASCII, UTF-8 sequences, the characters that need escaping.
  std::mt19937 rng(11);
  const std::vector<std::string> pieces = {"a", "Z", " ", "~", "\x7f", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                           "\"", "\\", "\n", "\r", "\t", "\b", "\f", "\x01", "\x1f", std::string(1, '\0')};
  for (int n = 0; n < 2000; ++n) {
    std::string s;
    const int parts = static_cast<int>(rng() % 80);
    for (int i = 0; i < parts; ++i) s += pieces[rng() % (i % 7 == 0 ? pieces.size() : 8)];
    std::string out;
    AppendJsonString(out, s);
    REQUIRE(out == nlohmann::json(s).dump());
  }
}
