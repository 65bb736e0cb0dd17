// What a worker does with one webhook job before its request leaves, piece by piece, each beside
// the way it was done before (same process, alternated rounds, so the ratios hold on a noisy
// machine):
//   parse     DeliveryJob's JSON: ParseJson against nlohmann::json::parse
//   body      the webhook body: the job's kept member texts against writing the parsed values out
//   sign      HMAC-SHA256 of the body: the kept per-thread context against OpenSSL's one-shot HMAC()
//   target    the contact's URL: the channel's cache of parsed targets against libcurl's parser
// Run: build/bench_job [rounds]
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "channels/channel.h"
#include "channels/webhook/webhook.h"
#include "core/json_parse.h"

using namespace herald;
using Steady = std::chrono::steady_clock;

namespace {

// A job as the engine writes it (docs/delivery-jobs.md) for the e2e benchmark's webhook.
const std::string kJob =
    R"({"v":1,"delivery_id":"d-19ab2f3c4d17ed5969d728d4298cbba9","notification_id":"n-19ab2f3c4d125435176961123f0abe74",)"
    R"("event":{"category":"social","critical":false,"id":"evt-bench-000123456","priority":"normal","source":"/bench",)"
    R"("time":"2026-11-22T10:00:00.000Z","type":"social.post.liked"},"user_id":"u-12345","locale":"en","channel":"webhook",)"
    R"("contact":{"url":"http://127.0.0.1:39483/hook/u-12345"},"content":{},"data":{"actor":"someone","post":"p-77"},)"
    R"("attempt":1,"created_at":"2026-11-22T10:00:00.120Z","fallback":[]})";

// Microseconds per call of `f`, over `n` calls.
double Time(int n, const std::function<void()>& f) {
  const auto began = Steady::now();
  for (int i = 0; i < n; ++i) f();
  return std::chrono::duration<double, std::micro>(Steady::now() - began).count() / n;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  const int n = 100000;
  size_t sink = 0;  // keeps results alive

  DeliveryJob kept;
  if (!DeliveryJob::Parse(kJob, kept).ok()) return 1;
  DeliveryJob rewritten = kept;
  rewritten.event_text.clear();
  rewritten.content_text.clear();
  rewritten.data_text.clear();
  if (WebhookBody(kept) != WebhookBody(rewritten)) {
    std::fprintf(stderr, "the two bodies differ\n");
    return 1;
  }
  const std::string body = WebhookBody(kept);
  const std::string key = "bench-secret-0123456789";

  WebhookTargetCache targets;

  struct Pair {
    const char* name;
    std::function<void()> before, after;
    double before_us = 0, after_us = 0;
  };
  Pair pairs[] = {
      {"parse",
       [&] { sink += nlohmann::json::parse(kJob, nullptr, false).size(); },
       [&] {
         nlohmann::json j;
         ParseJson(kJob, j);
         sink += j.size();
       }},
      {"body", [&] { sink += WebhookBody(rewritten).size(); }, [&] { sink += WebhookBody(kept).size(); }},
      {"sign",
       [&] {
         unsigned char mac[EVP_MAX_MD_SIZE];
         unsigned int len = 0;
         HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(body.data()),
              body.size(), mac, &len);
         sink += len;
       },
       [&] { sink += HmacSha256Hex(key, body).size(); }},
      {"target",
       [&] {
         WebhookTarget t;
         sink += ParseWebhookTarget(kept.contact, t).size() + t.url.size();
       },
       [&] {
         WebhookTarget t;
         sink += targets.Get(kept.contact, t).size() + t.url.size();
       }},
  };
  for (int r = 0; r < rounds; ++r) {
    for (Pair& p : pairs) {
      p.before_us += Time(n, p.before) / rounds;
      p.after_us += Time(n, p.after) / rounds;
    }
  }
  std::printf("%-6s %12s %12s %8s   (%d rounds of %d calls, job of %zu bytes)\n", "step", "before us", "now us",
              "ratio", rounds, n, kJob.size());
  for (const Pair& p : pairs) {
    std::printf("%-6s %12.3f %12.3f %8.2f\n", p.name, p.before_us, p.after_us, p.after_us / p.before_us);
  }
  return sink == 0;
}
