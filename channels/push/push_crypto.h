// The cryptography of the push providers, on OpenSSL 3:
// - base64url (RFC 4648 section 5; Web Push keys and JWTs use it without padding),
// - P-256 and RSA keys from PEM, and P-256 keys from raw bytes (VAPID keys, subscription keys),
// - Web Push message encryption (RFC 8291: aes128gcm content coding of RFC 8188, one record,
//   ECDH P-256 and HKDF-SHA-256),
// - JSON Web Tokens signed ES256 (VAPID, APNs; the signature is raw r||s, 64 bytes, as JWS
//   requires, not DER) and RS256 (the FCM service account's OAuth assertion).
// Nothing here throws: bad input gives an empty result or a Status naming the problem.
#pragma once

#include "core/base64.h"

#include <openssl/evp.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace herald {

struct EvpKeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using EvpKey = std::unique_ptr<EVP_PKEY, EvpKeyDeleter>;


// A private key from PEM text (PKCS#8 "PRIVATE KEY", "EC PRIVATE KEY" or "RSA PRIVATE KEY").
// Invalid saying why (never echoing the key).
Status PrivateKeyFromPem(std::string_view pem, EvpKey& out);
// A P-256 private key from its raw 32-byte scalar (the form VAPID keys are usually shared in,
// base64url-decoded); the public key is computed from it.
Status P256PrivateKeyFromRaw(std::string_view scalar, EvpKey& out);
// A P-256 public key from its uncompressed point (65 bytes, 0x04 || x || y), checked to be on
// the curve.
Status P256PublicKeyFromRaw(std::string_view point, EvpKey& out);
bool IsP256Key(const EVP_PKEY* key);
bool IsRsaKey(const EVP_PKEY* key);
// The uncompressed public point of a P-256 key (65 bytes), empty on failure.
std::string P256PublicKeyRaw(const EVP_PKEY* key);

// RFC 8291 with the aes128gcm content coding (RFC 8188): the whole request body, i.e. the header
// (salt, record size 4096, key id = the sender's public key) and one record holding
// `plaintext` || 0x02, sealed with AES-128-GCM. `ua_public` is the subscription's p256dh (65
// bytes), `auth_secret` its auth (16 bytes). The sender key and salt are fresh for every message;
// tests pass `sender` (an ephemeral P-256 private key) and `salt` (16 bytes) to reproduce RFC
// 8291's example. Invalid names the subscription field at fault ("p256dh", "auth").
Status EncryptWebPush(std::string_view plaintext, std::string_view ua_public, std::string_view auth_secret,
                      std::string& body, const EVP_PKEY* sender = nullptr, std::string_view salt = {});

// The largest plaintext EncryptWebPush fits in one record of 4096 bytes, the size every push
// service must accept (RFC 8030 7.2): 4096 - 86 (header) - 16 (tag) - 1 (delimiter).
inline constexpr size_t kWebPushMaxPlaintext = 3993;

// A compact JWS: base64url(header) "." base64url(claims) "." base64url(signature), ES256 for a
// P-256 key (raw r||s), RS256 for an RSA key; `header` gets "alg" set.
// Empty if the key does not fit or OpenSSL fails.
std::string SignJwt(nlohmann::json header, const nlohmann::json& claims, const EVP_PKEY* key);

}  // namespace herald
