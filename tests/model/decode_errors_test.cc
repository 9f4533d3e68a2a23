// Errors in a model step (issue: exceptions inside OpenMP regions): a
// batched decode whose sequences cannot all take a token is refused before
// any layer stores anything, no exception crosses the batch's parallel
// region, and the caches stay consistent (docs/architecture.md, "Errors and
// threads").
#include <gtest/gtest.h>

#include <vector>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"

namespace innerq::model {
namespace {

const LlamaModel& stories() {
  static const LlamaModel model(resolve_model_path("stories260K"));
  return model;
}

void expect_whole(const kv::KvCache& cache, int n_tokens) {
  EXPECT_FALSE(cache.failed());
  EXPECT_TRUE(cache.layers_agree());
  EXPECT_EQ(cache.n_tokens(), n_tokens);
}

TEST(DecodeErrors, FullCacheInABatchIsRefusedBeforeAnyLayerStores) {
  const LlamaModel& m = stories();
  const std::vector<int> prompt = m.tokenizer().tokenize("Once upon a time", true, false);
  const int n = static_cast<int>(prompt.size());
  const kv::LayerConfig f16 = kv::parse_cache_spec("f16").layer;
  kv::KvCache roomy(m.cache_shape(n + 8), f16), full(m.cache_shape(n), f16);
  std::vector<float> logits;
  kv::KvCache* one[] = {&roomy};
  m.prefill(prompt, one, false, logits, 2);
  one[0] = &full;
  m.prefill(prompt, one, false, logits, 2);

  kv::KvCache* batch[] = {&roomy, &full};
  const std::vector<int> next = {prompt.back(), prompt.back()};
  for (int threads : {1, 2}) {
    try {
      m.decode(next, batch, logits, threads);
      FAIL() << "decoding into a full cache must throw";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("sequence 1"), std::string::npos) << e.what();
    }
    expect_whole(roomy, n);
    expect_whole(full, n);
  }
  // The refused step changed nothing: the roomy sequence decodes on alone.
  kv::KvCache* alone[] = {&roomy};
  m.decode(std::vector<int>{prompt.back()}, alone, logits, 2);
  expect_whole(roomy, n + 1);
}

TEST(DecodeErrors, OneCacheTwiceInABatchIsRefused) {
  const LlamaModel& m = stories();
  kv::KvCache cache(m.cache_shape(16), kv::parse_cache_spec("f16").layer);
  std::vector<float> logits;
  kv::KvCache* one[] = {&cache};
  m.prefill(std::vector<int>{1, 2, 3}, one, false, logits, 1);
  kv::KvCache* batch[] = {&cache, &cache};
  EXPECT_THROW(m.decode(std::vector<int>{4, 5}, batch, logits, 2), Error);
  expect_whole(cache, 3);
}

TEST(DecodeErrors, PrefillLongerThanTheContextIsRefusedUpFront) {
  const LlamaModel& m = stories();
  kv::KvCache cache(m.cache_shape(2), kv::parse_cache_spec("f16").layer);
  std::vector<float> logits;
  kv::KvCache* one[] = {&cache};
  try {
    m.prefill(std::vector<int>{1, 2, 3}, one, false, logits, 1);
    FAIL() << "a prompt longer than the context must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context of 2 (-c)"), std::string::npos) << e.what();
  }
  expect_whole(cache, 0);
}

}  // namespace
}  // namespace innerq::model
