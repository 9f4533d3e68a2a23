// The SentencePiece round-trip rule the tokenizer tests and the tokenizer
// fuzz target check (docs/architecture.md, "Tokenizers"): decoding the tokens
// of x gives x back with each literal "▁" (U+2581) read as a space.
#pragma once

#include <string>
#include <string_view>

namespace innerq::model::testing {

inline constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // "▁"

inline std::string spm_round_trip(std::string_view x) {
  std::string out;
  for (size_t i = 0; i < x.size();) {
    if (x.substr(i, kSpmSpace.size()) == kSpmSpace) {
      out += ' ';
      i += kSpmSpace.size();
    } else {
      out += x[i++];
    }
  }
  return out;
}

}  // namespace innerq::model::testing
