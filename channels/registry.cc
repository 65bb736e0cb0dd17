#include "channels/registry.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "channels/email/email.h"
#include "channels/in_app/in_app.h"
#include "channels/push/push.h"
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

std::shared_ptr<const void> BindPush(ConfigSection& s) {
  auto c = std::make_shared<PushConfig>();
  s.Duration("timeout", c->timeout, Millis(100), Millis(300000));
  s.Duration("connect_timeout", c->connect_timeout, Millis(100), Millis(60000));
  s.Duration("ttl", c->ttl, Millis(0), Millis(28LL * 86400000));  // providers keep at most ~4 weeks
  s.Str("ca_file", c->ca_file);
  s.Bool("allow_insecure_endpoints", c->allow_insecure_endpoints);
  s.Str("vapid_private_key", c->vapid_private_key);
  s.Str("vapid_subject", c->vapid_subject);
  s.Duration("vapid_expiry", c->vapid_expiry, Millis(60000), Millis(86400000));
  s.Str("fcm_service_account_file", c->fcm_service_account_file);
  s.Str("fcm_url", c->fcm_url);
  s.Str("apns_key_file", c->apns_key_file);
  s.Str("apns_key_id", c->apns_key_id);
  s.Str("apns_team_id", c->apns_team_id);
  s.Str("apns_topic", c->apns_topic);
  s.Str("apns_url", c->apns_url);
  s.Str("apns_push_type", c->apns_push_type);
  s.Duration("apns_token_refresh", c->apns_token_refresh, Millis(20 * 60000), Millis(59 * 60000));
  return c;
}

Status MakePush(const ChannelConfig& cc, const ChannelContext& ctx, std::unique_ptr<Channel>& out) {
  const auto& c = *static_cast<const PushConfig*>(cc.settings.get());
  std::unique_ptr<PushChannel> push;
  if (Status s = CreatePushChannel(c, ctx.clock ? *ctx.clock : SystemClock::Instance(), push); !s.ok()) return s;
  std::vector<std::string> providers = push->Providers();
  if (providers.empty()) {
    spdlog::warn("channel push: no provider configured (channels.push.vapid_private_key, fcm_service_account_file, "
                 "apns_key_file); push jobs fail over to the fallback channel (e-mail)");
  } else {
    std::string list;
    for (const std::string& p : providers) list += (list.empty() ? "" : ", ") + p;
    spdlog::info("channel push: providers {}; contacts of other kinds fail over to the fallback channel", list);
  }
  out = std::move(push);
  return Status::Ok();
}

// A channel built from its own validated settings (e-mail, webhook).
template <typename Settings, typename ChannelType, Status (*Validate)(const Settings&)>
Status MakeValidated(const ChannelConfig& cc, const ChannelContext&, std::unique_ptr<Channel>& out) {
  const auto& c = *static_cast<const Settings*>(cc.settings.get());
  if (Status s = Validate(c); !s.ok()) return s;
  out = std::make_unique<ChannelType>(c);
  return Status::Ok();
}

}  // namespace

const std::vector<ChannelSpec>& ChannelRegistry() {
  static const std::vector<ChannelSpec> kChannels = {
      {"email", 30, BindEmail, MakeValidated<EmailConfig, EmailChannel, ValidateEmailConfig>},
      {"in_app", 0, NoSettings,
       [](const ChannelConfig&, const ChannelContext& ctx, std::unique_ptr<Channel>& out) {
         out = std::make_unique<InAppChannel>(*ctx.store, *ctx.hub, *ctx.clock);
         return Status::Ok();
       }},
      {"push", 0, BindPush, MakePush},
      {"webhook", 0, BindWebhook, MakeValidated<WebhookConfig, WebhookChannel, ValidateWebhookConfig>},
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
