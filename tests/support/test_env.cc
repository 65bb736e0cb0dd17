#include "tests/support/test_env.h"

#include <curl/curl.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <catch2/catch.hpp>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

extern char** environ;

namespace herald::test {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) FAIL(std::string(name) + " is not set: run the tests through scripts/test.sh, which starts a broker");
  return v;
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.') out += static_cast<char>(c);
    else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

size_t Collect(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

std::string Unique(const std::string& hint) {
  static std::atomic<int> counter{0};
  std::random_device rd;
  return hint + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" + std::to_string(rd() % 100000);
}

}  // namespace

int BrokerPort() { return std::stoi(Env("TEST_BROKER_PORT")); }
std::string BrokerDir() { return Env("TEST_BROKER_DIR"); }
std::string BinaryDir() { return HERALD_BINARY_DIR; }
std::string SourceDir() { return HERALD_SOURCE_DIR; }

bool WaitFor(const std::function<bool()>& pred, Millis timeout, Millis step) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(step);
  }
}

long Management(const std::string& method, const std::string& path, const std::string& body, std::string* response) {
  CURL* curl = curl_easy_init();
  std::string url = "http://127.0.0.1:" + std::to_string(BrokerPort() + 1) + path;
  std::string sink;
  if (response) response->clear();
  curl_slist* headers = curl_slist_append(nullptr, "content-type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl, CURLOPT_USERPWD, "guest:guest");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, response ? response : &sink);
  if (!body.empty() || method == "PUT") curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  long code = 0;
  if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return code;
}

Vhost::Vhost(const std::string& hint) : name_(Unique("t-" + hint)) {
  long code = Management("PUT", "/api/vhosts/" + UrlEncode(name_));
  REQUIRE((code == 201 || code == 204));
  code = Management("PUT", "/api/permissions/" + UrlEncode(name_) + "/guest",
                    R"({"configure":".*","write":".*","read":".*"})");
  REQUIRE((code == 201 || code == 204));
}

Vhost::~Vhost() { Management("DELETE", "/api/vhosts/" + UrlEncode(name_)); }

std::string Vhost::url() const {
  return "amqp://guest:guest@127.0.0.1:" + std::to_string(BrokerPort()) + "/" + UrlEncode(name_);
}

Config Vhost::MakeConfig(const std::string& queue_type) const {
  Config c = LoadConfigText("{}", "test", {});
  c.broker.url = url();
  c.broker.queue_type = queue_type;
  c.broker.heartbeat = 5s;
  c.broker.reconnect_min = 50ms;
  c.broker.reconnect_max = 500ms;
  c.retry.tiers = {1s, 2s};
  return c;
}

int CloseConnections(const std::string& vhost) {
  // The management API lists a connection only after its first statistics report.
  nlohmann::json list;
  WaitFor([&] {
    std::string body;
    Management("GET", "/api/vhosts/" + UrlEncode(vhost) + "/connections", "", &body);
    list = nlohmann::json::parse(body, nullptr, false);
    return list.is_array() && !list.empty();
  }, 15s, 100ms);
  int closed = 0;
  if (!list.is_array()) return 0;
  for (const auto& c : list) {
    if (Management("DELETE", "/api/connections/" + UrlEncode(c.value("name", ""))) / 100 == 2) ++closed;
  }
  return closed;
}

Peek::Peek(const std::string& url) : url_(url), conn_(broker::ConnectOptions{url, 0s, 5s, "test peek"}) { Reopen(); }

void Peek::Reopen() {
  Status s = conn_.Open();
  REQUIRE(s.ToString() == "ok");
}

std::optional<broker::Message> Peek::Get(const std::string& queue) {
  if (!conn_.IsOpen()) Reopen();
  amqp_rpc_reply_t r = amqp_basic_get(conn_.state(), broker::Connection::kChannel, broker::Bytes(queue), /*no_ack=*/1);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    conn_.MarkBroken();
    FAIL("basic.get on " + queue + ": " + broker::DescribeReply(r));
  }
  if (r.reply.id != AMQP_BASIC_GET_OK_METHOD) return std::nullopt;
  auto* ok = static_cast<amqp_basic_get_ok_t*>(r.reply.decoded);
  broker::Message m;
  m.exchange = broker::ToString(ok->exchange);
  m.routing_key = broker::ToString(ok->routing_key);
  amqp_message_t msg;
  r = amqp_read_message(conn_.state(), broker::Connection::kChannel, &msg, 0);
  REQUIRE(r.reply_type == AMQP_RESPONSE_NORMAL);
  m.body = broker::ToString(msg.body);
  broker::ReadProperties(msg.properties, m);
  amqp_destroy_message(&msg);
  amqp_maybe_release_buffers(conn_.state());
  return m;
}

std::optional<broker::Message> Peek::WaitGet(const std::string& queue, Millis timeout) {
  std::optional<broker::Message> out;
  WaitFor([&] { return (out = Get(queue)).has_value(); }, timeout);
  return out;
}

std::vector<broker::Message> Peek::Drain(const std::string& queue, Millis quiet) {
  std::vector<broker::Message> out;
  broker::Connection c({url_, 0s, 5s, "test drain"});
  REQUIRE(c.Open().ok());
  amqp_basic_qos(c.state(), broker::Connection::kChannel, 0, 2000, 0);
  amqp_basic_consume(c.state(), broker::Connection::kChannel, broker::Bytes(queue), amqp_empty_bytes, 0,
                     /*no_ack=*/1, 0, amqp_empty_table);
  REQUIRE(c.CheckRpc("consume").ok());
  for (;;) {
    amqp_envelope_t env;
    timeval tv{quiet.count() / 1000, (quiet.count() % 1000) * 1000};
    amqp_rpc_reply_t r = amqp_consume_message(c.state(), &env, &tv, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) break;  // timeout: the queue is empty
    broker::Message m;
    m.routing_key = broker::ToString(env.routing_key);
    m.body = broker::ToString(env.message.body);
    broker::ReadProperties(env.message.properties, m);
    amqp_destroy_envelope(&env);
    out.push_back(std::move(m));
    amqp_maybe_release_buffers(c.state());
  }
  return out;
}

long Peek::Depth(const std::string& queue) {
  if (!conn_.IsOpen()) Reopen();
  amqp_queue_declare_ok_t* ok = amqp_queue_declare(conn_.state(), broker::Connection::kChannel, broker::Bytes(queue),
                                                   /*passive=*/1, 0, 0, 0, amqp_empty_table);
  if (!ok) {
    conn_.CheckRpc("passive declare");  // the channel is closed: reopen next time
    conn_.Close();
    return -1;
  }
  return ok->message_count;
}

void Peek::Publish(const std::string& exchange, const std::string& key, const std::string& body) {
  if (!conn_.IsOpen()) Reopen();
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.delivery_mode = 2;
  REQUIRE(amqp_basic_publish(conn_.state(), broker::Connection::kChannel, broker::Bytes(exchange), broker::Bytes(key),
                             0, 0, &props, broker::Bytes(body)) == AMQP_STATUS_OK);
}

Process::Process(std::vector<std::string> argv, std::vector<std::string> extra_env, const std::string& name) {
  log_path_ = TempFile(name + ".log", "");
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    if (kv.rfind("HERALD_", 0) == 0) continue;  // only what the test passes
    env.push_back(kv);
  }
  for (auto& kv : extra_env) env.push_back(kv);
  std::vector<char*> cargv, cenv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  for (auto& e : env) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log_path_.c_str(), O_WRONLY | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  int rc = posix_spawn(&pid_, cargv[0], &fa, nullptr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE(rc == 0);
}

Process::~Process() {
  if (!status_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    Wait(10s);
  }
}

void Process::Signal(int sig) {
  if (!status_ && pid_ > 0) ::kill(pid_, sig);
}

std::optional<int> Process::Wait(Millis timeout) {
  if (status_) return status_;
  WaitFor([&] {
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return status_.has_value();
  }, timeout, 10ms);
  return status_;
}

std::string Process::Output() const {
  std::ifstream in(log_path_);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

int Run(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env, std::string* output,
        Millis timeout) {
  Process p(argv, extra_env, "run");
  auto code = p.Wait(timeout);
  if (output) *output = p.Output();
  return code ? *code : -1;
}

int PikaPublish(const std::string& url, const std::string& exchange, const std::string& key, const std::string& body,
                std::string* output) {
  std::string body_file = TempFile("pika-body", body);
  return Run({"/usr/bin/python3", SourceDir() + "/tests/support/pika_publish.py", url, exchange, key, body_file}, {},
             output);
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool Accepting(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

namespace {
std::string MakeTempDir() {
  char tmpl[] = "/tmp/herald-dir-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}
}  // namespace

TempDir::TempDir() : path(MakeTempDir()) {}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

WebhookServer::WebhookServer(const std::string& hooks_json) : port_(FreePort()) {
  process_ = std::make_unique<Process>(
      std::vector<std::string>{"/usr/bin/webhook", "-hooks", TempFile("hooks.json", hooks_json), "-ip", "127.0.0.1",
                               "-port", std::to_string(port_), "-verbose"},
      std::vector<std::string>{}, "webhook-server");
  bool up = WaitFor([&] { return Accepting(port_); }, 10s);
  INFO(process_->Output());
  REQUIRE(up);
}

std::string WebhookServer::Url(const std::string& hook) const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/hooks/" + hook;
}

std::string TempFile(const std::string& name, const std::string& text) {
  static std::atomic<int> counter{0};
  std::string path = "/tmp/herald-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" + name;
  std::ofstream out(path, std::ios::binary);
  out << text;
  return path;
}

}  // namespace herald::test
