#include "api/http.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

#include "core/base64.h"
#include "core/thread_name.h"

namespace herald::api {
namespace {

const char* TitleFor(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    default: return status >= 500 ? "Internal Server Error" : "Error";
  }
}

std::vector<std::string> Segments(const std::string& path) {
  std::vector<std::string> out;
  size_t start = 1;
  if (path.empty() || path[0] != '/') return out;
  for (;;) {
    size_t slash = path.find('/', start);
    out.push_back(path.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return out;
}

std::string MediaType(const std::string& content_type) {
  std::string t = content_type.substr(0, content_type.find(';'));
  while (!t.empty() && t.back() == ' ') t.pop_back();
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  return t;
}

}  // namespace

void RenderProblem(const Problem& p, const std::string& instance, httplib::Response& res) {
  nlohmann::json doc = {{"type", "https://herald.dev/problems/" + p.code},
                        {"title", TitleFor(p.status)},
                        {"status", p.status},
                        {"code", p.code},
                        {"detail", p.detail},
                        {"instance", instance}};
  if (!p.field.empty()) doc["field"] = p.field;
  for (auto it = p.extra.begin(); it != p.extra.end(); ++it) doc[it.key()] = it.value();
  res.status = p.status;
  for (const auto& [k, v] : p.headers) res.set_header(k, v);
  res.set_content(doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                  "application/problem+json");
}

void Call::Json(int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", "application/json");
}

Problem StoreUnavailable(const Status& s) {
  spdlog::error("api: store: {}", s.message());
  Problem p = Problem::Make(503, "store_unavailable", "the store cannot be used right now; try again shortly");
  p.headers.push_back({"Retry-After", "5"});
  return p;
}

std::string FieldOf(const Status& s) {
  size_t colon = s.message().find(": ");
  return colon == std::string::npos ? "" : s.message().substr(0, colon);
}

std::string EncodeCursor(const std::string& kind, long long position) {
  return Base64UrlEncode(kind + ":" + std::to_string(position));
}

std::optional<long long> DecodeCursor(const std::string& kind, const std::string& cursor, long long min) {
  auto raw = Base64UrlDecode(cursor);
  const std::string prefix = kind + ":";
  if (!raw || raw->rfind(prefix, 0) != 0) return std::nullopt;
  long long n = 0;
  auto [end, ec] = std::from_chars(raw->data() + prefix.size(), raw->data() + raw->size(), n);
  if (ec != std::errc() || end != raw->data() + raw->size() || n < min) return std::nullopt;
  return n;
}

bool Call::IntQuery(const std::string& name, long long min, long long max, long long& out) {
  if (!req.has_param(name.c_str())) return true;
  std::string v = req.get_param_value(name.c_str());
  long long n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n < min || n > max) {
    Fail(Problem::Make(400, "invalid_parameter",
                       name + " must be an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                           " (got \"" + v + "\")",
                       name));
    return false;
  }
  out = n;
  return true;
}

bool Call::CheckBody(size_t max_bytes, const std::vector<std::string>& content_types) {
  if (req.body.size() > max_bytes) {
    Fail(Problem::Make(413, "payload_too_large",
                       "the body has " + std::to_string(req.body.size()) + " bytes; at most " +
                           std::to_string(max_bytes) + " are accepted here"));
    return false;
  }
  std::string type = MediaType(req.get_header_value("Content-Type"));
  if (std::find(content_types.begin(), content_types.end(), type) == content_types.end()) {
    std::string list;
    for (const std::string& t : content_types) list += (list.empty() ? "" : ", ") + t;
    Fail(Problem::Make(415, "unsupported_media_type",
                       "Content-Type must be " + list + (type.empty() ? " (none given)" : " (got " + type + ")")));
    return false;
  }
  return true;
}

bool Call::ReadJson(nlohmann::json& out, size_t max_bytes, const std::vector<std::string>& content_types) {
  if (!CheckBody(max_bytes, content_types)) return false;
  out = nlohmann::json::parse(req.body, nullptr, false);
  if (out.is_discarded()) {
    // Parse again for the position: the non-throwing parse does not say where it failed.
    std::string why = "the body is not valid JSON";
    try {
      auto unused = nlohmann::json::parse(req.body);
      (void)unused;
    } catch (const nlohmann::json::parse_error& e) {
      why += " (at byte " + std::to_string(e.byte) + ")";
    }
    Fail(Problem::Make(400, "malformed_json", why));
    return false;
  }
  if (!out.is_object()) {
    Fail(Problem::Make(422, "invalid_field", "the body must be a JSON object", "/"));
    return false;
  }
  return true;
}

std::string Call::Query(const std::string& name, const std::string& fallback) const {
  return req.has_param(name.c_str()) ? req.get_param_value(name.c_str()) : fallback;
}

void Router::Add(Route route) { routes_.push_back(std::move(route)); }

bool Router::MatchPath(const std::string& tmpl, const std::string& path, std::map<std::string, std::string>& params) {
  auto t = Segments(tmpl), p = Segments(path);
  if (t.size() != p.size()) return false;
  std::map<std::string, std::string> found;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i].size() > 2 && t[i].front() == '{' && t[i].back() == '}') {
      if (p[i].empty()) return false;
      found[t[i].substr(1, t[i].size() - 2)] = p[i];
    } else if (t[i] != p[i]) {
      return false;
    }
  }
  params = std::move(found);
  return true;
}

std::string Router::Match(const std::string& method, const std::string& path) const {
  std::map<std::string, std::string> params;
  for (const Route& r : routes_) {
    if (r.method == method && MatchPath(r.path, path, params)) return r.path;
  }
  return "";
}

std::optional<Problem> Router::Authorize(const Route& route, Call& call) const {
  if (route.access == Access::kPublic) return std::nullopt;
  if (auto failure = auth_.Authenticate(call.req.get_header_value("Authorization"), call.who)) {
    Problem p = Problem::Make(401, failure->code, failure->detail);
    p.headers.push_back({"WWW-Authenticate", "Bearer realm=\"herald\""});
    return p;
  }
  const bool service = call.who.kind == Principal::Kind::kService;
  const bool user = call.who.kind == Principal::Kind::kUser;
  switch (route.access) {
    case Access::kPublic: return std::nullopt;
    case Access::kService:
      if (service) return std::nullopt;
      return Problem::Make(403, "forbidden", "this route needs a service API key, not a user token");
    case Access::kScope:
      if (service && call.who.HasScope(route.scope)) return std::nullopt;
      return Problem::Make(403, "insufficient_scope",
                           service ? "the API key \"" + call.who.name + "\" lacks the scope " + route.scope
                                   : "this route needs a service API key with the scope " + route.scope);
    case Access::kUser:
    case Access::kUserOrScope:
      if (user && call.who.name == call.params["id"]) return std::nullopt;
      if (user) return Problem::Make(403, "forbidden", "a user's token gives access to that user's data only");
      if (route.access == Access::kUserOrScope && call.who.HasScope(route.scope)) return std::nullopt;
      return Problem::Make(403, route.access == Access::kUser ? "forbidden" : "insufficient_scope",
                           route.access == Access::kUser
                               ? "this route needs the user's own token"
                               : "the API key \"" + call.who.name + "\" lacks the scope " + route.scope);
  }
  return std::nullopt;
}

void Router::Dispatch(const httplib::Request& req, httplib::Response& res) const {
  Call call{req, res, {}, {}};
  std::string allow;
  const Route* route = nullptr;
  const std::string method = req.method == "HEAD" ? "GET" : req.method;  // httplib drops HEAD's body
  for (const Route& r : routes_) {
    std::map<std::string, std::string> params;
    if (!MatchPath(r.path, req.path, params)) continue;
    if (r.method == method) {
      route = &r;
      call.params = std::move(params);
      break;
    }
    allow += (allow.empty() ? "" : ", ") + r.method;
  }
  if (!route) {
    if (allow.empty()) return call.Fail(Problem::Make(404, "route_not_found", "no route " + req.method + " " + req.path));
    if (req.method == "OPTIONS") {
      res.set_header("Allow", allow);
      res.status = 204;
      return;
    }
    Problem p = Problem::Make(405, "method_not_allowed", req.method + " is not allowed here (allowed: " + allow + ")");
    p.headers.push_back({"Allow", allow});
    return call.Fail(p);
  }
  if (auto p = Authorize(*route, call)) return call.Fail(*p);
  try {
    route->handler(call);
  } catch (const std::exception& e) {
    spdlog::error("api: {} {} failed: {}", req.method, route->path, e.what());
    call.Fail(Problem::Make(500, "internal", "the server failed to handle this request; it was logged"));
  }
}

ConnectionPool::ConnectionPool(size_t min_threads, size_t max_threads)
    : min_(min_threads), max_(std::max(min_threads, max_threads)) {}

ConnectionPool::~ConnectionPool() { shutdown(); }

void ConnectionPool::enqueue(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  if (stopping_) return;
  tasks_.push_back(std::move(fn));
  if (idle_ < tasks_.size() && live_ < max_) {
    ++live_;
    ++idle_;  // counted idle until it takes a task
    std::thread([this] { Work(); }).detach();
  }
  cv_.notify_one();
}

void ConnectionPool::Work() {
  SetThreadName("api-conn");
  std::unique_lock lock(mu_);
  for (;;) {
    bool got = cv_.wait_for(lock, std::chrono::seconds(30), [&] { return stopping_ || !tasks_.empty(); });
    if (!got && live_ > min_) break;  // idle too long, and more threads than the minimum
    if (tasks_.empty()) {
      if (stopping_) break;
      continue;
    }
    auto fn = std::move(tasks_.front());
    tasks_.pop_front();
    --idle_;
    lock.unlock();
    fn();
    lock.lock();
    ++idle_;
  }
  --idle_;
  --live_;
  cv_.notify_all();
}

void ConnectionPool::shutdown() {
  std::unique_lock lock(mu_);
  stopping_ = true;
  cv_.notify_all();
  // Queued connections still run (httplib closes them once it stops); then every thread ends.
  cv_.wait(lock, [&] { return live_ == 0; });
}

size_t ConnectionPool::Threads() {
  std::lock_guard lock(mu_);
  return live_;
}

size_t ConnectionPool::Busy() {
  std::lock_guard lock(mu_);
  return live_ - idle_;
}

}  // namespace herald::api
