// HttpMulti: concurrent HTTP requests from many threads over shared connections, on one libcurl
// multi handle driven by one thread it owns. Requests to the same origin share a connection:
// HTTP/2 multiplexes them (libcurl waits for a connection being set up rather than opening
// another, CURLOPT_PIPEWAIT), HTTP/1.1 keeps connections alive.
//
// Thread-safe. A caller Start()s requests (all its requests at once, so they run concurrently)
// and Wait()s for each, or hands a callback that the multi thread calls with the response (the
// webhook worker keeps many sends in flight that way without a thread each). Every request ends
// by its own timeout at the latest. Destroying the HttpMulti ends what is still running
// ("shutting down") and stops the thread.
#pragma once

#include <curl/curl.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "channels/public_address.h"
#include "core/status.h"
#include "core/time.h"

namespace herald {

struct HttpRequest {
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;                  // POSTed (every push provider request is a POST)
  Millis timeout{10000};             // the whole request
  Millis connect_timeout{3000};
  std::string ca_file;       // PEM bundle to verify the server with instead of the system's
  bool public_only = false;  // SSRF guard: refuse to connect to a non-public address
  std::string user_agent = "Herald/" HERALD_VERSION;
  size_t max_body = 64 * 1024;  // of the response body kept (the rest is read and dropped)
};

struct HttpResponse {
  CURLcode rc = CURLE_OK;
  std::string error;                           // libcurl's words when rc is not CURLE_OK
  long status = 0;                             // 0 when no response arrived
  long http_version = 0;                       // CURL_HTTP_VERSION_1_1, CURL_HTTP_VERSION_2_0, ...
  std::string body;                            // at most the request's max_body bytes
  std::map<std::string, std::string> headers;  // of the final response; names in lower case
  std::string refused;                         // the address the SSRF guard refused, if any
  const char* refused_why = nullptr;

  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? "" : it->second;
  }
};

class HttpMulti {
 public:
  // `name` is the thread's name; `what` names the sender in errors ("the push channel").
  HttpMulti(std::string name, std::string what);
  ~HttpMulti();
  HttpMulti(const HttpMulti&) = delete;
  HttpMulti& operator=(const HttpMulti&) = delete;

  struct Transfer;
  using Call = std::shared_ptr<Transfer>;
  // Hands a request to the multi thread; it starts at once.
  Call Start(HttpRequest request);
  // The same, and `done` gets the response on the multi thread (or on this one at once if the
  // request cannot start). `done` must not block: every other request waits while it runs.
  using Done = std::function<void(HttpResponse&)>;
  void Start(HttpRequest request, Done done);
  // Blocks until the call has completed and returns its response.
  HttpResponse Wait(const Call& call);
  // Start + Wait.
  HttpResponse Perform(HttpRequest request) { return Wait(Start(std::move(request))); }

  // New connections opened so far (tests: several requests to one origin share one over HTTP/2).
  long ConnectionsOpened() const;

 private:
  // Hands the request to the multi thread (`out`: its transfer); false if it was refused (failed
  // already: shutting down, or libcurl unusable).
  bool Enqueue(HttpRequest request, Done done, Call& out);
  void Run();
  void Finish(Transfer& t, CURLcode rc);

  const std::string name_;
  const std::string what_;
  CURLM* multi_ = nullptr;
  Status usable_;
  mutable std::mutex mu_;
  std::condition_variable done_cv_;
  std::deque<Call> incoming_;
  std::map<CURL*, Call> running_;  // only the multi thread touches it
  std::vector<CURL*> idle_;        // easy handles to reuse; only the multi thread touches it
  bool polling_ = false;           // the multi thread waits in curl_multi_poll: new requests wake it
  bool stopping_ = false;
  long connections_ = 0;
  std::thread thread_;
};

}  // namespace herald
