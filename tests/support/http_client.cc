#include "tests/support/http_client.h"

#include <curl/curl.h>

#include <algorithm>

namespace herald::test {
namespace {

size_t Append(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

size_t Header(char* data, size_t size, size_t n, void* out) {
  std::string line(data, size * n);
  size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(value.begin());
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    (*static_cast<std::map<std::string, std::string>*>(out))[name] = value;
  }
  return size * n;
}

curl_slist* HeaderList(const std::vector<std::string>& headers) {
  curl_slist* list = nullptr;
  for (const std::string& h : headers) list = curl_slist_append(list, h.c_str());
  return list;
}

}  // namespace

nlohmann::json HttpResponse::Json() const { return nlohmann::json::parse(body, nullptr, false); }

std::string HttpResponse::Header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? "" : it->second;
}

HttpResponse Http(const std::string& method, const std::string& url, const std::string& body,
                  const std::vector<std::string>& headers, Millis timeout) {
  HttpResponse r;
  CURL* curl = curl_easy_init();
  curl_slist* list = HeaderList(headers);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  if (method == "HEAD") curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  else curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method != "GET" && method != "DELETE" && method != "HEAD" && method != "OPTIONS") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Append);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, Header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r.headers);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  CURLcode rc = curl_easy_perform(curl);
  if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  else r.error = curl_easy_strerror(rc);
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return r;
}

SseClient::SseClient(const std::string& url, const std::vector<std::string>& headers) {
  thread_ = std::thread([this, url, headers] {
    CURL* curl = curl_easy_init();
    curl_ = curl;
    curl_slist* list = HeaderList(headers);
    list = curl_slist_append(list, "Accept: text/event-stream");
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnData);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, this);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION,
                     +[](void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> int {
                       return static_cast<SseClient*>(self)->closing_.load() ? 1 : 0;
                     });
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, this);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 120000L);  // a test never needs a stream longer
    curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(list);
    curl_easy_cleanup(curl);
    std::lock_guard lock(mu_);
    if (status) status_ = status;
    done_ = true;
    cv_.notify_all();
  });
}

SseClient::~SseClient() { Close(); }

void SseClient::Close() {
  closing_ = true;
  if (thread_.joinable()) thread_.join();
}

size_t SseClient::OnData(char* data, size_t size, size_t n, void* p) {
  auto* self = static_cast<SseClient*>(p);
  if (self->closing_) return 0;
  std::lock_guard lock(self->mu_);
  if (self->status_ == 0) curl_easy_getinfo(static_cast<CURL*>(self->curl_), CURLINFO_RESPONSE_CODE, &self->status_);
  self->buffer_.append(data, size * n);
  self->Parse();
  self->cv_.notify_all();
  return size * n;
}

// REQUIRES: mu_ held. Lines end in \n; an empty line ends an event.
void SseClient::Parse() {
  size_t nl;
  while ((nl = buffer_.find('\n')) != std::string::npos) {
    std::string line = buffer_.substr(0, nl);
    buffer_.erase(0, nl + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {
      if (!pending_.data.empty() || !pending_.id.empty()) events_.push_back(pending_);
      pending_ = Event{};
      continue;
    }
    if (line[0] == ':') {
      ++comments_;
      continue;
    }
    size_t colon = line.find(':');
    std::string field = line.substr(0, colon);
    std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.erase(0, 1);
    if (field == "id") pending_.id = value;
    else if (field == "event") pending_.event = value;
    else if (field == "data") pending_.data += (pending_.data.empty() ? "" : "\n") + value;
  }
}

bool SseClient::WaitEvents(size_t n, Millis timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return events_.size() >= n; });
}

bool SseClient::WaitOpen(Millis timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return status_ != 0 || done_; });
}

bool SseClient::WaitEnded(Millis timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return done_; });
}

std::vector<SseClient::Event> SseClient::Events() {
  std::lock_guard lock(mu_);
  return events_;
}

long SseClient::Status() {
  std::lock_guard lock(mu_);
  return status_;
}

size_t SseClient::Comments() {
  std::lock_guard lock(mu_);
  return comments_;
}

}  // namespace herald::test
