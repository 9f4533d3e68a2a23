// tests/kernels/sym_level_rule_test.cc — the symmetric scale rule. Computes
// both candidate rules independently of the kernels, prints their errors next
// to the kernels' per-group choice (the table in quantize_rules.h), and checks
// that the choice reproduces one of the rules on every group, is never worse
// than either, and beats each on the data where that rule is weak.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "innerq/kernels/quant_kernels.h"
#include "innerq/kernels/quantize_rules.h"

namespace innerq::kernels {
namespace {

// A symmetric rule: s = fp16(absmax / divisor), level = clamp(round(x/s)).
struct SymRule {
  float divisor;
  int min_level;
  int max_level;
};
SymRule narrow_rule(int bits) {  // (a) ±(2^(b−1) − 1)
  return {static_cast<float>(sym_offset(bits) - 1), -(sym_offset(bits) - 1), sym_offset(bits) - 1};
}
SymRule full_rule(int bits) {  // (b) −2^(b−1)..2^(b−1) − 1
  return {static_cast<float>(sym_offset(bits)), -sym_offset(bits), sym_offset(bits) - 1};
}

void quantize_with_rule(const SymRule& rule, const float* x, int group, float* x_hat) {
  float absmax = 0.0f;
  for (int i = 0; i < group; ++i) absmax = std::max(absmax, std::fabs(x[i]));
  const float s = f16_to_f32(f32_to_f16(absmax / rule.divisor));
  const float inv = s > 0.0f ? 1.0f / s : 0.0f;
  for (int i = 0; i < group; ++i) {
    const float level = std::nearbyint(x[i] * inv);
    x_hat[i] = s * std::min(std::max(level, static_cast<float>(rule.min_level)),
                            static_cast<float>(rule.max_level));
  }
}

enum class Dist { kGaussian, kLaplace, kOutliers };

std::vector<float> draw(Dist dist, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::exponential_distribution<float> exponential(1.0f);
  std::uniform_int_distribution<int> position(0, 31);
  std::vector<float> x(n);
  for (float& v : x) v = dist == Dist::kLaplace ? exponential(rng) - exponential(rng) : normal(rng);
  if (dist == Dist::kOutliers) {
    for (size_t g = 0; g < n; g += 32) {
      for (int k = 0; k < 3; ++k) x[g + position(rng)] *= 20.0f;
    }
  }
  return x;
}

double rel_rmse(const std::vector<float>& x, const std::vector<float>& x_hat) {
  double err = 0.0, norm = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    err += (double{x[i]} - x_hat[i]) * (double{x[i]} - x_hat[i]);
    norm += double{x[i]} * x[i];
  }
  return std::sqrt(err / norm);
}

// Σ(x − x̂)² of one 32-value group.
double group_error(const float* x, const float* x_hat) {
  double err = 0.0;
  for (int i = 0; i < 32; ++i) err += (double{x[i]} - x_hat[i]) * (double{x[i]} - x_hat[i]);
  return err;
}

const char* dist_name(Dist dist) {
  return dist == Dist::kGaussian ? "gaussian" : dist == Dist::kLaplace ? "laplace" : "outliers";
}

constexpr size_t kGroups = 8192;

TEST(SymLevelRule, KernelsKeepTheBetterScalePerGroup) {
  std::printf(
      "sym rel_rmse, G=32, %zu groups: (a) narrow ±(2^(b-1)-1), (b) full, kernels' choice\n",
      kGroups);
  for (Dist dist : {Dist::kGaussian, Dist::kLaplace, Dist::kOutliers}) {
    const std::vector<float> x = draw(dist, kGroups * 32, 7);
    std::printf("  %-9s", dist_name(dist));
    for (int bits : {2, 3, 4}) {
      SCOPED_TRACE(std::string(dist_name(dist)) + " bits=" + std::to_string(bits));
      const GroupSpec spec{bits, 32, QuantMode::kSymmetric};
      std::vector<uint8_t> records(kGroups * spec.record_bytes());
      simd::quantize_row(spec, x.data(), kGroups, records.data());
      std::vector<float> chosen(x.size()), narrow(x.size()), full(x.size());
      scalar::dequantize_row(spec, records.data(), kGroups, chosen.data());
      for (size_t g = 0; g < x.size(); g += 32) {
        quantize_with_rule(narrow_rule(bits), &x[g], 32, &narrow[g]);
        quantize_with_rule(full_rule(bits), &x[g], 32, &full[g]);
        const auto same = [&](const std::vector<float>& rule) {
          return std::equal(&chosen[g], &chosen[g] + 32, &rule[g]);
        };
        ASSERT_TRUE(same(narrow) || same(full)) << "group " << g / 32;
        const double best = std::min(group_error(&x[g], &narrow[g]), group_error(&x[g], &full[g]));
        ASSERT_LE(group_error(&x[g], &chosen[g]), best * (1 + 32 * FLT_EPSILON))
            << "group " << g / 32;
      }
      const double e_narrow = rel_rmse(x, narrow), e_full = rel_rmse(x, full);
      const double e_chosen = rel_rmse(x, chosen);
      std::printf("  b=%d (a) %.4f (b) %.4f chosen %.4f", bits, e_narrow, e_full, e_chosen);
      if (dist == Dist::kGaussian) {
        EXPECT_LT(e_chosen, e_narrow);
      }
      if (dist == Dist::kOutliers) {
        EXPECT_LT(e_chosen, e_full);
      }
    }
    std::printf("\n");
  }
}

}  // namespace
}  // namespace innerq::kernels
