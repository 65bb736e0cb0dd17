#include "channels/public_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdint>

namespace herald {
namespace {

struct Ipv4Range {
  uint32_t net;
  int bits;
  const char* why;
};

constexpr Ipv4Range kBlockedIpv4[] = {
    {0x00000000, 8, "unspecified (0.0.0.0/8)"},
    {0x0A000000, 8, "private (10.0.0.0/8)"},
    {0x64400000, 10, "shared address space, carrier-grade NAT (100.64.0.0/10)"},
    {0x7F000000, 8, "loopback (127.0.0.0/8)"},
    {0xA9FE0000, 16, "link-local (169.254.0.0/16)"},
    {0xAC100000, 12, "private (172.16.0.0/12)"},
    {0xC0000000, 24, "IETF protocol assignments (192.0.0.0/24)"},
    {0xC0A80000, 16, "private (192.168.0.0/16)"},
    {0xC6120000, 15, "benchmarking (198.18.0.0/15)"},
    {0xE0000000, 4, "multicast (224.0.0.0/4)"},
    {0xF0000000, 4, "reserved or broadcast (240.0.0.0/4)"},
};

// `a` in host byte order.
const char* Ipv4Reason(uint32_t a) {
  for (const Ipv4Range& r : kBlockedIpv4) {
    uint32_t mask = ~uint32_t{0} << (32 - r.bits);
    if ((a & mask) == r.net) return r.why;
  }
  return nullptr;
}

uint32_t Ipv4At(const uint8_t* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

bool AllZero(const uint8_t* b, size_t n) {
  return std::all_of(b, b + n, [](uint8_t x) { return x == 0; });
}

const char* Ipv6Reason(const uint8_t* b) {
  // IPv4-mapped: the kernel connects to the IPv4 address, so judge that.
  if (AllZero(b, 10) && b[10] == 0xFF && b[11] == 0xFF) return Ipv4Reason(Ipv4At(b + 12));
  if (AllZero(b, 16)) return "unspecified (::)";
  if (AllZero(b, 15) && b[15] == 1) return "loopback (::1)";
  if (AllZero(b, 12)) return "IPv4-compatible (::/96, deprecated)";
  // NAT64 (DNS64 synthesises these for IPv4-only hosts): the gateway connects to the IPv4 address.
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B && AllZero(b + 4, 8)) {
    return Ipv4Reason(Ipv4At(b + 12));
  }
  if ((b[0] & 0xFE) == 0xFC) return "unique local (fc00::/7)";
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80) return "link-local (fe80::/10)";
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0) return "site-local (fec0::/10, deprecated)";
  if (b[0] == 0xFF) return "multicast (ff00::/8)";
  // Everything public is global unicast; the rest of the space is reserved or special-purpose.
  if ((b[0] & 0xE0) != 0x20) return "not global unicast (outside 2000::/3)";
  if (b[0] == 0x20 && b[1] == 0x02) return Ipv4Reason(Ipv4At(b + 2));  // 6to4 relays to that IPv4
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0) return "Teredo (2001::/32)";
  return nullptr;
}

}  // namespace

std::string AddressText(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
  } else if (sa->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

std::optional<Address> ParseNumericAddress(std::string_view text) {
  Address a;
  std::string s(text);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (inet_pton(AF_INET, s.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
  } else if (inet_pton(AF_INET6, s.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
  } else {
    return std::nullopt;
  }
  a.text = AddressText(a.sa());
  return a;
}

// getaddrinfo has no timeout of its own, and Send must not block longer than its budget: it

const char* NonPublicAddressReason(const sockaddr* addr) {
  if (!addr) return "not an address";
  if (addr->sa_family == AF_INET) {
    return Ipv4Reason(ntohl(reinterpret_cast<const sockaddr_in*>(addr)->sin_addr.s_addr));
  }
  if (addr->sa_family == AF_INET6) {
    return Ipv6Reason(reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr.s6_addr);
  }
  return "not an IPv4 or IPv6 address";
}

bool IsPublicAddress(const sockaddr* addr) { return NonPublicAddressReason(addr) == nullptr; }

bool IsPublicAddress(std::string_view numeric_address) {
  std::optional<Address> a = ParseNumericAddress(numeric_address);
  return a && IsPublicAddress(a->sa());
}

curl_socket_t OpenSocket(void* user, curlsocktype purpose, curl_sockaddr* address) {
  auto* guard = static_cast<SocketGuard*>(user);
  if (guard->enforce && purpose == CURLSOCKTYPE_IPCXN) {
    if (const char* why = NonPublicAddressReason(&address->addr)) {
      guard->refused = AddressText(&address->addr);
      guard->why = why;
      return CURL_SOCKET_BAD;
    }
  }
  return ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

}  // namespace herald
