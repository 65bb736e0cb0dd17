// The one place that lists Herald's channels: adding a channel (say SMS) is a folder under
// channels/ and one entry in registry.cc.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "channels/channel.h"
#include "core/config.h"

namespace herald {

class Store;
class InAppHub;

// What a channel may use besides its own settings.
struct ChannelContext {
  Store* store = nullptr;
  InAppHub* hub = nullptr;
  const Clock* clock = nullptr;
};

struct ChannelSpec {
  std::string name;
  long long default_rate = 0;  // requests/s when channels.<name>.rate is not set (0 = unlimited)
  // Binds the channel's own keys under channels.<name> (the generic ones are bound by core).
  std::function<std::shared_ptr<const void>(ConfigSection&)> bind;
  // Creates the channel; empty when this version has no provider for it yet (its jobs then wait
  // in herald.deliver.<name>). Invalid for unusable settings.
  std::function<Status(const ChannelConfig&, const ChannelContext&, std::unique_ptr<Channel>&)> make;
};

const std::vector<ChannelSpec>& ChannelRegistry();
const ChannelSpec* FindChannel(const std::string& name);

}  // namespace herald
