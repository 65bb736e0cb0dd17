// The in-app channel's inbox entry, made from a delivery job (no broker: PrepareWrite only).
#include "channels/in_app/in_app.h"

#include <catch2/catch.hpp>

#include "store/store.h"
#include "tests/support/test_env.h"

using namespace herald;
using nlohmann::json;

TEST_CASE("In-app: the inbox entry carries the job's data, as its own text when kept, else written out") {
  test::TempDir dir("herald-inapp");
  std::unique_ptr<Store> store;
  REQUIRE(OpenStore("sqlite://" + dir.path + "/herald.db", store).ok());
  InAppHub hub;
  InAppChannel channel(*store, hub, SystemClock::Instance());
  auto entry = [&](const std::string& body) {
    DeliveryJob job;
    REQUIRE(DeliveryJob::Parse(body, job).ok());
    StoreWrite w;
    channel.PrepareWrite(job, w);
    REQUIRE(w.inbox);
    return *w.inbox;
  };
  const std::string head = R"({"delivery_id":"d-1","notification_id":"n-1","user_id":"u-1","channel":"in_app",)"
                           R"("event":{"id":"e-1","type":"t.x"},"content":{"title":"T","body":"B"},)";
  // As the engine writes jobs: compact; the entry keeps the text byte for byte, escapes included.
  InboxEntry kept = entry(head + R"("data":{"b":"caf\u00e9","a":[1,2.5,null]}})");
  CHECK(kept.data_json == R"({"b":"caf\u00e9","a":[1,2.5,null]})");
  CHECK(kept.title == "T");
  CHECK(kept.body == "B");
  CHECK(kept.event_id == "e-1");
  CHECK(kept.event_type == "t.x");
  // White space or a repeated key: no text is kept; the parsed value is written out, the last of
  // the repeated keys winning, as before.
  CHECK(entry(head + R"("data": {"a": 1, "b": 2}})").data_json == R"({"a":1,"b":2})");
  CHECK(entry(head + R"("data":{"a":1,"a":3}})").data_json == R"({"a":3})");
  // Either way it is the same JSON value as the job's.
  CHECK(json::parse(kept.data_json) == json::parse(R"({"a":[1,2.5,null],"b":"café"})"));
  // No data: an empty object.
  CHECK(entry(head.substr(0, head.size() - 1) + "}").data_json == "{}");
}
