// Chunked prefill through every cache kind (LlamaModel::extend) on
// SmolLM2-135M: a prefill of 40 tokens, then chunks of 7, 1, 33 and 64
// tokens give the logits of token-by-token decode, within a tolerance derived
// per kind below. Needs scripts/fetch-model.sh; without the model it skips.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "extend_cases.h"

namespace innerq::model {
namespace {

using testing::in_chunks;
using testing::reorder_tolerance;
using testing::row_diff;
using testing::RowDiff;
using testing::Rows;
using testing::token_by_token;

class ExtendSmolLM2 : public ::testing::Test {
 protected:
  void SetUp() override {
    try {
      resolve_model_path("smollm2");
    } catch (const Error& e) {
      GTEST_SKIP() << e.what();
    }
  }
  static const LlamaModel& model() {
    static const LlamaModel m(resolve_model_path("smollm2"), Activations::kF32);
    return m;
  }
};

// The tolerance, per kind. Both runs store the same tokens with the same
// quantizer, and each chunk token sees the windows as decode did
// (attn::chunk_attention; exact at the attention level in
// tests/attn/chunk_attention_test.cc). They differ in
//   (1) f32 rounding: the chunk's weight matmuls run over several rows and
//       decode's over one, and attention sums in other chunks
//       (reorder_tolerance, extend_cases.h);
//   (2) rounding flips (every kind but f32): a K/V element whose f32 value
//       lies within that rounding difference of an f16 or code boundary is
//       stored one step apart. A flipped element's error is at most twice its
//       rounding bound (half a step), so the flips move the logits by at most
//       twice what rounding every element moves them.
// So tol = reorder + 2E, E = max over positions of |step − f32 step| on this
// very sequence: 0 for f32 (exact reordering bound only), small for f16 and
// q8_0, loose for the 2-4-bit kinds (SmolLM2's q4_0 caches move by about one
// logit from flips alone). It still fails when a chunk token sees the wrong
// positions (a later token of its chunk, a position missed), whose effect is
// not bounded by the quantization error.
TEST_F(ExtendSmolLM2, ChunksEqualTokenByTokenForEveryKind) {
  const LlamaModel& m = model();
  const std::vector<int> tokens = m.tokenizer().tokenize(testing::kText, false, false);
  const int n = static_cast<int>(tokens.size());
  // Past sink + recent (32 + 96) and KIVI's residual, so that every kind
  // quantizes during the chunks.
  ASSERT_GE(n, 190);
  const size_t V = static_cast<size_t>(m.config().n_vocab);
  constexpr int kPrefill = 40;
  const std::vector<int> chunks = {7, 1, 33, 64};
  const Rows exact = token_by_token(m, tokens, kPrefill, kv::parse_cache_spec("f32").layer);
  for (const char* spec :
       {"f32", "f16", "q8_0", "q4_0", "kivi", "innerq", "innerq-paper", "f16:rot=kv", "q8_0:rot=kv",
        "q4_0:rot=kv", "kivi:rot=kv", "innerq:rot=kv", "innerq-paper:rot=kv"}) {
    const kv::LayerConfig config = kv::parse_cache_spec(spec).layer;
    const Rows step = token_by_token(m, tokens, kPrefill, config);
    const Rows chunked = in_chunks(m, tokens, kPrefill, config, chunks);
    ASSERT_EQ(chunked.logits.size(), step.logits.size()) << spec;
    double E = 0.0;
    for (int t = kPrefill; t < n; ++t) E = std::max(E, row_diff(step, exact, t, V).max_diff);
    for (int t = kPrefill; t < n; ++t) {
      const RowDiff d = row_diff(step, chunked, t, V);
      const double tol = reorder_tolerance(m.config(), d.max_abs) + 2.0 * E;
      EXPECT_LE(d.max_diff, tol) << spec << ", position " << t << " (the step run's largest "
                                 << "distance from the f32 cache: " << E << ")";
      if (d.max_diff > tol) break;  // one report per kind
    }
  }
}

}  // namespace
}  // namespace innerq::model
