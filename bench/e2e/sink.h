// A minimal HTTP/1.1 server on 127.0.0.1 that accepts every POST with 200 and reports each
// request body with its arrival time: the webhook receiver of the end-to-end benchmark.
//
// One epoll thread, keep-alive connections, Content-Length bodies only (what libcurl sends for a
// POST with CURLOPT_POSTFIELDS). It answers before the next request on the same connection is
// read, so a sender waiting for its response sees the sink's own cost only once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

namespace herald::bench {

class HttpSink {
 public:
  // Runs on the sink thread for every complete request; must be quick.
  using Handler = std::function<void(std::string_view target, std::string_view body, int64_t arrived_us)>;

  explicit HttpSink(Handler handler);
  ~HttpSink();  // Stop()
  HttpSink(const HttpSink&) = delete;
  HttpSink& operator=(const HttpSink&) = delete;

  // Binds an ephemeral loopback port and starts the thread. Returns false (with `error`) on failure.
  bool Start(std::string& error);
  void Stop();
  int port() const { return port_; }
  uint64_t requests() const { return requests_.load(); }

 private:
  void Run();

  Handler handler_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::atomic<uint64_t> requests_{0};
};

// Microseconds since the Unix epoch (system clock: comparable with timestamps other processes
// on this machine take).
int64_t NowMicros();

}  // namespace herald::bench
