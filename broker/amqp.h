// Thin, owned wrapper over one rabbitmq-c connection with a single channel.
//
// rabbitmq-c is not thread-safe and services heartbeats only inside its own calls, so every
// Connection is owned by exactly one thread, which must call Service() (directly or through
// WaitForInput) at least every heartbeat/2. Publisher and Consumer each run such a thread.
#pragma once

#include <amqp.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/status.h"
#include "core/time.h"

namespace herald::broker {

struct ConnectOptions {
  std::string url;                  // amqp://user:pass@host:port/vhost; an empty vhost means "/"
  Millis heartbeat{30000};          // 0 disables heartbeats
  Millis connect_timeout{5000};     // TCP connect, login and every synchronous RPC
  std::string connection_name;      // shown in the broker's management UI
};

// A message as published or received. Headers are a JSON object (AMQP tables map to objects,
// arrays to arrays, integers to numbers, byte strings to strings).
struct Message {
  std::string exchange;
  std::string routing_key;
  std::string body;
  nlohmann::json headers = nlohmann::json::object();
  std::string content_type = "application/json";
  std::string message_id;
  bool persistent = true;
  bool mandatory = false;  // unroutable messages are returned and reported as Rejected
};

// Parses an AMQP URL. Errors name what is wrong without echoing the password.
struct ParsedUrl {
  std::string host, user, password, vhost;
  int port = 5672;
};
Status ParseAmqpUrl(const std::string& url, ParsedUrl& out);

// Human-readable text for an RPC reply (server close reasons included).
std::string DescribeReply(const amqp_rpc_reply_t& reply);

class Connection {
 public:
  static constexpr amqp_channel_t kChannel = 1;

  explicit Connection(ConnectOptions options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Opens TCP, logs in and opens channel 1. Safe to call again after a failure or Close().
  Status Open();
  // Closes gracefully when possible; always releases the socket.
  void Close();
  bool IsOpen() const { return state_ != nullptr && open_; }
  // Marks the connection as broken (after an I/O error); the next Close() does not talk to the peer.
  void MarkBroken();

  amqp_connection_state_t state() { return state_; }
  const ConnectOptions& options() const { return options_; }

  // Turns the last RPC reply into a Status; on a channel or connection error marks this broken.
  Status CheckRpc(const char* what);
  // For a library status code returned by a non-RPC call (e.g. amqp_basic_publish).
  Status CheckCode(int code, const char* what);

  enum class Ready { kData, kWake, kTimeout };
  // Waits until the broker sent something, `wake_fd` (an eventfd, or -1) became readable, or
  // `timeout` passed. Never waits past what heartbeats allow.
  Ready WaitForInput(int wake_fd, Millis timeout);

  // Reads one frame without blocking. Returns kOk with a frame, kTimeout when none is ready, or an
  // error (the connection is then broken). Also sends a heartbeat when one is due.
  Status ReadFrame(amqp_frame_t& frame);

  // Replies to a server-initiated channel.close/connection.close and describes it.
  std::string AnswerClose(const amqp_frame_t& frame);

  // While corked (TCP_CORK), the kernel holds what is written until uncorked or a full segment is
  // ready: a batch of publishes or acks leaves as a few segments instead of one per message (each
  // segment costs a pass through the TCP stack here and a read in the broker). Uncorking sends
  // what is held at once.
  void Cork(bool on);

 private:
  ConnectOptions options_;
  amqp_connection_state_t state_ = nullptr;
  bool open_ = false;
};

// Conversions between AMQP field tables and JSON. `pool` owns the memory of the built table.
nlohmann::json TableToJson(const amqp_table_t& table);
amqp_table_t JsonToTable(const nlohmann::json& object, amqp_pool_t* pool);

// Fills AMQP basic properties for `m`; memory comes from `pool`.
void FillProperties(const Message& m, amqp_basic_properties_t& props, amqp_pool_t* pool);
// Copies properties of a received message into `m` (headers, content type, message id).
void ReadProperties(const amqp_basic_properties_t& props, Message& m);

inline std::string ToString(amqp_bytes_t b) { return std::string(static_cast<const char*>(b.bytes), b.len); }
inline amqp_bytes_t Bytes(const std::string& s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }

}  // namespace herald::broker
