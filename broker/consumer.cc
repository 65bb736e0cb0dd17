#include "broker/consumer.h"

#include <spdlog/spdlog.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

#include "core/thread_name.h"

namespace herald::broker {

Consumer::Consumer(Options options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)), conn_(options_.connect) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

Consumer::Consumer(Options options, BatchHandler handler)
    : options_(std::move(options)), batch_handler_(std::move(handler)), conn_(options_.connect) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

Consumer::~Consumer() {
  Stop(Millis(0));
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Consumer::Start() { thread_ = std::thread([this] { Run(); }); }

void Consumer::Wake() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(wake_fd_, &one, sizeof one);
}

// Only the settle that finds the list empty wakes the thread: one already waiting means a wake-up
// is on its way, and ApplySettles takes the whole list after it (one system call and at most one
// wake-up per batch of acks instead of one per ack).
void Consumer::Ack(DeliveryRef ref) {
  bool wake;
  {
    std::lock_guard lock(mu_);
    wake = settles_.empty();
    settles_.push_back({ref, true, false});
  }
  if (wake) Wake();
}

void Consumer::Reject(DeliveryRef ref, bool requeue) {
  bool wake;
  {
    std::lock_guard lock(mu_);
    wake = settles_.empty();
    settles_.push_back({ref, false, requeue});
  }
  if (wake) Wake();
}

void Consumer::Stop(Millis grace) {
  {
    std::lock_guard lock(mu_);
    auto deadline = std::chrono::steady_clock::now() + grace;
    if (!stop_requested_ || deadline < stop_deadline_) stop_deadline_ = deadline;
    stop_requested_ = true;
  }
  Wake();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

Status Consumer::Connect() {
  if (Status s = conn_.Open(); !s.ok()) return s;
  if (options_.on_connect) {
    if (Status s = options_.on_connect(conn_); !s.ok()) return s;
  }
  std::string queue = options_.queue;
  if (queue.empty()) {
    amqp_queue_declare_ok_t* declared = amqp_queue_declare(conn_.state(), Connection::kChannel, amqp_empty_bytes, 0,
                                                           /*durable=*/0, /*exclusive=*/1, /*auto_delete=*/1,
                                                           amqp_empty_table);
    if (Status s = conn_.CheckRpc("declare private queue"); !s.ok()) return s;
    queue = ToString(declared->queue);
    amqp_queue_bind(conn_.state(), Connection::kChannel, Bytes(queue), Bytes(options_.bind_exchange),
                    amqp_empty_bytes, amqp_empty_table);
    if (Status s = conn_.CheckRpc(("bind private queue to " + options_.bind_exchange).c_str()); !s.ok()) return s;
  }
  amqp_basic_qos(conn_.state(), Connection::kChannel, 0, static_cast<uint16_t>(options_.prefetch), 0);
  if (Status s = conn_.CheckRpc("basic.qos"); !s.ok()) return s;
  amqp_basic_consume_ok_t* ok = amqp_basic_consume(conn_.state(), Connection::kChannel, Bytes(queue),
                                                   amqp_empty_bytes, 0, /*no_ack=*/0, 0, amqp_empty_table);
  if (Status s = conn_.CheckRpc(("consume " + queue).c_str()); !s.ok()) return s;
  consumer_tag_ = ToString(ok->consumer_tag);
  return Status::Ok();
}

void Consumer::ApplySettles() {
  std::vector<Settle> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(settles_);
  }
  if (batch.empty() || !conn_.IsOpen()) return;
  // Several frames leave together (one segment), not one segment each; uncorked on every return.
  struct Corked {
    Connection& c;
    const bool on;
    ~Corked() {
      if (on && c.IsOpen()) c.Cork(false);
    }
  } corked{conn_, batch.size() > 1};
  if (corked.on) conn_.Cork(true);
  std::vector<uint64_t> acks;
  for (const Settle& s : batch) {
    // A settle for an earlier connection is void: the broker has requeued that delivery.
    if (s.ref.generation != generation_ || !outstanding_.count(s.ref.tag)) continue;
    if (s.ack) {
      acks.push_back(s.ref.tag);
    } else {
      outstanding_.erase(s.ref.tag);
      if (conn_.CheckCode(amqp_basic_reject(conn_.state(), Connection::kChannel, s.ref.tag, s.requeue), "reject")
              .ok() == false) {
        return;
      }
    }
  }
  std::sort(acks.begin(), acks.end());
  // The longest run of acked tags at the front of the outstanding set goes as one multiple-ack;
  // the rest are acked one by one so a single slow message never holds the others back.
  size_t i = 0;
  uint64_t run_end = 0;
  auto it = outstanding_.begin();
  while (i < acks.size() && it != outstanding_.end() && *it == acks[i]) {
    run_end = acks[i];
    it = outstanding_.erase(it);
    ++i;
  }
  if (run_end != 0 &&
      !conn_.CheckCode(amqp_basic_ack(conn_.state(), Connection::kChannel, run_end, /*multiple=*/1), "ack").ok()) {
    return;
  }
  for (; i < acks.size(); ++i) {
    outstanding_.erase(acks[i]);
    if (!conn_.CheckCode(amqp_basic_ack(conn_.state(), Connection::kChannel, acks[i], 0), "ack").ok()) return;
  }
  unsettled_ = outstanding_.size();
}

bool Consumer::ReadFrames() {
  const bool ok = ReadAvailableFrames();
  // Whatever was read goes to the handler, even when the connection then failed: its settles are
  // void (another generation) and the broker delivers it again, exactly as one by one.
  if (!batch_.empty()) {
    std::vector<Delivery> batch;
    batch.swap(batch_);
    batch_handler_(batch);
  }
  return ok;
}

bool Consumer::ReadAvailableFrames() {
  for (int i = 0; i < 1024; ++i) {
    amqp_frame_t frame;
    Status s = conn_.ReadFrame(frame);
    if (s.code() == Status::Code::kTimeout) return true;
    if (!s.ok()) {
      spdlog::warn("consumer {}: {}", options_.queue, s.message());
      return false;
    }
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    switch (frame.payload.method.id) {
      case AMQP_BASIC_DELIVER_METHOD: {
        auto* d = static_cast<amqp_basic_deliver_t*>(frame.payload.method.decoded);
        Delivery delivery;
        delivery.tag = d->delivery_tag;
        delivery.generation = generation_;
        delivery.redelivered = d->redelivered;
        delivery.message.exchange = ToString(d->exchange);
        delivery.message.routing_key = ToString(d->routing_key);
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(conn_.state(), frame.channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
          spdlog::warn("consumer {}: reading a message: {}", options_.queue, DescribeReply(r));
          conn_.MarkBroken();
          return false;
        }
        delivery.message.body = ToString(msg.body);
        ReadProperties(msg.properties, delivery.message);
        amqp_destroy_message(&msg);
        outstanding_.insert(delivery.tag);
        unsettled_ = outstanding_.size();
        if (cancel_sent_) {
          // Arrived after we asked to stop: give it straight back.
          outstanding_.erase(delivery.tag);
          conn_.CheckCode(amqp_basic_reject(conn_.state(), Connection::kChannel, delivery.tag, 1), "reject");
        } else if (batch_handler_) {
          batch_.push_back(std::move(delivery));
        } else {
          handler_(std::move(delivery));
        }
        break;
      }
      case AMQP_BASIC_CANCEL_METHOD:
        // The broker cancelled us (queue deleted, node going down): reconnect and consume again.
        spdlog::warn("consumer {}: cancelled by the broker; reconnecting", options_.queue);
        conn_.MarkBroken();
        return false;
      case AMQP_BASIC_CANCEL_OK_METHOD:
        consuming_ = false;
        break;
      case AMQP_CHANNEL_CLOSE_METHOD:
      case AMQP_CONNECTION_CLOSE_METHOD:
        spdlog::warn("consumer {}: {}", options_.queue, conn_.AnswerClose(frame));
        return false;
      default:
        break;
    }
    amqp_maybe_release_buffers(conn_.state());
  }
  return true;
}

void Consumer::Run() {
  SetThreadName("in:" + (options_.queue.empty() ? std::string("signals") : QueueShortName(options_.queue)));
  Millis backoff = options_.reconnect_min;
  bool warned = false;
  for (;;) {
    bool stop;
    std::chrono::steady_clock::time_point deadline;
    {
      std::lock_guard lock(mu_);
      stop = stop_requested_;
      deadline = stop_deadline_;
    }
    if (stop && !conn_.IsOpen()) break;

    if (!conn_.IsOpen()) {
      consuming_ = false;
      Status s = Connect();
      if (!s.ok()) {
        if (!warned) spdlog::warn("consumer {}: {} (retrying)", options_.queue, s.message());
        warned = true;
        conn_.Close();
        // Sleep on the wake fd so Stop() interrupts the backoff.
        pollfd pfd{wake_fd_, POLLIN, 0};
        if (::poll(&pfd, 1, static_cast<int>(backoff.count())) > 0 && (pfd.revents & POLLIN)) {
          uint64_t v;  // consumed, or every later wait would return at once (stop is checked above)
          [[maybe_unused]] ssize_t r = ::read(wake_fd_, &v, sizeof v);
        }
        backoff = std::min(backoff * 2, options_.reconnect_max);
        continue;
      }
      if (warned) spdlog::info("consumer {}: connected and consuming again", options_.queue);
      warned = false;
      backoff = options_.reconnect_min;
      ++generation_;
      ++connects_;
      outstanding_.clear();
      unsettled_ = 0;
      cancel_sent_ = false;
      consuming_ = true;
    }

    ApplySettles();
    if (!conn_.IsOpen()) continue;

    if (stop) {
      if (!cancel_sent_) {
        amqp_basic_cancel_t cancel{};
        cancel.consumer_tag = Bytes(consumer_tag_);
        conn_.CheckCode(amqp_send_method(conn_.state(), Connection::kChannel, AMQP_BASIC_CANCEL_METHOD, &cancel),
                        "basic.cancel");
        cancel_sent_ = true;
      }
      if (outstanding_.empty() || std::chrono::steady_clock::now() >= deadline) {
        if (!outstanding_.empty()) {
          spdlog::warn("consumer {}: {} deliveries unsettled at shutdown return to the queue", options_.queue,
                       outstanding_.size());
        }
        conn_.Close();
        break;
      }
    }

    if (conn_.WaitForInput(wake_fd_, Millis(200)) != Connection::Ready::kWake) {
      if (!ReadFrames()) continue;
    }
  }
  consuming_ = false;
  conn_.Close();
}

}  // namespace herald::broker
