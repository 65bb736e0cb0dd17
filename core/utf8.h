#pragma once

#include <cstddef>
#include <string_view>

namespace herald {

// Returns the byte offset of the first byte that is not part of well-formed UTF-8 (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF), or npos if all of `s` is valid.
size_t FindInvalidUtf8(std::string_view s);

// Number of code points in valid UTF-8.
size_t Utf8Length(std::string_view s);

// True if `s` contains a C0 control character or DEL (U+0000..U+001F, U+007F).
bool HasControlChars(std::string_view s);

}  // namespace herald
