#include "broker/amqp.h"

#include <amqp_tcp_socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace herald::broker {
namespace {

timeval ToTimeval(Millis d) {
  timeval tv{};
  tv.tv_sec = d.count() / 1000;
  tv.tv_usec = (d.count() % 1000) * 1000;
  return tv;
}

std::string MethodName(amqp_method_number_t id) {
  const char* name = amqp_method_name(id);
  return name ? name : "unknown method";
}

}  // namespace

Status ParseAmqpUrl(const std::string& url, ParsedUrl& out) {
  std::vector<char> buf(url.begin(), url.end());
  buf.push_back('\0');
  amqp_connection_info info;
  amqp_default_connection_info(&info);
  if (amqp_parse_url(buf.data(), &info) != AMQP_STATUS_OK) {
    return Status::Invalid("broker URL is not a valid amqp:// URL (expected amqp://user:pass@host:port/vhost)");
  }
  if (info.ssl) return Status::Invalid("amqps:// (TLS) is not supported yet; use amqp://");
  out.host = info.host;
  out.port = info.port;
  out.user = info.user;
  out.password = info.password;
  // "amqp://host/" parses to the empty vhost, which nobody means: use the default vhost.
  out.vhost = (info.vhost && *info.vhost) ? info.vhost : "/";
  return Status::Ok();
}

std::string DescribeReply(const amqp_rpc_reply_t& r) {
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return "ok";
    case AMQP_RESPONSE_NONE:
      return "missing RPC reply";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return amqp_error_string2(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* m = static_cast<amqp_connection_close_t*>(r.reply.decoded);
        return "connection closed by broker: " + std::to_string(m->reply_code) + " " + ToString(m->reply_text);
      }
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
        return "channel closed by broker: " + std::to_string(m->reply_code) + " " + ToString(m->reply_text);
      }
      return "unexpected broker method " + MethodName(r.reply.id);
  }
  return "unknown reply";
}

Connection::Connection(ConnectOptions options) : options_(std::move(options)) {}

Connection::~Connection() { Close(); }

Status Connection::Open() {
  Close();
  ParsedUrl url;
  if (Status s = ParseAmqpUrl(options_.url, url); !s.ok()) return s;

  state_ = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(state_);
  if (!socket) {
    Close();
    return Status::Internal("cannot create a TCP socket");
  }
  timeval tv = ToTimeval(options_.connect_timeout);
  int rc = amqp_socket_open_noblock(socket, url.host.c_str(), url.port, &tv);
  if (rc != AMQP_STATUS_OK) {
    Close();
    return Status::Unavailable("cannot connect to broker at " + url.host + ":" + std::to_string(url.port) + ": " +
                               amqp_error_string2(rc));
  }
  amqp_set_handshake_timeout(state_, &tv);
  amqp_set_rpc_timeout(state_, &tv);

  amqp_table_entry_t props[2];
  props[0].key = amqp_cstring_bytes("connection_name");
  props[0].value.kind = AMQP_FIELD_KIND_UTF8;
  props[0].value.value.bytes = Bytes(options_.connection_name);
  props[1].key = amqp_cstring_bytes("product");
  props[1].value.kind = AMQP_FIELD_KIND_UTF8;
  props[1].value.value.bytes = amqp_cstring_bytes("herald");
  amqp_table_t client_props{2, props};
  int heartbeat_s = static_cast<int>((options_.heartbeat.count() + 999) / 1000);
  amqp_rpc_reply_t login =
      amqp_login_with_properties(state_, url.vhost.c_str(), 0, 131072, heartbeat_s, &client_props,
                                 AMQP_SASL_METHOD_PLAIN, url.user.c_str(), url.password.c_str());
  if (login.reply_type != AMQP_RESPONSE_NORMAL) {
    std::string why = DescribeReply(login);
    MarkBroken();
    Close();
    return Status::Unavailable("broker login to vhost \"" + url.vhost + "\" as \"" + url.user + "\" failed: " + why);
  }
  open_ = true;
  amqp_channel_open(state_, kChannel);
  if (Status s = CheckRpc("channel.open"); !s.ok()) {
    Close();
    return s;
  }
  return Status::Ok();
}

void Connection::MarkBroken() { open_ = false; }

void Connection::Close() {
  if (!state_) return;
  if (open_) {
    // Best effort: a dead peer must not hold us for long.
    timeval tv = ToTimeval(std::min(options_.connect_timeout, Millis(2000)));
    amqp_set_rpc_timeout(state_, &tv);
    amqp_channel_close(state_, kChannel, AMQP_REPLY_SUCCESS);
    amqp_connection_close(state_, AMQP_REPLY_SUCCESS);
  }
  amqp_destroy_connection(state_);
  state_ = nullptr;
  open_ = false;
}

Status Connection::CheckRpc(const char* what) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(state_);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return Status::Ok();
  std::string why = DescribeReply(r);
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION) {
    // Every server exception closes at least the channel; answer and treat the connection as
    // unusable so the owner reconnects with a clean state.
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
      amqp_channel_close_ok_t ok{};
      amqp_send_method(state_, kChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
      amqp_connection_close_ok_t ok{};
      amqp_send_method(state_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    }
    MarkBroken();
    return Status::Rejected(std::string(what) + ": " + why);
  }
  MarkBroken();
  return Status::Unavailable(std::string(what) + ": " + why);
}

Status Connection::CheckCode(int code, const char* what) {
  if (code == AMQP_STATUS_OK) return Status::Ok();
  MarkBroken();
  return Status::Unavailable(std::string(what) + ": " + amqp_error_string2(code));
}

Connection::Ready Connection::WaitForInput(int wake_fd, Millis timeout) {
  if (amqp_frames_enqueued(state_) || amqp_data_in_buffer(state_)) return Ready::kData;
  if (options_.heartbeat.count() > 0) timeout = std::min(timeout, options_.heartbeat / 4);
  pollfd fds[2];
  fds[0] = {amqp_get_sockfd(state_), POLLIN, 0};
  fds[1] = {wake_fd, POLLIN, 0};
  int n = wake_fd >= 0 ? 2 : 1;
  int rc = ::poll(fds, n, static_cast<int>(timeout.count()));
  if (rc <= 0) return Ready::kTimeout;
  if (n == 2 && (fds[1].revents & POLLIN)) {
    uint64_t v;
    [[maybe_unused]] ssize_t r = ::read(wake_fd, &v, sizeof v);
    if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) return Ready::kWake;
  }
  return Ready::kData;
}

Status Connection::ReadFrame(amqp_frame_t& frame) {
  timeval zero{0, 0};
  int rc = amqp_simple_wait_frame_noblock(state_, &frame, &zero);
  if (rc == AMQP_STATUS_OK) return Status::Ok();
  if (rc == AMQP_STATUS_TIMEOUT) return Status::Timeout("no frame");
  MarkBroken();
  return Status::Unavailable(std::string("connection lost: ") + amqp_error_string2(rc));
}

void Connection::Cork(bool on) {
  if (!state_) return;
  const int fd = amqp_get_sockfd(state_);
  const int v = on ? 1 : 0;
  if (fd >= 0) ::setsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, sizeof v);
}

std::string Connection::AnswerClose(const amqp_frame_t& frame) {
  std::string why;
  if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
    auto* m = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
    why = "channel closed by broker: " + std::to_string(m->reply_code) + " " + ToString(m->reply_text);
    amqp_channel_close_ok_t ok{};
    amqp_send_method(state_, frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
  } else {
    auto* m = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
    why = "connection closed by broker: " + std::to_string(m->reply_code) + " " + ToString(m->reply_text);
    amqp_connection_close_ok_t ok{};
    amqp_send_method(state_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
  }
  MarkBroken();
  return why;
}

// ---- tables -------------------------------------------------------------------------------

namespace {

nlohmann::json FieldToJson(const amqp_field_value_t& v) {
  switch (v.kind) {
    case AMQP_FIELD_KIND_BOOLEAN: return v.value.boolean != 0;
    case AMQP_FIELD_KIND_I8: return v.value.i8;
    case AMQP_FIELD_KIND_U8: return v.value.u8;
    case AMQP_FIELD_KIND_I16: return v.value.i16;
    case AMQP_FIELD_KIND_U16: return v.value.u16;
    case AMQP_FIELD_KIND_I32: return v.value.i32;
    case AMQP_FIELD_KIND_U32: return v.value.u32;
    case AMQP_FIELD_KIND_I64: return v.value.i64;
    case AMQP_FIELD_KIND_U64: return v.value.u64;
    case AMQP_FIELD_KIND_TIMESTAMP: return v.value.u64;
    case AMQP_FIELD_KIND_F32: return v.value.f32;
    case AMQP_FIELD_KIND_F64: return v.value.f64;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: return ToString(v.value.bytes);
    case AMQP_FIELD_KIND_TABLE: return TableToJson(v.value.table);
    case AMQP_FIELD_KIND_ARRAY: {
      nlohmann::json arr = nlohmann::json::array();
      for (int i = 0; i < v.value.array.num_entries; ++i) arr.push_back(FieldToJson(v.value.array.entries[i]));
      return arr;
    }
    default: return nullptr;
  }
}

amqp_bytes_t PoolString(const std::string& s, amqp_pool_t* pool) {
  amqp_bytes_t b;
  b.len = s.size();
  b.bytes = amqp_pool_alloc(pool, s.size() ? s.size() : 1);
  if (!s.empty()) std::memcpy(b.bytes, s.data(), s.size());
  return b;
}

amqp_field_value_t JsonToField(const nlohmann::json& j, amqp_pool_t* pool) {
  amqp_field_value_t v{};
  if (j.is_boolean()) {
    v.kind = AMQP_FIELD_KIND_BOOLEAN;
    v.value.boolean = j.get<bool>();
  } else if (j.is_number_integer()) {
    v.kind = AMQP_FIELD_KIND_I64;
    v.value.i64 = j.get<int64_t>();
  } else if (j.is_number_float()) {
    v.kind = AMQP_FIELD_KIND_F64;
    v.value.f64 = j.get<double>();
  } else if (j.is_string()) {
    v.kind = AMQP_FIELD_KIND_UTF8;
    v.value.bytes = PoolString(j.get_ref<const std::string&>(), pool);
  } else if (j.is_object()) {
    v.kind = AMQP_FIELD_KIND_TABLE;
    v.value.table = JsonToTable(j, pool);
  } else if (j.is_array()) {
    v.kind = AMQP_FIELD_KIND_ARRAY;
    v.value.array.num_entries = static_cast<int>(j.size());
    v.value.array.entries =
        static_cast<amqp_field_value_t*>(amqp_pool_alloc(pool, sizeof(amqp_field_value_t) * (j.size() ? j.size() : 1)));
    for (size_t i = 0; i < j.size(); ++i) v.value.array.entries[i] = JsonToField(j[i], pool);
  } else {
    v.kind = AMQP_FIELD_KIND_VOID;
  }
  return v;
}

}  // namespace

nlohmann::json TableToJson(const amqp_table_t& table) {
  nlohmann::json out = nlohmann::json::object();
  for (int i = 0; i < table.num_entries; ++i) {
    out[ToString(table.entries[i].key)] = FieldToJson(table.entries[i].value);
  }
  return out;
}

amqp_table_t JsonToTable(const nlohmann::json& object, amqp_pool_t* pool) {
  amqp_table_t t{0, nullptr};
  if (!object.is_object() || object.empty()) return t;
  t.entries = static_cast<amqp_table_entry_t*>(amqp_pool_alloc(pool, sizeof(amqp_table_entry_t) * object.size()));
  for (auto it = object.begin(); it != object.end(); ++it) {
    amqp_table_entry_t& e = t.entries[t.num_entries++];
    e.key = PoolString(it.key(), pool);
    e.value = JsonToField(it.value(), pool);
  }
  return t;
}

void FillProperties(const Message& m, amqp_basic_properties_t& props, amqp_pool_t* pool) {
  props = amqp_basic_properties_t{};
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.delivery_mode = m.persistent ? 2 : 1;
  if (!m.content_type.empty()) {
    props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.content_type = PoolString(m.content_type, pool);
  }
  if (!m.message_id.empty()) {
    props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    props.message_id = PoolString(m.message_id, pool);
  }
  if (m.headers.is_object() && !m.headers.empty()) {
    props._flags |= AMQP_BASIC_HEADERS_FLAG;
    props.headers = JsonToTable(m.headers, pool);
  }
}

void ReadProperties(const amqp_basic_properties_t& props, Message& m) {
  m.headers = (props._flags & AMQP_BASIC_HEADERS_FLAG) ? TableToJson(props.headers) : nlohmann::json::object();
  m.content_type = (props._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) ? ToString(props.content_type) : "";
  m.message_id = (props._flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? ToString(props.message_id) : "";
  m.persistent = (props._flags & AMQP_BASIC_DELIVERY_MODE_FLAG) && props.delivery_mode == 2;
}

}  // namespace herald::broker
