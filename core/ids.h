// Ids Herald derives from what it was given, so processing an event again produces them again.
//
// Both start with 11 hex digits of the milliseconds when the event's processing first began (from
// its de-duplication record, so the same whenever the event is processed again), then hex digits
// of SHA-256 over the parts: rows keyed by them are appended to the end of their indexes (sent
// records, traces, inbox entries, attempts) instead of landing on random pages, and ids sort by
// when their event came in.
#pragma once

#include <string>

#include "core/clock.h"

namespace herald {

// "n-" + 11 hex digits of `begun` (ms) + 21 of SHA-256(event id, user): one inbox entry and one
// trace per event and user. A service finds a trace by event id and user id without it
// (GET /v1/traces?event_id=&user_id=).
std::string NotificationId(const std::string& event_id, const std::string& user, SystemTime begun);

// "d-" + 11 hex digits of `begun` (ms) + 21 of SHA-256(event id, user, channel): one delivery per
// event, user and channel, refused by the workers once sent.
std::string DeliveryId(const std::string& event_id, const std::string& user, const std::string& channel,
                       SystemTime begun);

}  // namespace herald
