// An owned libcurl string list (request headers, SMTP recipients, pinned addresses), shared by
// the channels that speak through libcurl.
#pragma once

#include <curl/curl.h>

#include <memory>
#include <string>

namespace herald {

struct CurlSlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using CurlSlist = std::unique_ptr<curl_slist, CurlSlistDeleter>;

// Appends a copy of `line`; false (and `list` unchanged) if libcurl could not allocate.
inline bool Append(CurlSlist& list, const std::string& line) {
  curl_slist* next = curl_slist_append(list.get(), line.c_str());
  if (!next) return false;
  (void)list.release();  // `next` is the same list, grown
  list.reset(next);
  return true;
}

}  // namespace herald
