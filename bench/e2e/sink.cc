#include "bench/e2e/sink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <unordered_map>

namespace herald::bench {
namespace {

constexpr std::string_view kResponse = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

struct Conn {
  int fd = -1;
  std::string in;
  std::string out;  // unsent response bytes (rare: loopback sockets take 40 bytes at once)
};

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

// Content-Length of a header block (without the final CRLFCRLF); 0 if absent.
size_t ContentLength(std::string_view head) {
  size_t pos = 0;
  while (pos < head.size()) {
    size_t eol = head.find("\r\n", pos);
    if (eol == std::string_view::npos) eol = head.size();
    std::string_view line = head.substr(pos, eol - pos);
    size_t colon = line.find(':');
    if (colon != std::string_view::npos && IEquals(line.substr(0, colon), "content-length")) {
      size_t v = 0;
      for (char c : line.substr(colon + 1)) {
        if (c >= '0' && c <= '9') v = v * 10 + static_cast<size_t>(c - '0');
      }
      return v;
    }
    pos = eol + 2;
  }
  return 0;
}

}  // namespace

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

HttpSink::HttpSink(Handler handler) : handler_(std::move(handler)) {}

HttpSink::~HttpSink() { Stop(); }

bool HttpSink::Start(std::string& error) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 256) != 0) {
    error = std::string("sink: bind/listen: ") + std::strerror(errno);
    return false;
  }
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  thread_ = std::thread([this] { Run(); });
  return true;
}

void HttpSink::Stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  for (int* fd : {&listen_fd_, &epoll_fd_, &wake_fd_}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

void HttpSink::Run() {
  std::unordered_map<int, std::unique_ptr<Conn>> conns;
  epoll_event events[64];
  char buf[65536];
  auto close_conn = [&](int fd) {
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    conns.erase(fd);
  };
  for (;;) {
    int n = ::epoll_wait(epoll_fd_, events, 64, 1000);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        for (auto& [cfd, c] : conns) ::close(cfd);
        return;
      }
      if (fd == listen_fd_) {
        for (;;) {
          int cfd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) break;
          int one = 1;
          ::setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          epoll_event ev{};
          ev.events = EPOLLIN | EPOLLRDHUP;
          ev.data.fd = cfd;
          ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, cfd, &ev);
          auto c = std::make_unique<Conn>();
          c->fd = cfd;
          conns.emplace(cfd, std::move(c));
        }
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      Conn& c = *it->second;
      bool closed = false;
      if (events[i].events & EPOLLOUT) {
        ssize_t w = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (w > 0) c.out.erase(0, static_cast<size_t>(w));
        if (c.out.empty()) {
          epoll_event ev{};
          ev.events = EPOLLIN | EPOLLRDHUP;
          ev.data.fd = fd;
          ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
        }
      }
      for (;;) {
        ssize_t r = ::recv(fd, buf, sizeof buf, 0);
        if (r > 0) {
          c.in.append(buf, static_cast<size_t>(r));
          continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) closed = true;
        break;
      }
      // Every complete request in the buffer, in order.
      size_t consumed = 0;
      std::string reply;
      for (;;) {
        std::string_view rest(c.in.data() + consumed, c.in.size() - consumed);
        size_t head_end = rest.find("\r\n\r\n");
        if (head_end == std::string_view::npos) break;
        size_t body_len = ContentLength(rest.substr(0, head_end));
        if (rest.size() < head_end + 4 + body_len) break;
        int64_t arrived = NowMicros();
        std::string_view line = rest.substr(0, rest.find("\r\n"));
        std::string_view target;
        if (size_t sp = line.find(' '); sp != std::string_view::npos) {
          size_t sp2 = line.find(' ', sp + 1);
          target = line.substr(sp + 1, sp2 == std::string_view::npos ? std::string_view::npos : sp2 - sp - 1);
        }
        handler_(target, rest.substr(head_end + 4, body_len), arrived);
        ++requests_;
        reply += kResponse;
        consumed += head_end + 4 + body_len;
      }
      if (consumed) c.in.erase(0, consumed);
      if (!reply.empty() && !closed) {
        if (c.out.empty()) {
          ssize_t w = ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
          if (w < 0) w = 0;
          reply.erase(0, static_cast<size_t>(w));
        }
        if (!reply.empty()) {
          c.out += reply;
          epoll_event ev{};
          ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
          ev.data.fd = fd;
          ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
        }
      }
      if (closed) close_conn(fd);
    }
  }
}

}  // namespace herald::bench
