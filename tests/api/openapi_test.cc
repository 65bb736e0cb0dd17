// docs/openapi.yaml describes the server: every route of the server is in it, and it lists no
// route the server does not have.
#include <catch2/catch.hpp>
#include <yaml-cpp/yaml.h>

#include <set>

#include "api/server.h"
#include "tests/support/test_env.h"

using namespace herald;

TEST_CASE("openapi: docs/openapi.yaml lists exactly the server's routes") {
  YAML::Node doc = YAML::LoadFile(test::SourceDir() + "/docs/openapi.yaml");
  REQUIRE(doc["openapi"].as<std::string>().rfind("3.", 0) == 0);
  std::set<std::string> documented;
  for (const auto& path : doc["paths"]) {
    for (const auto& op : path.second) {
      std::string method = op.first.as<std::string>();
      if (method == "parameters" || method == "summary" || method == "description") continue;
      std::transform(method.begin(), method.end(), method.begin(), [](unsigned char c) { return std::toupper(c); });
      documented.insert(method + " " + path.first.as<std::string>());
      // Every operation says what it answers when things go wrong.
      INFO(method << " " << path.first.as<std::string>());
      CHECK(op.second["responses"].IsMap());
    }
  }
  auto routes = api::ApiServer::RouteList();
  std::set<std::string> served(routes.begin(), routes.end());
  REQUIRE(served.size() == routes.size());
  for (const std::string& r : served) {
    INFO("served but not documented: " << r);
    CHECK(documented.count(r) == 1);
  }
  for (const std::string& r : documented) {
    INFO("documented but not served: " << r);
    CHECK(served.count(r) == 1);
  }
}
