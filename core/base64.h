// Base64 (RFC 4648): the standard alphabet with padding, and base64url without padding (JWTs,
// Web Push keys, opaque cursors).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace herald {

std::string Base64Encode(std::string_view in);
std::string Base64UrlEncode(std::string_view in);
// Decodes base64url; padding is accepted but not required. nullopt on any other character or an
// impossible length.
std::optional<std::string> Base64UrlDecode(std::string_view in);
// The same, also accepting the standard alphabet's '+' and '/' (some Web Push subscriptions carry
// them). Not for tokens, whose encoding is exact.
std::optional<std::string> Base64DecodeLenient(std::string_view in);

}  // namespace herald
