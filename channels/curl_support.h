// What the channels that speak through libcurl (e-mail, webhook, push) share: libcurl's global
// initialisation, a per-thread easy handle that keeps connections alive, reading a provider's
// answer (a bounded snippet of the body, response headers, Retry-After), and which transport
// failures retrying cannot fix.
#pragma once

#include <curl/curl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "channels/channel.h"
#include "core/status.h"
#include "core/time.h"

namespace herald {

// curl_global_init, once per process (it is not thread-safe, so every channel constructor calls
// this before any thread creates a handle). Internal if libcurl could not initialise.
Status CurlGlobalInit();

// A fresh id for a channel instance: tells a thread's curl handle which channel configured it.
std::uint64_t NextCurlOwner();

// `usable` is a channel's own configuration check: when it failed, what Send returns. Invalid
// settings are permanent (retrying in this process cannot help, and the dead letter can be
// replayed once the configuration is fixed); anything else is retryable.
SendResult UnusableChannel(const std::string& channel, const Status& usable);

// One easy handle per thread: it keeps connections (and TLS sessions) alive between sends. A
// handle serves one channel at a time (owner) so two configurations never share a connection.
struct ThreadCurl {
  CURL* curl = nullptr;
  std::uint64_t owner = 0;
  ThreadCurl() = default;
  ThreadCurl(const ThreadCurl&) = delete;
  ThreadCurl& operator=(const ThreadCurl&) = delete;
  ~ThreadCurl() {
    if (curl) curl_easy_cleanup(curl);
  }
};

// The thread's handle for `owner`, with options back to their defaults (connections stay), or a
// new one (`*fresh` true: the channel forgets what it kept about the old connection). nullptr
// if libcurl could not create one.
CURL* ThreadHandle(ThreadCurl& slot, std::uint64_t owner, bool* fresh = nullptr);

// How much of a refusing provider's response body an error keeps.
inline constexpr size_t kErrorBodyBytes = 200;

// CURLOPT_WRITEFUNCTION that keeps the first kErrorBodyBytes + 1 bytes (one past the limit tells
// ProviderText the body was cut) of the body in the std::string at `user`, and reads the rest
// too so the connection can be reused.
size_t KeepSnippet(char* data, size_t size, size_t n, void* user);

// A response header of the last transfer (the last response when there were several), if sent.
std::optional<std::string> ResponseHeader(CURL* curl, const char* name);

// HTTP transport failures that will not go away by retrying the same request: a malformed URL,
// an unsupported scheme, a certificate that does not verify.
bool PermanentHttpError(CURLcode rc);

// A header value from job data: control characters (CR, LF above all) would let a job inject
// headers, so they are dropped.
std::string HeaderValue(std::string_view s);

// A Retry-After value (RFC 9110 10.2.3) as a delay from `now`: delta-seconds or an HTTP-date
// (IMF-fixdate, or the obsolete RFC 850 and asctime forms); a date in the past gives 0.
// nullopt for anything else.
std::optional<Millis> ParseRetryAfter(std::string_view value, SystemTime now);

}  // namespace herald
