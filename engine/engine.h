// The engine: what happens to a valid event (decisions, fan-out). Intake hands events to it.
#pragma once

#include <functional>
#include <optional>

#include "core/status.h"
#include "engine/event.h"

namespace herald {

class Engine {
 public:
  using Done = std::function<void(const Status&)>;
  virtual ~Engine() = default;

  // Takes one valid event. Must call `done` exactly once, from any thread, when the event's
  // effects are durable (every delivery job confirmed by the broker): Ok acks the event; an
  // error returns it to the queue to be processed again, so handling must be idempotent.
  // Called from the intake's consumer thread: must not block for long.
  virtual void Handle(Event event, Done done) = 0;

  // Checks that need the engine's configuration (the event type exists, its required variables
  // are given). An event refused here goes to herald.events.invalid like a malformed one.
  virtual std::optional<Invalid> Check(const Event& /*event*/) const { return std::nullopt; }
};

}  // namespace herald
