#include "channels/in_app/in_app.h"

namespace herald {

void InAppChannel::PrepareWrite(const DeliveryJob& job, StoreWrite& write) {
  InboxEntry& e = write.inbox.emplace();
  e.notification_id = job.notification_id;
  e.user_id = job.user_id;
  e.event_id = job.event.value("id", "");
  e.event_type = job.event.value("type", "");
  e.title = job.content.value("title", "");
  e.body = job.content.value("body", "");
  // The job's own compact text of its data when Parse kept it (the same value; not written out again).
  e.data_json = job.data_text.empty() ? job.data.dump() : job.data_text;
  e.created_at = clock_.Now();
}

void InAppChannel::Written(const StoreWrite& write) {
  // A repeat (same notification) was announced the first time; streams that missed it resume
  // from the inbox.
  if (write.status.ok() && write.inbox && write.inbox_created) hub_.Publish(*write.inbox);
}

SendResult InAppChannel::Send(const DeliveryJob& job) {
  StoreWrite w;
  PrepareWrite(job, w);
  if (Status s = store_.ApplyWrite(w); !s.ok()) return SendResult::Retryable("inbox write failed: " + s.message());
  Written(w);
  return SendResult::Ok();
}

}  // namespace herald
