#include "channels/channel.h"

#include "core/json_parse.h"

namespace herald {

const char* SendResult::KindName() const {
  switch (kind) {
    case Kind::kOk: return "ok";
    case Kind::kRetryable: return "retryable";
    case Kind::kPermanent: return "permanent";
    case Kind::kInvalidContact: return "invalid_contact";
  }
  return "unknown";
}

Status DeliveryJob::Parse(const std::string& body, DeliveryJob& out) {
  nlohmann::json j;
  JsonMemberTexts texts;
  if (!ParseJson(body, j, kJsonMaxDepth, &texts)) return Status::Invalid("job: not valid JSON");
  if (!j.is_object()) return Status::Invalid("job: not a JSON object");
  auto str = [&](const char* key, std::string& dst) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) return false;
    dst = it->get<std::string>();
    return true;
  };
  DeliveryJob job;
  for (auto [key, dst] : {std::pair{"delivery_id", &job.delivery_id}, {"notification_id", &job.notification_id},
                          {"user_id", &job.user_id}, {"channel", &job.channel}}) {
    if (!str(key, *dst)) return Status::Invalid(std::string("job: ") + key + " missing or not a string");
  }
  str("locale", job.locale);
  job.attempt = j.value("attempt", 1LL);
  if (job.attempt < 1) job.attempt = 1;
  // Moved out of the document, not copied: the document itself is not kept.
  auto take = [&](const char* key, nlohmann::json& dst, nlohmann::json fallback) {
    auto it = j.find(key);
    dst = it == j.end() ? std::move(fallback) : std::move(*it);
  };
  take("event", job.event, nlohmann::json::object());
  take("contact", job.contact, nlohmann::json::object());
  take("content", job.content, nlohmann::json::object());
  take("data", job.data, nlohmann::json::object());
  take("fallback", job.fallback, nlohmann::json::array());
  if (!job.fallback.is_array()) job.fallback = nlohmann::json::array();
  if (!job.event.is_object()) {
    job.event = nlohmann::json::object();
  } else {
    job.event_text = texts.Find("event");
  }
  job.content_text = texts.Find("content");
  job.data_text = texts.Find("data");
  out = std::move(job);
  return Status::Ok();
}

}  // namespace herald
