#include "core/ids.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <memory>

namespace herald {
namespace {

// SHA-256 of `input` into `md` (32 bytes). The digest is fetched from OpenSSL's provider once and
// each thread keeps its context: EVP_sha256() on every call looks it up again under a lock, which
// was most of the cost of an id (three ids per recipient and channel).
bool Sha256(const std::string& input, unsigned char* md) {
  static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  struct CtxFree {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };
  thread_local std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  unsigned int len = 0;
  if (sha256 && ctx && EVP_DigestInit_ex(ctx.get(), sha256, nullptr) == 1 &&
      EVP_DigestUpdate(ctx.get(), input.data(), input.size()) == 1 && EVP_DigestFinal_ex(ctx.get(), md, &len) == 1) {
    return true;
  }
  // (Not reached with a working libcrypto; the implicit fetch is the fallback.)
  return EVP_Digest(input.data(), input.size(), md, &len, EVP_sha256(), nullptr) == 1;
}

// prefix + 11 hex digits of `begun` in ms (enough until the year 2527) + the first 21 hex digits of
// SHA-256 over the parts, each followed by '\n' (which cannot appear in ids: control characters
// are refused). 34 characters in all.
std::string TimedId(const char* prefix, SystemTime begun, std::initializer_list<const std::string*> parts) {
  std::string input;
  for (const std::string* p : parts) {
    input += *p;
    input += '\n';
  }
  unsigned char md[EVP_MAX_MD_SIZE] = {};
  Sha256(input, md);
  const long long ms = std::max<long long>(
      0, std::chrono::duration_cast<std::chrono::milliseconds>(begun.time_since_epoch()).count());
  static const char* hex = "0123456789abcdef";
  std::string out = prefix;
  out.reserve(out.size() + 32);
  // 11 hex digits of the ms, most significant first (what "%011llx" of the low 44 bits wrote).
  const unsigned long long t = static_cast<unsigned long long>(ms) & 0xfffffffffffULL;
  for (int shift = 40; shift >= 0; shift -= 4) out += hex[(t >> shift) & 15];
  for (int i = 0; i < 11; ++i) {
    out += hex[md[i] >> 4];
    if (i < 10) out += hex[md[i] & 15];
  }
  return out;
}

}  // namespace

std::string NotificationId(const std::string& event_id, const std::string& user, SystemTime begun) {
  return TimedId("n-", begun, {&event_id, &user});
}

std::string DeliveryId(const std::string& event_id, const std::string& user, const std::string& channel,
                       SystemTime begun) {
  return TimedId("d-", begun, {&event_id, &user, &channel});
}

}  // namespace herald
