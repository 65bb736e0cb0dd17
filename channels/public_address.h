// Whether an address is on the public Internet: the guard that keeps user-chosen URLs (webhooks,
// Web Push endpoints) from becoming a way into Herald's own network (SSRF).
#pragma once

#include <curl/curl.h>
#include <sys/socket.h>

#include <optional>
#include <string>
#include <string_view>

namespace herald {

// Why a user-chosen URL must not connect to `addr` (an AF_INET or AF_INET6 sockaddr), e.g.
// "loopback (127.0.0.0/8)", or nullptr if it is a public unicast address. IPv4 addresses
// embedded in IPv6 (mapped ::ffff:0:0/96, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged as IPv4.
const char* NonPublicAddressReason(const sockaddr* addr);
bool IsPublicAddress(const sockaddr* addr);
// The same for a numeric address ("203.0.113.9", "::ffff:127.0.0.1"); false if it is not one.
bool IsPublicAddress(std::string_view numeric_address);

struct Address {
  sockaddr_storage storage{};
  std::string text;  // numeric, without brackets
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

// The numeric text of an AF_INET or AF_INET6 address ("" for other families).
std::string AddressText(const sockaddr* sa);
// `text` as an address if it is a numeric IPv4 or IPv6 address (no brackets).
std::optional<Address> ParseNumericAddress(std::string_view text);

// Checks every address curl is about to connect to (CURLOPT_OPENSOCKETFUNCTION = OpenSocket,
// CURLOPT_OPENSOCKETDATA = the guard): the check is on the address actually used, so a name
// that resolves differently a second time (DNS rebinding) is caught too.
struct SocketGuard {
  bool enforce = false;
  std::string refused;  // the address refused, if any
  const char* why = nullptr;
};
curl_socket_t OpenSocket(void* guard, curlsocktype purpose, curl_sockaddr* address);

}  // namespace herald
