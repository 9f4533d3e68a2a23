// Every architecture against an independent reference: tiny GGUF files with
// random weights (llama with Llama 3 RoPE factors, Mistral-style llama with
// key_length and linear RoPE scaling, qwen2, qwen3, gemma3 with windowed
// layers) and the logits of a float64 numpy forward pass written from the
// HuggingFace modelling code (tests/model/scripts/make_arch_models.py, run by
// CTest into the build tree; the JSON path arrives in INNERQ_ARCH_REFERENCE).
//
// Prefill must match the exact reference at every position and vocabulary
// entry. Decode (one token at a time, and two sequences in one batch) and
// extend (chunks through the cache) must match the reference whose windowed
// layers keep K/V in f16, as innerq's
// window caches do; global layers use f32 caches. The tolerance is the f32
// rounding bound of reference_fixture.h.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"
#include "reference_fixture.h"

namespace innerq::model {
namespace {

constexpr const char* kHowToGenerate =
    "run this test through ctest, which writes the models and the reference with "
    "tests/model/scripts/make_arch_models.py (needs: pip install gguf numpy, or "
    "scripts/install-deps.sh)";

class ArchReference : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* path = std::getenv("INNERQ_ARCH_REFERENCE");
    ASSERT_NE(path, nullptr) << "INNERQ_ARCH_REFERENCE is not set: " << kHowToGenerate;
    std::ifstream in(path);
    ASSERT_TRUE(in) << "cannot read " << path << ": " << kHowToGenerate;
    fixture_ = nlohmann::json::parse(in);
  }

  const nlohmann::json& find(const std::string& name) const {
    for (const auto& c : fixture_.at("cases")) {
      if (c.at("name") == name) return c;
    }
    throw std::runtime_error("no case " + name + " in the reference");
  }

  nlohmann::json fixture_;
};

// logits [rows, V] equal the reference rows within the f32 bound; false
// (one failure reported) at the first that does not.
bool rows_match(const LlamaModel& m, const std::vector<float>& logits,
                const nlohmann::json& ref_rows, size_t first_row, const std::string& what) {
  const size_t V = static_cast<size_t>(m.config().n_vocab);
  for (size_t r = 0; r < ref_rows.size(); ++r) {
    const std::vector<double> ref = ref_rows[r];
    if (ref.size() != V) {
      ADD_FAILURE() << what << ": the reference has " << ref.size() << " logits per row";
      return false;
    }
    const double tol = testing::logit_tolerance(m.config(), ref);
    for (size_t j = 0; j < V; ++j) {
      const double got = logits[(first_row + r) * V + j];
      if (!(std::fabs(got - ref[j]) <= tol)) {
        ADD_FAILURE() << what << ", row " << r << ", vocabulary entry " << j << ": " << got
                      << " vs the reference's " << ref[j] << " (tolerance " << tol << ")";
        return false;
      }
    }
  }
  return true;
}

void expect_prefill_matches(const LlamaModel& m, const nlohmann::json& c) {
  const std::vector<int> tokens = c.at("tokens");
  kv::KvCache cache(m.cache_shape(static_cast<int>(tokens.size())),
                    kv::parse_cache_spec("f32").layer);
  kv::KvCache* caches[] = {&cache};
  std::vector<float> logits;
  m.prefill(tokens, caches, /*all_logits=*/true, logits, 2);
  rows_match(m, logits, c.at("logits"), 0, c.at("name").get<std::string>() + " prefill");
}

// Prefill of the first decode_from tokens, then one token per step through
// the caches; batch 2 runs two copies of the sequence in one decode call.
void expect_decode_matches(const LlamaModel& m, const nlohmann::json& c, int batch) {
  const std::vector<int> tokens = c.at("tokens");
  const int from = c.at("decode_from");
  const int n = static_cast<int>(tokens.size());
  const std::string name =
      c.at("name").get<std::string>() + " decode, batch " + std::to_string(batch);
  std::vector<kv::KvCache> owned;
  for (int b = 0; b < batch; ++b)
    owned.emplace_back(m.cache_shape(n), kv::parse_cache_spec("f32").layer);
  std::vector<kv::KvCache*> caches;
  for (kv::KvCache& cache : owned) caches.push_back(&cache);
  std::vector<float> logits;
  m.prefill(std::span(tokens).first(static_cast<size_t>(from)), caches, false, logits, 2);
  const size_t V = static_cast<size_t>(m.config().n_vocab);
  const nlohmann::json& ref = c.at("decode_logits");
  for (int t = from; t < n; ++t) {
    const std::vector<int> step(static_cast<size_t>(batch), tokens[static_cast<size_t>(t)]);
    m.decode(step, caches, logits, 2);
    ASSERT_EQ(logits.size(), static_cast<size_t>(batch) * V);
    for (int b = 0; b < batch; ++b) {
      const nlohmann::json row = nlohmann::json::array({ref.at(static_cast<size_t>(t - from))});
      if (!rows_match(m, logits, row, static_cast<size_t>(b),
                      name + ", position " + std::to_string(t) + ", sequence " + std::to_string(b)))
        return;
    }
  }
}

// The positions from decode_from on through extend (chunked prefill), in
// chunks of 3, 1, 25 and 6 tokens: after a prefill of decode_from tokens, or
// all from an empty cache. A chunk of 25 is longer than Gemma 3's test window
// of 20, so the ring overwrites positions the chunk's first queries still see.
void expect_extend_matches(const LlamaModel& m, const nlohmann::json& c, bool prefill_first) {
  const std::vector<int> tokens = c.at("tokens");
  const int from = c.at("decode_from");
  const int n = static_cast<int>(tokens.size());
  const std::string name = c.at("name").get<std::string>() +
                           (prefill_first ? " extend after prefill" : " extend from empty");
  kv::KvCache cache(m.cache_shape(n), kv::parse_cache_spec("f32").layer);
  kv::KvCache* caches[] = {&cache};
  LlamaModel::Workspace ws;
  std::vector<float> logits;
  if (prefill_first)
    m.prefill(std::span(tokens).first(static_cast<size_t>(from)), caches, false, logits, 2);
  const nlohmann::json& ref = c.at("decode_logits");
  const int sizes[] = {3, 1, 25, 6};
  for (int i = 0; cache.n_tokens() < n; ++i) {
    const int held = cache.n_tokens();
    const int size = std::min(sizes[i % 4], n - held);
    m.extend(std::span(tokens).subspan(static_cast<size_t>(held), static_cast<size_t>(size)), cache,
             true, logits, 2, ws);
    // Rows of positions held.. that the reference has (from decode_from on).
    for (int t = std::max(held, from); t < held + size; ++t) {
      const nlohmann::json row = nlohmann::json::array({ref.at(static_cast<size_t>(t - from))});
      if (!rows_match(m, logits, row, static_cast<size_t>(t - held),
                      name + ", position " + std::to_string(t)))
        return;
    }
  }
}

void expect_matches(const LlamaModel& m, const nlohmann::json& c) {
  expect_prefill_matches(m, c);
  expect_decode_matches(m, c, 1);
  expect_decode_matches(m, c, 2);
  expect_extend_matches(m, c, true);
  expect_extend_matches(m, c, false);
}

TEST_F(ArchReference, Llama3RopeFactors) {
  const nlohmann::json& c = find("llama3");
  const LlamaModel m(c.at("file").get<std::string>(), Activations::kF32);
  EXPECT_EQ(m.config().arch, "llama");
  EXPECT_EQ(m.config().rope_style, RopeStyle::kAdjacentPairs);
  EXPECT_FALSE(m.tied_output());
  expect_matches(m, c);
}

TEST_F(ArchReference, MistralKeyLengthAndLinearRopeScaling) {
  const nlohmann::json& c = find("mistral");
  const LlamaModel m(c.at("file").get<std::string>(), Activations::kF32);
  EXPECT_EQ(m.config().head_dim, 128);  // not n_embd / n_heads = 64
  EXPECT_FLOAT_EQ(m.config().rope_scale, 0.5f);
  expect_matches(m, c);
}

TEST_F(ArchReference, Qwen2Biases) {
  const nlohmann::json& c = find("qwen2");
  const LlamaModel m(c.at("file").get<std::string>(), Activations::kF32);
  EXPECT_TRUE(m.config().qkv_bias);
  EXPECT_EQ(m.config().rope_style, RopeStyle::kHalfSplit);
  EXPECT_TRUE(m.tied_output());
  expect_matches(m, c);
}

TEST_F(ArchReference, Qwen3QkNorm) {
  const nlohmann::json& c = find("qwen3");
  const LlamaModel m(c.at("file").get<std::string>(), Activations::kF32);
  EXPECT_TRUE(m.config().qk_norm);
  EXPECT_FALSE(m.config().qkv_bias);
  expect_matches(m, c);
}

// Seven layers: 0-4 windowed (20 positions), 5 global, 6 windowed; 40 tokens
// wrap the ring of the windowed layers across two 16-token tiles.
TEST_F(ArchReference, Gemma3WindowedLayers) {
  const nlohmann::json& c = find("gemma3");
  const LlamaModel m(c.at("file").get<std::string>(), Activations::kF32);
  const ModelDesc& d = m.config();
  EXPECT_EQ(d.head_dim, 256);
  EXPECT_EQ(d.n_kv_heads, 1);
  EXPECT_EQ(d.n_window_layers(), 6);
  EXPECT_EQ(d.layers[5].window, 0);
  EXPECT_EQ(d.layers[6].window, 20);
  EXPECT_FLOAT_EQ(d.layers[0].rope_base, 10000.0f);
  EXPECT_FLOAT_EQ(d.layers[5].rope_base, 1e6f);
  EXPECT_EQ(d.activation, Activation::kGeluTanh);
  expect_matches(m, c);
}

// The file's own pattern array and local RoPE base, and final soft-capping.
TEST_F(ArchReference, Gemma3PatternLocalBaseAndSoftcap) {
  const nlohmann::json& c = find("gemma3_pattern");
  const LlamaModel m(c.at("file").get<std::string>(), Activations::kF32);
  const ModelDesc& d = m.config();
  EXPECT_EQ(d.windows(), (std::vector<int>{6, 0, 6}));
  EXPECT_FLOAT_EQ(d.layers[0].rope_base, 500.0f);
  EXPECT_FLOAT_EQ(d.final_softcap, 3.0f);
  expect_matches(m, c);
}

// A cache built without the model's windows (or for another shape) is
// refused by name, before anything is stored.
TEST_F(ArchReference, CacheOfAnotherShapeIsRefused) {
  const LlamaModel m(find("gemma3").at("file").get<std::string>(), Activations::kF32);
  kv::CacheShape shape = m.cache_shape(8);
  shape.windows.clear();
  kv::KvCache cache(shape, kv::parse_cache_spec("f32").layer);
  kv::KvCache* caches[] = {&cache};
  std::vector<float> logits;
  const int tokens[] = {1, 2};
  try {
    m.prefill(tokens, caches, false, logits, 1);
    ADD_FAILURE() << "prefill accepted a cache without sliding-window layers";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cache_shape()"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cache.n_tokens(), 0);
}

}  // namespace
}  // namespace innerq::model
