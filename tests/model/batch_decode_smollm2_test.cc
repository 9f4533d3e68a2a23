// Batched decode on SmolLM2-135M (label `model`): three sequences of
// different lengths in one shared block pool, decoded together (one weight
// pass per step), give each sequence's logits of decoding it alone, for
// every cache kind, within a tolerance derived below. Needs
// scripts/fetch-model.sh; without the model it skips.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <span>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "extend_cases.h"

namespace innerq::model {
namespace {

using testing::reorder_tolerance;
using testing::row_diff;
using testing::RowDiff;
using testing::Rows;
using testing::token_by_token;

constexpr int kSteps = 32;
// Each sequence starts at another offset of the text and prefills another
// length, so the batch holds caches of different lengths (and, past 128
// tokens, different numbers of quantized tokens and blocks).
constexpr int kOffsets[] = {0, 11, 23};
constexpr int kPrefills[] = {40, 131, 97};

// The tolerance. Each sequence is decoded token by token in both runs, so
// both store the same tokens at the same moments (no window timing differs);
// they differ in (1) f32 rounding: the batch's weight matmuls run over three
// rows, a lone sequence's over one, and attention runs on one thread per
// sequence in the batch and on all of them alone (reorder_tolerance), and
// (2) for quantized kinds, rounding flips: a K/V element within that
// difference of an f16 or code boundary is stored one step apart, moving the
// logits by at most twice what rounding every element does, i.e. 2E with E
// the lone run's largest distance from the f32 cache on the same sequence.
// A sequence that read another's cache, or its own at a wrong position,
// is not bounded by this.
TEST(BatchDecodeSmolLM2, EverySequenceEqualsDecodingItAloneForEveryKind) {
  try {
    resolve_model_path("smollm2");
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  const LlamaModel m(resolve_model_path("smollm2"));
  const std::vector<int> text = m.tokenizer().tokenize(testing::kText, false, false);
  const size_t V = static_cast<size_t>(m.config().n_vocab);
  std::vector<std::vector<int>> seqs;
  for (int b = 0; b < 3; ++b) {
    seqs.emplace_back(text.begin() + kOffsets[b],
                      text.begin() + kOffsets[b] + kPrefills[b] + kSteps);
  }
  std::vector<Rows> exact;
  for (int b = 0; b < 3; ++b) {
    exact.push_back(token_by_token(m, seqs[b], kPrefills[b], kv::parse_cache_spec("f32").layer));
  }
  for (const char* spec :
       {"f32", "f16", "q8_0", "q4_0", "kivi", "innerq", "innerq-paper", "q4_0:rot=kv"}) {
    SCOPED_TRACE(spec);
    const kv::LayerConfig config = kv::parse_cache_spec(spec).layer;
    const int longest = kPrefills[1] + kSteps;
    const kv::CacheShape shape = m.cache_shape(longest);
    auto pool = kv::KvPool::for_sequences(
        shape, std::vector<kv::LayerConfig>(static_cast<size_t>(shape.n_layers), config), 3,
        longest);
    std::vector<std::unique_ptr<kv::KvCache>> caches;
    std::vector<float> logits;
    for (int b = 0; b < 3; ++b) {
      caches.push_back(std::make_unique<kv::KvCache>(pool));
      kv::KvCache* one[] = {caches.back().get()};
      m.prefill(std::span<const int>(seqs[b]).first(static_cast<size_t>(kPrefills[b])), one, false,
                logits, 2);
    }
    kv::KvCache* batch[] = {caches[0].get(), caches[1].get(), caches[2].get()};
    LlamaModel::Workspace ws(m, 3, 3);
    std::vector<Rows> batched(3);
    for (int b = 0; b < 3; ++b) batched[static_cast<size_t>(b)].first = kPrefills[b];
    for (int s = 0; s < kSteps; ++s) {
      const int tokens[] = {seqs[0][static_cast<size_t>(kPrefills[0] + s)],
                            seqs[1][static_cast<size_t>(kPrefills[1] + s)],
                            seqs[2][static_cast<size_t>(kPrefills[2] + s)]};
      m.decode(tokens, batch, logits, 2, ws);
      for (size_t b = 0; b < 3; ++b) {
        batched[b].logits.insert(batched[b].logits.end(), logits.begin() + static_cast<long>(b * V),
                                 logits.begin() + static_cast<long>((b + 1) * V));
      }
    }
    for (int b = 0; b < 3; ++b) {
      const Rows alone = token_by_token(m, seqs[static_cast<size_t>(b)], kPrefills[b], config);
      double E = 0.0;
      for (int t = kPrefills[b]; t < kPrefills[b] + kSteps; ++t) {
        E = std::max(E, row_diff(alone, exact[static_cast<size_t>(b)], t, V).max_diff);
      }
      for (int t = kPrefills[b]; t < kPrefills[b] + kSteps; ++t) {
        const RowDiff d = row_diff(alone, batched[static_cast<size_t>(b)], t, V);
        const double tol = reorder_tolerance(m.config(), d.max_abs) + 2.0 * E;
        EXPECT_LE(d.max_diff, tol) << "sequence " << b << ", position " << t
                                   << " (the lone run's largest distance from f32: " << E << ")";
        if (d.max_diff > tol) break;
      }
    }
  }
}

}  // namespace
}  // namespace innerq::model
