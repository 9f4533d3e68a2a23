// A hostile or broken model file is refused with innerq::Error naming the
// file and what is wrong (docs/architecture.md, "GGUF files"): metadata out of
// range in its own type, blocks beyond llama.block_count, tensors no model
// uses, NaN/Inf in F32 weights at load, and NaN/Inf that quantized weights
// carry into the logits at run time.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "gguf_writer.h"
#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"

namespace innerq::model {
namespace {

using testing::f32_bytes;
using testing::GgufWriter;
using testing::tiny_llama;
using testing::TinyLlama;

// Loads the model that `w` describes; the file is removed afterwards.
class Written {
 public:
  Written(const GgufWriter& w, const std::string& tag) : path_(w.write(tag)) {}
  ~Written() { std::remove(path_.c_str()); }
  Written(const Written&) = delete;
  Written& operator=(const Written&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Loading `w` throws innerq::Error whose message starts with the path and
// contains each of `parts`.
void expect_refused(const GgufWriter& w, const std::string& tag,
                    std::initializer_list<std::string> parts) {
  const Written file(w, tag);
  try {
    LlamaModel m(file.path());
    ADD_FAILURE() << tag << ": accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind(file.path(), 0), 0u) << tag << ": " << what;
    for (const std::string& p : parts)
      EXPECT_NE(what.find(p), std::string::npos) << tag << ": '" << p << "' not in: " << what;
  }
}

// Prefill of two tokens into an f32 cache.
std::vector<float> prefill_two(const LlamaModel& m) {
  kv::KvCache cache(m.cache_shape(8), kv::parse_cache_spec("f32").layer);
  kv::KvCache* caches[] = {&cache};
  const int tokens[] = {1, 2};
  std::vector<float> logits;
  m.prefill(tokens, caches, true, logits, 1);
  return logits;
}

TEST(LlamaFile, TinyModelsLoadAndRun) {
  for (const TinyLlama& shape : {TinyLlama{}, TinyLlama{.n_layers = 2, .q8_0 = true},
                                 TinyLlama{.q8_0 = true, .tied = true}}) {
    const Written file(tiny_llama(shape), "tiny");
    const LlamaModel m(file.path());
    EXPECT_EQ(m.config().n_layers, shape.n_layers);
    EXPECT_EQ(m.tied_output(), shape.tied);
    const std::vector<float> logits = prefill_two(m);
    ASSERT_EQ(logits.size(), 2u * static_cast<size_t>(shape.n_vocab));
    for (float x : logits) EXPECT_TRUE(std::isfinite(x));
  }
}

TEST(LlamaFile, BlocksBeyondBlockCountAreRefused) {
  GgufWriter w = tiny_llama({.n_layers = 3});
  w.set_u32("llama.block_count", 2);
  expect_refused(w, "blocks", {"blk.2.", "llama.block_count"});
}

TEST(LlamaFile, TensorsNoModelUsesAreRefused) {
  GgufWriter w = tiny_llama();
  w.tensor("extra.weight", GgmlType::kF32, {4}, std::vector<uint8_t>(16, 0));
  expect_refused(w, "extra", {"'extra.weight'"});
}

// 2^32 + 2 read as a 32-bit int is 2: the value must be checked as the u64 it is.
TEST(LlamaFile, SixtyFourBitCountsAreNotTruncated) {
  const uint64_t wide = (uint64_t{1} << 32) + 2;
  for (const char* key : {"llama.block_count", "llama.rope.dimension_count",
                          "llama.attention.head_count_kv", "llama.context_length"}) {
    GgufWriter w = tiny_llama();
    w.set_u64(key, wide);
    expect_refused(w, key, {key, "4294967298"});
  }
}

TEST(LlamaFile, CountsOutOfRangeNameTheKey) {
  struct Case {
    const char* key;
    int64_t value;
  };
  for (const Case& c : {Case{"llama.attention.head_count_kv", 0},
                        Case{"llama.attention.head_count", -4}, Case{"llama.embedding_length", 0},
                        Case{"llama.context_length", -1}, Case{"llama.rope.dimension_count", 9}}) {
    GgufWriter w = tiny_llama();
    w.set_i32(c.key, static_cast<int32_t>(c.value));
    expect_refused(w, c.key, {c.key});
  }
}

TEST(LlamaFile, RopeBaseMustBeFiniteAndPositive) {
  for (float base : {std::nanf(""), 0.0f, -10000.0f, std::numeric_limits<float>::infinity()}) {
    GgufWriter w = tiny_llama();
    w.set_f32("llama.rope.freq_base", base);
    expect_refused(w, "rope_base", {"llama.rope.freq_base"});
  }
}

TEST(LlamaFile, EpsilonMustBeFiniteAndBelowOne) {
  for (float eps : {std::nanf(""), -1e-5f, 0.0f, 2.0f}) {
    GgufWriter w = tiny_llama();
    w.set_f32("llama.attention.layer_norm_rms_epsilon", eps);
    expect_refused(w, "eps", {"llama.attention.layer_norm_rms_epsilon"});
  }
}

TEST(LlamaFile, NonFiniteF32WeightsAreRefusedAtLoad) {
  for (const char* name :
       {"output_norm.weight", "blk.0.ffn_norm.weight", "blk.0.ffn_down.weight"}) {
    GgufWriter w = tiny_llama();
    const float nan = std::nanf("");
    std::memcpy(w.tensor_data(name).data() + 8, &nan, 4);
    expect_refused(w, name, {std::string("'") + name + "'", "NaN"});
  }
}

// A NaN block scale in a quantized weight is found only when it reaches the
// logits: prefill and decode must throw naming the model and the tensor, not
// return NaN logits (whose argmax is token 0).
TEST(LlamaFile, NonFiniteQuantizedScaleGivesAnErrorNotNaNLogits) {
  for (const char* name : {"output.weight", "blk.0.ffn_down.weight"}) {
    GgufWriter w = tiny_llama({.q8_0 = true});
    std::vector<uint8_t>& blocks = w.tensor_data(name);
    blocks[34 * 3] = 0x00;  // block 3's d = 0x7E00, an f16 NaN
    blocks[34 * 3 + 1] = 0x7E;
    const Written file(w, "q8nan");
    const LlamaModel m(file.path());
    try {
      prefill_two(m);
      ADD_FAILURE() << name << ": prefill returned logits";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(file.path()), std::string::npos) << what;
      EXPECT_NE(what.find("non-finite logits"), std::string::npos) << what;
      EXPECT_NE(what.find(std::string("'") + name + "'"), std::string::npos) << what;
    }
    kv::KvCache cache(m.cache_shape(8), kv::parse_cache_spec("f32").layer);
    kv::KvCache* caches[] = {&cache};
    const int token[] = {1};
    std::vector<float> logits;
    EXPECT_THROW(m.decode(token, caches, logits, 1), Error) << name;
  }
}

// A NaN scale in layer 1's K weight makes its keys NaN after layer 0 took
// the token: the error names the model and the tensor (not just "cache:
// layer 1 key nan"), and the cache whose layers now disagree refuses use.
TEST(LlamaFile, NonFiniteKeysNameTheModelAndLeaveNoHalfWrittenCache) {
  GgufWriter w = tiny_llama({.n_layers = 2, .q8_0 = true});
  std::vector<uint8_t>& blocks = w.tensor_data("blk.1.attn_k.weight");
  for (size_t b = 0; b < blocks.size(); b += 34) {  // every block's d = NaN
    blocks[b] = 0x00;
    blocks[b + 1] = 0x7E;
  }
  const Written file(w, "knan");
  const LlamaModel m(file.path());
  const auto expect_named = [&](const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(file.path()), std::string::npos) << what;
    EXPECT_NE(what.find("layer 1"), std::string::npos) << what;
    EXPECT_NE(what.find("'blk.1.attn_k.weight'"), std::string::npos) << what;
  };
  kv::KvCache cache(m.cache_shape(8), kv::parse_cache_spec("f32").layer);
  kv::KvCache* caches[] = {&cache};
  std::vector<float> logits;
  const int tokens[] = {1, 2};
  try {
    m.prefill(tokens, caches, false, logits, 1);
    ADD_FAILURE() << "prefill stored NaN keys";
  } catch (const Error& e) {
    expect_named(e);
  }
  // Layer 0 took the prompt, layer 1 refused it: the cache is rolled back to
  // what every layer holds (nothing), whole and usable.
  EXPECT_FALSE(cache.failed());
  EXPECT_TRUE(cache.layers_agree());
  EXPECT_EQ(cache.n_tokens(), 0);
  EXPECT_EQ(cache.layer(0).n_tokens(), 0);
  try {
    m.decode(std::vector<int>{3}, caches, logits, 1);
    ADD_FAILURE() << "decode stored NaN keys";
  } catch (const Error& e) {
    expect_named(e);
  }
  EXPECT_FALSE(cache.failed());
  EXPECT_EQ(cache.layer(0).n_tokens(), 0);
}

// What the forward pass does not run is refused by name, not run wrongly.
TEST(LlamaFile, ArchitecturesAndFeaturesItLacksAreRefused) {
  GgufWriter other = tiny_llama();
  other.set_string("general.architecture", "gemma2");
  expect_refused(other, "arch", {"architecture 'gemma2'", "llama, qwen2, qwen3, gemma3"});
  GgufWriter softcap = tiny_llama();
  softcap.set_f32("llama.attn_logit_softcapping", 50.0f);
  expect_refused(softcap, "softcap", {"llama.attn_logit_softcapping"});
  GgufWriter yarn = tiny_llama();
  yarn.set_string("llama.rope.scaling.type", "yarn");
  expect_refused(yarn, "yarn", {"llama.rope.scaling.type", "'yarn'"});
  GgufWriter linear = tiny_llama();
  linear.set_string("llama.rope.scaling.type", "linear");
  linear.set_f32("llama.rope.scaling.factor", 0.5f);
  expect_refused(linear, "linear", {"llama.rope.scaling.factor"});
  GgufWriter values = tiny_llama();
  values.set_u32("llama.attention.value_length", 4);
  expect_refused(values, "value_length", {"llama.attention.value_length"});
  GgufWriter odd_heads = tiny_llama({.n_embd = 32, .n_heads = 3, .n_kv_heads = 3});
  expect_refused(odd_heads, "heads", {"llama.attention.key_length"});
}

// Llama 3's frequency factors divide the RoPE angles: one positive factor per
// rotated pair, or the file is refused.
TEST(LlamaFile, RopeFrequencyFactorsArePositiveAndOnePerPair) {
  GgufWriter zero = tiny_llama();  // head_dim 8: 4 pairs
  zero.tensor("rope_freqs.weight", GgmlType::kF32, {4}, f32_bytes({1, 0, 2, 8}));
  expect_refused(zero, "zero", {"'rope_freqs.weight'", "positive"});
  GgufWriter short_one = tiny_llama();
  short_one.tensor("rope_freqs.weight", GgmlType::kF32, {3}, f32_bytes({1, 2, 4}));
  expect_refused(short_one, "short", {"'rope_freqs.weight'"});
  GgufWriter good = tiny_llama();
  good.tensor("rope_freqs.weight", GgmlType::kF32, {4}, f32_bytes({1, 1.5f, 4, 8}));
  const Written file(good, "freqs");
  EXPECT_EQ(prefill_two(LlamaModel(file.path())).size(), 32u);
}

// Each architecture's own tensors are required: a llama-shaped file that
// calls itself qwen2 lacks the biases, gemma3 its q/k and post norms.
TEST(LlamaFile, ArchitectureTensorsAreRequired) {
  expect_refused(tiny_llama({.arch = "qwen2"}), "qwen2", {"'blk.0.attn_q.bias'"});
  expect_refused(tiny_llama({.arch = "qwen3"}), "qwen3", {"'blk.0.attn_q_norm.weight'"});
  expect_refused(tiny_llama({.arch = "gemma3"}), "gemma3", {"'blk.0.attn_q_norm.weight'"});
}

TEST(LlamaFile, SlidingWindowPatternHasOneEntryPerLayer) {
  GgufWriter w = tiny_llama({.n_layers = 2, .arch = "gemma3"});
  w.set_u32("gemma3.attention.sliding_window", 4);
  w.set_bools("gemma3.attention.sliding_window_pattern", {true, false, true});
  expect_refused(w, "pattern", {"gemma3.attention.sliding_window_pattern", "3 entries for 2"});
  GgufWriter period = tiny_llama({.n_layers = 2, .arch = "gemma3"});
  period.set_u32("gemma3.attention.sliding_window", 4);
  period.set_u32("gemma3.attention.sliding_window_pattern", 3);
  expect_refused(period, "period", {"gemma3.attention.sliding_window_pattern"});
}

}  // namespace
}  // namespace innerq::model
