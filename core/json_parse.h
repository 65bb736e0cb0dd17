// A strict JSON reader for the hot paths: every delivery job and every event is parsed once per
// message, and nlohmann's own parser (a character-at-a-time lexer that records each token's text
// for its error messages) was a measurable share of heraldd's CPU per event (bench/README.md,
// tenth round).
//
// ParseJson accepts exactly what nlohmann::json::parse(text, nullptr, false) accepts (RFC 8259:
// no comments, no trailing commas, strings of well-formed UTF-8, no unpaired surrogate escapes, a
// number that overflows a double is an error, one optional UTF-8 byte order mark at the start)
// and builds the same document: a non-negative integer is number_unsigned, a negative one
// number_integer, one too big for 64 bits and any number with a fraction or exponent
// number_float; of duplicate object keys the last wins. Two differences, both refusals: nesting
// deeper than `max_depth` (it recurses; nlohmann does not limit depth), and a NUL byte after the
// document (nlohmann takes NUL for the end of its input and ignores what follows). On failure it returns false and
// leaves `out` discarded; the description of an error is nlohmann's to give (parse again with it
// on the rare path that needs one).
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace herald {

constexpr size_t kJsonMaxDepth = 512;

// Where each member of a top-level object is in the text: for a caller that passes a member on
// unchanged (the webhook body carries the job's event, content and data) and need not write the
// parsed value out again. A member is listed only if its text is compact (no white space outside
// strings) and repeats no key, so it is the same value as the parsed one; the keys of the top
// level are not repeated either, or nothing is listed.
struct JsonMemberTexts {
  std::vector<std::pair<std::string, std::string_view>> members;  // (key, value text), in order
  // The text of `key`'s value, or empty.
  std::string_view Find(std::string_view key) const {
    for (const auto& [k, v] : members) {
      if (k == key) return v;
    }
    return {};
  }
};

bool ParseJson(std::string_view text, nlohmann::json& out, size_t max_depth = kJsonMaxDepth,
               JsonMemberTexts* texts = nullptr);

}  // namespace herald
