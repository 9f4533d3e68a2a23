// innerq/model/tokenizer.h — the tokenizers GGUF Llama-family models ship,
// built from the file's `tokenizer.ggml.*` metadata.
//
//   llama (SentencePiece-style, stories260K): spaces become "▁", a "▁" is
//     prefixed to the text, then the pair of adjacent pieces whose merge is a
//     vocabulary token with the highest score is merged until none is left;
//     pieces that are not tokens fall back to <0xXX> byte tokens.
//   gpt2 (byte-level BPE, SmolLM2): the text is split by the GPT-2 rule (with
//     every digit split off first for pre-tokenizer "smollm"), each piece's
//     bytes are mapped to printable characters, then merges apply by rank.
//
// Control and user-defined tokens (e.g. <|im_start|>) are matched as whole
// tokens in the input when parse_special is set.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "innerq/model/gguf.h"

namespace innerq::model {

enum class TokenizerKind { kSentencePiece, kBytePairGpt2 };

class Tokenizer {
 public:
  explicit Tokenizer(const GgufFile& file);

  TokenizerKind kind() const { return kind_; }
  const char* kind_name() const;
  const std::string& pre_tokenizer() const { return pre_; }
  int n_vocab() const { return static_cast<int>(tokens_.size()); }
  int bos() const { return bos_; }
  int eos() const { return eos_; }
  bool adds_bos() const { return add_bos_; }
  const std::string& token_text(int id) const { return tokens_[static_cast<size_t>(id)]; }

  std::vector<int> tokenize(std::string_view text, bool add_bos, bool parse_special) const;

  // The text a token stands for; control tokens give "" unless render_special.
  std::string token_to_piece(int id, bool render_special = false) const;
  // Pieces joined; for SentencePiece the prefixed space of the first piece is
  // dropped when the sequence starts at BOS or at the beginning of the text.
  std::string decode(std::span<const int> ids) const;

  // EOS, or any other control token except BOS (<|im_end|>, <|endoftext|>).
  bool ends_generation(int id) const;

  // SmolLM2's chat template (system turn with its default text, one user
  // turn, then the assistant header); throws for models without <|im_start|>.
  std::string chat_prompt(std::string_view user) const;

 private:
  enum TokenType {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6
  };

  void tokenize_spm(std::string_view text, bool space_prefix, std::vector<int>& out) const;
  void tokenize_bpe(std::string_view text, std::vector<int>& out) const;
  void bpe_word(std::string_view word, std::vector<int>& out) const;
  int find_token(std::string_view text) const;

  TokenizerKind kind_ = TokenizerKind::kSentencePiece;
  std::string pre_;
  bool split_digits_ = false;
  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<int> types_;
  std::unordered_map<std::string, int> token_ids_;
  std::unordered_map<std::string, int> merge_ranks_;  // "left right" -> rank
  std::vector<int> specials_;                         // longest first
  int byte_tokens_[256] = {};                         // SentencePiece <0xXX>
  std::string byte_to_char_[256];                     // GPT-2 byte -> unicode
  std::unordered_map<uint32_t, unsigned char> char_to_byte_;
  int bos_ = -1;
  int eos_ = -1;
  int unk_ = -1;
  bool add_bos_ = false;
  bool add_space_prefix_ = true;
};

}  // namespace innerq::model
