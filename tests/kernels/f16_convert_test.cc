// Bulk fp16 conversions equal the scalar round-to-nearest-even ones bit for
// bit, on every SIMD target: all 65536 f16 patterns one way, and edge cases
// plus random f32 patterns the other.
#include "innerq/kernels/f16_convert.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "hwy/targets.h"

namespace innerq::kernels {
namespace {

TEST(F16Convert, MatchesScalarOnEveryTarget) {
  std::vector<f16_bits> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<f16_bits>(i);
  std::vector<float> values = {0.0f,
                               -0.0f,
                               1.0f,
                               -1.0f,
                               65504.0f,
                               65519.99f,
                               65520.0f,
                               1e9f,
                               -1e9f,
                               5.96e-8f,
                               2.98e-8f,
                               2.99e-8f,
                               6.1e-5f,
                               1.0009765625f,
                               std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::denorm_min()};
  std::mt19937 rng(3);
  for (int i = 0; i < 100000; ++i) {
    const float x = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    if (!std::isnan(x)) values.push_back(x);
  }
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    SCOPED_TRACE(hwy::TargetName(target));
    hwy::SetSupportedTargetsForTest(target);
    std::vector<float> widened(all.size());
    f16_to_f32(all.data(), all.size(), widened.data());
    for (size_t i = 0; i < all.size(); ++i) {
      const float want = innerq::f16_to_f32(all[i]);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(widened[i])) << "pattern " << i;
      } else {
        ASSERT_EQ(std::bit_cast<uint32_t>(widened[i]), std::bit_cast<uint32_t>(want))
            << "pattern " << i;
      }
    }
    std::vector<f16_bits> narrowed(values.size());
    f32_to_f16(values.data(), values.size(), narrowed.data());
    for (size_t i = 0; i < values.size(); ++i) {
      ASSERT_EQ(narrowed[i], innerq::f32_to_f16(values[i])) << "value " << values[i];
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace
}  // namespace innerq::kernels
