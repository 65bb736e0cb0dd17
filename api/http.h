// The HTTP layer under Herald's API: routes as OpenAPI-style path templates, authentication per
// route, RFC 7807 problem responses rendered in one place, and a connection pool that grows with
// the number of open connections (each live stream holds one for as long as it is open).
#pragma once

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/auth.h"
#include "core/status.h"

namespace herald::api {

// An error as the client sees it (application/problem+json). `code` is stable; docs/api.md lists
// every code with its status.
struct Problem {
  int status = 500;
  std::string code;
  std::string detail;
  std::string field;  // the request field at fault, if any
  std::vector<std::pair<std::string, std::string>> headers;
  nlohmann::json extra = nlohmann::json::object();  // further members of the problem document

  static Problem Make(int status, std::string code, std::string detail, std::string field = "") {
    return Problem{status, std::move(code), std::move(detail), std::move(field), {}, nlohmann::json::object()};
  }
};

// The store failed: 503 with Retry-After; the store's own words go to the log only.
Problem StoreUnavailable(const Status& s);

// The field a validation message names: "contacts.push[1].endpoint: required" -> its prefix.
std::string FieldOf(const Status& s);

// Opaque paging cursors: `kind` ("i1", "d1") keeps one route's cursor from being used on another.
std::string EncodeCursor(const std::string& kind, long long position);
std::optional<long long> DecodeCursor(const std::string& kind, const std::string& cursor, long long min);

// Writes `p` as the response: status, headers and the problem document.
void RenderProblem(const Problem& p, const std::string& instance, httplib::Response& res);

// Who may call a route.
enum class Access {
  kPublic,        // no credentials
  kService,       // any service key
  kScope,         // a service key with the route's scope
  kUser,          // the token of the user named by the path's {id}
  kUserOrScope,   // that user's token, or a service key with the route's scope
};

// One request being handled.
struct Call {
  const httplib::Request& req;
  httplib::Response& res;
  std::map<std::string, std::string> params;  // the path's {name} segments
  Principal who;

  void Json(int status, const nlohmann::json& body);
  void NoContent() { res.status = 204; }
  void Fail(const Problem& p) { RenderProblem(p, req.path, res); }
  // Parses the body as a JSON object of at most `max_bytes`, with one of `content_types`. On a
  // problem renders it and returns false.
  bool ReadJson(nlohmann::json& out, size_t max_bytes, const std::vector<std::string>& content_types = {"application/json"});
  // Only the size and content type checks of ReadJson, for bodies another parser reads.
  bool CheckBody(size_t max_bytes, const std::vector<std::string>& content_types);
  // An integer query parameter within [min, max], left as is when absent; on a bad value renders
  // 400 invalid_parameter and returns false.
  bool IntQuery(const std::string& name, long long min, long long max, long long& out);
  // A query parameter, or `fallback`.
  std::string Query(const std::string& name, const std::string& fallback = "") const;
};

using Handler = std::function<void(Call&)>;

struct Route {
  std::string method;  // GET, POST, PUT, PATCH, DELETE
  std::string path;    // "/v1/users/{id}/preferences"
  Access access = Access::kPublic;
  std::string scope;   // for kScope and kUserOrScope
  Handler handler;
};

class Router {
 public:
  explicit Router(const Authenticator& auth) : auth_(auth) {}
  void Add(Route route);
  const std::vector<Route>& Routes() const { return routes_; }
  // Matches the path (404 route_not_found), the method (405 with Allow), authenticates (401/403)
  // and runs the handler; an exception becomes a 500 problem.
  void Dispatch(const httplib::Request& req, httplib::Response& res) const;
  // The route template a request matched, for metrics ("" if none).
  std::string Match(const std::string& method, const std::string& path) const;

 private:
  static bool MatchPath(const std::string& tmpl, const std::string& path, std::map<std::string, std::string>& params);
  std::optional<Problem> Authorize(const Route& route, Call& call) const;

  const Authenticator& auth_;
  std::vector<Route> routes_;
};

// httplib's task queue, growing one thread per open connection up to `max_threads` and keeping
// `min_threads` ready; idle extra threads end after a while. Beyond the maximum, connections wait
// in a queue (the listen backlog holds the rest).
class ConnectionPool final : public httplib::TaskQueue {
 public:
  ConnectionPool(size_t min_threads, size_t max_threads);
  ~ConnectionPool() override;
  void enqueue(std::function<void()> fn) override;
  void shutdown() override;
  size_t Threads();
  size_t Busy();

 private:
  void Work();

  const size_t min_, max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0, live_ = 0;
  bool stopping_ = false;
};

}  // namespace herald::api
