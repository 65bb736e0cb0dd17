#include "broker/publisher.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <future>

#include "core/thread_name.h"

namespace herald::broker {

Publisher::Publisher(Options options) : options_(std::move(options)), conn_(options_.connect) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

Publisher::~Publisher() {
  Stop(Millis(0));
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Publisher::Start() { thread_ = std::thread([this] { Run(); }); }

void Publisher::Wake() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(wake_fd_, &one, sizeof one);
}

void Publisher::Publish(Message message, Callback done) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      // A non-empty queue has a wake-up on its way (or waits for confirms to make room in the
      // window, which wake the thread themselves): one system call per batch, not per message.
      bool wake = queue_.empty();
      queue_.push_back(Item{std::move(message), std::move(done)});
      ++pending_;
      if (wake) Wake();
      return;
    }
  }
  if (done) done(Status::Unavailable("publisher is stopped"));
}

Status Publisher::PublishAndWait(Message message, Millis timeout) {
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  Publish(std::move(message), [promise](const Status& s) { promise->set_value(s); });
  if (future.wait_for(timeout) != std::future_status::ready) {
    return Status::Timeout("no broker confirm within " + FormatDuration(timeout) +
                           (Connected() ? "" : " (not connected to the broker)"));
  }
  return future.get();
}

void Publisher::WaitForRoom(size_t limit) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return pending_.load() < limit || stopping_; });
}

void Publisher::Stop(Millis grace) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      stopping_ = true;
      stop_deadline_ = std::chrono::steady_clock::now() + grace;
    } else {
      stop_deadline_ = std::min(stop_deadline_, std::chrono::steady_clock::now() + grace);
    }
  }
  cv_.notify_all();
  Wake();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void Publisher::Finish(Item& item, const Status& status) {
  Callback done = std::move(item.done);
  item.done = nullptr;
  item.settled = true;
  item.message = Message{};
  --pending_;
  if (done) done(status);
}

Status Publisher::Connect() {
  if (Status s = conn_.Open(); !s.ok()) return s;
  amqp_confirm_select(conn_.state(), Connection::kChannel);
  if (Status s = conn_.CheckRpc("confirm.select"); !s.ok()) return s;
  if (options_.on_connect) {
    if (Status s = options_.on_connect(conn_); !s.ok()) return s;
  }
  return Status::Ok();
}

bool Publisher::SendQueued() {
  std::deque<Item> batch;
  {
    std::lock_guard lock(mu_);
    size_t room = static_cast<size_t>(options_.window) - std::min(inflight_.size(), size_t(options_.window));
    while (room-- > 0 && !queue_.empty()) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
  }
  if (batch.empty()) return true;
  amqp_pool_t pool;
  init_amqp_pool(&pool, 4096);
  bool ok = true;
  const bool cork = batch.size() > 1;  // the batch leaves in as few TCP segments as fit it
  if (cork) conn_.Cork(true);
  while (!batch.empty()) {
    Item& item = batch.front();
    amqp_basic_properties_t props;
    FillProperties(item.message, props, &pool);
    int rc = amqp_basic_publish(conn_.state(), Connection::kChannel, Bytes(item.message.exchange),
                                Bytes(item.message.routing_key), item.message.mandatory, 0, &props,
                                Bytes(item.message.body));
    recycle_amqp_pool(&pool);
    if (rc != AMQP_STATUS_OK) {
      // Whether the broker got it is unknown; it goes back to the queue and is sent again.
      spdlog::warn("publisher: publish failed: {}; will reconnect", amqp_error_string2(rc));
      conn_.MarkBroken();
      ok = false;
      break;
    }
    inflight_.push_back(std::move(item));
    batch.pop_front();
  }
  if (cork && conn_.IsOpen()) conn_.Cork(false);
  if (inflight_.size() > max_inflight_.load()) max_inflight_ = inflight_.size();
  empty_amqp_pool(&pool);
  if (!batch.empty()) {
    std::lock_guard lock(mu_);
    while (!batch.empty()) {
      queue_.push_front(std::move(batch.back()));
      batch.pop_back();
    }
  }
  return ok;
}

void Publisher::Confirm(uint64_t tag, bool multiple, bool ack) {
  if (tag < first_tag_ || tag >= first_tag_ + inflight_.size()) {
    spdlog::warn("publisher: confirm for unknown delivery tag {}", tag);
    return;
  }
  auto settle = [&](Item& item) {
    if (item.settled) return;
    if (!ack) {
      Finish(item, Status::Rejected("broker nacked the message"));
    } else if (item.returned) {
      Finish(item, Status::Rejected("unroutable: " + item.return_reason));
    } else {
      Finish(item, Status::Ok());
    }
  };
  size_t last = tag - first_tag_;
  if (multiple) {
    for (size_t i = 0; i <= last; ++i) settle(inflight_[i]);
  } else {
    settle(inflight_[last]);
  }
  while (!inflight_.empty() && inflight_.front().settled) {
    inflight_.pop_front();
    ++first_tag_;
  }
  { std::lock_guard lock(mu_); }  // pairs with WaitForRoom's check, so no wake-up is lost
  cv_.notify_all();
}

void Publisher::HandleReturn(const amqp_frame_t& frame) {
  auto* ret = static_cast<amqp_basic_return_t*>(frame.payload.method.decoded);
  std::string exchange = ToString(ret->exchange), key = ToString(ret->routing_key);
  std::string reason = std::to_string(ret->reply_code) + " " + ToString(ret->reply_text) + " (exchange \"" +
                       exchange + "\", routing key \"" + key + "\")";
  amqp_message_t msg;
  amqp_rpc_reply_t r = amqp_read_message(conn_.state(), frame.channel, &msg, 0);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    conn_.MarkBroken();
    return;
  }
  // The broker sends basic.return before the ack of the same message; match the oldest
  // unconfirmed message with the same destination and body.
  std::string body = ToString(msg.body);
  amqp_destroy_message(&msg);
  for (Item& item : inflight_) {
    if (!item.settled && !item.returned && item.message.exchange == exchange && item.message.routing_key == key &&
        item.message.body == body) {
      item.returned = true;
      item.return_reason = reason;
      return;
    }
  }
}

bool Publisher::ReadFrames() {
  for (int i = 0; i < 4096; ++i) {
    amqp_frame_t frame;
    Status s = conn_.ReadFrame(frame);
    if (s.code() == Status::Code::kTimeout) return true;
    if (!s.ok()) {
      spdlog::warn("publisher: {}", s.message());
      return false;
    }
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    switch (frame.payload.method.id) {
      case AMQP_BASIC_ACK_METHOD: {
        auto* m = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
        Confirm(m->delivery_tag, m->multiple, true);
        break;
      }
      case AMQP_BASIC_NACK_METHOD: {
        auto* m = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
        Confirm(m->delivery_tag, m->multiple, false);
        break;
      }
      case AMQP_BASIC_RETURN_METHOD:
        HandleReturn(frame);
        break;
      case AMQP_CHANNEL_CLOSE_METHOD:
      case AMQP_CONNECTION_CLOSE_METHOD:
        spdlog::warn("publisher: {}", conn_.AnswerClose(frame));
        return false;
      case AMQP_CONNECTION_BLOCKED_METHOD:
        spdlog::warn("publisher: broker blocked this connection (resource alarm); publishes wait");
        break;
      case AMQP_CONNECTION_UNBLOCKED_METHOD:
        spdlog::info("publisher: broker unblocked this connection");
        break;
      default:
        break;
    }
    amqp_maybe_release_buffers(conn_.state());
  }
  return true;
}

void Publisher::Run() {
  SetThreadName("publisher");
  Millis backoff = options_.reconnect_min;
  bool warned = false;
  for (;;) {
    bool stopping;
    std::chrono::steady_clock::time_point deadline;
    {
      std::lock_guard lock(mu_);
      stopping = stopping_;
      deadline = stop_deadline_;
    }
    if (stopping && (pending_.load() == 0 || std::chrono::steady_clock::now() >= deadline)) break;

    if (!conn_.IsOpen()) {
      connected_ = false;
      Status s = Connect();
      if (!s.ok()) {
        if (!warned) spdlog::warn("publisher: {} (retrying every {} at most)", s.message(),
                                  FormatDuration(options_.reconnect_max));
        warned = true;
        conn_.Close();
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, backoff, [&] { return stopping_ && std::chrono::steady_clock::now() >= stop_deadline_; });
        backoff = std::min(backoff * 2, options_.reconnect_max);
        continue;
      }
      if (warned) spdlog::info("publisher: connected to the broker again");
      warned = false;
      backoff = options_.reconnect_min;
      ++connects_;
      connected_ = true;
      // Everything unconfirmed goes out again, first and in order, with new delivery tags.
      std::lock_guard lock(mu_);
      while (!inflight_.empty()) {
        Item& item = inflight_.back();
        if (!item.settled) {
          item.returned = false;
          queue_.push_front(std::move(item));
        }
        inflight_.pop_back();
      }
      first_tag_ = 1;
    }

    if (!SendQueued()) continue;
    if (conn_.WaitForInput(wake_fd_, Millis(200)) != Connection::Ready::kWake) {
      if (!ReadFrames()) continue;
    }
  }
  connected_ = false;
  conn_.Close();
  std::deque<Item> left;
  {
    std::lock_guard lock(mu_);
    left.swap(queue_);
  }
  for (Item& item : inflight_) {
    if (!item.settled) Finish(item, Status::Unavailable("publisher stopped before the broker confirmed"));
  }
  inflight_.clear();
  for (Item& item : left) Finish(item, Status::Unavailable("publisher stopped before the message was sent"));
  cv_.notify_all();
}

}  // namespace herald::broker
