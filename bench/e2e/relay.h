// The baseline of the end-to-end benchmark: the same broker hops as Herald with no Herald logic.
//
//   load generator --confirm--> herald.events --> herald.engine
//   relay: consume herald.engine (prefetch as Herald's intake), publish one job per recipient and
//          channel to herald.deliver (persistent, mandatory, windowed confirms), ack the event once
//          every job is confirmed
//   relay: consume herald.deliver.in_app  -> report the arrival to the benchmark (a line on stdout) -> ack
//          consume herald.deliver.webhook -> HTTP POST the job to the same sink Herald posts to -> ack
//
// It declares Herald's topology (same queue names, queue type and arguments) and uses Herald's
// broker layer (broker::Publisher, broker::Consumer), so the difference to Herald is Herald's own
// work: validation, de-duplication, preferences, decisions, templates, traces, the store
// (de-duplication, traces, inbox, sent records) and the webhook channel's signing and checks.
// What the relay does not do: parse JSON (it reads the x-bench-* headers), write anything durable
// outside the broker.
#pragma once

#include <string>

namespace herald::bench {

struct RelayOptions {
  std::string url;                 // amqp://guest:guest@127.0.0.1:PORT/vhost
  std::string queue_type = "quorum";
  std::string sink_url;            // where webhook jobs are POSTed
  int engine_prefetch = 500;       // Herald: broker.prefetch
  int channel_prefetch = 100;      // Herald: channels.<name>.prefetch
  int webhook_concurrency = 8;     // Herald: channels.webhook.concurrency
  int publish_window = 1000;       // Herald: broker.publish_window
  int fanout_batch = 500;          // Herald: engine.fanout_batch (jobs published before waiting for room)
  size_t job_bytes = 512;          // job bodies are padded to this size
};

// Runs until SIGTERM or SIGINT; returns the process exit code. Writes one line per in-app
// delivery to stdout: "<phase> <n> <sent_us> <arrived_us>\n".
int RunRelay(const RelayOptions& options);

}  // namespace herald::bench
