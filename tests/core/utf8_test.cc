#include <catch2/catch.hpp>

#include "core/utf8.h"

using namespace herald;

TEST_CASE("Utf8: accepts well-formed text and finds the first bad byte") {
  CHECK(FindInvalidUtf8("plain ascii") == std::string_view::npos);
  CHECK(FindInvalidUtf8("gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x94\x94") == std::string_view::npos);
  CHECK(FindInvalidUtf8("ab\xff") == 2);
  CHECK(FindInvalidUtf8("\xc0\xaf") == 0);              // overlong '/'
  CHECK(FindInvalidUtf8("x\xed\xa0\x80") == 1);         // surrogate
  CHECK(FindInvalidUtf8("\xf4\x90\x80\x80") == 0);      // above U+10FFFF
  CHECK(FindInvalidUtf8("\xe2\x82") == 0);              // truncated
  CHECK(Utf8Length("\xe2\x82\xac\xe2\x82\xac") == 2);
  CHECK(HasControlChars("a\nb"));
  CHECK_FALSE(HasControlChars("a b"));
}
