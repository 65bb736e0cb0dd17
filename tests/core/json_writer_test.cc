// JsonWriter writes what nlohmann's dump() writes, so text from either can be compared or spliced.
#include "core/json_writer.h"

#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>

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
