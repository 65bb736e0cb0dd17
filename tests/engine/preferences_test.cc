#include <catch2/catch.hpp>
#include <random>

#include "core/time.h"
#include "engine/preferences.h"

using namespace herald;
using nlohmann::json;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

const std::vector<std::string> kChannels = {"email", "in_app", "push", "webhook"};

json Full() {
  return json::parse(R"({
    "user_id": "u-1", "locale": "de", "timezone": "Europe/Berlin",
    "contacts": { "email": "a@example.org",
                  "push": [ {"kind": "webpush", "endpoint": "https://fcm.googleapis.com/fcm/send/dQw4w9WgXcQ",
                             "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
                             "auth": "tBHItJI5svbpez7KI4CCXg"},
                            {"kind": "fcm", "token": "fcm:APA91bH-token"}, {"kind": "apns", "token": "a1b2c3d4"} ],
                  "webhook": "https://hooks.example.org/u-1" },
    "channels":   { "email": true, "push": true, "in_app": true, "webhook": false },
    "categories": { "social": { "email": false }, "billing.v2": { "push": false, "email": true } },
    "quiet_hours": { "start": "22:00", "end": "07:00" },
    "mute_until": "2026-11-23T08:30:00.250+01:00"
  })");
}

Status Parse(const json& doc, Preferences& p) { return ParsePreferences(doc, "u-1", kChannels, p); }

}  // namespace

TEST_CASE("Preferences: a full document parses and round-trips through PreferencesToJson", "[preferences]") {
  Preferences p;
  Status s = Parse(Full(), p);
  REQUIRE(s.ok());
  CHECK(p.user_id == "u-1");
  CHECK(p.locale == "de");
  CHECK(p.timezone == "Europe/Berlin");
  CHECK(p.contacts.email == "a@example.org");
  REQUIRE(p.contacts.push.size() == 3);
  CHECK(p.contacts.push[0].kind == "webpush");
  CHECK(p.contacts.push[0].endpoint == "https://fcm.googleapis.com/fcm/send/dQw4w9WgXcQ");
  CHECK(p.contacts.push[0].auth == "tBHItJI5svbpez7KI4CCXg");
  CHECK(p.contacts.push[1].kind == "fcm");
  CHECK(p.contacts.push[1].token == "fcm:APA91bH-token");
  CHECK(p.contacts.push[2].kind == "apns");
  CHECK(p.contacts.webhook == "https://hooks.example.org/u-1");
  CHECK(p.channels == std::map<std::string, bool>{{"email", true}, {"push", true}, {"in_app", true}, {"webhook", false}});
  CHECK(p.categories.at("social") == std::map<std::string, bool>{{"email", false}});
  CHECK(p.categories.at("billing.v2") == std::map<std::string, bool>{{"push", false}, {"email", true}});
  REQUIRE(p.quiet_hours);
  CHECK(p.quiet_hours->start_minute == 22 * 60);
  CHECK(p.quiet_hours->end_minute == 7 * 60);
  REQUIRE(p.mute_until);
  CHECK(FormatRfc3339(*p.mute_until) == "2026-11-23T07:30:00.250Z");

  json out = PreferencesToJson(p);
  json expected = Full();
  expected["mute_until"] = "2026-11-23T07:30:00.250Z";  // normalized to UTC
  CHECK(out == expected);

  Preferences again;
  REQUIRE(Parse(out, again).ok());
  CHECK(again == p);
  // And through text, as the store keeps it.
  Preferences from_text;
  REQUIRE(Parse(json::parse(out.dump()), from_text).ok());
  CHECK(from_text == p);
}

TEST_CASE("Preferences: defaults, and the minimal document", "[preferences]") {
  Preferences d = DefaultPreferences("u-7");
  CHECK(d.user_id == "u-7");
  CHECK(d.locale == "en");
  CHECK(d.timezone == "UTC");
  CHECK(d.contacts == Contacts{});
  CHECK(d.channels.empty());
  CHECK(d.categories.empty());
  CHECK_FALSE(d.quiet_hours);
  CHECK_FALSE(d.mute_until);
  for (const std::string& ch : kChannels) CHECK(d.ChannelEnabled(ch, "anything"));

  // {} means the defaults; user_id may be left out.
  Preferences p;
  REQUIRE(ParsePreferences(json::object(), "u-7", kChannels, p).ok());
  CHECK(p == d);

  json dj = PreferencesToJson(d);
  CHECK(dj == json::parse(R"({"user_id":"u-7","locale":"en","timezone":"UTC","contacts":{"push":[]},
                              "channels":{},"categories":{},"quiet_hours":null,"mute_until":null})"));
  Preferences back;
  REQUIRE(ParsePreferences(dj, "u-7", kChannels, back).ok());
  CHECK(back == d);
}

TEST_CASE("Preferences: accepted variants", "[preferences]") {
  Preferences p;
  SECTION("empty and null e-mail and webhook mean none") {
    json j = Full();
    j["contacts"]["email"] = "";
    j["contacts"]["webhook"] = nullptr;
    REQUIRE(Parse(j, p).ok());
    CHECK(p.contacts.email.empty());
    CHECK(p.contacts.webhook.empty());
    CHECK_FALSE(PreferencesToJson(p)["contacts"].contains("email"));
    CHECK_FALSE(PreferencesToJson(p)["contacts"].contains("webhook"));
  }
  SECTION("null quiet hours and mute") {
    json j = Full();
    j["quiet_hours"] = nullptr;
    j["mute_until"] = nullptr;
    REQUIRE(Parse(j, p).ok());
    CHECK_FALSE(p.quiet_hours);
    CHECK_FALSE(p.mute_until);
  }
  SECTION("http webhook, locale with region, quiet hours not crossing midnight") {
    json j = Full();
    j["contacts"]["webhook"] = "http://10.0.0.1:8080/hook";
    j["locale"] = "pt-BR";
    j["quiet_hours"] = {{"start", "00:00"}, {"end", "23:59"}};
    REQUIRE(Parse(j, p).ok());
    CHECK(p.quiet_hours->start_minute == 0);
    CHECK(p.quiet_hours->end_minute == 1439);
    CHECK(PreferencesToJson(p)["quiet_hours"] == json({{"start", "00:00"}, {"end", "23:59"}}));
  }
  SECTION("mute_until is kept at millisecond precision") {
    json j = Full();
    j["mute_until"] = "2026-11-23T07:30:00.123456789Z";
    REQUIRE(Parse(j, p).ok());
    CHECK(*p.mute_until == *ParseRfc3339("2026-11-23T07:30:00.123Z"));
    Preferences back;
    REQUIRE(Parse(PreferencesToJson(p), back).ok());
    CHECK(back == p);
  }
  SECTION("an empty category stays an object") {
    json j = Full();
    j["categories"]["quiet"] = json::object();
    REQUIRE(Parse(j, p).ok());
    CHECK(PreferencesToJson(p)["categories"]["quiet"] == json::object());
  }
}

TEST_CASE("Preferences: invalid documents name the field and the problem", "[preferences]") {
  struct Row {
    std::string name;
    std::function<json()> doc;
    std::string field;
    std::string message;
  };
  auto edit = [](std::function<void(json&)> f) {
    return [f] {
      json j = Full();
      f(j);
      return j;
    };
  };
  auto raw = [](json j) { return [j] { return j; }; };
  std::vector<Row> rows = {
      {"array", raw(json::array({1})), "preferences", "must be a JSON object, not an array"},
      {"string", raw("prefs"), "preferences", "must be a JSON object, not a string"},
      {"null", raw(nullptr), "preferences", "must be a JSON object, not null"},
      {"number", raw(42), "preferences", "must be a JSON object, not a number"},
      {"unknown top-level field", edit([](json& j) { j["colour"] = "blue"; }), "colour", "unknown field"},
      {"other user", edit([](json& j) { j["user_id"] = "u-2"; }), "user_id", "must match"},
      {"user_id as number", edit([](json& j) { j["user_id"] = 1; }), "user_id", "must be a string, not a number"},
      {"locale too short", edit([](json& j) { j["locale"] = "d"; }), "locale", "2 to 35 characters"},
      {"locale with space", edit([](json& j) { j["locale"] = "de DE"; }), "locale", "[A-Za-z0-9_-]"},
      {"locale too long", edit([](json& j) { j["locale"] = std::string(36, 'a'); }), "locale", "2 to 35"},
      {"locale null", edit([](json& j) { j["locale"] = nullptr; }), "locale", "must be a string, not null"},
      {"unknown time zone", edit([](json& j) { j["timezone"] = "Mars/Olympus_Mons"; }), "timezone",
       "unknown time zone \"Mars/Olympus_Mons\""},
      {"empty time zone", edit([](json& j) { j["timezone"] = ""; }), "timezone", "unknown time zone \"\""},
      {"time zone path", edit([](json& j) { j["timezone"] = "../../etc/passwd"; }), "timezone", "unknown time zone"},
      {"time zone as number", edit([](json& j) { j["timezone"] = 1; }), "timezone", "must be a string"},
      {"contacts array", edit([](json& j) { j["contacts"] = json::array(); }), "contacts",
       "must be an object, not an array"},
      {"unknown contact", edit([](json& j) { j["contacts"]["sms"] = "+49"; }), "contacts.sms", "unknown field"},
      {"email without @", edit([](json& j) { j["contacts"]["email"] = "a.example.org"; }), "contacts.email",
       "exactly one '@'"},
      {"email with two @", edit([](json& j) { j["contacts"]["email"] = "a@b@example.org"; }), "contacts.email",
       "exactly one '@'"},
      {"email with space", edit([](json& j) { j["contacts"]["email"] = "a b@example.org"; }), "contacts.email",
       "whitespace"},
      {"email with newline", edit([](json& j) { j["contacts"]["email"] = "a@example.org\nBcc: x@y"; }),
       "contacts.email", "control characters"},
      {"email too long", edit([](json& j) { j["contacts"]["email"] = std::string(250, 'a') + "@b.org"; }),
       "contacts.email", "at most 254 bytes"},
      {"email as number", edit([](json& j) { j["contacts"]["email"] = 5; }), "contacts.email", "must be a string"},
      {"push not an array", edit([](json& j) { j["contacts"]["push"] = json::object(); }), "contacts.push",
       "must be an array, not an object"},
      {"push entry a string", edit([](json& j) { j["contacts"]["push"][1] = "token"; }), "contacts.push[1]",
       "must be an object, not a string"},
      {"push without kind", edit([](json& j) { j["contacts"]["push"][0].erase("kind"); }), "contacts.push[0].kind",
       "required"},
      {"push unknown kind", edit([](json& j) { j["contacts"]["push"][2]["kind"] = "sms"; }), "contacts.push[2].kind",
       "must be one of webpush, fcm, apns"},
      {"webpush without endpoint", edit([](json& j) {
         j["contacts"]["push"][1] = {{"kind", "webpush"}, {"p256dh", "AAAA"}, {"auth", "BBBB"}};
       }), "contacts.push[1].endpoint", "required"},
      {"webpush http endpoint", edit([](json& j) { j["contacts"]["push"][0]["endpoint"] = "http://push.example/x"; }),
       "contacts.push[0].endpoint", "must be an https:// URL"},
      {"webpush endpoint number", edit([](json& j) { j["contacts"]["push"][0]["endpoint"] = 7; }),
       "contacts.push[0].endpoint", "must be a string, not a number"},
      {"webpush empty auth", edit([](json& j) { j["contacts"]["push"][0]["auth"] = ""; }), "contacts.push[0].auth",
       "must not be empty"},
      {"webpush p256dh not base64url", edit([](json& j) { j["contacts"]["push"][0]["p256dh"] = "ab+/cd"; }),
       "contacts.push[0].p256dh", "base64url"},
      {"webpush unknown field", edit([](json& j) { j["contacts"]["push"][0]["ttl"] = 60; }), "contacts.push[0].ttl",
       "unknown field"},
      {"fcm without token", edit([](json& j) { j["contacts"]["push"][1].erase("token"); }), "contacts.push[1].token",
       "required"},
      {"apns empty token", edit([](json& j) { j["contacts"]["push"][2]["token"] = ""; }), "contacts.push[2].token",
       "must not be empty"},
      {"fcm token too long", edit([](json& j) { j["contacts"]["push"][1]["token"] = std::string(4097, 't'); }),
       "contacts.push[1].token", "at most 4096 bytes"},
      {"fcm with endpoint", edit([](json& j) { j["contacts"]["push"][1]["endpoint"] = "https://x"; }),
       "contacts.push[1].endpoint", "unknown field"},
      {"webhook ftp", edit([](json& j) { j["contacts"]["webhook"] = "ftp://hooks.example.org"; }), "contacts.webhook",
       "must be an http:// or https:// URL"},
      {"webhook without host", edit([](json& j) { j["contacts"]["webhook"] = "https://"; }), "contacts.webhook",
       "must be an http:// or https:// URL"},
      {"webhook too long", edit([](json& j) { j["contacts"]["webhook"] = "https://h/" + std::string(2048, 'p'); }),
       "contacts.webhook", "at most 2048 bytes"},
      {"channels array", edit([](json& j) { j["channels"] = {"email"}; }), "channels",
       "must be an object, not an array"},
      {"unknown channel", edit([](json& j) { j["channels"]["sms"] = true; }), "channels.sms",
       "unknown channel (known: email, in_app, push, webhook)"},
      {"channel as string", edit([](json& j) { j["channels"]["email"] = "yes"; }), "channels.email",
       "must be true or false"},
      {"channel as number", edit([](json& j) { j["channels"]["push"] = 1; }), "channels.push",
       "must be true or false"},
      {"categories array", edit([](json& j) { j["categories"] = json::array(); }), "categories",
       "must be an object"},
      {"category bad name", edit([](json& j) { j["categories"]["Social Stuff"] = json::object(); }),
       "categories.Social Stuff", "[a-z0-9._-]{1,64}"},
      {"category name too long", edit([](json& j) { j["categories"][std::string(65, 'c')] = json::object(); }),
       "categories.", "[a-z0-9._-]{1,64}"},
      {"category not an object", edit([](json& j) { j["categories"]["social"] = false; }), "categories.social",
       "must be an object, not a boolean"},
      {"category unknown channel", edit([](json& j) { j["categories"]["social"]["pigeon"] = false; }),
       "categories.social.pigeon", "unknown channel"},
      {"category channel null", edit([](json& j) { j["categories"]["social"]["email"] = nullptr; }),
       "categories.social.email", "must be true or false, not null"},
      {"quiet hours string", edit([](json& j) { j["quiet_hours"] = "22:00-07:00"; }), "quiet_hours",
       "must be an object or null"},
      {"quiet hours without end", edit([](json& j) { j["quiet_hours"].erase("end"); }), "quiet_hours.end", "required"},
      {"quiet hours 24:00", edit([](json& j) { j["quiet_hours"]["end"] = "24:00"; }), "quiet_hours.end",
       "\"HH:MM\" from 00:00 to 23:59"},
      {"quiet hours 7:00", edit([](json& j) { j["quiet_hours"]["end"] = "7:00"; }), "quiet_hours.end", "\"HH:MM\""},
      {"quiet hours minute 60", edit([](json& j) { j["quiet_hours"]["start"] = "22:60"; }), "quiet_hours.start",
       "\"HH:MM\""},
      {"quiet hours number", edit([](json& j) { j["quiet_hours"]["start"] = 1320; }), "quiet_hours.start",
       "must be a string"},
      {"quiet hours empty window", edit([](json& j) { j["quiet_hours"] = {{"start", "08:00"}, {"end", "08:00"}}; }),
       "quiet_hours", "empty window"},
      {"quiet hours extra field", edit([](json& j) { j["quiet_hours"]["days"] = "mon-fri"; }), "quiet_hours.days",
       "unknown field"},
      {"mute_until not a time", edit([](json& j) { j["mute_until"] = "tomorrow"; }), "mute_until", "RFC 3339"},
      {"mute_until without offset", edit([](json& j) { j["mute_until"] = "2026-11-23T07:30:00"; }), "mute_until",
       "RFC 3339"},
      {"mute_until as number", edit([](json& j) { j["mute_until"] = 1700000000; }), "mute_until",
       "must be an RFC 3339 timestamp string or null, not a number"},
  };
  REQUIRE(rows.size() >= 20);
  for (const Row& row : rows) {
    INFO(row.name);
    Preferences p = DefaultPreferences("untouched");
    Status s = Parse(row.doc(), p);
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == Status::Code::kInvalid);
    CHECK_THAT(s.message(), StartsWith(row.field));
    if (row.field.back() != '.') CHECK_THAT(s.message(), StartsWith(row.field + ": "));
    CHECK_THAT(s.message(), Contains(row.message));
    CHECK(p.user_id == "untouched");  // nothing is written on failure
  }
}

TEST_CASE("Preferences: the user id given must be a usable one", "[preferences]") {
  Preferences p;
  CHECK_THAT(ParsePreferences(json::object(), "", kChannels, p).message(), Contains("user_id: must not be empty"));
  CHECK_THAT(ParsePreferences(json::object(), "a/b", kChannels, p).message(), StartsWith("user_id: "));
}

TEST_CASE("Preferences: ChannelEnabled takes the category, then the global switch, then on", "[preferences]") {
  Preferences p = DefaultPreferences("u-1");
  p.channels = {{"email", true}, {"push", false}};
  p.categories = {{"social", {{"email", false}, {"push", true}}}, {"billing", {{"webhook", false}}}};
  // Category setting wins in both directions.
  CHECK_FALSE(p.ChannelEnabled("email", "social"));
  CHECK(p.ChannelEnabled("push", "social"));
  // Not set in the category: the global switch.
  CHECK(p.ChannelEnabled("email", "billing"));
  CHECK_FALSE(p.ChannelEnabled("push", "billing"));
  CHECK_FALSE(p.ChannelEnabled("webhook", "billing"));
  // Unknown category: the global switch, else on.
  CHECK_FALSE(p.ChannelEnabled("push", "other"));
  CHECK(p.ChannelEnabled("email", "other"));
  CHECK(p.ChannelEnabled("in_app", "other"));
  CHECK(p.ChannelEnabled("webhook", "social"));
  CHECK(p.ChannelEnabled("in_app", ""));
}

TEST_CASE("Preferences: MergePatch passes every example of RFC 7396 appendix A", "[preferences]") {
  struct Vector {
    const char* target;
    const char* patch;
    const char* result;
  };
  const Vector vectors[] = {
      {R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})"},
      {R"({"a":"b"})", R"({"a":null})", R"({})"},
      {R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})"},
      {R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})"},
      {R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})"},
      {R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})"},
      {R"(["a","b"])", R"(["c","d"])", R"(["c","d"])"},
      {R"({"a":"b"})", R"(["c"])", R"(["c"])"},
      {R"({"a":"foo"})", R"(null)", R"(null)"},
      {R"({"a":"foo"})", R"("bar")", R"("bar")"},
      {R"({"e":null})", R"({"a":1})", R"({"e":null,"a":1})"},
      {R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})"},
      {R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})"},
  };
  for (const Vector& v : vectors) {
    INFO(v.target << " + " << v.patch);
    CHECK(MergePatch(json::parse(v.target), json::parse(v.patch)) == json::parse(v.result));
  }
  // The example of section 3.
  json target = json::parse(R"({"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},
                                "tags":["example","sample"],"content":"This will be unchanged"})");
  json patch = json::parse(R"({"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},
                               "tags":["example"]})");
  CHECK(MergePatch(target, patch) == json::parse(R"({"title":"Hello!","author":{"givenName":"John"},
      "tags":["example"],"content":"This will be unchanged","phoneNumber":"+01-123-456-7890"})"));
}

TEST_CASE("Preferences: a PATCH is a merge patch of the stored document, then a parse", "[preferences]") {
  Preferences p;
  REQUIRE(Parse(Full(), p).ok());
  json patched = MergePatch(PreferencesToJson(p), json::parse(R"({"quiet_hours":null,"channels":{"webhook":true},
                                                                   "contacts":{"webhook":null}})"));
  Preferences q;
  REQUIRE(Parse(patched, q).ok());
  CHECK_FALSE(q.quiet_hours);
  CHECK(q.channels.at("webhook"));
  CHECK(q.channels.at("email"));
  CHECK(q.contacts.webhook.empty());
  CHECK(q.contacts.email == p.contacts.email);
}

TEST_CASE("Preferences: arbitrary JSON in any field never makes the parser throw", "[preferences]") {
  std::mt19937 rng(7);
  const json samples[] = {nullptr, true, 0, -1.5, "", "x", "22:00", "https://a", json::array(), json::object(),
                          json::array({1, "a"}), json::object({{"kind", "fcm"}}), json::object({{"email", true}})};
  const std::vector<json::json_pointer> paths = {
      json::json_pointer(""),
      json::json_pointer("/user_id"),
      json::json_pointer("/locale"),
      json::json_pointer("/timezone"),
      json::json_pointer("/contacts"),
      json::json_pointer("/contacts/email"),
      json::json_pointer("/contacts/push"),
      json::json_pointer("/contacts/push/0"),
      json::json_pointer("/contacts/push/0/kind"),
      json::json_pointer("/contacts/push/0/endpoint"),
      json::json_pointer("/contacts/push/1/token"),
      json::json_pointer("/contacts/webhook"),
      json::json_pointer("/channels"),
      json::json_pointer("/channels/email"),
      json::json_pointer("/categories"),
      json::json_pointer("/categories/social"),
      json::json_pointer("/categories/social/email"),
      json::json_pointer("/quiet_hours"),
      json::json_pointer("/quiet_hours/start"),
      json::json_pointer("/mute_until"),
  };
  int ok = 0, invalid = 0;
  for (int i = 0; i < 5000; ++i) {
    json j = Full();
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < edits; ++k) {
      const json::json_pointer& ptr = paths[rng() % paths.size()];
      const json& value = samples[rng() % std::size(samples)];
      if (ptr.empty()) {
        j = value;
      } else if (j.is_object() && j.contains(ptr.parent_pointer())) {
        json& parent = j[ptr.parent_pointer()];
        const std::string& last = ptr.back();
        if (parent.is_object()) {
          parent[last] = value;
        } else if (parent.is_array() && (last == "0" || last == "1") && std::stoul(last) < parent.size()) {
          parent[std::stoul(last)] = value;
        }
      }
    }
    Preferences p;
    Status s = Status::Ok();
    REQUIRE_NOTHROW(s = Parse(j, p));
    if (s.ok()) {
      ++ok;
      Preferences back;
      REQUIRE(Parse(PreferencesToJson(p), back).ok());
      CHECK(back == p);
    } else {
      ++invalid;
      CHECK_FALSE(s.message().empty());
    }
  }
  CHECK(ok > 0);
  CHECK(invalid > 0);
}
