// Sampler: greedy is argmax; sampling is reproducible from the seed and
// respects top-k / top-p.
#include "innerq/model/sampler.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "innerq/base/error.h"

namespace innerq::model {
namespace {

const std::vector<float> kLogits = {0.1f, 3.0f, 2.9f, -1.0f, 2.0f, 0.0f};

TEST(Sampler, GreedyIsArgmax) {
  Sampler s(SamplerOptions{0.0f, 40, 0.95f, 7});
  EXPECT_EQ(s.sample(kLogits), 1);
  EXPECT_EQ(argmax(std::vector<float>{1.0f, 5.0f, 5.0f}), 1);  // first on ties
}

TEST(Sampler, SameSeedSameTokens) {
  Sampler a(SamplerOptions{1.0f, 0, 1.0f, 42});
  Sampler b(SamplerOptions{1.0f, 0, 1.0f, 42});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample(kLogits), b.sample(kLogits));
}

TEST(Sampler, TopKAndTopPLimitTheCandidates) {
  Sampler k2(SamplerOptions{5.0f, 2, 1.0f, 1});
  std::set<int> seen;
  for (int i = 0; i < 200; ++i) seen.insert(k2.sample(kLogits));
  EXPECT_EQ(seen, (std::set<int>{1, 2}));

  // p(1) ≈ p(2) ≈ 0.4 at T=1 over {1, 2, 4, ...}: top-p 0.5 keeps two tokens.
  Sampler p(SamplerOptions{1.0f, 0, 0.5f, 3});
  seen.clear();
  for (int i = 0; i < 200; ++i) seen.insert(p.sample(kLogits));
  EXPECT_EQ(seen, (std::set<int>{1, 2}));
}

TEST(Sampler, RejectsBadOptions) {
  EXPECT_THROW(Sampler(SamplerOptions{-1.0f, 40, 0.9f, 0}), Error);
  EXPECT_THROW(Sampler(SamplerOptions{1.0f, -2, 0.9f, 0}), Error);
  EXPECT_THROW(Sampler(SamplerOptions{1.0f, 40, 0.0f, 0}), Error);
  EXPECT_THROW(Sampler(SamplerOptions{1.0f, 40, 1.5f, 0}), Error);
}

}  // namespace
}  // namespace innerq::model
