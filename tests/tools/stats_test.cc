// tests/tools/stats_test.cc — the Wilson interval and the exact McNemar test
// of `innerq passkey` (tools/stats.h) against values computed by hand from
// their definitions.
#include "innerq/tools/stats.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

namespace innerq::tools {
namespace {

TEST(Stats, WilsonIntervalMatchesItsFormula) {
  // 8/10, z = 1.96: centre (0.8 + 0.19208) / 1.38415 = 0.71675, half width
  // 1.96 · sqrt(0.016 + 0.009604) / 1.38415 = 0.22658.
  const Interval i = wilson_interval(8, 10);
  EXPECT_NEAR(i.lo, 0.49016, 2e-4);
  EXPECT_NEAR(i.hi, 0.94332, 2e-4);
  // The interval of 0/n starts at 0 and that of n/n ends at 1; both are
  // mirror images.
  const Interval none = wilson_interval(0, 10), all = wilson_interval(10, 10);
  EXPECT_DOUBLE_EQ(none.lo, 0.0);
  EXPECT_NEAR(none.hi, 0.27753, 2e-4);
  EXPECT_NEAR(all.lo, 1.0 - none.hi, 1e-12);
  EXPECT_DOUBLE_EQ(all.hi, 1.0);
  // More trials, narrower interval around the same rate.
  const Interval wide = wilson_interval(5, 10), narrow = wilson_interval(50, 100);
  EXPECT_LT(narrow.hi - narrow.lo, wide.hi - wide.lo);
  EXPECT_LT(narrow.lo, 0.5);
  EXPECT_GT(narrow.hi, 0.5);
  const Interval unknown = wilson_interval(0, 0);
  EXPECT_EQ(unknown.lo, 0.0);
  EXPECT_EQ(unknown.hi, 1.0);
}

TEST(Stats, McNemarIsTheTwoSidedBinomialTailOfTheDisagreements) {
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(0, 0), 1.0);
  EXPECT_NEAR(mcnemar_exact_p(0, 5), 2.0 / 32.0, 1e-12);       // 2 · (1/2)^5
  EXPECT_NEAR(mcnemar_exact_p(5, 0), 2.0 / 32.0, 1e-12);       // symmetric
  EXPECT_NEAR(mcnemar_exact_p(1, 9), 2.0 * 11 / 1024, 1e-12);  // 2 · (1 + 10) / 2^10
  EXPECT_NEAR(mcnemar_exact_p(2, 0), 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(3, 3), 1.0);  // capped
  // Large counts stay finite and small: 0 of 200 disagreements one way.
  const double p = mcnemar_exact_p(0, 200);
  EXPECT_GT(p, 0.0);
  EXPECT_NEAR(std::log2(p), 1.0 - 200.0, 1e-6);
}

TEST(Stats, MeanIntervalIsTheNormalIntervalOfTheMean) {
  // 1, 2, 3, 4: mean 2.5, s² = 5/3, half width 1.96 · sqrt(5/3 / 4).
  const std::vector<double> x = {1, 2, 3, 4};
  const MeanInterval m = mean_interval(x);
  EXPECT_DOUBLE_EQ(m.mean, 2.5);
  EXPECT_NEAR(m.half_width, 1.959963984540054 * std::sqrt(5.0 / 12.0), 1e-12);
  const std::vector<double> one = {7.0}, same = {3.0, 3.0, 3.0};
  EXPECT_DOUBLE_EQ(mean_interval(one).mean, 7.0);
  EXPECT_DOUBLE_EQ(mean_interval(one).half_width, 0.0);
  EXPECT_DOUBLE_EQ(mean_interval(same).half_width, 0.0);
  EXPECT_DOUBLE_EQ(mean_interval(std::vector<double>{}).mean, 0.0);
}

}  // namespace
}  // namespace innerq::tools
