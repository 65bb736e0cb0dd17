// A real HTTP client for the API tests (libcurl), and a Server-Sent Events reader.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/time.h"

namespace herald::test {

struct HttpResponse {
  long status = 0;  // 0: no response (connection refused, timeout)
  std::string body;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string error;                           // curl's words when status is 0

  nlohmann::json Json() const;  // discarded value if the body is not JSON
  std::string Header(const std::string& lower_name) const;
};

// One request. `headers` as "Name: value".
HttpResponse Http(const std::string& method, const std::string& url, const std::string& body = "",
                  const std::vector<std::string>& headers = {}, Millis timeout = Millis(15000));

// Reads a text/event-stream on a thread of its own until closed.
class SseClient {
 public:
  struct Event {
    std::string id, event, data;
  };
  SseClient(const std::string& url, const std::vector<std::string>& headers);
  ~SseClient();
  SseClient(const SseClient&) = delete;
  SseClient& operator=(const SseClient&) = delete;

  // Waits until at least `n` events arrived; returns whether they did within `timeout`.
  bool WaitEvents(size_t n, Millis timeout);
  // Waits until the response started (status known) or the request ended.
  bool WaitOpen(Millis timeout);
  // Waits until the server ended the response.
  bool WaitEnded(Millis timeout);
  std::vector<Event> Events();
  long Status();
  size_t Comments();  // keep-alive and greeting comment lines seen
  void Close();       // ends the connection from the client's side

 private:
  static size_t OnData(char* data, size_t size, size_t n, void* self);
  void Parse();

  std::mutex mu_;
  std::condition_variable cv_;
  std::string buffer_;
  std::vector<Event> events_;
  Event pending_;
  size_t comments_ = 0;
  long status_ = 0;
  bool done_ = false;
  std::atomic<bool> closing_{false};
  void* curl_ = nullptr;  // the transfer's handle, used on its own thread only
  std::thread thread_;
};

}  // namespace herald::test
