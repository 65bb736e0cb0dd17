#include "bench/e2e/relay.h"

#include <curl/curl.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "bench/e2e/sink.h"
#include "bench/e2e/tags.h"
#include "broker/consumer.h"
#include "broker/publisher.h"
#include "broker/topology.h"
#include "core/config.h"

namespace herald::bench {
namespace {

int64_t HeaderInt(const nlohmann::json& headers, const char* key, int64_t fallback) {
  auto it = headers.find(key);
  if (it == headers.end()) return fallback;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) return std::atoll(it->get_ref<const std::string&>().c_str());
  return fallback;
}

// A queue of deliveries handed from a consumer thread to worker threads.
class WorkQueue {
 public:
  void Push(broker::Delivery&& d) {
    {
      std::lock_guard lock(mu_);
      items_.push_back(std::move(d));
    }
    cv_.notify_one();
  }
  bool Pop(broker::Delivery& out) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return stopping_ || !items_.empty(); });
    if (items_.empty()) return false;
    out = std::move(items_.front());
    items_.pop_front();
    return true;
  }
  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      items_.clear();
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<broker::Delivery> items_;
  bool stopping_ = false;
};

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

}  // namespace

int RunRelay(const RelayOptions& o) {
  spdlog::set_level(spdlog::level::warn);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);

  broker::TopologySpec spec;
  spec.queue_type = o.queue_type;
  spec.channels = {"in_app", "webhook"};
  spec.retry_tiers = RetryConfig{}.tiers;
  auto declare = [spec](broker::Connection& c) { return broker::DeclareTopology(c, spec); };
  broker::ConnectOptions connect;
  connect.url = o.url;
  connect.connection_name = "bench baseline relay";

  broker::Publisher::Options po;
  po.connect = connect;
  po.window = o.publish_window;
  po.on_connect = declare;
  broker::Publisher publisher(po);
  publisher.Start();

  // Engine hop: one relay thread (the handler must not block the consumer thread, which also
  // services heartbeats), publishing a job per recipient and channel.
  WorkQueue events;
  broker::Consumer::Options eo;
  eo.connect = connect;
  eo.queue = broker::kEngineQueue;
  eo.prefetch = o.engine_prefetch;
  eo.on_connect = declare;
  broker::Consumer event_consumer(eo, [&](broker::Delivery&& d) { events.Push(std::move(d)); });

  std::thread relay([&] {
    broker::Delivery d;
    while (events.Pop(d)) {
      const nlohmann::json& h = d.message.headers;
      const int64_t fanout = std::max<int64_t>(1, HeaderInt(h, kHeaderFanout, 1));
      const std::string tags = "{\"n\":\"" + std::to_string(HeaderInt(h, kHeaderN, 0)) + "\",\"ph\":\"" +
                               std::to_string(HeaderInt(h, kHeaderPhase, 0)) + "\",\"sent_us\":\"" +
                               std::to_string(HeaderInt(h, kHeaderSent, 0)) + "\"}";
      struct Tracker {
        broker::Consumer* consumer;
        broker::DeliveryRef ref;
        std::atomic<int64_t> left;
        std::atomic<bool> failed{false};
      };
      auto tracker = std::make_shared<Tracker>();
      tracker->consumer = &event_consumer;
      tracker->ref = {d.tag, d.generation};
      tracker->left = 2 * fanout + 1;
      auto release = [tracker] {
        if (--tracker->left != 0) return;
        if (tracker->failed) tracker->consumer->Reject(tracker->ref, true);
        else tracker->consumer->Ack(tracker->ref);
      };
      for (int64_t r = 0; r < fanout; ++r) {
        if (r % o.fanout_batch == 0) publisher.WaitForRoom(static_cast<size_t>(o.publish_window) * 4);
        for (const char* channel : {"in_app", "webhook"}) {
          broker::Message m;
          m.exchange = broker::kDeliverExchange;
          m.routing_key = channel;
          m.mandatory = true;
          m.message_id = d.message.message_id + "/" + std::to_string(r) + "/" + channel;
          m.body = "{\"v\":1,\"event\":{\"id\":\"" + d.message.message_id + "\"},\"r\":" + std::to_string(r) +
                   ",\"channel\":\"" + channel + "\",\"data\":" + tags + ",\"pad\":\"";
          if (m.body.size() + 2 < o.job_bytes) m.body.append(o.job_bytes - m.body.size() - 2, 'x');
          m.body += "\"}";
          publisher.Publish(std::move(m), [tracker, release](const Status& s) {
            if (!s.ok()) tracker->failed = true;
            release();
          });
        }
      }
      release();
    }
  });

  // In-app hop: the arrival is reported at once, then acked.
  broker::Consumer::Options io;
  io.connect = connect;
  io.queue = broker::DeliverQueue("in_app");
  io.prefetch = o.channel_prefetch;
  io.on_connect = declare;
  std::unique_ptr<broker::Consumer> in_app;
  in_app = std::make_unique<broker::Consumer>(io, [&](broker::Delivery&& d) {
    int64_t arrived = NowMicros();
    Tags t;
    if (ReadTags(d.message.body, t)) {
      char line[96];
      int len = std::snprintf(line, sizeof line, "%lld %lld %lld %lld\n", static_cast<long long>(t.phase),
                              static_cast<long long>(t.n), static_cast<long long>(t.sent_us),
                              static_cast<long long>(arrived));
      [[maybe_unused]] ssize_t w = ::write(1, line, static_cast<size_t>(len));
    }
    in_app->Ack({d.tag, d.generation});
  });

  // Webhook hop: a pool of threads, each with a keep-alive curl handle, as Herald's worker has.
  WorkQueue hooks;
  broker::Consumer::Options wo;
  wo.connect = connect;
  wo.queue = broker::DeliverQueue("webhook");
  wo.prefetch = o.channel_prefetch;
  wo.on_connect = declare;
  broker::Consumer webhook(wo, [&](broker::Delivery&& d) { hooks.Push(std::move(d)); });
  std::vector<std::thread> pool;
  for (int i = 0; i < o.webhook_concurrency; ++i) {
    pool.emplace_back([&] {
      CURL* curl = curl_easy_init();
      curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
      headers = curl_slist_append(headers, "Expect:");
      broker::Delivery d;
      while (hooks.Pop(d)) {
        curl_easy_setopt(curl, CURLOPT_URL, o.sink_url.c_str());
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_PROXY, "");
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, d.message.body.data());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(d.message.body.size()));
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Discard);
        CURLcode rc = curl_easy_perform(curl);
        long status = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (rc == CURLE_OK && status >= 200 && status <= 299) webhook.Ack({d.tag, d.generation});
        else webhook.Reject({d.tag, d.generation}, true);
      }
      curl_slist_free_all(headers);
      curl_easy_cleanup(curl);
    });
  }

  event_consumer.Start();
  in_app->Start();
  webhook.Start();

  int sig = 0;
  sigwait(&signals, &sig);
  event_consumer.Stop(Millis(2000));
  in_app->Stop(Millis(2000));
  webhook.Stop(Millis(2000));
  events.Stop();
  hooks.Stop();
  relay.join();
  for (std::thread& t : pool) t.join();
  publisher.Stop(Millis(2000));
  return 0;
}

}  // namespace herald::bench
