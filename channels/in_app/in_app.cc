#include "channels/in_app/in_app.h"

namespace herald {

SendResult InAppChannel::Send(const DeliveryJob& job) {
  InboxEntry e;
  e.notification_id = job.notification_id;
  e.user_id = job.user_id;
  e.event_id = job.event.value("id", "");
  e.event_type = job.event.value("type", "");
  e.title = job.content.value("title", "");
  e.body = job.content.value("body", "");
  e.data_json = job.data.dump();
  e.created_at = clock_.Now();
  bool created = false;
  if (Status s = store_.PutInbox(e, created); !s.ok()) return SendResult::Retryable("inbox write failed: " + s.message());
  // A repeat (same notification) was announced the first time; streams that missed it resume
  // from the inbox.
  if (created) hub_.Publish(e);
  return SendResult::Ok();
}

}  // namespace herald
