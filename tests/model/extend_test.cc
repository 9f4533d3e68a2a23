// Chunked prefill through the cache (LlamaModel::extend): new tokens of a
// sequence that already holds a cache, in chunks, give the logits that
// token-by-token decode gives, for every cache kind; extend on an empty
// cache works; a chunk that does not fit is refused before anything is
// stored; several caches extended at once equal each alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
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

const LlamaModel& stories() {
  static const LlamaModel model(resolve_model_path("stories260K"));
  return model;
}

// stories260K (head_dim 8) runs on the plain caches only. From an empty
// cache, after a 1-token prefill and after a 17-token one; chunks of 7, 1,
// 33, 2 and 16 tokens. Tolerance as in extend_smollm2_test.cc: the f32
// reordering bound, plus twice the f16 cache's own distance from f32 (an
// element within the rounding difference of an f16 boundary may round the
// other way).
TEST(Extend, StoriesChunksEqualTokenByTokenOnPlainCaches) {
  const LlamaModel& m = stories();
  std::vector<int> tokens = m.tokenizer().tokenize(testing::kText, true, false);
  tokens.resize(std::min<size_t>(tokens.size(), 120));
  const int n = static_cast<int>(tokens.size());
  const size_t V = static_cast<size_t>(m.config().n_vocab);
  const kv::LayerConfig f32 = kv::parse_cache_spec("f32").layer;
  for (int first : {0, 1, 17}) {
    const Rows exact = token_by_token(m, tokens, first, f32);
    for (const char* spec : {"f32", "f16"}) {
      const kv::LayerConfig config = kv::parse_cache_spec(spec).layer;
      const Rows want = token_by_token(m, tokens, first, config);
      const Rows got = in_chunks(m, tokens, first, config, {7, 1, 33, 2, 16});
      ASSERT_EQ(got.logits.size(), static_cast<size_t>(n - first) * V);
      double E = 0.0;
      for (int t = first; t < n; ++t) E = std::max(E, row_diff(want, exact, t, V).max_diff);
      for (int t = first; t < n; ++t) {
        const RowDiff d = row_diff(want, got, t, V);
        ASSERT_LE(d.max_diff, reorder_tolerance(m.config(), d.max_abs) + 2.0 * E)
            << spec << ", prefill " << first << ", position " << t;
      }
    }
  }
}

// Two caches extended together (one weight pass over both) equal each alone,
// and all_logits = false gives each cache's last row.
TEST(Extend, SeveralCachesEqualEachAlone) {
  const LlamaModel& m = stories();
  const std::vector<int> prompt = m.tokenizer().tokenize("Once upon a time", true, false);
  const std::vector<int> chunk = m.tokenizer().tokenize(" there was a cat who", false, false);
  const int n = static_cast<int>(chunk.size());
  const size_t V = static_cast<size_t>(m.config().n_vocab);
  const kv::LayerConfig f32 = kv::parse_cache_spec("f32").layer;
  const kv::LayerConfig f16 = kv::parse_cache_spec("f16").layer;
  kv::KvCache a(m.cache_shape(32), f32), b(m.cache_shape(32), f16);
  kv::KvCache a1(m.cache_shape(32), f32), b1(m.cache_shape(32), f16);
  std::vector<float> logits, all, la, lb;
  kv::KvCache* both[] = {&a, &b};
  m.prefill(prompt, both, false, logits, 2);
  kv::KvCache* alone_a[] = {&a1};
  kv::KvCache* alone_b[] = {&b1};
  m.prefill(prompt, alone_a, false, logits, 2);
  m.prefill(prompt, alone_b, false, logits, 2);

  LlamaModel::Workspace ws(m, 2 * n, 2);
  m.extend(chunk, both, true, all, 2, ws);
  ASSERT_EQ(all.size(), 2 * static_cast<size_t>(n) * V);
  m.extend(chunk, a1, true, la, 1, ws);
  m.extend(chunk, b1, true, lb, 1, ws);
  ASSERT_EQ(la.size(), static_cast<size_t>(n) * V);
  for (size_t j = 0; j < la.size(); ++j) {
    // The same sums: only the row count of the weight matmuls differs.
    ASSERT_NEAR(all[j], la[j], reorder_tolerance(m.config(), std::fabs(la[j]) + 1.0)) << j;
    ASSERT_NEAR(all[la.size() + j], lb[j], reorder_tolerance(m.config(), std::fabs(lb[j]) + 1.0))
        << j;
  }
  // Last rows only: [B, V].
  const std::vector<int> next = {300, 301};
  std::vector<float> last;
  m.extend(next, both, false, last, 2, ws);
  m.extend(next, a1, true, la, 2, ws);
  ASSERT_EQ(last.size(), 2 * V);
  for (size_t j = 0; j < V; ++j)
    ASSERT_NEAR(last[j], la[V + j], reorder_tolerance(m.config(), std::fabs(la[V + j]) + 1.0));
  EXPECT_EQ(a.n_tokens(), static_cast<int>(prompt.size()) + n + 2);
  EXPECT_EQ(b.n_tokens(), a.n_tokens());
}

// A chunk that does not fit is refused before any layer stores anything,
// and the cache goes on as if it had not been tried.
TEST(Extend, ChunkBeyondTheContextIsRefusedBeforeAnythingIsStored) {
  const LlamaModel& m = stories();
  const kv::LayerConfig f16 = kv::parse_cache_spec("f16").layer;
  kv::KvCache cache(m.cache_shape(10), f16);
  LlamaModel::Workspace ws;
  std::vector<float> logits;
  m.extend(std::vector<int>{1, 300, 301, 302, 303, 304}, cache, false, logits, 2, ws);
  try {
    m.extend(std::vector<int>{305, 306, 307, 308, 309}, cache, false, logits, 2, ws);
    FAIL() << "a chunk beyond the context must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("5 more do not fit its context of 10 (-c)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(cache.failed());
  EXPECT_TRUE(cache.layers_agree());
  EXPECT_EQ(cache.n_tokens(), 6);
  m.extend(std::vector<int>{305, 306, 307, 308}, cache, false, logits, 2, ws);
  EXPECT_EQ(cache.n_tokens(), 10);
  EXPECT_THROW(m.extend(std::vector<int>{5}, cache, false, logits, 1, ws), Error);
  EXPECT_THROW(m.extend(std::vector<int>{}, cache, false, logits, 1, ws), Error);
  EXPECT_EQ(cache.n_tokens(), 10);
}

// A token outside the vocabulary, or a cache given twice, is refused before
// anything is stored; a cache a failed step marked cannot be extended.
TEST(Extend, BadInputLeavesTheCachesWhole) {
  const LlamaModel& m = stories();
  kv::KvCache cache(m.cache_shape(16), kv::parse_cache_spec("f16").layer);
  LlamaModel::Workspace ws;
  std::vector<float> logits;
  EXPECT_THROW(m.extend(std::vector<int>{1, 9999}, cache, false, logits, 2, ws), Error);
  kv::KvCache* twice[] = {&cache, &cache};
  EXPECT_THROW(m.extend(std::vector<int>{1, 2}, twice, false, logits, 2, ws), Error);
  EXPECT_EQ(cache.n_tokens(), 0);
  EXPECT_FALSE(cache.failed());
  cache.mark_failed("test");
  EXPECT_THROW(m.extend(std::vector<int>{1, 2}, cache, false, logits, 2, ws), Error);
}

}  // namespace
}  // namespace innerq::model
