// The in-app channel: writes the inbox entry (idempotent by notification id) and hands it to the
// hub for the user's open streams. Nothing leaves the process, so it has no settings of its own.
#pragma once

#include "channels/channel.h"
#include "channels/in_app/hub.h"
#include "core/clock.h"
#include "store/store.h"

namespace herald {

class InAppChannel final : public Channel {
 public:
  InAppChannel(Store& store, InAppHub& hub, const Clock& clock) : store_(store), hub_(hub), clock_(clock) {}
  SendResult Send(const DeliveryJob& job) override;
  bool DeliversByWrite() const override { return true; }
  void PrepareWrite(const DeliveryJob& job, StoreWrite& write) override;
  void Written(const StoreWrite& write) override;

 private:
  Store& store_;
  InAppHub& hub_;
  const Clock& clock_;
};

}  // namespace herald
