#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace herald {

// Returns the byte offset of the first byte that is not part of well-formed UTF-8 (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF), or npos if all of `s` is valid.
size_t FindInvalidUtf8(std::string_view s);

// Number of code points in valid UTF-8.
size_t Utf8Length(std::string_view s);

// Text from a provider (a server's reply, a response body) for an error message: at most `max`
// bytes of `s`, valid UTF-8 on one line, because it ends up in logs, traces and JSON dead
// letters. Control characters become spaces, invalid bytes '?', and a character cut by the
// limit is dropped; the result is trimmed.
std::string ProviderText(std::string_view s, size_t max);

// True if `s` contains a C0 control character or DEL (U+0000..U+001F, U+007F).
bool HasControlChars(std::string_view s);

}  // namespace herald
