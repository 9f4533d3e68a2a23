// innerq/model/tokenizer.h — the tokenizers GGUF Llama-family models ship,
// built from the file's `tokenizer.ggml.*` metadata (docs/architecture.md,
// "Tokenizers").
//
//   llama (SentencePiece-style, stories260K): spaces become "▁", a "▁" is
//     prefixed to the text, then the pair of adjacent pieces whose merge is a
//     vocabulary token with the highest score (leftmost on ties) is merged
//     until none is left; pieces that are not tokens fall back to <0xXX>
//     byte tokens.
//   gpt2 (byte-level BPE, SmolLM2): the text is split by the GPT-2 rule (with
//     every digit split off first for pre-tokenizer "smollm"), each piece's
//     bytes are mapped to printable characters, then merges apply by rank
//     (lowest, then leftmost); a symbol that is not a token falls back to
//     the tokens of its bytes' characters.
// Both merge loops keep their candidate pairs in a heap: O(n log n) in the
// length of a piece. Merges and lookups only ever produce normal tokens.
//
// Control and user-defined tokens (e.g. <|im_start|>) are matched as whole
// tokens in the input when parse_special is set; otherwise their text is
// plain text.
//
// Contract, for any byte string x (invalid UTF-8 and NUL included):
//   - tokenize throws innerq::Error only when x holds a byte with no token to
//     fall back to (!has_byte_token(b)), naming that byte and its offset;
//     no byte ever becomes <unk> or a control token.
//   - gpt2: decode(tokenize(x, bos, false)) == x; with parse_special, the
//     pieces rendered with render_special concatenate to x.
//   - SentencePiece whose vocabulary has "▁" and all 256 byte tokens:
//     decode(tokenize(x, bos, false)) == x with every "▁" (U+2581) of x read
//     as a space (decode drops only the prefixed space).
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "innerq/model/gguf.h"

namespace innerq::model {

enum class TokenizerKind { kSentencePiece, kBytePairGpt2 };

// Chat templates, told apart by the turn tokens of the vocabulary.
enum class ChatTemplate {
  kNone,
  kChatMl,  // <|im_start|> / <|im_end|> (SmolLM2)
  kGemma,   // <start_of_turn> / <end_of_turn> (Gemma 3; the reply's role is "model")
};

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

  // Whether the vocabulary spells this byte on its own: its printable
  // character (gpt2) or its <0xXX> token (SentencePiece).
  bool has_byte_token(unsigned char byte) const { return byte_tokens_[byte] >= 0; }

  // The text a token stands for; control tokens give "" unless render_special.
  std::string token_to_piece(int id, bool render_special = false) const;
  // Pieces joined; for SentencePiece the prefixed space of the first piece is
  // dropped when the sequence starts at BOS or at the beginning of the text.
  std::string decode(std::span<const int> ids) const;

  // EOS, or any other control token except BOS (<|im_end|>, <|endoftext|>).
  bool ends_generation(int id) const;

  // The chat template this vocabulary's turn tokens spell, if any.
  ChatTemplate chat_template() const;
  // Throws innerq::Error, naming both templates, when there is none.
  void require_chat_template() const;

  // The text that adds one user turn to a conversation and opens the reply:
  //   ChatML: <|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n
  //   Gemma:  <start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n
  // The first turn starts with the system text: ChatML as a system turn
  // (SmolLM2's default text when `system` is empty), Gemma 3 before the
  // user's text in the same turn, then a blank line (none when empty).
  // A later turn starts by closing the previous reply with the end-of-turn
  // token and "\n": a reply is stored without the token that stopped it
  // (or stopped at a length limit before emitting one). Throws as
  // require_chat_template().
  std::string chat_turn(std::string_view user, std::string_view system, bool first) const;

  // One user turn with the default system text (generate --chat).
  std::string chat_prompt(std::string_view user) const { return chat_turn(user, {}, true); }

 private:
  enum TokenType {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6
  };

  // Fragments of the text start at byte `offset` of it (to name a refused
  // byte); each appends its tokens to `out`.
  void tokenize_spm(std::string_view text, size_t offset, bool space_prefix,
                    std::vector<int>& out) const;
  void tokenize_bpe(std::string_view text, size_t offset, std::vector<int>& out) const;
  void bpe_word(std::string_view word, size_t offset, std::vector<int>& out) const;
  int find_token(std::string_view text) const;
  // The id of a normal token with this text, else -1: merges and piece
  // lookups never produce control, user-defined, unknown, unused or byte
  // tokens, so plain text never turns into one.
  int plain_token(std::string_view text) const;
  // Appends byte_tokens_[byte]; throws naming the byte and its offset when
  // the vocabulary has none.
  void push_byte(unsigned char byte, size_t offset, std::vector<int>& out) const;

  // Lookups by string_view without building a std::string.
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using StringMap = std::unordered_map<std::string, int, StringHash, std::equal_to<>>;

  TokenizerKind kind_ = TokenizerKind::kSentencePiece;
  std::string pre_;
  bool split_digits_ = false;
  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<int> types_;
  StringMap token_ids_;
  StringMap merge_ranks_;           // "left right" -> rank
  std::vector<int> specials_[256];  // by first byte, longest first
  int byte_tokens_[256];            // the token that spells a byte alone, -1 if none
  std::string byte_to_char_[256];   // GPT-2 byte -> unicode
  std::unordered_map<uint32_t, unsigned char> char_to_byte_;
  int bos_ = -1;
  int eos_ = -1;
  bool add_bos_ = false;
  bool add_space_prefix_ = true;
};

}  // namespace innerq::model
