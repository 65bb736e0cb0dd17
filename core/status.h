// Status: the result of an operation that can fail, without exceptions. Cheap to copy when ok.
#pragma once

#include <string>
#include <utility>

namespace herald {

class Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalid,      // the input is malformed; retrying the same input cannot succeed
    kNotFound,
    kUnavailable,  // a dependency (broker, store, provider) is unreachable; retrying may succeed
    kTimeout,
    kRejected,     // the peer refused (e.g. broker nack, unroutable message)
    kInternal,
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status Invalid(std::string m) { return Status(Code::kInvalid, std::move(m)); }
  static Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
  static Status Unavailable(std::string m) { return Status(Code::kUnavailable, std::move(m)); }
  static Status Timeout(std::string m) { return Status(Code::kTimeout, std::move(m)); }
  static Status Rejected(std::string m) { return Status(Code::kRejected, std::move(m)); }
  static Status Internal(std::string m) { return Status(Code::kInternal, std::move(m)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

 private:
  Status(Code c, std::string m) : code_(c), message_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

inline std::string Status::ToString() const {
  static const char* const kNames[] = {"ok",      "invalid",  "not found", "unavailable",
                                       "timeout", "rejected", "internal"};
  if (ok()) return "ok";
  return std::string(kNames[static_cast<int>(code_)]) + ": " + message_;
}

}  // namespace herald
