#include "engine/intake.h"

#include <spdlog/spdlog.h>

#include "broker/options.h"
#include "broker/topology.h"
#include "core/metrics.h"
#include "core/time.h"

namespace herald {
namespace {

CounterFamily& ReceivedCounter() {
  static CounterFamily& f = Metrics::Global().Counters(
      "herald_events_received_total", "Valid events taken from herald.engine, by type.", {"type"});
  return f;
}

CounterFamily& InvalidCounter() {
  static CounterFamily& f = Metrics::Global().Counters(
      "herald_events_invalid_total", "Events moved to herald.events.invalid, by the field at fault.", {"reason"});
  return f;
}

}  // namespace

Intake::Intake(const Config& config, Engine& engine, broker::Publisher& publisher, const Clock& clock)
    : engine_(engine), publisher_(publisher), clock_(clock) {
  limits_.max_body_bytes = static_cast<size_t>(config.events.max_body_bytes);
  limits_.max_recipients = static_cast<size_t>(config.events.max_recipients);
  limits_.channels = config.EnabledChannels();
  ReceivedCounter();  // registered now, so /metrics lists them before the first event
  InvalidCounter();

  auto o = broker::ConsumerOptionsFor(config, "heraldd engine intake", broker::kEngineQueue);
  consumer_ = std::make_unique<broker::Consumer>(std::move(o), [this](broker::Delivery&& d) { OnDelivery(std::move(d)); });
}

Intake::~Intake() { Stop(Millis(0)); }

void Intake::Start() { consumer_->Start(); }

void Intake::Stop(Millis grace) { consumer_->Stop(grace); }

void Intake::OnDelivery(broker::Delivery&& delivery) {
  Event event;
  if (auto why = ParseEvent(delivery.message.body, limits_, clock_.Now(), event)) {
    MoveToInvalid(std::move(delivery), *why);
    return;
  }
  if (auto why = engine_.Check(event)) {
    MoveToInvalid(std::move(delivery), *why);
    return;
  }
  ReceivedCounter().With({event.type}).Inc();
  broker::DeliveryRef ref{delivery.tag, delivery.generation};
  broker::Consumer* consumer = consumer_.get();
  std::string id = event.id;
  engine_.Handle(std::move(event), [consumer, ref, id](const Status& s) {
    if (s.ok()) {
      consumer->Ack(ref);
    } else {
      spdlog::warn("intake: event {} not handled ({}); it returns to the queue", id, s.ToString());
      consumer->Reject(ref, /*requeue=*/true);
    }
  });
}

void Intake::MoveToInvalid(broker::Delivery&& delivery, const Invalid& why) {
  InvalidCounter().With({why.field}).Inc();
  spdlog::info("intake: invalid event (routing key \"{}\", {} bytes): {}", delivery.message.routing_key,
               delivery.message.body.size(), why.ToString());
  broker::Message m;
  m.exchange = "";  // the default exchange routes by queue name
  m.routing_key = broker::kInvalidQueue;
  m.body = std::move(delivery.message.body);
  m.content_type = delivery.message.content_type;
  m.message_id = delivery.message.message_id;
  m.headers = delivery.message.headers.is_object() ? delivery.message.headers : nlohmann::json::object();
  m.headers["x-herald-reason"] = why.ToString();
  m.headers["x-herald-field"] = why.field;
  m.headers["x-herald-routing-key"] = delivery.message.routing_key;
  m.headers["x-herald-received-at"] = FormatRfc3339(clock_.Now());
  m.mandatory = true;
  broker::DeliveryRef ref{delivery.tag, delivery.generation};
  broker::Consumer* consumer = consumer_.get();
  publisher_.Publish(std::move(m), [consumer, ref](const Status& s) {
    if (s.ok()) {
      consumer->Ack(ref);
    } else {
      spdlog::error("intake: could not move an invalid event aside ({}); it returns to the queue", s.ToString());
      consumer->Reject(ref, /*requeue=*/true);
    }
  });
}

}  // namespace herald
