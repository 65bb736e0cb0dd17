#include <catch2/catch.hpp>
#include <random>

#include "engine/event.h"
#include "core/time.h"

using namespace herald;
using nlohmann::json;
using Catch::Matchers::Contains;

namespace {

EventLimits Limits() {
  EventLimits l;
  l.max_body_bytes = 1024 * 1024;
  l.max_recipients = 10000;
  l.channels = {"email", "in_app", "push", "webhook"};
  return l;
}

json Valid() {
  return json::parse(R"({"specversion":"1.0","id":"evt-1","source":"/billing","type":"billing.invoice.paid",
    "data":{"recipients":["u-1","u-2"],"vars":{"amount":"12.00 EUR"}}})");
}

const SystemTime kNow = *ParseRfc3339("2026-11-22T10:00:00Z");

std::optional<Invalid> Check(const std::string& body) {
  Event e;
  return ParseEvent(body, Limits(), kNow, e);
}

}  // namespace

TEST_CASE("Event: a minimal valid event parses with defaults") {
  Event e;
  REQUIRE_FALSE(ParseEvent(Valid().dump(), Limits(), kNow, e));
  CHECK(e.id == "evt-1");
  CHECK(e.type == "billing.invoice.paid");
  CHECK(e.time == kNow);
  CHECK(e.priority == Priority::kNormal);
  CHECK_FALSE(e.expires_at);
  CHECK(e.recipients == std::vector<std::string>{"u-1", "u-2"});
  CHECK(e.vars["amount"] == "12.00 EUR");
  CHECK(e.channels.empty());
}

TEST_CASE("Event: optional attributes, extensions and duplicate recipients") {
  json j = Valid();
  j["time"] = "2026-11-22T09:00:00+01:00";
  j["priority"] = "high";
  j["expiresat"] = "2026-11-22T11:00:00Z";
  j["traceparent"] = "00-abc-def-01";
  j["subject"] = "invoice 7";
  j["datacontenttype"] = "application/json";
  j["data"]["recipients"] = {"u-1", "u-2", "u-1"};
  j["data"]["channels"] = {"email", "push", "email"};
  Event e;
  REQUIRE_FALSE(ParseEvent(j.dump(), Limits(), kNow, e));
  CHECK(FormatRfc3339(e.time) == "2026-11-22T08:00:00.000Z");
  CHECK(e.priority == Priority::kHigh);
  CHECK(FormatRfc3339(*e.expires_at) == "2026-11-22T11:00:00.000Z");
  CHECK(e.recipients == std::vector<std::string>{"u-1", "u-2"});
  CHECK(e.channels == std::vector<std::string>{"email", "push"});
}

TEST_CASE("Event: a topic instead of recipients") {
  json j = Valid();
  j["data"].erase("recipients");
  j["data"]["topic"] = "followers-of-u-9";
  Event e;
  REQUIRE_FALSE(ParseEvent(j.dump(), Limits(), kNow, e));
  CHECK(e.topic == "followers-of-u-9");
  CHECK(e.recipients.empty());
}

TEST_CASE("Event: malformed events are refused with the field and reason") {
  struct Row {
    std::string name;
    std::function<std::string()> body;
    std::string field;
    std::string message;
  };
  auto edit = [](std::function<void(json&)> f) {
    return [f] {
      json j = Valid();
      f(j);
      return j.dump();
    };
  };
  auto raw = [](std::string s) { return [s] { return s; }; };
  std::vector<Row> rows = {
      {"empty body", raw(""), "body", "empty"},
      {"over the size limit", edit([](json& j) { j["data"]["vars"]["pad"] = std::string(1100000, 'x'); }), "body",
       "exceeds the limit of 1048576 bytes"},
      {"not UTF-8", raw("{\"id\":\"\xff\"}"), "body", "not valid UTF-8 (byte offset 7)"},
      {"not JSON", raw("{\"id\": "), "body", "not valid JSON"},
      {"trailing garbage", raw("{} {}"), "body", "not valid JSON"},
      {"a NUL after the object", raw(std::string("{}\0{}", 5)), "body", "not valid JSON: a NUL byte at offset 2"},
      {"JSON array", raw("[1,2]"), "body", "must be a JSON object, not an array"},
      {"JSON string", raw("\"event\""), "body", "must be a JSON object, not a string"},
      {"nested too deep", raw(std::string(100, '[') + std::string(100, ']')), "body", "nested deeper than 32"},
      {"no specversion", edit([](json& j) { j.erase("specversion"); }), "specversion", "required"},
      {"specversion 0.3", edit([](json& j) { j["specversion"] = "0.3"; }), "specversion", "must be \"1.0\""},
      {"specversion number", edit([](json& j) { j["specversion"] = 1.0; }), "specversion", "must be a string, not a number"},
      {"no id", edit([](json& j) { j.erase("id"); }), "id", "required"},
      {"null id", edit([](json& j) { j["id"] = nullptr; }), "id", "required"},
      {"empty id", edit([](json& j) { j["id"] = ""; }), "id", "must not be empty"},
      {"id too long", edit([](json& j) { j["id"] = std::string(129, 'a'); }), "id", "at most 128 characters"},
      {"id with newline", edit([](json& j) { j["id"] = "a\nb"; }), "id", "control characters"},
      {"id as number", edit([](json& j) { j["id"] = 7; }), "id", "must be a string, not a number"},
      {"no source", edit([](json& j) { j.erase("source"); }), "source", "required"},
      {"empty source", edit([](json& j) { j["source"] = ""; }), "source", "must not be empty"},
      {"no type", edit([](json& j) { j.erase("type"); }), "type", "required"},
      {"type with capitals", edit([](json& j) { j["type"] = "Billing.Paid"; }), "type", "must match [a-z0-9._-]{1,128}"},
      {"type with space", edit([](json& j) { j["type"] = "billing paid"; }), "type", "must match"},
      {"type too long", edit([](json& j) { j["type"] = std::string(129, 'a'); }), "type", "must match"},
      {"time not RFC 3339", edit([](json& j) { j["time"] = "22/11/2026"; }), "time", "RFC 3339"},
      {"time as number", edit([](json& j) { j["time"] = 1700000000; }), "time", "must be a string"},
      {"unknown priority", edit([](json& j) { j["priority"] = "urgent"; }), "priority",
       "must be one of critical, high, normal, low"},
      {"expiresat not a time", edit([](json& j) { j["expiresat"] = "tomorrow"; }), "expiresat", "RFC 3339"},
      {"datacontenttype xml", edit([](json& j) { j["datacontenttype"] = "application/xml"; }), "datacontenttype",
       "must be application/json"},
      {"binary data", edit([](json& j) { j["data_base64"] = "AAAA"; }), "data_base64", "not supported"},
      {"bad extension name", edit([](json& j) { j["Trace-Id"] = "x"; }), "extension", "not a CloudEvents attribute"},
      {"structured extension", edit([](json& j) { j["trace"] = {{"a", 1}}; }), "extension",
       "must be a string, number or boolean"},
      {"no data", edit([](json& j) { j.erase("data"); }), "data", "required"},
      {"data is a string", edit([](json& j) { j["data"] = "u-1"; }), "data", "must be an object, not a string"},
      {"unknown data field", edit([](json& j) { j["data"]["recipient"] = "u-1"; }), "data", "unknown field \"recipient\""},
      {"no recipients or topic", edit([](json& j) { j["data"].erase("recipients"); }), "data", "exactly one of"},
      {"recipients and topic", edit([](json& j) { j["data"]["topic"] = "t"; }), "data", "exactly one of"},
      {"recipients not an array", edit([](json& j) { j["data"]["recipients"] = "u-1"; }), "data.recipients",
       "must be an array, not a string"},
      {"no recipients", edit([](json& j) { j["data"]["recipients"] = json::array(); }), "data.recipients",
       "at least one user"},
      {"too many recipients", edit([](json& j) {
         j["data"]["recipients"] = json::array();
         for (int i = 0; i < 10001; ++i) j["data"]["recipients"].push_back("u" + std::to_string(i));
       }), "data.recipients", "at most 10000 users per event (got 10001)"},
      {"recipient not a string", edit([](json& j) { j["data"]["recipients"] = {"u-1", 2}; }), "data.recipients",
       "element 1 must be a string, not a number"},
      {"empty recipient", edit([](json& j) { j["data"]["recipients"] = {""}; }), "data.recipients", "element 0 must not be empty"},
      {"recipient with slash", edit([](json& j) { j["data"]["recipients"] = {"../admin"}; }), "data.recipients",
       "must not contain whitespace"},
      {"recipient too long", edit([](json& j) { j["data"]["recipients"] = {std::string(129, 'u')}; }),
       "data.recipients", "at most 128 bytes"},
      {"topic not a string", edit([](json& j) { j["data"].erase("recipients"); j["data"]["topic"] = 5; }), "data.topic",
       "must be a string"},
      {"vars not an object", edit([](json& j) { j["data"]["vars"] = {1, 2}; }), "data.vars",
       "must be an object, not an array"},
      {"channels not an array", edit([](json& j) { j["data"]["channels"] = "email"; }), "data.channels",
       "must be an array"},
      {"empty channels", edit([](json& j) { j["data"]["channels"] = json::array(); }), "data.channels",
       "at least one channel"},
      {"unknown channel", edit([](json& j) { j["data"]["channels"] = {"sms"}; }), "data.channels",
       "unknown channel \"sms\" (known: email, in_app, push, webhook)"},
  };
  REQUIRE(rows.size() >= 25);
  for (const Row& row : rows) {
    INFO(row.name);
    auto why = Check(row.body());
    REQUIRE(why);
    CHECK(why->field == row.field);
    CHECK_THAT(why->message, Contains(row.message));
  }
}

TEST_CASE("Event: arbitrary mutations of a valid event never crash the validator") {
  std::mt19937 rng(42);
  const std::string base = Valid().dump();
  int valid = 0, invalid = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s = base;
    int edits = 1 + rng() % 4;
    for (int k = 0; k < edits; ++k) {
      size_t pos = rng() % s.size();
      switch (rng() % 3) {
        case 0: s[pos] = static_cast<char>(rng() % 256); break;
        case 1: s.erase(pos, 1 + rng() % 8); break;
        default: s.insert(pos, 1, "{}[]\",:\\0x"[rng() % 11]);
      }
      if (s.empty()) s = "x";
    }
    Event e;
    auto why = ParseEvent(s, Limits(), kNow, e);
    (why ? invalid : valid)++;
    if (why) CHECK_FALSE(why->field.empty());
  }
  CHECK(invalid > 0);
  CHECK(valid + invalid == 20000);
}
