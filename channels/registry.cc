#include "channels/registry.h"

#include <algorithm>

#include "channels/email/email.h"
#include "channels/in_app/in_app.h"
#include "channels/webhook/webhook.h"

namespace herald {
namespace {

std::shared_ptr<const void> NoSettings(ConfigSection&) { return nullptr; }

std::shared_ptr<const void> BindEmail(ConfigSection& s) {
  auto c = std::make_shared<EmailConfig>();
  long long port = c->port;
  s.Str("host", c->host);
  s.Int("port", port, 1, 65535);
  c->port = static_cast<int>(port);
  s.Str("tls", c->tls);
  s.Str("username", c->username);
  s.Str("password", c->password);
  s.Str("from_address", c->from_address);
  s.Str("from_name", c->from_name);
  s.Str("list_unsubscribe", c->list_unsubscribe);
  s.Duration("timeout", c->timeout, Millis(100), Millis(600000));
  s.Duration("connect_timeout", c->connect_timeout, Millis(100), Millis(120000));
  s.Str("ca_file", c->ca_file);
  s.Bool("verify_peer", c->verify_peer);
  return c;
}

std::shared_ptr<const void> BindWebhook(ConfigSection& s) {
  auto c = std::make_shared<WebhookConfig>();
  s.Str("secret", c->secret);
  s.Duration("timeout", c->timeout, Millis(100), Millis(300000));
  s.Duration("connect_timeout", c->connect_timeout, Millis(100), Millis(60000));
  s.Bool("allow_private_targets", c->allow_private_targets);
  s.Str("user_agent", c->user_agent);
  return c;
}

}  // namespace

const std::vector<ChannelSpec>& ChannelRegistry() {
  static const std::vector<ChannelSpec> kChannels = {
      {"email", 30, BindEmail,
       [](const ChannelConfig& cc, const ChannelContext&, std::unique_ptr<Channel>& out) {
         const auto& c = *static_cast<const EmailConfig*>(cc.settings.get());
         if (Status s = ValidateEmailConfig(c); !s.ok()) return s;
         out = std::make_unique<EmailChannel>(c);
         return Status::Ok();
       }},
      {"in_app", 0, NoSettings,
       [](const ChannelConfig&, const ChannelContext& ctx, std::unique_ptr<Channel>& out) {
         out = std::make_unique<InAppChannel>(*ctx.store, *ctx.hub, *ctx.clock);
         return Status::Ok();
       }},
      {"push", 0, NoSettings, nullptr},  // Web Push, FCM, APNs: a later issue
      {"webhook", 0, BindWebhook,
       [](const ChannelConfig& cc, const ChannelContext&, std::unique_ptr<Channel>& out) {
         const auto& c = *static_cast<const WebhookConfig*>(cc.settings.get());
         if (Status s = ValidateWebhookConfig(c); !s.ok()) return s;
         out = std::make_unique<WebhookChannel>(c);
         return Status::Ok();
       }},
  };
  return kChannels;
}

const ChannelSpec* FindChannel(const std::string& name) {
  for (const ChannelSpec& spec : ChannelRegistry()) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

const std::vector<std::string>& KnownChannels() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> names;
    for (const ChannelSpec& spec : ChannelRegistry()) names.push_back(spec.name);
    std::sort(names.begin(), names.end());
    return names;
  }();
  return kNames;
}

ChannelConfig ChannelDefaults(const std::string& channel) {
  ChannelConfig c;
  if (const ChannelSpec* spec = FindChannel(channel)) c.rate = spec->default_rate;
  return c;
}

std::shared_ptr<const void> BindChannelSettings(const std::string& channel, ConfigSection& section) {
  const ChannelSpec* spec = FindChannel(channel);
  return spec ? spec->bind(section) : nullptr;
}

}  // namespace herald
