// Tokenizer hardening (docs/architecture.md, "Tokenizers"):
//   - the heap-ordered merges give exactly the tokens of a deliberately simple
//     O(n²) reference kept here, on random and adversarial strings, for
//     SmolLM2 (gpt2 BPE), stories260K (SentencePiece) and small synthetic
//     vocabularies with adversarial merge tables;
//   - a 1 MiB space-free run costs about as much as 1024 runs of 1 KiB;
//   - a byte the vocabulary cannot spell is refused with its offset, never
//     turned into a control token;
//   - decode(tokenize(x)) gives x back for every byte string x (gpt2), and x
//     with each "▁" read as a space (SentencePiece with byte fallback).
// SmolLM2 needs scripts/fetch-model.sh (its tests skip and say so without it);
// stories260K is required, as in stories_test.cc.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "innerq/base/error.h"
#include "innerq/model/gguf.h"
#include "innerq/model/model_path.h"
#include "innerq/model/tokenizer.h"
#include "spm_round_trip.h"
#include "innerq/model/unicode.h"
#include "sanitized.h"

namespace innerq::model {
namespace {

constexpr int kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6;
const std::string kSpmSpace(testing::kSpmSpace);  // "▁"

std::string hex(std::string_view s) {
  std::string out;
  char buf[4];
  for (unsigned char c : s) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Synthetic tokenizer-only GGUF files.
// ---------------------------------------------------------------------------

class VocabFile {
 public:
  VocabFile& string(const std::string& key, const std::string& value) {
    kv(key, 8);
    str(value);
    return *this;
  }
  VocabFile& strings(const std::string& key, const std::vector<std::string>& values) {
    array(key, 8, values.size());
    for (const std::string& v : values) str(v);
    return *this;
  }
  VocabFile& i32s(const std::string& key, const std::vector<int>& values) {
    array(key, 5, values.size());
    for (int v : values) put<int32_t>(v);
    return *this;
  }
  VocabFile& f32s(const std::string& key, const std::vector<float>& values) {
    array(key, 6, values.size());
    for (float v : values) put<float>(v);
    return *this;
  }
  VocabFile& u32(const std::string& key, uint32_t value) {
    kv(key, 4);
    put<uint32_t>(value);
    return *this;
  }

  Tokenizer load(const std::string& tag) const {
    std::vector<uint8_t> bytes;
    auto raw = [&](const void* p, size_t n) {
      const auto* b = static_cast<const uint8_t*>(p);
      bytes.insert(bytes.end(), b, b + n);
    };
    const uint32_t magic = 0x46554747, version = 3;
    const uint64_t n_tensors = 0, n_kv = n_kv_;
    raw(&magic, 4);
    raw(&version, 4);
    raw(&n_tensors, 8);
    raw(&n_kv, 8);
    bytes.insert(bytes.end(), body_.begin(), body_.end());
    while (bytes.size() % 32 != 0) bytes.push_back(0);
    // The pid keeps concurrent test processes (ctest -j) apart.
    const std::string path =
        ::testing::TempDir() + "innerq_tok_" + std::to_string(getpid()) + "_" + tag + ".gguf";
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
    const GgufFile file(path);
    Tokenizer tok(file);
    std::remove(path.c_str());
    return tok;
  }

 private:
  template <typename T>
  void put(T v) {
    const size_t at = body_.size();
    body_.resize(at + sizeof(T));
    std::memcpy(body_.data() + at, &v, sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    body_.insert(body_.end(), s.begin(), s.end());
  }
  void kv(const std::string& key, uint32_t type) {
    str(key);
    put<uint32_t>(type);
    ++n_kv_;
  }
  void array(const std::string& key, uint32_t elem, size_t n) {
    kv(key, 9);
    put<uint32_t>(elem);
    put<uint64_t>(n);
  }

  std::vector<uint8_t> body_;
  uint64_t n_kv_ = 0;
};

// GPT-2's byte -> printable character table, written out independently of
// the tokenizer: printable Latin-1 bytes stand for themselves, the other 68
// bytes take U+0100 onwards in byte order.
const std::array<std::string, 256>& gpt2_byte_chars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[static_cast<size_t>(b)] = utf8_encode(printable ? static_cast<uint32_t>(b) : next++);
    }
    return t;
  }();
  return table;
}

// ---------------------------------------------------------------------------
// The O(n²) references: rescan every pair for every merge.
// ---------------------------------------------------------------------------

// Only normal tokens come out of merges and piece lookups; control,
// user-defined, unknown, unused and byte tokens never stand for plain text.
bool plain(int type) {
  return type == kNormal;
}

struct Vocab {
  std::unordered_map<std::string, int> ids;
  std::vector<int> types;
  std::vector<float> scores;                   // SentencePiece
  std::unordered_map<std::string, int> ranks;  // gpt2: "left right" -> rank
  std::array<int, 256> spm_bytes{};            // <0xXX>, -1 if none
  int plain_id(const std::string& text) const {
    const auto it = ids.find(text);
    return it != ids.end() && plain(types[static_cast<size_t>(it->second)]) ? it->second : -1;
  }
};

Vocab vocab_of(const GgufFile& file) {
  Vocab v;
  // String arrays are read by iteration (indexing one walks it).
  int id = 0;
  for (const GgufValue& t : file.get_array("tokenizer.ggml.tokens", GgufType::kString).array)
    v.ids.emplace(std::string(t.s), id++);
  for (const GgufValue& t : file.get_array("tokenizer.ggml.token_type", GgufType::kI32).array)
    v.types.push_back(static_cast<int>(t.i));
  if (file.get_string("tokenizer.ggml.model") == "gpt2") {
    int rank = 0;
    for (const GgufValue& m : file.get_array("tokenizer.ggml.merges", GgufType::kString).array)
      v.ranks.emplace(std::string(m.s), rank++);
  } else {
    for (const auto& s : file.get_array("tokenizer.ggml.scores", GgufType::kF32).array)
      v.scores.push_back(static_cast<float>(s.f));
    char name[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      const auto it = v.ids.find(name);
      v.spm_bytes[static_cast<size_t>(b)] = it == v.ids.end() ? -1 : it->second;
    }
  }
  return v;
}

// Tokens, or the offset of the first byte the vocabulary cannot spell.
struct Expected {
  std::vector<int> ids;
  std::optional<size_t> bad_offset;
};

// One gpt2 pre-tokenizer piece that starts at byte `base` of the text.
void reference_bpe_piece(const Vocab& v, std::string_view piece, size_t base, Expected& e) {
  if (e.bad_offset) return;
  std::vector<std::string> syms;
  std::vector<size_t> starts;
  for (size_t i = 0; i < piece.size(); ++i) {
    syms.push_back(gpt2_byte_chars()[static_cast<unsigned char>(piece[i])]);
    starts.push_back(i);
  }
  for (;;) {
    int best_rank = std::numeric_limits<int>::max();
    size_t best = 0;
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
      const auto it = v.ranks.find(syms[i] + " " + syms[i + 1]);
      if (it != v.ranks.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == std::numeric_limits<int>::max()) break;
    syms[best] += syms[best + 1];
    syms.erase(syms.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    starts.erase(starts.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  for (size_t k = 0; k < syms.size(); ++k) {
    const int id = v.plain_id(syms[k]);
    if (id >= 0) {
      e.ids.push_back(id);
      continue;
    }
    const size_t end = k + 1 < syms.size() ? starts[k + 1] : piece.size();
    for (size_t i = starts[k]; i < end; ++i) {
      const int b = v.plain_id(gpt2_byte_chars()[static_cast<unsigned char>(piece[i])]);
      if (b < 0) {
        e.bad_offset = base + i;
        return;
      }
      e.ids.push_back(b);
    }
  }
}

Expected reference_bpe(const Vocab& v, const std::vector<std::string>& pieces) {
  Expected e;
  size_t base = 0;
  for (const std::string& p : pieces) {
    reference_bpe_piece(v, p, base, e);
    base += p.size();
  }
  return e;
}

// SentencePiece with the "▁" prefix: merge the adjacent pair whose
// concatenation is a plain token with the highest score, leftmost on ties.
Expected reference_spm(const Vocab& v, std::string_view text) {
  if (text.empty()) return {};
  std::string s = kSpmSpace;
  std::vector<size_t> text_offset = {0, 0, 0};  // of every byte of s
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ' ') {
      s += kSpmSpace;
      text_offset.insert(text_offset.end(), 3, i);
    } else {
      s += text[i];
      text_offset.push_back(i);
    }
  }
  std::vector<std::string> syms;
  std::vector<size_t> starts;
  for (const Utf8Char& c : utf8_chars(s)) {
    syms.push_back(s.substr(c.offset, c.length));
    starts.push_back(c.offset);
  }
  for (;;) {
    float best_score = -std::numeric_limits<float>::infinity();
    size_t best = syms.size();
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
      const int id = v.plain_id(syms[i] + syms[i + 1]);
      if (id >= 0 && (best == syms.size() || v.scores[static_cast<size_t>(id)] > best_score)) {
        best_score = v.scores[static_cast<size_t>(id)];
        best = i;
      }
    }
    if (best == syms.size()) break;
    syms[best] += syms[best + 1];
    syms.erase(syms.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    starts.erase(starts.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  Expected e;
  for (size_t k = 0; k < syms.size(); ++k) {
    const int id = v.plain_id(syms[k]);
    if (id >= 0) {
      e.ids.push_back(id);
      continue;
    }
    for (size_t i = 0; i < syms[k].size(); ++i) {
      const int b = v.spm_bytes[static_cast<unsigned char>(syms[k][i])];
      if (b < 0) {
        e.bad_offset = text_offset[starts[k] + i];
        return e;
      }
      e.ids.push_back(b);
    }
  }
  return e;
}

void expect_tokens(const Tokenizer& tok, const std::string& text, const Expected& want) {
  if (want.bad_offset) {
    try {
      const std::vector<int> got = tok.tokenize(text, false, false);
      ADD_FAILURE() << "no error for text (hex) " << hex(text) << ", expected one at offset "
                    << *want.bad_offset;
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find("offset " + std::to_string(*want.bad_offset)),
                std::string::npos)
          << err.what() << " (text hex " << hex(text) << ")";
    }
    return;
  }
  EXPECT_EQ(tok.tokenize(text, false, false), want.ids) << "text (hex) " << hex(text);
}

// ---------------------------------------------------------------------------
// Strings.
// ---------------------------------------------------------------------------

template <typename T, size_t N>
const T& pick(std::mt19937& rng, const T (&from)[N]) {
  return from[std::uniform_int_distribution<size_t>(0, N - 1)(rng)];
}

// Text made of pieces that the "smollm" pre-tokenizer keeps apart: runs of
// letters, runs of other characters (invalid UTF-8, NUL and bytes SmolLM2
// cannot spell included), single digits; a letter or other run after the
// first may take one leading space. No apostrophes (contractions).
std::vector<std::string> random_gpt2_pieces(std::mt19937& rng) {
  static const std::string kLetters[] = {"a", "a", "e", "t",  "h",  "s", "in", "er",
                                         "Z", "é", "ß", "日", "本", "ж", "Ω"};
  static const std::string kOthers[] = {
      "!", ".", "-",    "=",    "(",    "{",    "}",    ";",    "\"",       "—",
      "😀", "€", "\xff", "\x80", "\xc0", "\x04", "\x1d", "\x7f", "\xe2\x82", std::string(1, '\0')};
  // "٣" (U+0663) is a number too: split off on its own.
  static const std::string kDigits[] = {"0", "1", "7", "9", "٣"};
  std::vector<std::string> pieces;
  const int n = std::uniform_int_distribution<int>(1, 8)(rng);
  int last = -1;
  for (int p = 0; p < n; ++p) {
    const int kind = std::uniform_int_distribution<int>(0, 2)(rng);
    std::string piece;
    if (kind == 2) {
      piece = pick(rng, kDigits);
    } else {
      if (!pieces.empty() && (kind == last || rng() % 2 == 0)) piece.push_back(' ');
      const int len = std::uniform_int_distribution<int>(1, 10)(rng);
      for (int i = 0; i < len; ++i)
        piece.append(kind == 0 ? pick(rng, kLetters) : pick(rng, kOthers));
    }
    pieces.push_back(piece);
    last = kind;
  }
  return pieces;
}

// Single pieces that are hard on a merge loop: long runs of one character
// or of a short pattern.
std::vector<std::string> adversarial_runs(size_t n) {
  std::vector<std::string> out;
  for (const char* unit :
       {"a", "ab", "aab", "!", "=", "-", "é", "日本", " ", "\n", "\xff", "\x80", "\xe2\x82", "0"}) {
    std::string s;
    while (s.size() < n) s += unit;
    out.push_back(s);
    if (unit[0] != ' ' && unit[0] != '\n') out.push_back(" " + s);
  }
  return out;
}

std::string random_bytes(std::mt19937& rng, size_t max_len, bool ascii_heavy) {
  std::string s(std::uniform_int_distribution<size_t>(0, max_len)(rng), '\0');
  for (char& c : s) {
    const unsigned r = rng() % 256;
    c = static_cast<char>(ascii_heavy && r < 192 ? 32 + r % 95 : r);
  }
  return s;
}

// ---------------------------------------------------------------------------
// Model tokenizers, loaded from the GGUF metadata only.
// ---------------------------------------------------------------------------

struct Loaded {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tok;
  Vocab vocab;
};

const Loaded& load(const std::string& name) {
  static std::unordered_map<std::string, std::unique_ptr<Loaded>> cache;
  auto& slot = cache[name];
  if (!slot) {
    slot = std::make_unique<Loaded>();
    slot->file = std::make_unique<GgufFile>(resolve_model_path(name));
    slot->tok = std::make_unique<Tokenizer>(*slot->file);
    slot->vocab = vocab_of(*slot->file);
  }
  return *slot;
}

class SmolLM2Tokenizer : public ::testing::Test {
 protected:
  void SetUp() override {
    try {
      resolve_model_path("smollm2");
    } catch (const Error& e) {
      GTEST_SKIP() << e.what();
    }
  }
  const Tokenizer& tok() const { return *load("smollm2").tok; }
  const Vocab& vocab() const { return load("smollm2").vocab; }
};

const Tokenizer& stories() {
  return *load("stories260K").tok;
}
const Vocab& stories_vocab() {
  return load("stories260K").vocab;
}

// ---------------------------------------------------------------------------
// Heap merges == O(n²) reference.
// ---------------------------------------------------------------------------

TEST_F(SmolLM2Tokenizer, MergesMatchReferenceOnRandomText) {
  std::mt19937 rng(1);
  for (int t = 0; t < 400; ++t) {
    const std::vector<std::string> pieces = random_gpt2_pieces(rng);
    std::string text;
    for (const std::string& p : pieces) text += p;
    expect_tokens(tok(), text, reference_bpe(vocab(), pieces));
  }
}

TEST_F(SmolLM2Tokenizer, MergesMatchReferenceOnLongRuns) {
  for (size_t n : {1, 2, 3, 7, 64, 255, 600}) {
    for (const std::string& run : adversarial_runs(n)) {
      // Digits are pieces of their own (so is the space before " 000");
      // every other run is one piece.
      std::vector<std::string> pieces;
      if (run.find('0') != std::string::npos) {
        for (char c : run) pieces.emplace_back(1, c);
      } else {
        pieces.push_back(run);
      }
      expect_tokens(tok(), run, reference_bpe(vocab(), pieces));
    }
  }
}

TEST(StoriesTokenizer, ReferenceReproducesTheFixture) {
  // The reference itself agrees with the independent python tokenizer's ids
  // (tests/model/fixtures/stories260K.json; add_bos there).
  std::ifstream in("tests/model/fixtures/stories260K.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json fixture = nlohmann::json::parse(in);
  ASSERT_FALSE(fixture["tokenizer_cases"].empty());
  for (const auto& c : fixture["tokenizer_cases"]) {
    const std::string text = c["text"];
    const std::vector<int> want = c["ids"];
    const Expected e = reference_spm(stories_vocab(), text);
    ASSERT_FALSE(e.bad_offset) << text;
    std::vector<int> got = {stories().bos()};
    got.insert(got.end(), e.ids.begin(), e.ids.end());
    EXPECT_EQ(got, want) << text;
  }
}

TEST(StoriesTokenizer, MergesMatchReferenceOnRandomText) {
  std::mt19937 rng(2);
  static const char* const kUnits[] = {
      "a",   "e",    "t",      "h",     " ",    " ",    "Once",     " the",
      "ing", "é",    "日",     "😀",     "\xff", "\x80", "\xe2\x82", "\xe2\x96\x81",
      "<s>", "</s>", "<0x41>", "<unk>", "\n",   "\t"};
  for (int t = 0; t < 400; ++t) {
    std::string text;
    const int n = std::uniform_int_distribution<int>(0, 40)(rng);
    for (int i = 0; i < n; ++i) text += pick(rng, kUnits);
    if (t % 3 == 0) text = random_bytes(rng, 80, t % 2 == 0);
    expect_tokens(stories(), text, reference_spm(stories_vocab(), text));
  }
  for (size_t n : {1, 2, 3, 64, 255, 600}) {
    for (const std::string& run : adversarial_runs(n))
      expect_tokens(stories(), run, reference_spm(stories_vocab(), run));
  }
}

// Small vocabularies with random merge tables over "abc": long chains,
// overlapping pairs, merge results that are not tokens.
TEST(SyntheticTokenizer, Gpt2MergesMatchReference) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    std::mt19937 rng(seed);
    std::vector<std::string> tokens(gpt2_byte_chars().begin(), gpt2_byte_chars().end());
    std::vector<std::string> merges, pool = {"a", "b", "c"};
    for (int m = 0; m < 80; ++m) {
      const std::string& x = pool[rng() % pool.size()];
      const std::string& y = pool[rng() % pool.size()];
      const std::string key = x + " " + y;
      if (std::find(merges.begin(), merges.end(), key) != merges.end()) continue;
      merges.push_back(key);
      const std::string r = x + y;
      if (rng() % 10 != 0 && std::find(tokens.begin(), tokens.end(), r) == tokens.end())
        tokens.push_back(r);
      pool.push_back(r);
    }
    VocabFile f;
    f.string("tokenizer.ggml.model", "gpt2")
        .strings("tokenizer.ggml.tokens", tokens)
        .i32s("tokenizer.ggml.token_type", std::vector<int>(tokens.size(), kNormal))
        .strings("tokenizer.ggml.merges", merges);
    const Tokenizer tok = f.load("gpt2_random");
    Vocab v;
    for (size_t i = 0; i < tokens.size(); ++i) v.ids.emplace(tokens[i], static_cast<int>(i));
    v.types.assign(tokens.size(), kNormal);
    for (size_t r = 0; r < merges.size(); ++r) v.ranks.emplace(merges[r], static_cast<int>(r));
    for (int t = 0; t < 100; ++t) {
      std::string text(std::uniform_int_distribution<size_t>(0, 150)(rng), 'a');
      for (char& c : text) c = static_cast<char>('a' + rng() % (seed % 2 == 0 ? 3 : 2));
      expect_tokens(tok, text, reference_bpe(v, {text}));
      EXPECT_EQ(tok.decode(tok.tokenize(text, false, false)), text);
    }
  }
}

TEST(SyntheticTokenizer, SentencePieceMergesMatchReferenceWithTiedScores) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    std::mt19937 rng(seed);
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<int> types = {kUnknown, kControl, kControl};
    char name[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      tokens.emplace_back(name);
      types.push_back(kByte);
    }
    std::vector<std::string> pool = {kSpmSpace, "a", "b", "c"};
    for (const std::string& p : pool) {
      tokens.push_back(p);
      types.push_back(kNormal);
    }
    for (int m = 0; m < 60; ++m) {
      const std::string r = pool[rng() % pool.size()] + pool[rng() % pool.size()];
      if (std::find(tokens.begin(), tokens.end(), r) != tokens.end()) continue;
      tokens.push_back(r);
      types.push_back(rng() % 8 == 0 ? kControl : kNormal);  // never a merge result
      pool.push_back(r);
    }
    std::vector<float> scores;
    for (size_t i = 0; i < tokens.size(); ++i)
      scores.push_back(-static_cast<float>(rng() % 4));  // many ties
    VocabFile f;
    f.string("tokenizer.ggml.model", "llama")
        .strings("tokenizer.ggml.tokens", tokens)
        .i32s("tokenizer.ggml.token_type", types)
        .f32s("tokenizer.ggml.scores", scores);
    const Tokenizer tok = f.load("spm_random");
    Vocab v;
    for (size_t i = 0; i < tokens.size(); ++i) v.ids.emplace(tokens[i], static_cast<int>(i));
    v.types = types;
    v.scores = scores;
    for (int b = 0; b < 256; ++b) v.spm_bytes[static_cast<size_t>(b)] = 3 + b;
    for (int t = 0; t < 100; ++t) {
      std::string text(std::uniform_int_distribution<size_t>(0, 150)(rng), 'a');
      for (char& c : text) c = "abc "[rng() % 4];
      expect_tokens(tok, text, reference_spm(v, text));
      EXPECT_EQ(tok.decode(tok.tokenize(text, false, false)), text);
    }
  }
}

// ---------------------------------------------------------------------------
// Cost of a long run: O(n log n), checked as a ratio against short runs.
// ---------------------------------------------------------------------------

double seconds(const std::function<void()>& f) {
  double best = std::numeric_limits<double>::infinity();
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// 1 MiB in one run against 1024 runs of 1 KiB: the same bytes, so a linear
// tokenizer gives ~1, O(n log n) ~2 (log 2^20 / log 2^10), and the old
// quadratic merge loop ~1000. 16 leaves room for cache misses and a busy
// machine. Under the sanitizer 256 KiB against 256 runs (quadratic: ~256).
void expect_near_linear(const Tokenizer& tok, const std::function<char(size_t)>& byte_at) {
  const size_t runs = testing_env::kSanitized ? 256 : 1024;
  std::string big(runs << 10, ' '), small(size_t{1} << 10, ' ');
  for (size_t i = 0; i < big.size(); ++i) big[i] = byte_at(i);
  for (size_t i = 0; i < small.size(); ++i) small[i] = byte_at(i);
  size_t n_big = 0, n_small = 0;
  const double t_big = seconds([&] { n_big = tok.tokenize(big, false, false).size(); });
  const double t_small = seconds([&] {
    for (size_t r = 0; r < runs; ++r) n_small += tok.tokenize(small, false, false).size();
  });
  EXPECT_GT(n_big, 0u);
  EXPECT_GT(n_small, 0u);
  EXPECT_LT(t_big, 16 * t_small) << runs << " KiB run: " << t_big << " s; " << runs
                                 << " runs of 1 KiB: " << t_small << " s";
  std::printf("%zu KiB run %.3f s, %zu x 1 KiB %.3f s, ratio %.2f\n", runs, t_big, runs, t_small,
              t_big / t_small);
}

TEST_F(SmolLM2Tokenizer, LongRunCostIsNearLinear) {
  expect_near_linear(tok(), [](size_t) { return 'a'; });
  // Random letters: a base64- or minified-code-like run without digits.
  expect_near_linear(tok(), [](size_t i) {
    return "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM"[(i * 2654435761u >> 7) % 52];
  });
}

TEST(StoriesTokenizer, LongRunCostIsNearLinear) {
  expect_near_linear(stories(), [](size_t) { return 'a'; });
  expect_near_linear(stories(), [](size_t i) {
    return "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM"[(i * 2654435761u >> 7) % 52];
  });
}

// ---------------------------------------------------------------------------
// Bytes without a token.
// ---------------------------------------------------------------------------

TEST_F(SmolLM2Tokenizer, ByteWithoutTokenIsRefusedWithItsOffset) {
  // SmolLM2's vocabulary has no token for 21 bytes (0xC0, 0xC1, 0xF1, 0xF2,
  // 0xF5..0xFF, 0x04, 0x06, 0x13, 0x14, 0x16, 0x1D): no merge uses them.
  int missing = 0;
  for (int b = 0; b < 256; ++b) {
    const bool has = vocab().plain_id(gpt2_byte_chars()[static_cast<size_t>(b)]) >= 0;
    EXPECT_EQ(tok().has_byte_token(static_cast<unsigned char>(b)), has) << "byte " << b;
    missing += has ? 0 : 1;
  }
  EXPECT_EQ(missing, 21);
  for (bool parse_special : {false, true}) {
    try {
      tok().tokenize("ok \xff", false, parse_special);
      ADD_FAILURE() << "0xFF was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("0xFF"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("offset 3"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(tok().tokenize("<|im_start|>\x04", false, true), Error);
}

TEST(SyntheticTokenizer, Gpt2UsesByteTokensWhenAMergeResultIsNoToken) {
  std::vector<std::string> tokens(gpt2_byte_chars().begin(), gpt2_byte_chars().end());
  tokens.erase(tokens.begin() + 'q');  // no token for "q"
  tokens.push_back("<|endoftext|>");
  std::vector<int> types(tokens.size(), kNormal);
  types.back() = kControl;
  VocabFile f;
  f.string("tokenizer.ggml.model", "gpt2")
      .strings("tokenizer.ggml.tokens", tokens)
      .i32s("tokenizer.ggml.token_type", types)
      .strings("tokenizer.ggml.merges", {"a b"})  // "ab" is not a token
      .u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(tokens.size() - 1));
  const Tokenizer tok = f.load("gpt2_fallback");
  const int a = 'a', b = 'b';  // the byte tokens are in byte order, "q" removed after them
  EXPECT_EQ(tok.tokenize("ab", false, false), (std::vector<int>{a, b}));
  EXPECT_FALSE(tok.has_byte_token('q'));
  try {
    tok.tokenize("ab aq", false, false);
    ADD_FAILURE() << "q was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("offset 4"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("0x71"), std::string::npos) << e.what();
  }
}

TEST(SyntheticTokenizer, SentencePieceWithoutByteTokensRefusesWithTheTextOffset) {
  const std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", kSpmSpace, "a", kSpmSpace + "a"};
  VocabFile f;
  f.string("tokenizer.ggml.model", "llama")
      .strings("tokenizer.ggml.tokens", tokens)
      .i32s("tokenizer.ggml.token_type", {kUnknown, kControl, kControl, kNormal, kNormal, kNormal})
      .f32s("tokenizer.ggml.scores", {0, 0, 0, -1, -1, -2});
  const Tokenizer tok = f.load("spm_nobytes");
  EXPECT_EQ(tok.tokenize("a a", true, false), (std::vector<int>{1, 5, 5}));
  EXPECT_FALSE(tok.has_byte_token('q'));
  try {
    tok.tokenize("a  q", true, false);  // "▁a▁▁q": the q is byte 3 of the text
    ADD_FAILURE() << "q was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("offset 3"), std::string::npos) << e.what();
  }
}

// Control text in the input is plain text unless parse_special: merges never
// produce a control token, even where its text is a merge of two pieces.
TEST(SyntheticTokenizer, MergesNeverProduceControlTokens) {
  {
    std::vector<std::string> tokens(gpt2_byte_chars().begin(), gpt2_byte_chars().end());
    tokens.insert(tokens.end(), {"xy", "xyz"});  // one letter piece for the GPT-2 split
    std::vector<int> types(tokens.size(), kNormal);
    types.back() = kControl;
    VocabFile f;
    f.string("tokenizer.ggml.model", "gpt2")
        .strings("tokenizer.ggml.tokens", tokens)
        .i32s("tokenizer.ggml.token_type", types)
        .strings("tokenizer.ggml.merges", {"x y", "xy z"});
    const Tokenizer tok = f.load("gpt2_control");
    const std::vector<int> ids = tok.tokenize("xyz", false, false);
    // The merge table still builds "xyz"; as it is no normal token, the
    // symbol falls back to its bytes.
    EXPECT_EQ(ids, (std::vector<int>{'x', 'y', 'z'}));
    EXPECT_EQ(tok.decode(ids), "xyz");
    EXPECT_EQ(tok.tokenize("xyz", false, true), (std::vector<int>{257}));
  }
  {
    const std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", kSpmSpace, "<",
                                             "s",     ">",   "<s",   "<s>",     "<0x3E>"};
    VocabFile f;
    f.string("tokenizer.ggml.model", "llama")
        .strings("tokenizer.ggml.tokens", tokens)
        .i32s("tokenizer.ggml.token_type", {kUnknown, kControl, kControl, kNormal, kNormal, kNormal,
                                            kNormal, kNormal, kControl, kByte})
        .f32s("tokenizer.ggml.scores", {0, 0, 0, -1, -1, -1, -1, -1, 0, 0});
    const Tokenizer tok = f.load("spm_control");
    const std::vector<int> ids = tok.tokenize("<s>", false, false);
    EXPECT_EQ(ids, (std::vector<int>{3, 7, 6}));
    EXPECT_EQ(tok.decode(ids), "<s>");
    EXPECT_FALSE(tok.has_byte_token('a'));
    EXPECT_TRUE(tok.has_byte_token('>'));
  }
}

// ---------------------------------------------------------------------------
// Round trips over arbitrary bytes.
// ---------------------------------------------------------------------------

std::vector<std::string> hostile_strings(std::mt19937& rng) {
  std::vector<std::string> out = {"",
                                  std::string(1, '\0'),
                                  std::string("a\0b", 3),
                                  "\x80",
                                  "\xbf\x80\x80",
                                  "\xe6\x97",
                                  "\xf0\x9f\x98",
                                  "\xed\xa0\x80",
                                  "\xc0\xaf",
                                  "\xe2 ",
                                  "\xe2\x96",
                                  "\xe2\x96\x81",
                                  " \xe2\x96\x81 ",
                                  "<|im_start|",
                                  "<|im_start|><|im_end|>",
                                  "<<|im_end|>>",
                                  "<|endoftext|>x<|endoftext|",
                                  "</s><s>",
                                  "<0x41><unk>",
                                  "'s're've'll'd'm't",
                                  " 's",
                                  std::string(3000, ' '),
                                  std::string(3000, '\n'),
                                  std::string(3000, '7'),
                                  std::string(3000, '\xe2'),
                                  "\r\n\t\v\f \xc2\xa0\xe3\x80\x80x"};
  for (int t = 0; t < 300; ++t) out.push_back(random_bytes(rng, 200, t % 2 == 0));
  return out;
}

TEST_F(SmolLM2Tokenizer, EveryByteStringRoundTripsOrIsRefused) {
  std::mt19937 rng(3);
  for (const std::string& x : hostile_strings(rng)) {
    std::optional<size_t> first_missing;
    for (size_t i = 0; i < x.size() && !first_missing; ++i) {
      if (!tok().has_byte_token(static_cast<unsigned char>(x[i]))) first_missing = i;
    }
    if (first_missing) {
      expect_tokens(tok(), x, Expected{{}, first_missing});
      continue;
    }
    const std::vector<int> ids = tok().tokenize(x, false, false);
    EXPECT_EQ(tok().decode(ids), x) << "hex " << hex(x);
    for (int id : ids) EXPECT_FALSE(tok().ends_generation(id)) << "hex " << hex(x);
    std::string rendered;
    for (int id : tok().tokenize(x, false, true)) rendered += tok().token_to_piece(id, true);
    EXPECT_EQ(rendered, x) << "hex " << hex(x);
  }
}

TEST(StoriesTokenizer, EveryByteStringRoundTripsUpToTheSpaceMark) {
  std::mt19937 rng(4);
  for (const std::string& x : hostile_strings(rng)) {
    for (bool bos : {false, true}) {
      const std::vector<int> ids = stories().tokenize(x, bos, false);
      EXPECT_EQ(stories().decode(ids), testing::spm_round_trip(x)) << "hex " << hex(x);
      for (size_t i = bos ? 1 : 0; i < ids.size(); ++i)
        EXPECT_FALSE(stories().ends_generation(ids[i])) << "hex " << hex(x);
    }
    EXPECT_NO_THROW(stories().tokenize(x, true, true)) << "hex " << hex(x);
  }
}

// utf8_valid (the JSON output's text_utf8_valid): a real U+FFFD is valid,
// a byte utf8_chars() had to replace is not.
TEST(Utf8, ValidOnlyWhenNoByteWasReplaced) {
  for (const char* ok :
       {"", "abc", "\xE6\x97\xA5\xE6\x9C\xAC", "\xEF\xBF\xBD", "\xF0\x9F\x98\x80"}) {
    EXPECT_TRUE(utf8_valid(ok)) << hex(ok);
  }
  for (const char* bad :
       {"\xFF", "a\xE6\x97", "\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80"}) {
    EXPECT_FALSE(utf8_valid(bad)) << hex(bad);
  }
}

// Chat turns (innerq chat): turns written one after another, each reply
// between them, are the conversation as the models' own chat templates
// render it (reply closed by its end-of-turn token).
TEST_F(SmolLM2Tokenizer, ChatTurnsSpellTheChatMlConversation) {
  EXPECT_EQ(tok().chat_template(), ChatTemplate::kChatMl);
  EXPECT_EQ(tok().chat_turn("Hi", "Be brief.", true) + "Hello!" + tok().chat_turn("Bye", "", false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(tok().chat_prompt("Hi"), tok().chat_turn("Hi", "", true));
}

TEST(GemmaTokenizer, ChatTurnsSpellTheGemmaConversation) {
  try {
    resolve_model_path("gemma3-270m");
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  const Tokenizer& gemma = *load("gemma3-270m").tok;
  EXPECT_EQ(gemma.chat_template(), ChatTemplate::kGemma);
  EXPECT_EQ(gemma.chat_turn("Hi", "Be brief.", true) + "Hello!" + gemma.chat_turn("Bye", "", false),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!"
            "<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(gemma.chat_turn("Hi", "", true),
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
  const std::vector<int> ids = gemma.tokenize(gemma.chat_turn("Hi", "", false), false, true);
  ASSERT_FALSE(ids.empty());
  EXPECT_TRUE(gemma.ends_generation(ids.front()));  // <end_of_turn>, as sampled
}

TEST(StoriesTokenizer, ChatTurnIsRefusedWithoutATemplate) {
  EXPECT_EQ(stories().chat_template(), ChatTemplate::kNone);
  try {
    stories().chat_turn("Hi", "", true);
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("<start_of_turn>"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace innerq::model
