#include "channels/push/push_crypto.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <cstring>

namespace herald {
namespace {

constexpr uint32_t kRecordSize = 4096;

template <typename T, void (*Free)(T*)>
struct Freer {
  void operator()(T* p) const { Free(p); }
};
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, Freer<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, Freer<EVP_MD_CTX, EVP_MD_CTX_free>>;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, Freer<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;
using Bio = std::unique_ptr<BIO, Freer<BIO, BIO_free_all>>;
using Bn = std::unique_ptr<BIGNUM, Freer<BIGNUM, BN_clear_free>>;
using EcGroup = std::unique_ptr<EC_GROUP, Freer<EC_GROUP, EC_GROUP_free>>;
using EcPoint = std::unique_ptr<EC_POINT, Freer<EC_POINT, EC_POINT_free>>;
using ParamBld = std::unique_ptr<OSSL_PARAM_BLD, Freer<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>>;
using Params = std::unique_ptr<OSSL_PARAM, Freer<OSSL_PARAM, OSSL_PARAM_free>>;
using EcdsaSig = std::unique_ptr<ECDSA_SIG, Freer<ECDSA_SIG, ECDSA_SIG_free>>;

const unsigned char* Bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

// A P-256 key from OSSL_PARAMs: the public point, and the private scalar when given.
Status P256FromData(std::string_view point, const BIGNUM* priv, EvpKey& out) {
  ParamBld bld(OSSL_PARAM_BLD_new());
  if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, SN_X9_62_prime256v1, 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) ||
      (priv && !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, priv))) {
    return Status::Internal("OpenSSL: cannot build key parameters");
  }
  Params params(OSSL_PARAM_BLD_to_param(bld.get()));
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* key = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
      EVP_PKEY_fromdata(ctx.get(), &key, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params.get()) <= 0) {
    return Status::Invalid("not a P-256 point");
  }
  EvpKey k(key);
  PkeyCtx check(EVP_PKEY_CTX_new_from_pkey(nullptr, k.get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) <= 0) return Status::Invalid("not a point on P-256");
  out = std::move(k);
  return Status::Ok();
}

// HMAC-SHA-256; empty on failure.
std::string HmacSha256(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), Bytes(data), data.size(), mac, &len)) return "";
  return std::string(reinterpret_cast<char*>(mac), len);
}

// HKDF-Expand (RFC 5869) for at most one block (32 bytes), which is all RFC 8291 needs.
std::string HkdfExpand(std::string_view prk, std::string info, size_t length) {
  info.push_back('\x01');
  std::string t = HmacSha256(prk, info);
  return t.size() < length ? "" : t.substr(0, length);
}

// ECDH shared secret of our private key and their public key.
std::string Ecdh(const EVP_PKEY* ours, const EVP_PKEY* theirs) {
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, const_cast<EVP_PKEY*>(ours), nullptr));
  size_t len = 0;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) <= 0 ||
      EVP_PKEY_derive_set_peer(ctx.get(), const_cast<EVP_PKEY*>(theirs)) <= 0 ||
      EVP_PKEY_derive(ctx.get(), nullptr, &len) <= 0) {
    return "";
  }
  std::string secret(len, '\0');
  if (EVP_PKEY_derive(ctx.get(), reinterpret_cast<unsigned char*>(secret.data()), &len) <= 0) return "";
  secret.resize(len);
  return secret;
}

std::string Sign(const EVP_PKEY* key, std::string_view data) {
  MdCtx md(EVP_MD_CTX_new());
  size_t len = 0;
  if (!md || EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, const_cast<EVP_PKEY*>(key)) <= 0 ||
      EVP_DigestSign(md.get(), nullptr, &len, Bytes(data), data.size()) <= 0) {
    return "";
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, Bytes(data), data.size()) <= 0) {
    return "";
  }
  sig.resize(len);
  return sig;
}

// A DER ECDSA signature as JWS wants it: r and s, 32 bytes each, big-endian.
std::string DerToRaw(std::string_view der) {
  const unsigned char* p = Bytes(der);
  EcdsaSig sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig) return "";
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  std::string raw(64, '\0');
  auto* out = reinterpret_cast<unsigned char*>(raw.data());
  if (BN_bn2binpad(r, out, 32) != 32 || BN_bn2binpad(s, out + 32, 32) != 32) return "";
  return raw;
}

}  // namespace

Status PrivateKeyFromPem(std::string_view pem, EvpKey& out) {
  if (pem.find("-----BEGIN") == std::string_view::npos) return Status::Invalid("not PEM (no -----BEGIN line)");
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Status::Internal("OpenSSL: out of memory");
  // No passphrase: an encrypted key would otherwise make OpenSSL prompt on the terminal.
  EVP_PKEY* key = PEM_read_bio_PrivateKey(
      bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr);
  if (!key) return Status::Invalid("not a readable unencrypted PEM private key");
  out.reset(key);
  return Status::Ok();
}

Status P256PrivateKeyFromRaw(std::string_view scalar, EvpKey& out) {
  if (scalar.size() != 32) {
    return Status::Invalid("a raw P-256 private key is 32 bytes, not " + std::to_string(scalar.size()));
  }
  Bn priv(BN_bin2bn(Bytes(scalar), 32, nullptr));
  EcGroup group(EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1));
  if (!priv || !group) return Status::Internal("OpenSSL: out of memory");
  if (BN_is_zero(priv.get()) || BN_cmp(priv.get(), EC_GROUP_get0_order(group.get())) >= 0) {
    return Status::Invalid("not a P-256 private key (out of range)");
  }
  EcPoint pub(EC_POINT_new(group.get()));
  unsigned char point[65];
  if (!pub || !EC_POINT_mul(group.get(), pub.get(), priv.get(), nullptr, nullptr, nullptr) ||
      EC_POINT_point2oct(group.get(), pub.get(), POINT_CONVERSION_UNCOMPRESSED, point, sizeof point, nullptr) !=
          sizeof point) {
    return Status::Internal("OpenSSL: cannot compute the public key");
  }
  return P256FromData(std::string_view(reinterpret_cast<char*>(point), sizeof point), priv.get(), out);
}

Status P256PublicKeyFromRaw(std::string_view point, EvpKey& out) {
  if (point.size() != 65 || point[0] != 0x04) {
    return Status::Invalid("an uncompressed P-256 public key is 65 bytes starting with 0x04 (got " +
                           std::to_string(point.size()) + " bytes)");
  }
  return P256FromData(point, nullptr, out);
}

bool IsP256Key(const EVP_PKEY* key) {
  if (!key || !EVP_PKEY_is_a(key, "EC")) return false;
  char group[64] = "";
  size_t len = 0;
  if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len)) return false;
  return std::strcmp(group, SN_X9_62_prime256v1) == 0;
}

bool IsRsaKey(const EVP_PKEY* key) { return key && EVP_PKEY_is_a(key, "RSA"); }

std::string P256PublicKeyRaw(const EVP_PKEY* key) {
  unsigned char point[65];
  size_t len = 0;
  if (!IsP256Key(key) ||
      !EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, sizeof point, &len) ||
      len != sizeof point) {
    return "";
  }
  return std::string(reinterpret_cast<char*>(point), len);
}

Status EncryptWebPush(std::string_view plaintext, std::string_view ua_public, std::string_view auth_secret,
                      std::string& body, const EVP_PKEY* sender, std::string_view salt) {
  EvpKey ua;
  if (Status s = P256PublicKeyFromRaw(ua_public, ua); !s.ok()) return Status::Invalid("p256dh: " + s.message());
  if (auth_secret.size() != 16) {
    return Status::Invalid("auth: the auth secret is 16 bytes, not " + std::to_string(auth_secret.size()));
  }
  if (plaintext.size() > kWebPushMaxPlaintext) {
    return Status::Invalid("payload: " + std::to_string(plaintext.size()) + " bytes, more than the " +
                           std::to_string(kWebPushMaxPlaintext) + " that fit one 4096-byte record");
  }
  EvpKey ephemeral;
  if (!sender) {
    ephemeral.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", SN_X9_62_prime256v1));
    if (!ephemeral) return Status::Internal("OpenSSL: cannot generate a P-256 key");
    sender = ephemeral.get();
  }
  std::string salt_bytes(salt);
  if (salt_bytes.empty()) {
    salt_bytes.resize(16);
    if (RAND_bytes(reinterpret_cast<unsigned char*>(salt_bytes.data()), 16) != 1) {
      return Status::Internal("OpenSSL: no random bytes for the salt");
    }
  }
  if (salt_bytes.size() != 16) return Status::Invalid("salt: 16 bytes expected");
  const std::string as_public = P256PublicKeyRaw(sender);
  const std::string ecdh = Ecdh(sender, ua.get());
  if (as_public.empty() || ecdh.empty()) return Status::Internal("OpenSSL: ECDH failed");

  // RFC 8291 section 3.4: IKM from the ECDH secret and the auth secret, then RFC 8188's CEK and
  // nonce from the salt.
  std::string key_info = "WebPush: info";
  key_info.push_back('\0');
  key_info.append(ua_public).append(as_public);
  const std::string ikm = HkdfExpand(HmacSha256(auth_secret, ecdh), key_info, 32);
  const std::string prk = HmacSha256(salt_bytes, ikm);
  const std::string cek = HkdfExpand(prk, std::string("Content-Encoding: aes128gcm") + '\0', 16);
  const std::string nonce = HkdfExpand(prk, std::string("Content-Encoding: nonce") + '\0', 12);
  if (ikm.empty() || prk.empty() || cek.empty() || nonce.empty()) return Status::Internal("OpenSSL: HKDF failed");

  std::string record(plaintext);
  record.push_back('\x02');  // the last (and only) record's delimiter, no padding
  std::string sealed(record.size() + 16, '\0');
  auto* out = reinterpret_cast<unsigned char*>(sealed.data());
  CipherCtx c(EVP_CIPHER_CTX_new());
  int len = 0, fin = 0;
  if (!c || EVP_EncryptInit_ex(c.get(), EVP_aes_128_gcm(), nullptr, Bytes(cek), Bytes(nonce)) != 1 ||
      EVP_EncryptUpdate(c.get(), out, &len, Bytes(record), static_cast<int>(record.size())) != 1 ||
      EVP_EncryptFinal_ex(c.get(), out + len, &fin) != 1 ||
      EVP_CIPHER_CTX_ctrl(c.get(), EVP_CTRL_GCM_GET_TAG, 16, out + record.size()) != 1) {
    return Status::Internal("OpenSSL: AES-128-GCM failed");
  }

  body.clear();
  body.reserve(16 + 4 + 1 + as_public.size() + sealed.size());
  body += salt_bytes;
  for (int shift = 24; shift >= 0; shift -= 8) body.push_back(static_cast<char>((kRecordSize >> shift) & 0xFF));
  body.push_back(static_cast<char>(as_public.size()));
  body += as_public;
  body += sealed;
  return Status::Ok();
}

std::string SignJwt(nlohmann::json header, const nlohmann::json& claims, const EVP_PKEY* key) {
  const bool ec = IsP256Key(key);
  if (!ec && !IsRsaKey(key)) return "";
  header["alg"] = ec ? "ES256" : "RS256";
  using nlohmann::json;
  std::string input = Base64UrlEncode(header.dump(-1, ' ', false, json::error_handler_t::replace)) + "." +
                      Base64UrlEncode(claims.dump(-1, ' ', false, json::error_handler_t::replace));
  std::string sig = Sign(key, input);
  if (ec) sig = DerToRaw(sig);
  if (sig.empty()) return "";
  return input + "." + Base64UrlEncode(sig);
}

}  // namespace herald
