#pragma once

#include <pthread.h>

#include <string>

namespace herald {

// Names the calling thread (as `top -H`, `ps -L` and perf show it); Linux keeps 15 bytes.
inline void SetThreadName(const std::string& name) { pthread_setname_np(pthread_self(), name.substr(0, 15).c_str()); }

// The part of a queue name after its last '.', "herald.deliver.webhook" -> "webhook".
inline std::string QueueShortName(const std::string& queue) {
  size_t dot = queue.rfind('.');
  return dot == std::string::npos ? queue : queue.substr(dot + 1);
}

}  // namespace herald
