// tests/fuzz/tokenizer_fuzz.cc — the tokenizers under arbitrary bytes
// (docs/architecture.md, "Tokenizers"). The models come from
// INNERQ_FUZZ_MODEL, a ':'-separated list of GGUF paths relative to the
// current directory (the repository root); by default SmolLM2 (gpt2 BPE) and
// stories260K (SentencePiece). Contract, for each input x (its first 64 KiB):
//   - tokenize(x, false, parse_special), both ways, returns or throws
//     innerq::Error, and throws only when x holds a byte the vocabulary has
//     no token for (!has_byte_token);
//   - every id is in the vocabulary; without parse_special none is a control
//     token (a byte never becomes <|endoftext|>);
//   - gpt2: decode(tokenize(x, false, false)) == x, and the pieces of
//     tokenize(x, false, true) rendered with render_special concatenate to x;
//   - SentencePiece with "▁" and all 256 byte tokens: decode(tokenize(x,
//     false, false)) == x with each "▁" of x read as a space.
// Any other exception, a crash, a hang or a failed check is a bug.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/model/gguf.h"
#include "innerq/model/tokenizer.h"
#include "../model/spm_round_trip.h"

namespace {

using innerq::model::GgufFile;
using innerq::model::Tokenizer;
using innerq::model::TokenizerKind;

constexpr size_t kMaxInput = size_t{64} << 10;
using innerq::model::testing::kSpmSpace;

struct Model {
  std::string path;
  Tokenizer tok;
  bool spm_round_trip;  // SentencePiece with "▁" and every byte token
};

bool spells_every_byte(const Tokenizer& tok) {
  for (int b = 0; b < 256; ++b) {
    if (!tok.has_byte_token(static_cast<unsigned char>(b))) return false;
  }
  return true;
}

bool has_space_mark(const Tokenizer& tok) {
  for (int id = 0; id < tok.n_vocab(); ++id) {
    if (tok.token_text(id) == kSpmSpace && tok.token_to_piece(id) == " ") return true;
  }
  return false;
}

const std::vector<Model>& models() {
  static const std::vector<Model> loaded = [] {
    const char* env = std::getenv("INNERQ_FUZZ_MODEL");
    const std::string list =
        env != nullptr && *env != '\0'
            ? env
            : "models/SmolLM2-135M-Instruct.Q4_1.gguf:../shared/data/models/stories260K.gguf";
    std::vector<Model> out;
    size_t begin = 0;
    while (begin <= list.size()) {
      const size_t end = std::min(list.find(':', begin), list.size());
      const std::string path = list.substr(begin, end - begin);
      begin = end + 1;
      if (path.empty()) continue;
      try {
        const GgufFile file(path);
        Tokenizer tok(file);
        const bool spm = tok.kind() == TokenizerKind::kSentencePiece && spells_every_byte(tok) &&
                         has_space_mark(tok);
        out.push_back({path, std::move(tok), spm});
      } catch (const innerq::Error& e) {
        std::fprintf(stderr,
                     "tokenizer_fuzz: cannot load the tokenizer of %s (%s); run from the "
                     "repository root after scripts/fetch-model.sh, or name GGUF files in "
                     "INNERQ_FUZZ_MODEL (':'-separated)\n",
                     path.c_str(), e.what());
        std::abort();
      }
    }
    if (out.empty()) {
      std::fprintf(stderr, "tokenizer_fuzz: INNERQ_FUZZ_MODEL names no file\n");
      std::abort();
    }
    return out;
  }();
  return loaded;
}

[[noreturn]] void fail(const Model& m, std::string_view x, const std::string& what) {
  std::fprintf(stderr, "tokenizer_fuzz: %s: %s\ninput (%zu bytes, hex): ", m.path.c_str(),
               what.c_str(), x.size());
  for (unsigned char c : x) std::fprintf(stderr, "%02x", c);
  std::fprintf(stderr, "\n");
  __builtin_trap();
}

void check(const Model& m, std::string_view x, bool parse_special) {
  const Tokenizer& tok = m.tok;
  std::vector<int> ids;
  try {
    ids = tok.tokenize(x, false, parse_special);
  } catch (const innerq::Error& e) {
    const bool allowed = std::any_of(x.begin(), x.end(), [&](char c) {
      return !tok.has_byte_token(static_cast<unsigned char>(c));
    });
    if (!allowed)
      fail(m, x, std::string("innerq::Error though every byte has a token: ") + e.what());
    return;
  }
  for (int id : ids) {
    if (id < 0 || id >= tok.n_vocab()) fail(m, x, "token id outside the vocabulary");
    if (!parse_special && tok.ends_generation(id)) fail(m, x, "plain text became a control token");
  }
  if (tok.kind() == TokenizerKind::kBytePairGpt2) {
    if (!parse_special) {
      if (tok.decode(ids) != x) fail(m, x, "decode(tokenize(x)) != x");
    } else {
      std::string rendered;
      for (int id : ids) rendered += tok.token_to_piece(id, /*render_special=*/true);
      if (rendered != x) fail(m, x, "rendered pieces of tokenize(x, parse_special) != x");
    }
  } else if (m.spm_round_trip && !parse_special) {
    if (tok.decode(ids) != innerq::model::testing::spm_round_trip(x))
      fail(m, x, "decode(tokenize(x)) != x with \"▁\" read as a space");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view x(reinterpret_cast<const char*>(data), std::min(size, kMaxInput));
  for (const Model& m : models()) {
    try {
      check(m, x, false);
      check(m, x, true);
    } catch (const std::exception& e) {
      fail(m, x, std::string("unexpected exception: ") + e.what());
    }
  }
  return 0;
}
