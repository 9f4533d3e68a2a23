// The int16-activation weight product (weight_int16.h): activations quantize to
// the same bits on every SIMD target as in the scalar reference, within
// their documented error; the scalar product equals the f32 product of the
// dequantized weights within the bound the activation rounding gives; every
// SIMD target is within its summation bound of the scalar product; a
// multi-token call equals single-token calls bit for bit; non-finite
// activations give NaN; and the product is within about 2⁻¹⁶ of the f32 one.
#include "innerq/kernels/weight_int16.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "weight_block_samples.h"

namespace innerq::kernels {
namespace {

using testing::random_rows;

// Activations of varied scale per chunk (1e-3 .. 1e3), with a zero chunk and
// a chunk of values at exact .5 ties of its step.
std::vector<float> random_activations(int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> exponent(-10.0f, 10.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t c = 0; c < n / kActChunk; ++c) {
    const float scale = std::exp2(exponent(rng));
    for (int i = 0; i < kActChunk; ++i) x[c * kActChunk + i] = scale * normal(rng);
  }
  if (n >= 2 * kActChunk) {
    for (int i = 0; i < kActChunk; ++i) x[i] = 0.0f;
    // amax kActMax → d = 1: k + 0.5 rounds to the even neighbour.
    for (int i = 0; i < kActChunk; ++i) {
      x[kActChunk + i] = i == 0 ? static_cast<float>(kActMax) : (i % 9) - 4.5f;
    }
  }
  return x;
}

std::vector<ActChunk> quantize(const std::vector<float>& x, bool simd) {
  std::vector<ActChunk> q(x.size() / kActChunk);
  if (simd) {
    simd::quantize_activations(x.data(), static_cast<int64_t>(x.size()), q.data());
  } else {
    scalar::quantize_activations(x.data(), static_cast<int64_t>(x.size()), q.data());
  }
  return q;
}

TEST(ActivationQuantize, SimdEqualsScalarBitForBitWithinItsStep) {
  std::mt19937_64 rng(11);
  const std::vector<float> x = random_activations(32 * 40, rng);
  const std::vector<ActChunk> ref = quantize(x, false);
  for (size_t c = 0; c < ref.size(); ++c) {
    int sum[2] = {0, 0};
    for (int i = 0; i < kActChunk; ++i) {
      const float xi = x[c * kActChunk + i];
      ASSERT_LE(std::fabs(xi - ref[c].d * ref[c].q[i]), ref[c].d * (0.5f + 0x1p-8f))
          << "chunk " << c << " value " << i;
      sum[i / 16] += ref[c].q[i];
    }
    ASSERT_EQ(ref[c].ds, ref[c].d * static_cast<float>(sum[0] + sum[1]));
    ASSERT_EQ(ref[c].ds_half[0], ref[c].d * static_cast<float>(sum[0]));
    ASSERT_EQ(ref[c].ds_half[1], ref[c].d * static_cast<float>(sum[1]));
  }
  EXPECT_EQ(ref[0].d, 0.0f);
  EXPECT_EQ(ref[1].d, 1.0f);
  EXPECT_EQ(ref[1].q[1], -4);  // −3.5 → −4
  EXPECT_EQ(ref[1].q[2], -2);  // −2.5 → −2
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const std::vector<ActChunk> got = quantize(x, true);
    ASSERT_EQ(std::memcmp(got.data(), ref.data(), ref.size() * sizeof(ActChunk)), 0)
        << hwy::TargetName(target);
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(ActivationQuantize, NonFiniteChunksGiveNaNScaleOnEveryTarget) {
  for (const float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
        -std::numeric_limits<float>::infinity()}) {
    std::vector<float> x(3 * kActChunk, 1.0f);
    x[kActChunk + 17] = bad;
    for (const bool simd : {false, true}) {
      const std::vector<ActChunk> q = quantize(x, simd);
      EXPECT_EQ(q[0].d, 1.0f / static_cast<float>(kActMax));
      EXPECT_TRUE(std::isnan(q[1].d)) << bad << (simd ? " simd" : " scalar");
      EXPECT_TRUE(std::isnan(q[1].ds));
      EXPECT_EQ(q[2].d, 1.0f / static_cast<float>(kActMax));
    }
  }
}

struct Shape {
  WeightFormat format;
  int64_t n;
};

void PrintTo(const Shape& s, std::ostream* os) {
  *os << weight_format_info(s.format).name << " n=" << s.n;
}

class Int16Dot : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    const Shape s = GetParam();
    const WeightFormatInfo info = weight_format_info(s.format);
    // Padded past the blocks, keeping the fp16 fields 2-byte aligned.
    row_bytes = static_cast<size_t>(s.n / info.block_values) * info.block_bytes + 6;
    std::mt19937_64 rng(static_cast<uint64_t>(s.n) * 29 + static_cast<uint64_t>(s.format));
    rows = random_rows(s.format, kRows, s.n, row_bytes, rng);
    for (int t = 0; t < kTokens; ++t) {
      const std::vector<float> xt = random_activations(s.n, rng);
      x.insert(x.end(), xt.begin(), xt.end());
    }
    xq.resize(x.size() / kActChunk);
    scalar::quantize_activations(x.data(), static_cast<int64_t>(x.size()), xq.data());
  }

  static constexpr int kRows = 6;
  static constexpr int kTokens = 7;
  size_t row_bytes = 0;
  std::vector<uint8_t> rows;
  std::vector<float> x;  // [kTokens][n]
  std::vector<ActChunk> xq;
};

TEST_P(Int16Dot, ScalarWithinActivationRoundingOfF32Product) {
  const Shape s = GetParam();
  const size_t chunks = static_cast<size_t>(s.n / kActChunk);
  const WeightFormatInfo info = weight_format_info(s.format);
  std::vector<float> y(static_cast<size_t>(kTokens) * kRows);
  std::vector<double> y_abs(y.size());
  scalar::dot_rows_int16(s.format, rows.data(), row_bytes, kRows, xq.data(), chunks, kTokens, s.n,
                         y.data(), kRows, y_abs.data());
  std::vector<float> w(static_cast<size_t>(s.n));
  for (int r = 0; r < kRows; ++r) {
    scalar::dequantize_rows(s.format, rows.data() + r * row_bytes, row_bytes, 1, s.n, w.data(),
                            w.size());
    for (int t = 0; t < kTokens; ++t) {
      const float* xt = x.data() + static_cast<size_t>(t) * s.n;
      const ActChunk* at = xq.data() + t * chunks;
      float ref = 0.0f;
      scalar::dot_rows(s.format, rows.data() + r * row_bytes, row_bytes, 1, xt, s.n, &ref);
      // Σ|w|·|x − x̂| from the activation step, the split w = W·c + B of each
      // value (its rounding is a few ulps of the block's largest |w|), and the
      // f32 roundings of F, O and the final result.
      double step = 0.0, split = 0.0;
      for (int64_t b = 0; b < s.n / info.block_values; ++b) {
        double block_max = 0.0;
        for (int i = 0; i < info.block_values; ++i)
          block_max = std::max(block_max, std::fabs(double{w[b * info.block_values + i]}));
        for (int i = 0; i < info.block_values; ++i) {
          const int64_t v = b * info.block_values + i;
          const ActChunk& a = at[v / kActChunk];
          step += std::fabs(double{w[v]}) * a.d * (0.5 + 0x1p-8);
          split += 3 * block_max * std::fabs(double{a.d} * a.q[v % kActChunk]);
        }
      }
      const double tol = step + 0x1p-21 * split + 0x1p-22 * y_abs[t * kRows + r] +
                         0x1p-23 * std::fabs(double{ref});
      ASSERT_NEAR(y[t * kRows + r], ref, tol) << "row " << r << " token " << t;
    }
  }
}

TEST_P(Int16Dot, SimdWithinSummationBoundOfScalarOnEveryTarget) {
  const Shape s = GetParam();
  const size_t chunks = static_cast<size_t>(s.n / kActChunk);
  std::vector<float> ref(static_cast<size_t>(kTokens) * kRows);
  std::vector<double> ref_abs(ref.size());
  scalar::dot_rows_int16(s.format, rows.data(), row_bytes, kRows, xq.data(), chunks, kTokens, s.n,
                         ref.data(), kRows, ref_abs.data());
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const double lanes = static_cast<double>(simd::int16_dot_lanes());
    const double roundings = 2.0 * static_cast<double>(chunks) + std::log2(lanes) + 4;
    std::vector<float> got(ref.size());
    simd::dot_rows_int16(s.format, rows.data(), row_bytes, kRows, xq.data(), chunks, kTokens, s.n,
                         got.data(), kRows);
    for (size_t i = 0; i < got.size(); ++i) {
      const double tol =
          roundings * 0x1p-24 * ref_abs[i] * (1 + 1e-6) + 0x1p-24 * std::fabs(ref[i]);
      ASSERT_NEAR(got[i], ref[i], tol)
          << hwy::TargetName(target) << " row " << i % kRows << " token " << i / kRows;
    }
    // A token's result does not depend on the tokens read with it.
    for (int t = 0; t < kTokens; ++t) {
      std::vector<float> one(kRows);
      simd::dot_rows_int16(s.format, rows.data(), row_bytes, kRows, xq.data() + t * chunks, chunks,
                           1, s.n, one.data(), kRows);
      for (int r = 0; r < kRows; ++r) {
        ASSERT_EQ(std::bit_cast<uint32_t>(one[r]), std::bit_cast<uint32_t>(got[t * kRows + r]))
            << hwy::TargetName(target) << " row " << r << " token " << t;
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST_P(Int16Dot, NonFiniteActivationGivesNaN) {
  const Shape s = GetParam();
  std::vector<float> bad(x.begin(), x.begin() + s.n);
  bad[static_cast<size_t>(s.n) - 1] = std::numeric_limits<float>::infinity();
  std::vector<ActChunk> q(static_cast<size_t>(s.n / kActChunk));
  simd::quantize_activations(bad.data(), s.n, q.data());
  std::vector<float> y(kRows);
  simd::dot_rows_int16(s.format, rows.data(), row_bytes, kRows, q.data(), q.size(), 1, s.n,
                       y.data(), 1);
  for (float v : y) EXPECT_TRUE(std::isnan(v)) << v;
  scalar::dot_rows_int16(s.format, rows.data(), row_bytes, kRows, q.data(), q.size(), 1, s.n,
                         y.data(), 1);
  for (float v : y) EXPECT_TRUE(std::isnan(v)) << v;
}

INSTANTIATE_TEST_SUITE_P(
    Formats, Int16Dot,
    ::testing::Values(Shape{WeightFormat::kQ4_0, 64}, Shape{WeightFormat::kQ4_0, 2048},
                      Shape{WeightFormat::kQ4_1, 2048}, Shape{WeightFormat::kQ5_0, 64},
                      Shape{WeightFormat::kQ5_0, 2048}, Shape{WeightFormat::kQ5_1, 2048},
                      Shape{WeightFormat::kQ8_0, 2048}, Shape{WeightFormat::kQ2_K, 256},
                      Shape{WeightFormat::kQ2_K, 4096}, Shape{WeightFormat::kQ3_K, 4096},
                      Shape{WeightFormat::kQ4_K, 256}, Shape{WeightFormat::kQ4_K, 4096},
                      Shape{WeightFormat::kQ5_K, 4096}, Shape{WeightFormat::kQ6_K, 256},
                      Shape{WeightFormat::kQ6_K, 4096}),
    [](const ::testing::TestParamInfo<Shape>& info) {
      return std::string(weight_format_info(info.param.format).name) + "_n" +
             std::to_string(info.param.n);
    });

}  // namespace
}  // namespace innerq::kernels
