// SmolLM2-135M-Instruct (Q4_1/Q8_0 weights, byte-level BPE): tokenizer and
// logits against the independent reference. Needs scripts/fetch-model.sh
// (CI runs it before the tests); without the model the tests skip and say so.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdlib>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "innerq/model/sampler.h"
#include "extend_cases.h"
#include "reference_fixture.h"

namespace innerq::model {
namespace {

const LlamaModel& smollm2() {
  static const LlamaModel model(resolve_model_path("smollm2"), Activations::kF32);
  return model;
}

class SmolLM2 : public ::testing::Test {
 protected:
  void SetUp() override {
    try {
      resolve_model_path("smollm2");
    } catch (const Error& e) {
      GTEST_SKIP() << e.what();
    }
  }
};

TEST_F(SmolLM2, Config) {
  const ModelDesc& c = smollm2().config();
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.n_embd, 576);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.n_vocab, 49152);
  EXPECT_TRUE(smollm2().tied_output());
  EXPECT_EQ(smollm2().tokenizer().kind(), TokenizerKind::kBytePairGpt2);
  EXPECT_EQ(smollm2().tokenizer().pre_tokenizer(), "smollm");
}

TEST_F(SmolLM2, TokenizerMatchesReference) {
  testing::expect_tokenizer_matches(smollm2(), testing::load_fixture("smollm2"), true);
}

TEST_F(SmolLM2, DetokenizeRoundTrips) {
  const Tokenizer& tok = smollm2().tokenizer();
  for (const char* text : {"naïve café — 日本語 😀", "  a\n\n b\t1234 ", "it's 3.14"}) {
    EXPECT_EQ(tok.decode(tok.tokenize(text, false, true)), text);
  }
}

TEST_F(SmolLM2, LogitsMatchReference) {
  testing::expect_logits_match(smollm2(), testing::load_fixture("smollm2"), 2);
}

// Measured 2026-12-06 over these 205 positions: mean KLD 6.5e-8, top-1 1.0 (int8
// activations gave 3.1e-3 and 0.961, the floor int16 removes).
TEST_F(SmolLM2, Int16ActivationsTrackTheF32Model) {
  const LlamaModel int16(resolve_model_path("smollm2"));
  const std::vector<int> tokens = smollm2().tokenizer().tokenize(testing::kText, true, false);
  testing::expect_int16_tracks_f32(smollm2(), int16, tokens, 1e-6, 0.99);
}

// Packed weights (docs/architecture.md, "Packed weights") change only the
// order of f32 sums: the model with every matrix packed (in place where the
// weights are the process's copy) gives the logits of the model that reads
// the file's rows (INNERQ_PACK=0) within the int16-vs-f32 bound, one and
// three tokens (both int16) and a 205-token prefill (packed int16 against
// the f32 tiles).
TEST_F(SmolLM2, PackedWeightsGiveTheUnpackedModelsLogits) {
  ::setenv("INNERQ_PACK", "0", 1);
  const LlamaModel rows(resolve_model_path("smollm2"));
  ::unsetenv("INNERQ_PACK");
  const LlamaModel packed(resolve_model_path("smollm2"));
  ASSERT_EQ(rows.packed_weights().bytes() + rows.packed_weights().bytes_in_place(), 0u);
  if (packed.packed_weights().bytes() + packed.packed_weights().bytes_in_place() == 0) {
    GTEST_SKIP() << "no AVX-512 VNNI here: nothing is packed";
  }
  const std::vector<int> tokens = smollm2().tokenizer().tokenize(testing::kText, true, false);
  for (const size_t n : {size_t{1}, size_t{3}, tokens.size()}) {  // decode widths and a prefill
    SCOPED_TRACE(n);
    const std::vector<int> part(tokens.begin(), tokens.begin() + static_cast<ptrdiff_t>(n));
    // The int16-vs-f32 bound: the 205-token prefill is f32 tiles against int16.
    testing::expect_logits_track(rows, packed, part, 1e-6, 0.99);
  }
}

}  // namespace
}  // namespace innerq::model
