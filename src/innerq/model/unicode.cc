// innerq/model/unicode.cc — UTF-8 decoding and character classes.
#include "innerq/model/unicode.h"

#include <algorithm>
#include <iterator>

namespace innerq::model {
namespace {

#include "innerq/model/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodepointRange (&ranges)[N], uint32_t cp) {
  const auto it = std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                                   [](uint32_t c, const CodepointRange& r) { return c < r.first; });
  return it != std::begin(ranges) && cp <= std::prev(it)->last;
}

constexpr uint32_t kReplacement = 0xFFFD;

}  // namespace

size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

std::vector<Utf8Char> utf8_chars(std::string_view text) {
  std::vector<Utf8Char> out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const size_t len = utf8_length(lead);
    uint32_t cp = kReplacement;
    bool valid = lead < 0x80 || (len > 1 && i + len <= text.size());
    if (lead < 0x80) {
      cp = lead;
    } else if (valid) {
      cp = lead & (0x7F >> len);
      for (size_t k = 1; k < len; ++k) {
        const auto c = static_cast<unsigned char>(text[i + k]);
        if ((c & 0xC0) != 0x80) {
          valid = false;
          break;
        }
        cp = (cp << 6) | (c & 0x3F);
      }
      // Reject overlong forms, surrogates and values past U+10FFFF.
      static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
      if (valid && (cp < kMinForLength[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) {
        valid = false;
      }
    }
    if (!valid) {
      out.push_back({kReplacement, i, 1});
      ++i;
    } else {
      out.push_back({cp, i, len});
      i += len;
    }
  }
  return out;
}

bool utf8_valid(std::string_view text) {
  for (const Utf8Char& c : utf8_chars(text)) {
    if (c.codepoint == kReplacement && c.length == 1) return false;
  }
  return true;
}

std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

bool is_letter(uint32_t cp) {
  return in_ranges(kLetterRanges, cp);
}
bool is_number(uint32_t cp) {
  return in_ranges(kNumberRanges, cp);
}

bool is_whitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

}  // namespace innerq::model
