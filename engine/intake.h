// Intake: consumes herald.engine, validates each event, and either hands it to the Engine or
// moves it to herald.events.invalid with the reason. The original message is acked only after
// the engine is done with it or the invalid copy is confirmed by the broker: nothing is lost.
#pragma once

#include <memory>

#include "broker/consumer.h"
#include "broker/publisher.h"
#include "core/config.h"
#include "engine/engine.h"

namespace herald {

class Intake {
 public:
  // `publisher` and `engine` must outlive the Intake.
  Intake(const Config& config, Engine& engine, broker::Publisher& publisher, const Clock& clock);
  ~Intake();

  void Start();
  // Stops consuming and waits up to `grace` for events in flight to be settled.
  void Stop(Millis grace);

  bool Consuming() const { return consumer_->Consuming(); }
  uint64_t Connects() const { return consumer_->Connects(); }

 private:
  void OnDelivery(broker::Delivery&& delivery);
  void MoveToInvalid(broker::Delivery&& delivery, const Invalid& why);

  EventLimits limits_;
  Engine& engine_;
  broker::Publisher& publisher_;
  const Clock& clock_;
  std::unique_ptr<broker::Consumer> consumer_;
};

}  // namespace herald
