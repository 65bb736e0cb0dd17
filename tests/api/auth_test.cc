// Credentials as the API checks them: service keys and HS256 user tokens, and base64url.
#include <catch2/catch.hpp>

#include "api/auth.h"
#include "core/base64.h"
#include "core/metrics.h"

using namespace herald;
using namespace herald::api;

namespace {

const std::string kSecret = "a-secret-of-at-least-thirty-two-bytes!";
const SystemTime kNow = SystemTime(std::chrono::seconds(1800000000));

long long Secs(SystemTime t) { return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count(); }

class FixedClock : public Clock {
 public:
  SystemTime Now() const override { return kNow; }
};

std::string Swap(std::string token, size_t part, const std::string& replacement) {
  size_t d1 = token.find('.'), d2 = token.find('.', d1 + 1);
  if (part == 0) return replacement + token.substr(d1);
  if (part == 1) return token.substr(0, d1 + 1) + replacement + token.substr(d2);
  return token.substr(0, d2 + 1) + replacement;
}

}  // namespace

TEST_CASE("base64url round-trips every length and refuses other characters") {
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    bytes += static_cast<char>(i * 37);
    auto back = Base64UrlDecode(Base64UrlEncode(bytes));
    REQUIRE(back);
    CHECK(*back == bytes);
  }
  CHECK(Base64UrlEncode("\xfb\xff") == "-_8");
  CHECK(Base64Encode("\xfb\xff") == "+/8=");
  CHECK(Base64UrlDecode("-_8=") == std::string("\xfb\xff"));
  CHECK_FALSE(Base64UrlDecode("ab+c"));
  CHECK(Base64DecodeLenient("+/8=") == std::string("\xfb\xff"));
  CHECK_FALSE(Base64DecodeLenient("ab c"));
  CHECK_FALSE(Base64UrlDecode("a"));
}

TEST_CASE("JWT HS256: a valid token names its user, every kind of bad token is refused with its reason") {
  const long long now = Secs(kNow);
  std::string sub;
  SystemTime exp;
  std::string good = SignJwtHs256({{"sub", "u-1"}, {"exp", now + 60}}, kSecret);
  REQUIRE_FALSE(VerifyJwtHs256(good, kSecret, kNow, Millis(0), sub, &exp));
  CHECK(sub == "u-1");
  CHECK(Secs(exp) == now + 60);

  struct Case {
    std::string name, token, code;
  };
  const std::string payload = Base64UrlEncode(nlohmann::json{{"sub", "u-1"}, {"exp", now + 60}}.dump());
  std::vector<Case> cases = {
      {"expired", SignJwtHs256({{"sub", "u-1"}, {"exp", now - 1}}, kSecret), "token_expired"},
      {"wrong secret", SignJwtHs256({{"sub", "u-1"}, {"exp", now + 60}}, kSecret + "x"), "invalid_token"},
      {"claims changed after signing", Swap(good, 1, Base64UrlEncode(R"({"sub":"admin","exp":9999999999})")), "invalid_token"},
      {"alg none", Swap(Swap(good, 0, Base64UrlEncode(R"({"alg":"none"})")), 2, ""), "invalid_token"},
      {"alg HS512", Swap(good, 0, Base64UrlEncode(R"({"alg":"HS512"})")), "invalid_token"},
      {"no exp", SignJwtHs256({{"sub", "u-1"}}, kSecret), "invalid_token"},
      {"exp not a number", SignJwtHs256({{"sub", "u-1"}, {"exp", "tomorrow"}}, kSecret), "invalid_token"},
      {"no sub", SignJwtHs256({{"exp", now + 60}}, kSecret), "invalid_token"},
      {"empty sub", SignJwtHs256({{"sub", ""}, {"exp", now + 60}}, kSecret), "invalid_token"},
      {"not yet valid", SignJwtHs256({{"sub", "u-1"}, {"exp", now + 60}, {"nbf", now + 30}}, kSecret), "invalid_token"},
      {"two parts", good.substr(0, good.rfind('.')), "invalid_token"},
      {"four parts", good + ".x", "invalid_token"},
      {"not base64url", Swap(good, 2, "***"), "invalid_token"},
      {"header not JSON", Swap(good, 0, Base64UrlEncode("nope")), "invalid_token"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    auto failure = VerifyJwtHs256(c.token, kSecret, kNow, Millis(0), sub);
    REQUIRE(failure);
    CHECK(failure->code == c.code);
  }
  // Leeway covers small clock skew, both ways.
  CHECK_FALSE(VerifyJwtHs256(SignJwtHs256({{"sub", "u-1"}, {"exp", now - 5}}, kSecret), kSecret, kNow, Millis(10000), sub));
  CHECK_FALSE(VerifyJwtHs256(SignJwtHs256({{"sub", "u-1"}, {"exp", now + 60}, {"nbf", now + 5}}, kSecret), kSecret,
                             kNow, Millis(10000), sub));
}

TEST_CASE("Authenticator: keys with scopes, user tokens, and clear refusals") {
  ApiConfig config;
  config.keys = {{"billing", "billing-key-0123456789", {"events:write"}}, {"ops", "ops-key-0123456789abc", {"admin"}}};
  config.jwt_secret = kSecret;
  config.jwt_leeway = Millis(0);
  FixedClock clock;
  Authenticator auth(config, clock);
  Principal p;
  REQUIRE_FALSE(auth.Authenticate("Bearer billing-key-0123456789", p));
  CHECK(p.kind == Principal::Kind::kService);
  CHECK(p.name == "billing");
  CHECK(p.HasScope("events:write"));
  CHECK_FALSE(p.HasScope("admin"));
  REQUIRE_FALSE(auth.Authenticate("bearer ops-key-0123456789abc", p));
  CHECK(p.HasScope("prefs:write"));  // admin holds every scope

  REQUIRE_FALSE(auth.Authenticate("Bearer " + SignJwtHs256({{"sub", "u-9"}, {"exp", Secs(kNow) + 60}}, kSecret), p));
  CHECK(p.kind == Principal::Kind::kUser);
  CHECK(p.name == "u-9");
  REQUIRE(p.expires_at);
  CHECK(Secs(*p.expires_at) == Secs(kNow) + 60);

  CHECK(auth.Authenticate("", p)->code == "missing_credentials");
  CHECK(auth.Authenticate("Basic dTpw", p)->code == "invalid_credentials");
  CHECK(auth.Authenticate("Bearer billing-key-012345678", p)->code == "invalid_credentials");  // one short
  CHECK(auth.Authenticate("Bearer x.y.z", p)->code == "invalid_token");

  config.jwt_secret.clear();
  Authenticator no_tokens(config, clock);
  auto refused = no_tokens.Authenticate("Bearer " + SignJwtHs256({{"sub", "u-9"}, {"exp", Secs(kNow) + 60}}, kSecret), p);
  REQUIRE(refused);
  CHECK(refused->code == "invalid_token");
}

TEST_CASE("Metrics: histograms render cumulative buckets, sum and count, gauges read at render time") {
  HistogramFamily f("t_latency_seconds", "test", {"channel"}, {0.1, 1, 10});
  Histogram& h = f.With({"email"});
  for (double v : {0.05, 0.1, 0.5, 2.0, 20.0}) h.Observe(v);
  std::string out;
  f.Render(out);
  CHECK_THAT(out, Catch::Matchers::Contains("# TYPE t_latency_seconds histogram"));
  CHECK_THAT(out, Catch::Matchers::Contains("t_latency_seconds_bucket{channel=\"email\",le=\"0.1\"} 2\n"));
  CHECK_THAT(out, Catch::Matchers::Contains("t_latency_seconds_bucket{channel=\"email\",le=\"1\"} 3\n"));
  CHECK_THAT(out, Catch::Matchers::Contains("t_latency_seconds_bucket{channel=\"email\",le=\"10\"} 4\n"));
  CHECK_THAT(out, Catch::Matchers::Contains("t_latency_seconds_bucket{channel=\"email\",le=\"+Inf\"} 5\n"));
  CHECK_THAT(out, Catch::Matchers::Contains("t_latency_seconds_sum{channel=\"email\"} 22.65\n"));
  CHECK_THAT(out, Catch::Matchers::Contains("t_latency_seconds_count{channel=\"email\"} 5\n"));
  CHECK(h.CountAtOrBelow(1) == 3);

  double value = 3;
  Metrics::Global().Gauge("t_gauge", "test", [&] { return value; });
  CHECK_THAT(Metrics::Global().Render(), Catch::Matchers::Contains("t_gauge 3\n"));
  value = 7;
  CHECK_THAT(Metrics::Global().Render(), Catch::Matchers::Contains("t_gauge 7\n"));
  Metrics::Global().RemoveGauge("t_gauge");
  CHECK_THAT(Metrics::Global().Render(), !Catch::Matchers::Contains("t_gauge"));
}
