// Who is calling the API (DESIGN.md: service API keys with scopes, end-user HS256 JWTs).
//
// Both arrive as `Authorization: Bearer <credential>`. A credential with two dots is a JWT; any
// other is an API key (configured keys cannot contain dots). Keys are compared as SHA-256 digests
// in constant time, against every configured key, and are never logged.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/clock.h"
#include "core/config.h"

namespace herald::api {

struct Principal {
  enum class Kind { kNone, kService, kUser };
  Kind kind = Kind::kNone;
  std::string name;  // the key's configured name, or the user id (`sub`)
  std::vector<std::string> scopes;
  std::optional<SystemTime> expires_at;  // a user token's exp

  // `admin` holds every scope.
  bool HasScope(const std::string& scope) const;
};

// Why a credential was refused: 401 with a stable code (docs/api.md).
struct AuthFailure {
  std::string code;    // missing_credentials, invalid_credentials, invalid_token, token_expired
  std::string detail;
};

class Authenticator {
 public:
  Authenticator(const ApiConfig& config, const Clock& clock);

  // `authorization`: the header's value, empty when absent. On success fills `out`.
  std::optional<AuthFailure> Authenticate(const std::string& authorization, Principal& out) const;

 private:
  struct Key {
    std::string name;
    std::array<unsigned char, 32> digest;
    std::vector<std::string> scopes;
  };
  std::vector<Key> keys_;
  std::string jwt_secret_;
  Millis leeway_;
  const Clock& clock_;
};

// HS256 JSON Web Tokens (RFC 7519) as Herald accepts them: header {"alg":"HS256"}, `sub` a
// non-empty string, `exp` required, `nbf` honoured. Exposed for tests and tools.
std::string SignJwtHs256(const nlohmann::json& claims, const std::string& secret);
// Returns the failure, or nullopt with `sub` and `exp` filled.
std::optional<AuthFailure> VerifyJwtHs256(const std::string& token, const std::string& secret, SystemTime now,
                                          Millis leeway, std::string& sub, SystemTime* exp = nullptr);

}  // namespace herald::api
