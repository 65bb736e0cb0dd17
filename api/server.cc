#include "api/server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <charconv>

#include "broker/topology.h"
#include "channels/registry.h"
#include "core/metrics.h"
#include "core/time.h"
#include "engine/control.h"
#include "engine/event.h"
#include "engine/notification_engine.h"
#include "engine/preferences.h"

namespace herald::api {
namespace {

constexpr size_t kMinThreads = 8;
constexpr int kListenBacklog = 1024;
constexpr size_t kMaxPage = 100;
constexpr size_t kStreamBatch = 200;

CounterFamily& Requests() {
  static CounterFamily& f = Metrics::Global().Counters(
      "herald_http_requests_total", "API requests by route template and status code.", {"method", "route", "status"});
  return f;
}

Problem InvalidFrom(const Status& s) { return Problem::Make(422, "invalid_field", s.message(), FieldOf(s)); }

nlohmann::json InboxJson(const InboxEntry& e) {
  auto data = nlohmann::json::parse(e.data_json, nullptr, false);
  return {{"id", e.notification_id},
          {"seq", e.seq},
          {"event_id", e.event_id},
          {"type", e.event_type},
          {"title", e.title},
          {"body", e.body},
          {"data", data.is_discarded() ? nlohmann::json::object() : data},
          {"created_at", FormatRfc3339(e.created_at)},
          {"read_at", e.read_at ? nlohmann::json(FormatRfc3339(*e.read_at)) : nlohmann::json(nullptr)}};
}

}  // namespace

// One open live stream: woken by the hub (or the poll timer), it reads what is new from the inbox
// so entries reach the client in sequence order, each once, whichever thread wrote them.
struct ApiServer::Stream {
  std::string user;
  std::mutex mu;
  std::condition_variable cv;
  bool dirty = false;
  bool closed = false;
  long long last_seq = 0;
  uint64_t hub_id = 0;
  std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
  std::optional<SystemTime> token_expires;  // the stream ends then; the client reconnects with a new token
};

ApiServer::ApiServer(ApiDeps deps) : d_(deps), config_(*deps.config), auth_(deps.config->api, *deps.clock) {}

ApiServer::~ApiServer() { Stop(); }

std::vector<std::string> ApiServer::RouteList() {
  static const Config kEmpty;
  Authenticator auth(kEmpty.api, SystemClock::Instance());
  Router router(auth);
  AddRoutes(nullptr, router);  // only the table is read; no handler runs
  std::vector<std::string> out;
  for (const Route& r : router.Routes()) out.push_back(r.method + " " + r.path);
  return out;
}

void ApiServer::AddRoutes(ApiServer* self, Router& r) {
  auto bind = [self](void (ApiServer::*fn)(Call&)) { return [self, fn](Call& c) { (self->*fn)(c); }; };
  r.Add({"POST", "/v1/events", Access::kScope, "events:write", bind(&ApiServer::PostEvent)});
  r.Add({"GET", "/v1/users/{id}/preferences", Access::kUserOrScope, "prefs:write", bind(&ApiServer::GetPreferences)});
  r.Add({"PUT", "/v1/users/{id}/preferences", Access::kUserOrScope, "prefs:write", bind(&ApiServer::PutPreferences)});
  r.Add({"PATCH", "/v1/users/{id}/preferences", Access::kUserOrScope, "prefs:write", bind(&ApiServer::PatchPreferences)});
  r.Add({"POST", "/v1/users/{id}/presence", Access::kUser, "", bind(&ApiServer::PostPresence)});
  r.Add({"GET", "/v1/users/{id}/notifications", Access::kUser, "", bind(&ApiServer::ListNotifications)});
  r.Add({"POST", "/v1/users/{id}/notifications/read-all", Access::kUser, "", bind(&ApiServer::MarkAllRead)});
  r.Add({"GET", "/v1/users/{id}/notifications/unread-count", Access::kUser, "", bind(&ApiServer::UnreadCount)});
  r.Add({"POST", "/v1/users/{id}/notifications/{nid}/read", Access::kUser, "", bind(&ApiServer::MarkRead)});
  r.Add({"GET", "/v1/users/{id}/stream", Access::kUser, "", bind(&ApiServer::OpenStream)});
  r.Add({"GET", "/v1/notifications/{nid}/trace", Access::kService, "", bind(&ApiServer::GetTrace)});
  r.Add({"GET", "/v1/traces", Access::kService, "", bind(&ApiServer::FindTrace)});
  r.Add({"GET", "/v1/dead-letters", Access::kScope, "admin", bind(&ApiServer::ListDeadLetters)});
  r.Add({"POST", "/v1/dead-letters/replay", Access::kScope, "admin", bind(&ApiServer::ReplayDeadLetters)});
  r.Add({"DELETE", "/v1/dead-letters", Access::kScope, "admin", bind(&ApiServer::PurgeDeadLetters)});
  r.Add({"GET", "/healthz", Access::kPublic, "", bind(&ApiServer::Healthz)});
  r.Add({"GET", "/readyz", Access::kPublic, "", bind(&ApiServer::Readyz)});
  r.Add({"GET", "/metrics", Access::kPublic, "", bind(&ApiServer::MetricsText)});
}

Status ApiServer::Start() {
  const std::string& listen = config_.api.listen;
  size_t colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = std::stoi(listen.substr(colon + 1));

  router_ = std::make_unique<Router>(auth_);
  AddRoutes(this, *router_);
  server_ = std::make_unique<httplib::Server>();
  httplib::Server& svr = *server_;
  const size_t max_threads = static_cast<size_t>(config_.api.max_connections);
  svr.new_task_queue = [max_threads] { return new ConnectionPool(kMinThreads, max_threads); };
  const size_t max_body = static_cast<size_t>(std::max(config_.api.max_body_bytes, config_.events.max_body_bytes));
  svr.set_payload_max_length(max_body);
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(config_.api.request_timeout).count();
  svr.set_read_timeout(secs, 0);
  svr.set_write_timeout(secs, 0);
  svr.set_keep_alive_max_count(1000);
  svr.set_tcp_nodelay(true);
  // httplib listens with a backlog of 5: thousands of clients connecting at once (every app
  // re-opening its stream after a deploy) would see refused or dropped connections.
  int listen_fd = -1;
  svr.set_socket_options([&listen_fd](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd = sock;
  });

  auto handler = [this](const httplib::Request& req, httplib::Response& res) {
    router_->Dispatch(req, res);
    std::string route = router_->Match(req.method == "HEAD" ? "GET" : req.method, req.path);
    Requests().With({req.method, route.empty() ? "unmatched" : route, std::to_string(res.status)}).Inc();
  };
  svr.Get(".*", handler);  // HEAD too
  svr.Post(".*", handler);
  svr.Put(".*", handler);
  svr.Patch(".*", handler);
  svr.Delete(".*", handler);
  svr.Options(".*", handler);
  // What httplib answers by itself (a body over the limit, an unknown method, a bad request line)
  // still gets a problem document.
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    switch (res.status) {
      case 413:
        return RenderProblem(Problem::Make(413, "payload_too_large", "the request body is too large"), req.path, res);
      case 404: return RenderProblem(Problem::Make(404, "route_not_found", "no route " + req.method + " " + req.path), req.path, res);
      case 400: return RenderProblem(Problem::Make(400, "bad_request", "the request is malformed"), req.path, res);
      default:
        return RenderProblem(Problem::Make(res.status, "http_" + std::to_string(res.status), "the request failed"),
                             req.path, res);
    }
  });

  if (port == 0) {
    port = svr.bind_to_any_port(host);
    if (port <= 0) return Status::Unavailable("api.listen: cannot bind " + listen);
  } else if (!svr.bind_to_port(host, port)) {
    return Status::Unavailable("api.listen: cannot bind " + listen + " (in use, or not an address of this machine)");
  }
  if (listen_fd >= 0) ::listen(listen_fd, kListenBacklog);  // raises the backlog of the bound socket
  port_ = port;
  Metrics::Global().Gauge("herald_dead_letters", "Dead letters in the store, waiting for an operator.", [this] {
    size_t n = 0;
    return d_.store->CountDeadLetters(n).ok() ? static_cast<double>(n) : std::nan("");
  });
  Metrics::Global().Gauge("herald_api_streams_open", "Live streams open on this process.",
                          [this] { return static_cast<double>(streams_open_.load()); });
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
       !server_->is_running() && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  spdlog::info("api listening on {}:{}", host, port_);
  return Status::Ok();
}

void ApiServer::Stop() {
  if (stopping_.exchange(true) || !server_) return;
  {
    std::lock_guard lock(streams_mu_);
    for (const auto& s : streams_) {
      std::lock_guard sl(s->mu);
      s->closed = true;
      s->cv.notify_all();
    }
  }
  server_->stop();
  if (thread_.joinable()) thread_.join();
  Metrics::Global().RemoveGauge("herald_dead_letters");
  Metrics::Global().RemoveGauge("herald_api_streams_open");
}

// ---- events ----

void ApiServer::PostEvent(Call& c) {
  // ParseEvent reads the body itself, with the engine's limits (nesting depth before parsing).
  if (!c.CheckBody(static_cast<size_t>(config_.events.max_body_bytes), {"application/json", "application/cloudevents+json"})) {
    return;
  }
  EventLimits limits;
  limits.max_body_bytes = static_cast<size_t>(config_.events.max_body_bytes);
  limits.max_recipients = static_cast<size_t>(config_.events.max_recipients);
  limits.channels = config_.EnabledChannels();
  Event event;
  auto why = ParseEvent(c.req.body, limits, d_.clock->Now(), event);
  if (!why) why = CheckEventType(config_, event);
  if (why && why->field == "body") return c.Fail(Problem::Make(400, "malformed_json", why->ToString(), "body"));
  if (why) return c.Fail(Problem::Make(422, "invalid_event", why->ToString(), why->field));

  auto unavailable = [&](const std::string& detail) {
    Problem p = Problem::Make(503, "broker_unavailable", detail);
    p.headers.push_back({"Retry-After", "5"});
    c.Fail(p);
  };
  // Refused at once rather than queued: nothing may wait in this process for a broker that is gone.
  if (!d_.publisher->Connected()) return unavailable("the broker is not reachable; the event was not accepted");
  broker::Message m;
  m.exchange = broker::kEventsExchange;
  m.routing_key = event.type;
  m.body = c.req.body;
  m.content_type = "application/cloudevents+json";
  m.message_id = event.id;
  Status s = d_.publisher->PublishAndWait(std::move(m), config_.api.publish_timeout);
  if (!s.ok()) {
    spdlog::warn("api: event {} not confirmed: {}", event.id, s.message());
    return unavailable("the broker did not confirm the event (" + s.message() +
                       "); send it again with the same id: a repeat is recognised and not delivered twice");
  }
  c.Json(202, {{"id", event.id}, {"type", event.type}, {"status", "accepted"}});
}

// ---- preferences ----

// The stored preferences of the path's user, or the defaults; false once a problem was rendered.
bool ApiServer::LoadPreferences(Call& c, Preferences& out) {
  const std::string& user = c.params["id"];
  if (std::string why = CheckUserId(user); !why.empty()) {
    c.Fail(Problem::Make(400, "invalid_parameter", "user id: " + why, "id"));
    return false;
  }
  Status s = d_.store->GetPreferences(user, out);
  if (s.code() == Status::Code::kNotFound) {
    out = DefaultPreferences(user);
  } else if (!s.ok()) {
    c.Fail(StoreUnavailable(s));
    return false;
  }
  return true;
}

void ApiServer::GetPreferences(Call& c) {
  Preferences p;
  if (LoadPreferences(c, p)) c.Json(200, PreferencesToJson(p));
}

void ApiServer::PutPreferences(Call& c) {
  if (std::string why = CheckUserId(c.params["id"]); !why.empty()) {
    return c.Fail(Problem::Make(400, "invalid_parameter", "user id: " + why, "id"));
  }
  nlohmann::json doc;
  if (!c.ReadJson(doc, static_cast<size_t>(config_.api.max_body_bytes))) return;
  StorePreferences(c, doc);
}

void ApiServer::PatchPreferences(Call& c) {
  nlohmann::json patch;
  if (!c.ReadJson(patch, static_cast<size_t>(config_.api.max_body_bytes),
                  {"application/merge-patch+json", "application/json"})) {
    return;
  }
  Preferences current;
  if (LoadPreferences(c, current)) StorePreferences(c, MergePatch(PreferencesToJson(current), patch));
}

void ApiServer::StorePreferences(Call& c, const nlohmann::json& doc) {
  const std::string& user = c.params["id"];
  Preferences p;
  if (Status s = ParsePreferences(doc, user, KnownChannels(), p); !s.ok()) return c.Fail(InvalidFrom(s));
  if (Status s = d_.store->PutPreferences(p); !s.ok()) return c.Fail(StoreUnavailable(s));
  if (d_.cache) d_.cache->Invalidate(user);
  // Other processes drop their cached copy on the signal; without it they see the store's change
  // log within a second (engine/prefs_cache.h).
  if (d_.publisher->Connected()) {
    // Not awaited: the change is stored, and a slow broker must not slow the caller down.
    broker::Message m;
    m.exchange = broker::kControlExchange;
    m.body = PrefsChangedSignal(user);
    m.persistent = false;
    d_.publisher->Publish(std::move(m), [user](const Status& s) {
      if (!s.ok()) spdlog::warn("api: preferences of {} stored, but the change was not announced: {}", user, s.message());
    });
  } else {
    spdlog::warn("api: preferences of {} stored; broker unreachable, other processes see them within {}", user,
                 FormatDuration(PreferenceCache::kPollEvery));
  }
  c.Json(200, PreferencesToJson(p));
}

// ---- presence ----

void ApiServer::PostPresence(Call& c) {
  nlohmann::json doc;
  if (!c.ReadJson(doc, 1024)) return;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (it.key() != "state") {
      return c.Fail(Problem::Make(422, "invalid_field", it.key() + ": unknown field (known: state)", it.key()));
    }
  }
  std::string state = doc.contains("state") && doc["state"].is_string() ? doc["state"].get<std::string>() : "";
  if (state != "active" && state != "background") {
    return c.Fail(Problem::Make(422, "invalid_field", "state: must be \"active\" or \"background\"", "state"));
  }
  d_.presence->Heartbeat(c.params["id"], state == "active", d_.clock->Now());
  c.Json(200, {{"state", state},
               {"ttl_seconds", std::chrono::duration_cast<std::chrono::seconds>(config_.engine.presence_ttl).count()}});
}

// ---- inbox ----

void ApiServer::ListNotifications(Call& c) {
  long long limit = 20;
  if (!c.IntQuery("limit", 1, kMaxPage, limit)) return;
  long long before = 0;
  if (std::string cursor = c.Query("cursor"); !cursor.empty()) {
    auto seq = DecodeCursor("i1", cursor, 1);
    if (!seq) return c.Fail(Problem::Make(400, "invalid_cursor", "cursor: not a cursor this API gave out", "cursor"));
    before = *seq;
  }
  std::vector<InboxEntry> entries;
  if (Status s = d_.store->ListInbox(c.params["id"], before, static_cast<size_t>(limit) + 1, entries); !s.ok()) {
    return c.Fail(StoreUnavailable(s));
  }
  const bool more = entries.size() > static_cast<size_t>(limit);
  if (more) entries.resize(static_cast<size_t>(limit));
  nlohmann::json items = nlohmann::json::array();
  for (const InboxEntry& e : entries) items.push_back(InboxJson(e));
  c.Json(200, {{"items", items},
               {"next_cursor", more ? nlohmann::json(EncodeCursor("i1", entries.back().seq)) : nlohmann::json(nullptr)}});
}

void ApiServer::MarkRead(Call& c) {
  bool found = false;
  if (Status s = d_.store->MarkRead(c.params["id"], c.params["nid"], d_.clock->Now(), found); !s.ok()) {
    return c.Fail(StoreUnavailable(s));
  }
  if (!found) return c.Fail(Problem::Make(404, "not_found", "no notification " + c.params["nid"] + " in this inbox"));
  c.NoContent();
}

void ApiServer::MarkAllRead(Call& c) {
  size_t changed = 0;
  if (Status s = d_.store->MarkAllRead(c.params["id"], d_.clock->Now(), changed); !s.ok()) return c.Fail(StoreUnavailable(s));
  c.Json(200, {{"marked", changed}});
}

void ApiServer::UnreadCount(Call& c) {
  size_t n = 0;
  if (Status s = d_.store->UnreadCount(c.params["id"], n); !s.ok()) return c.Fail(StoreUnavailable(s));
  c.Json(200, {{"unread", n}});
}

// ---- live stream ----

void ApiServer::OpenStream(Call& c) {
  const std::string user = c.params["id"];
  auto stream = std::make_shared<Stream>();
  stream->user = user;
  stream->token_expires = c.who.expires_at;
  std::string resume = c.req.get_header_value("Last-Event-ID");
  std::string resume_field = "Last-Event-ID";
  if (resume.empty() && c.req.has_param("last_event_id")) {
    // For clients that reconnect by URL (the Authorization header is still required).
    resume = c.Query("last_event_id");
    resume_field = "last_event_id";
  }
  bool resuming = !resume.empty();
  if (resuming) {
    auto [end, ec] = std::from_chars(resume.data(), resume.data() + resume.size(), stream->last_seq);
    if (ec != std::errc() || end != resume.data() + resume.size() || stream->last_seq < 0) {
      return c.Fail(Problem::Make(400, "invalid_parameter",
                                  resume_field + ": must be an id this stream sent (got \"" + resume + "\")", resume_field));
    }
  }
  // Subscribe before reading where the stream starts: an entry written in between wakes it.
  stream->hub_id = d_.hub->Subscribe(user, [stream](const InboxEntry&) {
    std::lock_guard lock(stream->mu);
    stream->dirty = true;
    stream->cv.notify_all();
  });
  if (!resuming) {
    std::vector<InboxEntry> newest;
    if (Status s = d_.store->ListInbox(user, 0, 1, newest); !s.ok()) {
      d_.hub->Unsubscribe(stream->hub_id);
      return c.Fail(StoreUnavailable(s));
    }
    stream->last_seq = newest.empty() ? 0 : newest.front().seq;
  }
  {
    std::lock_guard lock(stream->mu);
    stream->dirty = true;  // reads what came since last_seq: with Last-Event-ID, everything missed
  }
  {
    std::lock_guard lock(streams_mu_);
    if (stopping_) {
      d_.hub->Unsubscribe(stream->hub_id);
      return c.Fail(Problem::Make(503, "shutting_down", "the server is shutting down"));
    }
    streams_.insert(stream);
  }
  d_.presence->StreamOpened(user);
  ++streams_open_;

  c.res.set_header("Cache-Control", "no-store");
  c.res.set_header("X-Accel-Buffering", "no");
  const Millis keepalive = config_.api.stream_keepalive;
  const Millis poll = d_.local_in_app ? keepalive : std::min(keepalive, d_.stream_poll);
  auto first = std::make_shared<bool>(true);  // the provider runs on one thread: no lock needed
  c.res.set_chunked_content_provider(
      "text/event-stream",
      [this, stream, keepalive, poll, first](size_t, httplib::DataSink& sink) -> bool {
        if (*first) {
          *first = false;
          std::string hello = "retry: 3000\n: stream of " + stream->user + "\n\n";
          stream->last_write = std::chrono::steady_clock::now();
          return sink.write(hello.data(), hello.size());
        }
        // Wakes for new entries, or to poll the store, or when the keep-alive is due.
        bool read = false;
        {
          std::unique_lock lock(stream->mu);
          auto wake = std::chrono::steady_clock::now() + poll;
          auto keepalive_due = stream->last_write + keepalive;
          stream->cv.wait_until(lock, std::min(wake, keepalive_due), [&] { return stream->dirty || stream->closed; });
          if (stream->closed) return false;
          if (stream->token_expires && d_.clock->Now() > *stream->token_expires) return false;
          read = stream->dirty || !d_.local_in_app;
          stream->dirty = false;
        }
        std::string out;
        if (read) {
          std::vector<InboxEntry> entries;
          for (;;) {
            if (Status s = d_.store->InboxSince(stream->user, stream->last_seq, kStreamBatch, entries); !s.ok()) {
              spdlog::warn("api: stream of {}: {}", stream->user, s.message());
              break;  // the client reconnects with Last-Event-ID and misses nothing
            }
            for (const InboxEntry& e : entries) {
              out += "id: " + std::to_string(e.seq) + "\nevent: notification\ndata: " + InboxJson(e).dump() + "\n\n";
              stream->last_seq = e.seq;
            }
            if (entries.size() < kStreamBatch) break;
          }
        }
        auto now = std::chrono::steady_clock::now();
        // A write is also how a client that went away is noticed: it fails.
        if (out.empty() && now >= stream->last_write + keepalive) out = ": keep-alive\n\n";
        if (out.empty()) return true;
        stream->last_write = now;
        return sink.write(out.data(), out.size());
      },
      [this, stream](bool) {
        d_.hub->Unsubscribe(stream->hub_id);
        d_.presence->StreamClosed(stream->user);
        --streams_open_;
        std::lock_guard lock(streams_mu_);
        streams_.erase(stream);
      });
}

// ---- traces ----

void ApiServer::GetTrace(Call& c) {
  const std::string& nid = c.params["nid"];
  TraceRecord t;
  Status s = d_.store->GetTrace(nid, t);
  if (s.code() == Status::Code::kNotFound) return c.Fail(Problem::Make(404, "not_found", "no trace for notification " + nid));
  if (!s.ok()) return c.Fail(StoreUnavailable(s));
  SendTrace(c, t);
}

void ApiServer::FindTrace(Call& c) {
  const std::string event_id = c.Query("event_id"), user_id = c.Query("user_id");
  for (const auto& [name, value] : {std::pair{"event_id", &event_id}, std::pair{"user_id", &user_id}}) {
    if (value->empty()) {
      return c.Fail(Problem::Make(400, "invalid_parameter",
                                  std::string(name) + " is required: GET /v1/traces?event_id=...&user_id=...", name));
    }
  }
  TraceRecord t;
  Status s = d_.store->GetTraceByEvent(event_id, user_id, t);
  if (s.code() == Status::Code::kNotFound) {
    return c.Fail(Problem::Make(404, "not_found", "no trace for event " + event_id + " and user " + user_id));
  }
  if (!s.ok()) return c.Fail(StoreUnavailable(s));
  SendTrace(c, t);
}

void ApiServer::SendTrace(Call& c, const TraceRecord& t) {
  std::vector<DeliveryAttempt> attempts;
  if (Status a = d_.store->ListAttempts(t.notification_id, attempts); !a.ok()) return c.Fail(StoreUnavailable(a));
  nlohmann::json list = nlohmann::json::array();
  for (const DeliveryAttempt& a : attempts) {
    nlohmann::json one = {{"delivery_id", a.delivery_id}, {"channel", a.channel},         {"attempt", a.attempt},
                          {"outcome", a.outcome},         {"at", FormatRfc3339(a.at)}, {"duration_ms", a.duration_ms}};
    if (!a.error.empty()) one["error"] = a.error;
    list.push_back(std::move(one));
  }
  auto decision = nlohmann::json::parse(t.decision_json, nullptr, false);
  c.Json(200, {{"notification_id", t.notification_id},
               {"event_id", t.event_id},
               {"event_type", t.event_type},
               {"user_id", t.user_id},
               {"decided_at", FormatRfc3339(t.created_at)},
               {"decision", decision.is_discarded() ? nlohmann::json(t.decision_json) : decision},
               {"attempts", list}});
}

// ---- health ----

void ApiServer::Healthz(Call& c) { c.Json(200, {{"status", "ok"}, {"version", HERALD_VERSION}}); }

void ApiServer::Readyz(Call& c) {
  nlohmann::json checks = nlohmann::json::object();
  bool ready = true;
  if (d_.publisher->Connected()) {
    checks["broker"] = "ok";
  } else {
    checks["broker"] = "not connected";
    ready = false;
  }
  if (Status s = d_.store->CheckWritable(); s.ok()) {
    checks["store"] = "ok";
  } else {
    checks["store"] = s.message();
    ready = false;
  }
  if (!ready) c.res.set_header("Retry-After", "5");
  c.Json(ready ? 200 : 503, {{"status", ready ? "ready" : "not_ready"}, {"checks", checks}});
}

void ApiServer::MetricsText(Call& c) {
  c.res.status = 200;
  c.res.set_content(Metrics::Global().Render(), "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace herald::api
