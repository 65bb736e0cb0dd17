// Helpers shared by the tests: the broker the test command started, a fresh vhost per test,
// a synchronous client for assertions, child processes, and waiting on conditions.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "broker/amqp.h"
#include "core/config.h"

namespace herald::test {

using namespace std::chrono_literals;

// Facts exported by scripts/test.sh. Fail the test with a clear message when absent.
int BrokerPort();
std::string BrokerDir();
std::string BinaryDir();
std::string SourceDir();

// Waits until `pred` holds or `timeout` passes; returns whether it held.
bool WaitFor(const std::function<bool()>& pred, Millis timeout, Millis step = 20ms);

// Calls the RabbitMQ management HTTP API. Returns the HTTP status (0 if unreachable).
long Management(const std::string& method, const std::string& path, const std::string& body = "",
                std::string* response = nullptr);

// A vhost of its own for one test, so tests can run in parallel with the fixed broker names.
class Vhost {
 public:
  explicit Vhost(const std::string& hint);
  ~Vhost();
  Vhost(const Vhost&) = delete;
  Vhost& operator=(const Vhost&) = delete;
  const std::string& name() const { return name_; }
  std::string url() const;
  // A configuration pointing at this vhost (classic queues unless told otherwise).
  Config MakeConfig(const std::string& queue_type = "quorum") const;

 private:
  std::string name_;
};

// Closes every client connection to the vhost (the broker's side), as a network fault would.
int CloseConnections(const std::string& vhost);

// A synchronous client for setting up and asserting on queues.
class Peek {
 public:
  explicit Peek(const std::string& url);
  // basic.get with ack; nullopt when the queue is empty.
  std::optional<broker::Message> Get(const std::string& queue);
  std::optional<broker::Message> WaitGet(const std::string& queue, Millis timeout);
  // Takes every message from the queue (consuming, no acks), until none arrived for `quiet`.
  std::vector<broker::Message> Drain(const std::string& queue, Millis quiet = 500ms);
  // Ready messages in the queue (passive declare); -1 if the queue does not exist.
  long Depth(const std::string& queue);
  bool Exists(const std::string& queue) { return Depth(queue) >= 0; }
  // Publishes without confirms (fine for test set-up on one connection).
  void Publish(const std::string& exchange, const std::string& key, const std::string& body);

 private:
  void Reopen();
  std::string url_;
  broker::Connection conn_;
};

// A child process with its own stdout+stderr file; ended by PID only.
class Process {
 public:
  Process(std::vector<std::string> argv, std::vector<std::string> extra_env, const std::string& name);
  ~Process();  // SIGKILL if still running
  pid_t pid() const { return pid_; }
  void Signal(int sig);
  // Exit code, or nullopt if it did not exit within `timeout`. 128+N for death by signal N.
  std::optional<int> Wait(Millis timeout);
  std::string Output() const;
  bool OutputContains(const std::string& text) const { return Output().find(text) != std::string::npos; }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_path_;
};

// Runs a command to completion; returns its exit code and fills `output` with stdout+stderr.
int Run(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env, std::string* output,
        Millis timeout = 60s);

// Publishes through python3-pika, an AMQP client we did not write. Returns pika's exit code.
int PikaPublish(const std::string& url, const std::string& exchange, const std::string& key,
                const std::string& body, std::string* output = nullptr);

// A loopback TCP port that was free a moment ago.
int FreePort();

// Whether something accepts TCP connections on 127.0.0.1:`port`.
bool Accepting(int port);

// A fresh directory under /tmp, removed with everything in it by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string path;
};

// Debian's `webhook` server on 127.0.0.1 with `hooks_json`; ended by PID with the object.
class WebhookServer {
 public:
  explicit WebhookServer(const std::string& hooks_json);
  int port() const { return port_; }
  std::string Url(const std::string& hook) const;

 private:
  int port_;
  std::unique_ptr<Process> process_;
};

// Writes `text` to a fresh temporary file and returns its path.
std::string TempFile(const std::string& name, const std::string& text);

}  // namespace herald::test
