#include "channels/http_multi.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "channels/curl_slist.h"
#include "channels/curl_support.h"
#include "core/thread_name.h"

namespace herald {

struct HttpMulti::Transfer {
  HttpRequest request;
  HttpResponse response;
  Done on_done;       // empty: a caller Wait()s
  CURL* easy = nullptr;  // while it runs; then back to the idle handles
  CurlSlist headers;
  SocketGuard guard;
  char errbuf[CURL_ERROR_SIZE] = "";
  bool done = false;  // guarded by HttpMulti::mu_
};

namespace {

constexpr size_t kMaxIdleHandles = 64;
constexpr long kMaxConnections = 256;

size_t KeepBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<HttpMulti::Transfer*>(user);
  std::string& body = t->response.body;
  const size_t len = size * n, limit = t->request.max_body;
  if (body.size() < limit) body.append(data, std::min(len, limit - body.size()));
  return len;
}

// Header lines of the response; a new status line (after 1xx, say) starts over.
size_t KeepHeader(char* data, size_t size, size_t n, void* user) {
  auto* r = static_cast<HttpResponse*>(user);
  size_t len = size * n;
  std::string_view line(data, len);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (line.rfind("HTTP/", 0) == 0) {
    r->headers.clear();
    return len;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return len;
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  r->headers[name] = std::string(value);
  return len;
}

// Sets `t`'s options; false if libcurl ran out of memory.
bool Configure(HttpMulti::Transfer& t) {
  const HttpRequest& q = t.request;
  for (const std::string& h : q.headers) {
    if (!Append(t.headers, h)) return false;
  }
  // curl would wait up to a second for "100 Continue" before sending a body over HTTP/1.1.
  if (!Append(t.headers, "Expect:")) return false;
  CURL* c = t.easy;
  curl_easy_setopt(c, CURLOPT_URL, q.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROXY, "");  // the SSRF guard is about the target itself
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, q.body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(q.body.size()));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, t.headers.get());
  curl_easy_setopt(c, CURLOPT_USERAGENT, q.user_agent.c_str());
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<Millis::rep>(1, q.timeout.count())));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::max<Millis::rep>(1, std::min(q.connect_timeout, q.timeout).count())));
  // HTTP/2 where TLS negotiates it (ALPN), else HTTP/1.1. (Cleartext HTTP/2 with prior
  // knowledge is not offered: libcurl 7.88 fails concurrent streams on such connections.)
  curl_easy_setopt(c, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  // Wait for a connection being set up to say whether it multiplexes, instead of opening more.
  curl_easy_setopt(c, CURLOPT_PIPEWAIT, 1L);
  if (!q.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, q.ca_file.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, t.errbuf);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, KeepBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, KeepHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t.response);
  t.guard.enforce = q.public_only;
  curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, OpenSocket);
  curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &t.guard);
  return true;
}

}  // namespace

HttpMulti::HttpMulti(std::string name, std::string what) : name_(std::move(name)), what_(std::move(what)) {
  usable_ = CurlGlobalInit();
  if (usable_.ok()) {
    multi_ = curl_multi_init();
    if (!multi_) usable_ = Status::Internal("libcurl: cannot create a multi handle");
  }
  if (multi_) {
    curl_multi_setopt(multi_, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    // Connections kept for reuse (libcurl counts those in use too). Its default is 4 per easy
    // handle added at the time a connection is returned, and a handle is added only while its
    // request runs: at a low rate that closed connections the next request had to open again.
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, kMaxConnections);
    thread_ = std::thread([this] { Run(); });
  }
}

HttpMulti::~HttpMulti() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  if (multi_) curl_multi_wakeup(multi_);
  if (thread_.joinable()) thread_.join();
  for (CURL* easy : idle_) curl_easy_cleanup(easy);
  if (multi_) curl_multi_cleanup(multi_);
}

HttpMulti::Call HttpMulti::Start(HttpRequest request) {
  Call t;
  Enqueue(std::move(request), nullptr, t);
  return t;
}

void HttpMulti::Start(HttpRequest request, Done done) {
  Call t;
  // Once handed over, the multi thread may finish it (and call `done`) at any moment: only a
  // request that was refused is answered here.
  if (!Enqueue(std::move(request), std::move(done), t)) t->on_done(t->response);
}

bool HttpMulti::Enqueue(HttpRequest request, Done done, Call& out) {
  auto t = std::make_shared<Transfer>();
  t->request = std::move(request);
  t->on_done = std::move(done);
  out = t;
  std::unique_lock lock(mu_);
  if (!usable_.ok() || stopping_) {
    t->response.rc = CURLE_FAILED_INIT;
    t->response.error = usable_.ok() ? what_ + " is shutting down" : usable_.message();
    t->done = true;
    return false;
  }
  incoming_.push_back(std::move(t));
  // A busy multi thread takes it before it next waits; only a waiting one needs waking (a write
  // to curl's wake-up socket).
  const bool wake = polling_;
  polling_ = false;
  lock.unlock();
  if (wake) curl_multi_wakeup(multi_);
  return true;
}

HttpResponse HttpMulti::Wait(const Call& call) {
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [&] { return call->done; });
  return call->response;
}

long HttpMulti::ConnectionsOpened() const {
  std::lock_guard lock(mu_);
  return connections_;
}

void HttpMulti::Finish(Transfer& t, CURLcode rc) {
  HttpResponse& r = t.response;
  r.rc = rc;
  if (rc != CURLE_OK) r.error = t.errbuf[0] ? t.errbuf : curl_easy_strerror(rc);
  long connects = 0;
  if (t.easy) {
    curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_getinfo(t.easy, CURLINFO_HTTP_VERSION, &r.http_version);
    curl_easy_getinfo(t.easy, CURLINFO_NUM_CONNECTS, &connects);
    // Kept for the next request (creating one costs more than resetting it); the connections
    // themselves belong to the multi handle.
    curl_easy_reset(t.easy);
    if (idle_.size() < kMaxIdleHandles) {
      idle_.push_back(t.easy);
    } else {
      curl_easy_cleanup(t.easy);
    }
    t.easy = nullptr;
  }
  r.refused = t.guard.refused;
  r.refused_why = t.guard.why;
  {
    std::lock_guard lock(mu_);
    connections_ += connects;
    t.done = true;
  }
  if (t.on_done) {
    t.on_done(r);
  } else {
    done_cv_.notify_all();
  }
}

void HttpMulti::Run() {
  SetThreadName(name_);
  for (;;) {
    std::deque<Call> fresh;
    bool stop;
    {
      std::lock_guard lock(mu_);
      fresh.swap(incoming_);
      stop = stopping_;
    }
    if (stop) {
      for (auto& [easy, t] : running_) curl_multi_remove_handle(multi_, easy);
      for (auto& [easy, t] : running_) fresh.push_back(t);
      running_.clear();
      for (Call& t : fresh) {
        snprintf(t->errbuf, sizeof t->errbuf, "%s is shutting down", what_.c_str());
        Finish(*t, CURLE_ABORTED_BY_CALLBACK);
      }
      return;
    }
    for (Call& t : fresh) {
      if (!idle_.empty()) {
        t->easy = idle_.back();
        idle_.pop_back();
      } else {
        t->easy = curl_easy_init();
      }
      if (!t->easy || !Configure(*t) || curl_multi_add_handle(multi_, t->easy) != CURLM_OK) {
        Finish(*t, CURLE_OUT_OF_MEMORY);
        continue;
      }
      running_.emplace(t->easy, t);
    }
    int still = 0;
    curl_multi_perform(multi_, &still);
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi_, &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      CURL* easy = m->easy_handle;
      CURLcode rc = m->data.result;
      auto it = running_.find(easy);
      curl_multi_remove_handle(multi_, easy);
      if (it == running_.end()) continue;
      Call t = it->second;
      running_.erase(it);
      Finish(*t, rc);
    }
    {
      // Requests that came while this thread was busy are started before it waits.
      std::lock_guard lock(mu_);
      if (!incoming_.empty() || stopping_) continue;
      polling_ = true;
    }
    // Wakes for socket activity, curl's timers, curl_multi_wakeup (new requests, stop).
    curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
    std::lock_guard lock(mu_);
    polling_ = false;
  }
}

}  // namespace herald
