// Appending JSON to a string without building a tree: for hot paths that emit many documents
// sharing large pre-serialised parts (delivery jobs of one event). Output is compact JSON.
#pragma once

#include <string>
#include <string_view>

namespace herald {

// Appends `s` as a JSON string literal (quotes included), escaping what JSON requires, the same
// bytes as nlohmann's dump() of the string. REQUIRES: `s` is valid UTF-8 (Herald validates every
// input string).
void AppendJsonString(std::string& out, std::string_view s);

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}
  // Continues an object whose opening (and maybe members) `out` already holds.
  static JsonWriter Continuing(std::string& out) {
    JsonWriter w(out);
    w.first_ = out.empty() || out.back() == '{';
    return w;
  }
  JsonWriter& Open() { return Raw("{"), first_ = true, *this; }
  JsonWriter& Close() { out_ += '}'; first_ = false; return *this; }
  // "key":"value" (escaped)
  JsonWriter& Str(std::string_view key, std::string_view value) { Key(key); AppendJsonString(out_, value); return *this; }
  // "key":<fragment> where fragment is already JSON
  JsonWriter& Json(std::string_view key, std::string_view fragment) { Key(key); out_ += fragment; return *this; }
  JsonWriter& Bool(std::string_view key, bool v) { return Json(key, v ? "true" : "false"); }
  JsonWriter& Int(std::string_view key, long long v) { Key(key); out_ += std::to_string(v); return *this; }
  // "key": then the caller appends the value
  JsonWriter& Key(std::string_view key) {
    if (!first_) out_ += ',';
    first_ = false;
    AppendJsonString(out_, key);
    out_ += ':';
    return *this;
  }
  JsonWriter& Raw(std::string_view s) { out_ += s; return *this; }

 private:
  std::string& out_;
  bool first_ = true;
};

}  // namespace herald
