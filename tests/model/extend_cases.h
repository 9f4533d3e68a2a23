// Helpers of the extend tests (extend_test.cc, extend_smollm2_test.cc): one
// sequence's logits computed token by token and in chunks.
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"

namespace innerq::model::testing {

inline constexpr const char* kText =
    "The old lighthouse stood at the edge of the cliff for more than two hundred years. Every "
    "night its keeper climbed the narrow stairs, trimmed the wick and polished the great lens "
    "until it shone. Ships passing in the dark counted on that light to warn them of the rocks "
    "below. When the electric lamp arrived, the keeper stayed on, because the village could not "
    "imagine the tower without him. He kept a logbook of every storm, every wreck and every "
    "rescue, and the children of the village would sit on the steps to hear him read from it. "
    "One winter a fishing boat lost its engine in a gale and drifted toward the reef. The "
    "keeper saw it first, rang the bell, and rowed out with two neighbours. They brought all "
    "five fishermen home before dawn, and the story is still told in the harbour tavern. Years "
    "later, when the keeper grew too old for the stairs, the fishermen he had saved took turns "
    "climbing them for him, and they wrote in his logbook in their own uneven hands.";

// Logits of positions [first, n) of a sequence, [n - first, V].
struct Rows {
  int first = 0;
  std::vector<float> logits;
};

// Prefill `first` tokens (none: from an empty cache), then decode one token
// at a time.
inline Rows token_by_token(const LlamaModel& m, std::span<const int> tokens, int first,
                           const kv::LayerConfig& config) {
  const int n = static_cast<int>(tokens.size());
  const size_t V = static_cast<size_t>(m.config().n_vocab);
  kv::KvCache cache(m.cache_shape(n), config);
  kv::KvCache* caches[] = {&cache};
  LlamaModel::Workspace ws(m, 1, 1);
  std::vector<float> logits;
  if (first > 0) m.prefill(tokens.first(static_cast<size_t>(first)), caches, false, logits, 2);
  Rows rows{first, {}};
  for (int t = first; t < n; ++t) {
    m.decode(tokens.subspan(static_cast<size_t>(t), 1), caches, logits, 2, ws);
    rows.logits.insert(rows.logits.end(), logits.begin(), logits.begin() + static_cast<long>(V));
  }
  return rows;
}

// Prefill `first` tokens (none: extend from an empty cache), then extend
// with chunks of the given sizes, repeated until the tokens are used up.
inline Rows in_chunks(const LlamaModel& m, std::span<const int> tokens, int first,
                      const kv::LayerConfig& config, const std::vector<int>& chunks) {
  const int n = static_cast<int>(tokens.size());
  kv::KvCache cache(m.cache_shape(n), config);
  kv::KvCache* caches[] = {&cache};
  LlamaModel::Workspace ws;
  std::vector<float> logits;
  if (first > 0) m.prefill(tokens.first(static_cast<size_t>(first)), caches, false, logits, 2);
  Rows rows{first, {}};
  for (size_t c = 0; cache.n_tokens() < n; ++c) {
    const int held = cache.n_tokens();
    const int size = std::min(chunks[c % chunks.size()], n - held);
    m.extend(tokens.subspan(static_cast<size_t>(held), static_cast<size_t>(size)), cache, true,
             logits, 2, ws);
    EXPECT_EQ(cache.n_tokens(), held + size);
    const size_t V = static_cast<size_t>(m.config().n_vocab);
    const size_t skip = static_cast<size_t>(std::max(0, first - held)) * V;
    rows.logits.insert(rows.logits.end(), logits.begin() + static_cast<long>(skip), logits.end());
  }
  return rows;
}

// Largest |a − b| of position t's row, and the largest |a| of the row.
struct RowDiff {
  double max_diff = 0.0, max_abs = 0.0;
};
inline RowDiff row_diff(const Rows& a, const Rows& b, int t, size_t V) {
  RowDiff d;
  const float* ra = &a.logits[static_cast<size_t>(t - a.first) * V];
  const float* rb = &b.logits[static_cast<size_t>(t - b.first) * V];
  for (size_t j = 0; j < V; ++j) {
    d.max_diff = std::max(d.max_diff, std::fabs(double{ra[j]} - rb[j]));
    d.max_abs = std::max(d.max_abs, std::fabs(double{ra[j]}));
  }
  return d;
}

// Two f32 evaluations of the same sums in different orders (the chunk's
// weight matmuls run over several rows, decode's over one, and attention
// reads the cache in other chunks): each of the 2·n_layers+1 residual updates
// sums up to n_ff products (γ_n ≈ n·ε), relative to the size of the logits.
inline double reorder_tolerance(const ModelDesc& c, double max_abs_logit) {
  return (2.0 * c.n_layers + 1) * c.n_ff * std::ldexp(1.0, -24) * max_abs_logit;
}

}  // namespace innerq::model::testing
