#include "api/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cmath>

#include "core/base64.h"

namespace herald::api {
namespace {

std::array<unsigned char, 32> Sha256(const std::string& text) {
  std::array<unsigned char, 32> out{};
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

std::string HmacSha256(const std::string& key, const std::string& data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), mac, &len);
  return std::string(reinterpret_cast<const char*>(mac), len);
}

AuthFailure BadToken(const std::string& why) { return {"invalid_token", "the bearer token is not valid: " + why}; }

// A NumericDate claim (seconds since the epoch, possibly fractional).
std::optional<SystemTime> NumericDate(const nlohmann::json& v) {
  if (!v.is_number() || !std::isfinite(v.get<double>())) return std::nullopt;
  double secs = v.get<double>();
  if (secs < 0 || secs > 1e11) return std::nullopt;
  return SystemTime(std::chrono::duration_cast<SystemTime::duration>(std::chrono::duration<double>(secs)));
}

}  // namespace

bool Principal::HasScope(const std::string& scope) const {
  return std::find(scopes.begin(), scopes.end(), scope) != scopes.end() ||
         std::find(scopes.begin(), scopes.end(), "admin") != scopes.end();
}

Authenticator::Authenticator(const ApiConfig& config, const Clock& clock)
    : jwt_secret_(config.jwt_secret), leeway_(config.jwt_leeway), clock_(clock) {
  for (const ApiKeyConfig& k : config.keys) keys_.push_back({k.name, Sha256(k.key), k.scopes});
}

std::optional<AuthFailure> Authenticator::Authenticate(const std::string& authorization, Principal& out) const {
  out = Principal{};
  if (authorization.empty()) {
    return AuthFailure{"missing_credentials", "this route needs an Authorization: Bearer header"};
  }
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size() ||
      !std::equal(kBearer.begin(), kBearer.end(), authorization.begin(),
                  [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b)); })) {
    return AuthFailure{"invalid_credentials", "the Authorization header must be \"Bearer <key or token>\""};
  }
  std::string credential = authorization.substr(kBearer.size());
  while (!credential.empty() && credential.front() == ' ') credential.erase(credential.begin());

  if (std::count(credential.begin(), credential.end(), '.') == 2) {
    if (jwt_secret_.empty()) return AuthFailure{"invalid_token", "user tokens are not enabled on this server"};
    std::string sub;
    SystemTime exp;
    if (auto failure = VerifyJwtHs256(credential, jwt_secret_, clock_.Now(), leeway_, sub, &exp)) return failure;
    out.kind = Principal::Kind::kUser;
    out.name = std::move(sub);
    out.expires_at = exp + leeway_;
    return std::nullopt;
  }

  // Every key is compared, whatever matched, so the time taken says nothing about which did.
  const auto digest = Sha256(credential);
  const Key* found = nullptr;
  for (const Key& k : keys_) {
    if (CRYPTO_memcmp(k.digest.data(), digest.data(), digest.size()) == 0) found = &k;
  }
  if (!found) return AuthFailure{"invalid_credentials", "the API key is not valid"};
  out.kind = Principal::Kind::kService;
  out.name = found->name;
  out.scopes = found->scopes;
  return std::nullopt;
}

std::string SignJwtHs256(const nlohmann::json& claims, const std::string& secret) {
  std::string signing_input = Base64UrlEncode(R"({"alg":"HS256","typ":"JWT"})") + "." + Base64UrlEncode(claims.dump());
  return signing_input + "." + Base64UrlEncode(HmacSha256(secret, signing_input));
}

std::optional<AuthFailure> VerifyJwtHs256(const std::string& token, const std::string& secret, SystemTime now,
                                          Millis leeway, std::string& sub, SystemTime* exp_out) {
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string::npos ? std::string::npos : token.find('.', dot1 + 1);
  if (dot2 == std::string::npos || token.find('.', dot2 + 1) != std::string::npos) {
    return BadToken("a JWT has three dot-separated parts");
  }
  auto header_raw = Base64UrlDecode(std::string_view(token).substr(0, dot1));
  auto payload_raw = Base64UrlDecode(std::string_view(token).substr(dot1 + 1, dot2 - dot1 - 1));
  auto signature = Base64UrlDecode(std::string_view(token).substr(dot2 + 1));
  if (!header_raw || !payload_raw || !signature) return BadToken("a part is not base64url");
  auto header = nlohmann::json::parse(*header_raw, nullptr, false);
  if (header.is_discarded() || !header.is_object()) return BadToken("the header is not a JSON object");
  if (header.value("alg", "") != "HS256") return BadToken("only alg HS256 is accepted");
  if (header.contains("crit")) return BadToken("critical header parameters are not supported");

  // The signature is checked before anything in the payload is believed.
  std::string expected = HmacSha256(secret, token.substr(0, dot2));
  if (signature->size() != expected.size() ||
      CRYPTO_memcmp(signature->data(), expected.data(), expected.size()) != 0) {
    return BadToken("the signature does not match");
  }
  auto claims = nlohmann::json::parse(*payload_raw, nullptr, false);
  if (claims.is_discarded() || !claims.is_object()) return BadToken("the claims are not a JSON object");
  if (!claims.contains("exp")) return BadToken("the exp claim is required");
  auto exp = NumericDate(claims["exp"]);
  if (!exp) return BadToken("exp must be a number of seconds since 1970");
  if (now > *exp + leeway) return AuthFailure{"token_expired", "the bearer token has expired"};
  if (claims.contains("nbf")) {
    auto nbf = NumericDate(claims["nbf"]);
    if (!nbf) return BadToken("nbf must be a number of seconds since 1970");
    if (now + leeway < *nbf) return BadToken("the token is not valid yet (nbf)");
  }
  if (!claims.contains("sub") || !claims["sub"].is_string() || claims["sub"].get<std::string>().empty()) {
    return BadToken("the sub claim (the user id) is required");
  }
  sub = claims["sub"].get<std::string>();
  if (exp_out) *exp_out = *exp;
  return std::nullopt;
}

}  // namespace herald::api
