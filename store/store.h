// The store: durable state that is not on the broker (preferences, dedup records, traces, inbox,
// dead letters). This version opens it and manages the schema; the tables come with the features
// that use them.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"

namespace herald {

class Store {
 public:
  virtual ~Store() = default;
  // True if a write can be made now (for readiness checks). Thread-safe.
  virtual Status CheckWritable() = 0;
  // The schema version the store is at.
  virtual int SchemaVersion() = 0;
};

// Opens the store named by `url` (sqlite:///abs/path or sqlite://rel/path), creating the file,
// its directory and the schema as needed. Fails with a message naming the path and the cause.
Status OpenStore(const std::string& url, std::unique_ptr<Store>& out);

}  // namespace herald
