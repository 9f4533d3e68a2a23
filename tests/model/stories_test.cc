// stories260K end to end: tokenizer and logits against the independent
// reference, the golden greedy continuation, and decode == prefill with an
// f32 cache.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "innerq/model/sampler.h"
#include "reference_fixture.h"

namespace innerq::model {
namespace {

// Two f32 evaluations of the same sums in different orders: each of the
// 2·n_layers+1 residual updates sums up to n_ff products (γ_n ≈ n·ε), relative
// to the size of the logits.
double reorder_tolerance(const ModelDesc& c, const float* logits, int n) {
  double max_abs = 0.0;
  for (int j = 0; j < n; ++j)
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(logits[j])));
  return (2.0 * c.n_layers + 1) * c.n_ff * std::ldexp(1.0, -24) * max_abs;
}

const LlamaModel& stories() {
  static const LlamaModel model(resolve_model_path("stories260K"));
  return model;
}

TEST(Stories260K, Config) {
  const ModelDesc& c = stories().config();
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_embd, 64);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.n_ff, 172);
  EXPECT_EQ(c.n_vocab, 512);
  EXPECT_EQ(stories().n_params(), 292800);
  EXPECT_FALSE(stories().tied_output());
  EXPECT_EQ(stories().tokenizer().kind(), TokenizerKind::kSentencePiece);
}

TEST(Stories260K, TokenizerMatchesReference) {
  testing::expect_tokenizer_matches(stories(), testing::load_fixture("stories260K"), false);
}

// Special tokens in the text are whole tokens when parse_special is set, and
// the text after one gets the "▁" prefix again (llama.cpp's SPM rule).
TEST(Stories260K, SpecialTokensSplitTheText) {
  const Tokenizer& tok = stories().tokenizer();
  std::vector<int> want = {tok.bos(), tok.eos()};
  for (int id : tok.tokenize("Once upon", false, false)) want.push_back(id);
  EXPECT_EQ(tok.tokenize("</s>Once upon", true, true), want);
  EXPECT_NE(tok.tokenize("</s>Once upon", true, false), want);  // literal text
}

TEST(Stories260K, LogitsMatchReference) {
  testing::expect_logits_match(stories(), testing::load_fixture("stories260K"), 2);
}

// Greedy decoding through the cache reproduces the reference's greedy tokens.
// (head_dim 8 is below every quantized format's group of 32, so stories260K
// runs on the plain caches only.)
TEST(Stories260K, GoldenGreedyContinuation) {
  const auto fixture = testing::load_fixture("stories260K");
  const std::vector<int> prompt = fixture["greedy"]["prompt_tokens"];
  const std::vector<int> want = fixture["greedy"]["tokens"];
  const LlamaModel& m = stories();
  EXPECT_EQ(m.tokenizer().tokenize("Once upon a time", true, false), prompt);
  for (const char* spec : {"f32", "f16"}) {
    kv::KvCache cache(m.cache_shape(128), kv::parse_cache_spec(spec).layer);
    kv::KvCache* caches[] = {&cache};
    std::vector<float> logits;
    m.prefill(prompt, caches, false, logits, 2);
    std::vector<int> got;
    while (got.size() < want.size()) {
      got.push_back(argmax(logits));
      m.decode(std::vector<int>{got.back()}, caches, logits, 2);
    }
    EXPECT_EQ(got, want) << "cache " << spec;
    EXPECT_EQ(m.tokenizer().decode(got), fixture["greedy"]["text"].get<std::string>());
  }
  EXPECT_EQ(m.tokenizer().decode(want).substr(0, 60),
            ", there was a little girl named Lily. She loved to play outs");
}

// With an f32 cache the decode path (decode_attention over the cache) gives the
// prefill path's logits (prefill_attention over the same K/V) at every position.
TEST(Stories260K, DecodeEqualsPrefillWithF32Cache) {
  const LlamaModel& m = stories();
  const std::vector<int> tokens = m.tokenizer().tokenize(
      "Lily saw a big, red ball. She said, \"Wow!\" and ran to it.", true, false);
  const int n = static_cast<int>(tokens.size());
  const int V = m.config().n_vocab;

  kv::KvCache full(m.cache_shape(n), kv::parse_cache_spec("f32").layer);
  kv::KvCache* full_caches[] = {&full};
  std::vector<float> prefill_logits;
  m.prefill(tokens, full_caches, true, prefill_logits, 2);

  kv::KvCache step(m.cache_shape(n), kv::parse_cache_spec("f32").layer);
  kv::KvCache* step_caches[] = {&step};
  std::vector<float> logits;
  m.prefill(std::span<const int>(tokens).first(1), step_caches, false, logits, 2);
  for (int t = 1; t < n; ++t) {
    m.decode(std::vector<int>{tokens[static_cast<size_t>(t)]}, step_caches, logits, 2);
    const double tol =
        reorder_tolerance(m.config(), &prefill_logits[static_cast<size_t>(t * V)], V);
    for (int j = 0; j < V; ++j) {
      ASSERT_NEAR(logits[static_cast<size_t>(j)], prefill_logits[static_cast<size_t>(t * V + j)],
                  tol)
          << "position " << t << " token " << j;
    }
  }
  EXPECT_EQ(step.n_tokens(), n);
}

// Several sequences decoded in one batch give the same logits as one by one.
TEST(Stories260K, BatchedDecodeEqualsSingle) {
  const LlamaModel& m = stories();
  const std::vector<int> prompt = m.tokenizer().tokenize("Once upon a time", true, false);
  kv::KvCache a(m.cache_shape(16), kv::parse_cache_spec("f32").layer);
  kv::KvCache b(m.cache_shape(16), kv::parse_cache_spec("f16").layer);
  kv::KvCache a1(m.cache_shape(16), kv::parse_cache_spec("f32").layer);
  kv::KvCache b1(m.cache_shape(16), kv::parse_cache_spec("f16").layer);
  kv::KvCache* both[] = {&a, &b};
  std::vector<float> logits, la, lb;
  m.prefill(prompt, both, false, logits, 2);
  kv::KvCache* only_a[] = {&a1};
  kv::KvCache* only_b[] = {&b1};
  m.prefill(prompt, only_a, false, la, 1);
  m.prefill(prompt, only_b, false, lb, 1);
  m.decode(std::vector<int>{300, 301}, both, logits, 2);
  m.decode(std::vector<int>{300}, only_a, la, 1);
  m.decode(std::vector<int>{301}, only_b, lb, 1);
  const int V = m.config().n_vocab;
  const double tol_a = reorder_tolerance(m.config(), la.data(), V);
  const double tol_b = reorder_tolerance(m.config(), lb.data(), V);
  for (int j = 0; j < V; ++j) {
    EXPECT_NEAR(logits[static_cast<size_t>(j)], la[static_cast<size_t>(j)], tol_a) << j;
    EXPECT_NEAR(logits[static_cast<size_t>(V + j)], lb[static_cast<size_t>(j)], tol_b) << j;
  }
}

TEST(Stories260K, PrefillNeedsAnEmptyCache) {
  const LlamaModel& m = stories();
  kv::KvCache cache(m.cache_shape(16), kv::parse_cache_spec("f32").layer);
  kv::KvCache* caches[] = {&cache};
  std::vector<float> logits;
  m.prefill(std::vector<int>{1, 300}, caches, false, logits, 1);
  EXPECT_THROW(m.prefill(std::vector<int>{1, 300}, caches, false, logits, 1), Error);
  EXPECT_THROW(m.decode(std::vector<int>{9999}, caches, logits, 1), Error);
}

}  // namespace
}  // namespace innerq::model
