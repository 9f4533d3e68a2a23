// innerq/model/tokenizer.cc — SentencePiece-style and GPT-2 byte-level BPE
// tokenization from GGUF metadata.
#include "innerq/model/tokenizer.h"

#include <algorithm>
#include <functional>
#include <iterator>
#include <cstdint>
#include <queue>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/model/unicode.h"

namespace innerq::model {
namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 "▁"
constexpr std::string_view kChatDefaultSystem =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text.compare(i, from.size(), from) == 0) {
      out += to;
      i += from.size();
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

// Character classes of the GPT-2 split rule.
enum class CharClass { kLetter, kNumber, kOther, kSpace };

CharClass char_class(uint32_t cp) {
  if (is_whitespace(cp)) return CharClass::kSpace;
  if (is_letter(cp)) return CharClass::kLetter;
  if (is_number(cp)) return CharClass::kNumber;
  return CharClass::kOther;
}

// The GPT-2 pre-tokenizer over chars [begin, end):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Calls emit(first_char, end_char) for each piece, left to right.
template <typename Emit>
void gpt2_split(const std::vector<Utf8Char>& cs, size_t begin, size_t end, Emit&& emit) {
  size_t i = begin;
  while (i < end) {
    const uint32_t c = cs[i].codepoint;
    size_t j = i;
    if (c == '\'' && i + 1 < end) {
      const uint32_t c1 = cs[i + 1].codepoint;
      const uint32_t c2 = i + 2 < end ? cs[i + 2].codepoint : 0;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        j = i + 2;
      } else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
        j = i + 3;
      }
    }
    if (j == i) {
      // ` ?X+` for the three non-space classes: an optional leading U+0020.
      const size_t k = (c == ' ' && i + 1 < end) ? i + 1 : i;
      const CharClass cls = char_class(cs[k].codepoint);
      if (cls != CharClass::kSpace) {
        j = k + 1;
        while (j < end && char_class(cs[j].codepoint) == cls) ++j;
      } else {
        // Whitespace run [i, r): `\s+(?!\S)` leaves the last space for the
        // next piece when non-space follows; `\s+` takes a lone one.
        size_t r = i + 1;
        while (r < end && is_whitespace(cs[r].codepoint)) ++r;
        j = (r < end && r - i >= 2) ? r - 1 : r;
      }
    }
    emit(i, j);
    i = j;
  }
}

}  // namespace

Tokenizer::Tokenizer(const GgufFile& file) {
  std::fill(std::begin(byte_tokens_), std::end(byte_tokens_), -1);
  const std::string model = file.get_string("tokenizer.ggml.model", "");
  if (model == "llama") {
    kind_ = TokenizerKind::kSentencePiece;
  } else if (model == "gpt2") {
    kind_ = TokenizerKind::kBytePairGpt2;
  } else {
    throw Error(file.describe(
        fmt::format("tokenizer.ggml.model '{}' is not supported (llama, gpt2)", model)));
  }

  const GgufValue& toks = file.get_array("tokenizer.ggml.tokens", GgufType::kString);
  tokens_.reserve(toks.array.size());
  for (const GgufValue& t : toks.array) tokens_.emplace_back(t.s);
  if (tokens_.empty()) throw Error(file.describe("tokenizer.ggml.tokens is empty"));
  const int n = n_vocab();
  for (int id = 0; id < n; ++id) token_ids_.emplace(tokens_[static_cast<size_t>(id)], id);

  types_.assign(static_cast<size_t>(n), kNormal);
  if (file.find("tokenizer.ggml.token_type") != nullptr) {
    const GgufValue& types = file.get_array("tokenizer.ggml.token_type", GgufType::kI32);
    if (types.array.size() != tokens_.size()) {
      throw Error(
          file.describe("tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length"));
    }
    for (int id = 0; id < n; ++id)
      types_[static_cast<size_t>(id)] = static_cast<int>(types.array[static_cast<size_t>(id)].i);
  }
  auto token_id = [&](std::string_view key, int fallback) {
    const uint64_t v =
        file.get_uint(key, static_cast<uint64_t>(fallback < 0 ? UINT32_MAX : fallback));
    if (v == UINT32_MAX) return -1;  // llama.cpp writes 0xFFFFFFFF for "none"
    if (v >= static_cast<uint64_t>(n)) {
      throw Error(file.describe(fmt::format("{} = {} is outside the vocabulary of {}", key, v, n)));
    }
    return static_cast<int>(v);
  };

  if (kind_ == TokenizerKind::kSentencePiece) {
    const GgufValue& scores = file.get_array("tokenizer.ggml.scores", GgufType::kF32);
    if (scores.array.size() != tokens_.size()) {
      throw Error(
          file.describe("tokenizer.ggml.scores and tokenizer.ggml.tokens differ in length"));
    }
    for (const GgufValue& s : scores.array) scores_.push_back(static_cast<float>(s.f));
    // Byte fallback: <0xXX> tokens of type byte (or of any type when the file
    // has no token types). A vocabulary may lack some or all of them; a byte
    // that needs a missing one is refused when it is tokenized.
    const bool typed = file.find("tokenizer.ggml.token_type") != nullptr;
    for (int b = 0; b < 256; ++b) {
      const int id = find_token(fmt::format("<0x{:02X}>", b));
      if (id < 0 || (typed && types_[static_cast<size_t>(id)] != kByte)) continue;
      types_[static_cast<size_t>(id)] = kByte;
      byte_tokens_[b] = id;
    }
    bos_ = token_id("tokenizer.ggml.bos_token_id", 1);
    eos_ = token_id("tokenizer.ggml.eos_token_id", 2);
    add_bos_ = file.get_bool("tokenizer.ggml.add_bos_token", true);
    add_space_prefix_ = file.get_bool("tokenizer.ggml.add_space_prefix", true);
  } else {
    pre_ = file.get_string("tokenizer.ggml.pre", "default");
    if (pre_ == "smollm") {
      split_digits_ = true;
    } else if (pre_ != "default" && pre_ != "gpt-2") {
      throw Error(file.describe(
          fmt::format("pre-tokenizer '{}' is not supported (smollm, gpt-2, default)", pre_)));
    }
    const GgufValue& merges = file.get_array("tokenizer.ggml.merges", GgufType::kString);
    int rank = 0;  // string arrays are read in order (GgufArray decodes on demand)
    for (const GgufValue& m : merges.array) merge_ranks_.emplace(std::string(m.s), rank++);
    // GPT-2's byte <-> printable-character table: printable Latin-1 bytes map
    // to themselves, the other 68 to U+0100 onwards in byte order.
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(next++);
      byte_to_char_[b] = utf8_encode(cp);
      char_to_byte_[cp] = static_cast<unsigned char>(b);
    }
    // Byte fallback: a byte's printable character, where it is a token.
    for (int b = 0; b < 256; ++b) byte_tokens_[b] = plain_token(byte_to_char_[b]);
    bos_ = token_id("tokenizer.ggml.bos_token_id", -1);
    eos_ = token_id("tokenizer.ggml.eos_token_id", -1);
    add_bos_ = file.get_bool("tokenizer.ggml.add_bos_token", false);
  }

  for (int id = 0; id < n; ++id) {
    const int t = types_[static_cast<size_t>(id)];
    const std::string& text = tokens_[static_cast<size_t>(id)];
    if ((t == kControl || t == kUserDefined) && !text.empty())
      specials_[static_cast<unsigned char>(text[0])].push_back(id);
  }
  for (std::vector<int>& ids : specials_) {
    std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) {
      return tokens_[static_cast<size_t>(a)].size() > tokens_[static_cast<size_t>(b)].size();
    });
  }
}

const char* Tokenizer::kind_name() const {
  return kind_ == TokenizerKind::kSentencePiece ? "llama (SentencePiece)" : "gpt2 (byte-level BPE)";
}

int Tokenizer::find_token(std::string_view text) const {
  const auto it = token_ids_.find(text);
  return it == token_ids_.end() ? -1 : it->second;
}

int Tokenizer::plain_token(std::string_view text) const {
  const int id = find_token(text);
  return id >= 0 && types_[static_cast<size_t>(id)] == kNormal ? id : -1;
}

void Tokenizer::push_byte(unsigned char byte, size_t offset, std::vector<int>& out) const {
  if (byte_tokens_[byte] < 0) {
    throw Error(fmt::format(
        "tokenizer: byte 0x{:02X} at offset {} of the text has no token in this vocabulary and "
        "no byte fallback",
        byte, offset));
  }
  out.push_back(byte_tokens_[byte]);
}

std::vector<int> Tokenizer::tokenize(std::string_view text, bool add_bos,
                                     bool parse_special) const {
  std::vector<int> out;
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  size_t start = 0;  // start of the pending plain-text fragment
  // SentencePiece prefixes "▁" to text at the start and after a special
  // token (as llama.cpp does).
  bool after_special = true;
  auto flush = [&](size_t end) {
    if (end > start) {
      const std::string_view frag = text.substr(start, end - start);
      if (kind_ == TokenizerKind::kSentencePiece) {
        tokenize_spm(frag, start, after_special, out);
      } else {
        tokenize_bpe(frag, start, out);
      }
      after_special = false;
    }
  };
  if (parse_special) {
    size_t i = 0;
    while (i < text.size()) {
      int match = -1;
      for (int id : specials_[static_cast<unsigned char>(text[i])]) {
        const std::string& s = tokens_[static_cast<size_t>(id)];
        if (text.compare(i, s.size(), s) == 0) {
          match = id;
          break;
        }
      }
      if (match < 0) {
        ++i;
        continue;
      }
      flush(i);
      out.push_back(match);
      after_special = true;
      i += tokens_[static_cast<size_t>(match)].size();
      start = i;
    }
  }
  flush(text.size());
  return out;
}

// ---------------------------------------------------------------------------
// SentencePiece: best-score bigram merges over a linked list of pieces, the
// candidate pairs in a max-heap (docs/architecture.md, "Tokenizers").
// ---------------------------------------------------------------------------

void Tokenizer::tokenize_spm(std::string_view text, size_t offset, bool space_prefix,
                             std::vector<int>& out) const {
  const size_t prefix = space_prefix && add_space_prefix_ ? kSpmSpace.size() : 0;
  std::string s(kSpmSpace.substr(0, prefix));
  s += replace_all(text, " ", kSpmSpace);

  // One piece per character; a byte that starts no valid UTF-8 sequence is a
  // piece of its own, so an invalid byte never swallows a "▁" after it.
  struct Piece {
    int prev, next;
    size_t offset, length;  // length 0: merged into the piece on its left
  };
  std::vector<Piece> pieces;
  for (const Utf8Char& c : utf8_chars(s)) {
    const int i = static_cast<int>(pieces.size());
    pieces.push_back({i - 1, i + 1, c.offset, c.length});
  }
  if (pieces.empty()) return;
  pieces.back().next = -1;

  struct Bigram {
    float score;
    int left, right;
    size_t length;
    bool operator<(const Bigram& o) const {  // max-heap: higher score, then leftmost
      return score < o.score || (score == o.score && left > o.left);
    }
  };
  std::priority_queue<Bigram> queue;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Piece& l = pieces[static_cast<size_t>(left)];
    const Piece& r = pieces[static_cast<size_t>(right)];
    const int id = plain_token(std::string_view(s).substr(l.offset, l.length + r.length));
    if (id < 0) return;
    queue.push({scores_[static_cast<size_t>(id)], left, right, l.length + r.length});
  };
  for (size_t i = 1; i < pieces.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));

  // Each merge pushes at most two pairs, so the heap sees O(n) entries and
  // the loop costs O(n log n). An entry is stale once either piece has
  // changed: the left one absorbed its neighbour or the right one grew.
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Piece& l = pieces[static_cast<size_t>(b.left)];
    Piece& r = pieces[static_cast<size_t>(b.right)];
    if (l.length == 0 || r.length == 0 || l.next != b.right || l.length + r.length != b.length)
      continue;
    l.length += r.length;
    r.length = 0;
    l.next = r.next;
    if (r.next >= 0) pieces[static_cast<size_t>(r.next)].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  // The text offset of byte k of s: the prefix stands before offset 0, a
  // "▁" for the space it replaced. Only needed to name a refused byte.
  auto text_offset = [&](size_t k) {
    size_t pos = prefix, i = 0;
    if (k < pos) return offset;
    for (; i < text.size(); ++i) {
      pos += text[i] == ' ' ? kSpmSpace.size() : 1;
      if (k < pos) break;
    }
    return offset + i;
  };
  for (int i = 0; i >= 0; i = pieces[static_cast<size_t>(i)].next) {
    const Piece& p = pieces[static_cast<size_t>(i)];
    const std::string_view piece = std::string_view(s).substr(p.offset, p.length);
    const int id = plain_token(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (size_t k = p.offset; k < p.offset + p.length; ++k) {
      const auto byte = static_cast<unsigned char>(s[k]);
      if (byte_tokens_[byte] >= 0) {
        out.push_back(byte_tokens_[byte]);
        continue;
      }
      const size_t at = text_offset(k);
      if (k < prefix || text[at - offset] == ' ') {
        throw Error(fmt::format(
            "tokenizer: the space mark \"{}\" for offset {} of the text has no token in this "
            "vocabulary and no byte fallback (byte 0x{:02X})",
            kSpmSpace, at, byte));
      }
      push_byte(byte, at, out);
    }
  }
}

// ---------------------------------------------------------------------------
// GPT-2 byte-level BPE.
// ---------------------------------------------------------------------------

void Tokenizer::tokenize_bpe(std::string_view text, size_t offset, std::vector<int>& out) const {
  const std::vector<Utf8Char> cs = utf8_chars(text);
  auto emit = [&](size_t a, size_t b) {
    const size_t from = cs[a].offset;
    const size_t to = cs[b - 1].offset + cs[b - 1].length;
    bpe_word(text.substr(from, to - from), offset + from, out);
  };
  if (!split_digits_) {
    gpt2_split(cs, 0, cs.size(), emit);
    return;
  }
  // pre-tokenizer "smollm": every \p{N} character is a piece of its own; the
  // GPT-2 rule splits the text between them.
  size_t seg = 0;
  for (size_t i = 0; i < cs.size(); ++i) {
    if (!is_number(cs[i].codepoint)) continue;
    gpt2_split(cs, seg, i, emit);
    emit(i, i + 1);
    seg = i + 1;
  }
  gpt2_split(cs, seg, cs.size(), emit);
}

// Merges by rank over a linked list of symbols, the candidate pairs in a
// min-heap on (rank, position): the pair merged next is always the
// lowest-ranked, leftmost one, as in a rescan of every pair, in O(n log n)
// (docs/architecture.md, "Tokenizers").
void Tokenizer::bpe_word(std::string_view word, size_t offset, std::vector<int>& out) const {
  if (word.size() == 1) {
    push_byte(static_cast<unsigned char>(word[0]), offset, out);
    return;
  }
  // The word with each byte written as its printable character; symbol i
  // starts at byte i of the word and spans chars [begin, end) of `chars`.
  std::string chars;
  chars.reserve(2 * word.size());
  struct Symbol {
    size_t begin, end;
    int prev, next;  // -1: none; a merged-away symbol has begin == end
  };
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  for (unsigned char byte : word) {
    const int i = static_cast<int>(syms.size());
    syms.push_back({chars.size(), chars.size() + byte_to_char_[byte].size(), i - 1, i + 1});
    chars += byte_to_char_[byte];
  }
  syms.back().next = -1;

  struct Pair {
    int rank, left, right;
    size_t right_end;  // where the right symbol ended when the pair was seen
    bool operator>(const Pair& o) const {
      return rank > o.rank || (rank == o.rank && left > o.left);
    }
  };
  std::priority_queue<Pair, std::vector<Pair>, std::greater<>> queue;
  std::string key;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = syms[static_cast<size_t>(left)];
    const Symbol& r = syms[static_cast<size_t>(right)];
    key.assign(chars, l.begin, l.end - l.begin).append(" ").append(chars, r.begin, r.end - r.begin);
    const auto it = merge_ranks_.find(key);
    if (it != merge_ranks_.end()) queue.push({it->second, left, right, r.end});
  };
  for (size_t i = 1; i < syms.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));

  // Stale entries (either symbol merged away, or the right one grown) are
  // skipped; each merge pushes at most two pairs.
  while (!queue.empty()) {
    const Pair p = queue.top();
    queue.pop();
    Symbol& l = syms[static_cast<size_t>(p.left)];
    Symbol& r = syms[static_cast<size_t>(p.right)];
    if (l.begin == l.end || r.begin == r.end || l.next != p.right || r.end != p.right_end) continue;
    l.end = r.end;
    l.next = r.next;
    r.begin = r.end;
    if (l.next >= 0) syms[static_cast<size_t>(l.next)].prev = p.left;
    try_add(l.prev, p.left);
    try_add(p.left, l.next);
  }

  // A symbol that is not a token (a merge whose result is missing from the
  // vocabulary, or a lone byte without one) falls back to its bytes.
  for (int i = 0; i >= 0; i = syms[static_cast<size_t>(i)].next) {
    const Symbol& sym = syms[static_cast<size_t>(i)];
    const int id = plain_token(std::string_view(chars).substr(sym.begin, sym.end - sym.begin));
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    const size_t end = sym.next >= 0 ? static_cast<size_t>(sym.next) : word.size();
    for (size_t k = static_cast<size_t>(i); k < end; ++k)
      push_byte(static_cast<unsigned char>(word[k]), offset + k, out);
  }
}

// ---------------------------------------------------------------------------
// Detokenization, chat template.
// ---------------------------------------------------------------------------

std::string Tokenizer::token_to_piece(int id, bool render_special) const {
  if (id < 0 || id >= n_vocab())
    throw Error(fmt::format("token id {} is outside the vocabulary of {}", id, n_vocab()));
  const std::string& text = tokens_[static_cast<size_t>(id)];
  const int type = types_[static_cast<size_t>(id)];
  if (type == kControl) return render_special ? text : std::string();
  if (type == kUserDefined) return text;
  if (kind_ == TokenizerKind::kSentencePiece) {
    if (type == kByte) {
      for (int b = 0; b < 256; ++b) {
        if (byte_tokens_[b] == id) return std::string(1, static_cast<char>(b));
      }
    }
    return replace_all(text, kSpmSpace, " ");
  }
  std::string bytes;
  for (const Utf8Char& c : utf8_chars(text)) {
    const auto it = char_to_byte_.find(c.codepoint);
    if (it != char_to_byte_.end()) {
      bytes.push_back(static_cast<char>(it->second));
    } else {
      bytes.append(text, c.offset, c.length);
    }
  }
  return bytes;
}

std::string Tokenizer::decode(std::span<const int> ids) const {
  std::string out;
  bool at_start = true;
  for (int id : ids) {
    std::string piece = token_to_piece(id);
    if (at_start && kind_ == TokenizerKind::kSentencePiece && add_space_prefix_ && !piece.empty() &&
        piece[0] == ' ') {
      piece.erase(0, 1);
    }
    if (!piece.empty() || id != bos_) at_start = false;
    out += piece;
  }
  return out;
}

bool Tokenizer::ends_generation(int id) const {
  return id == eos_ || (types_[static_cast<size_t>(id)] == kControl && id != bos_);
}

ChatTemplate Tokenizer::chat_template() const {
  if (find_token("<|im_start|>") >= 0 && find_token("<|im_end|>") >= 0) {
    return ChatTemplate::kChatMl;
  }
  if (find_token("<start_of_turn>") >= 0 && find_token("<end_of_turn>") >= 0) {
    return ChatTemplate::kGemma;
  }
  return ChatTemplate::kNone;
}

void Tokenizer::require_chat_template() const {
  if (chat_template() != ChatTemplate::kNone) return;
  throw Error(
      "chat needs a model with a chat template: <|im_start|>/<|im_end|> (ChatML, e.g. smollm2) "
      "or <start_of_turn>/<end_of_turn> (Gemma 3, e.g. gemma3-270m); this vocabulary has neither");
}

std::string Tokenizer::chat_turn(std::string_view user, std::string_view system, bool first) const {
  require_chat_template();
  if (chat_template() == ChatTemplate::kGemma) {
    return fmt::format("{}<start_of_turn>user\n{}{}<end_of_turn>\n<start_of_turn>model\n",
                       first ? "" : "<end_of_turn>\n",
                       first && !system.empty() ? fmt::format("{}\n\n", system) : "", user);
  }
  return fmt::format("{}<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
                     first ? fmt::format("<|im_start|>system\n{}<|im_end|>\n",
                                         system.empty() ? kChatDefaultSystem : system)
                           : "<|im_end|>\n",
                     user);
}

}  // namespace innerq::model
