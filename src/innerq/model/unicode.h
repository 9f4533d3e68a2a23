// innerq/model/unicode.h — the few Unicode facts the tokenizers need: UTF-8
// decoding that never fails, and the letter / number / whitespace classes of
// the GPT-2 pre-tokenizer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace innerq::model {

struct CodepointRange {
  uint32_t first;
  uint32_t last;
};

// One decoded character and the bytes it came from. A byte that does not
// start a valid UTF-8 sequence becomes a character of its own (codepoint
// 0xFFFD, one byte), so every input byte belongs to exactly one character.
struct Utf8Char {
  uint32_t codepoint;
  size_t offset;
  size_t length;
};

std::vector<Utf8Char> utf8_chars(std::string_view text);
// Whether every byte of text belongs to a valid UTF-8 sequence (shortest
// form, no surrogates, at most U+10FFFF): utf8_chars() replaced none.
bool utf8_valid(std::string_view text);
std::string utf8_encode(uint32_t codepoint);
// Bytes of the UTF-8 sequence that starts with `lead` (1 for invalid leads).
size_t utf8_length(unsigned char lead);

bool is_letter(uint32_t cp);      // \p{L}
bool is_number(uint32_t cp);      // \p{N}
bool is_whitespace(uint32_t cp);  // \s (Unicode White_Space)

}  // namespace innerq::model
