// Packed 16-row weights (weight_packed.h), every packed format: splitting
// an activation into two bytes is exact over the whole int16 range; the scalar product of a packed
// matrix equals the unpacked int16 product bit for bit (so packing keeps
// every code and scale); every SIMD target is within the documented
// summation bound of it, a token's result does not depend on the tokens read
// with it, rows past the matrix are never written, and a non-finite
// activation gives NaN.
#include "innerq/kernels/weight_packed.h"

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

TEST(SplitActivations, BytesRebuildEveryInt16Code) {
  std::vector<ActChunk> x((2 * kActMax + 1 + kActChunk - 1) / kActChunk);
  for (size_t c = 0; c < x.size(); ++c) {
    x[c].d = 0.5f;
    x[c].ds = static_cast<float>(c);
    for (int i = 0; i < kActChunk; ++i) {
      const int64_t v = -kActMax + static_cast<int64_t>(c) * kActChunk + i;
      x[c].q[i] = static_cast<int16_t>(v > kActMax ? kActMax : v);
    }
  }
  std::vector<ActBytes> split(x.size());
  scalar::split_activations(x.data(), static_cast<int64_t>(x.size()), split.data());
  for (size_t c = 0; c < x.size(); ++c) {
    int32_t sum[2] = {0, 0};
    for (int i = 0; i < kActChunk; ++i) {
      ASSERT_EQ(256 * split[c].h[i] + split[c].l[i], x[c].q[i]) << "chunk " << c << " value " << i;
      sum[i / 16] += x[c].q[i];
    }
    ASSERT_EQ(split[c].sum_half[0], sum[0]);
    ASSERT_EQ(split[c].sum_half[1], sum[1]);
    ASSERT_EQ(split[c].d, x[c].d);
    ASSERT_EQ(split[c].ds, x[c].ds);
  }
}

TEST(PackedLayout, GroupHoldsAsManyBytesAsItsRows) {
  for (const WeightFormat f : {WeightFormat::kQ4_0, WeightFormat::kQ4_1, WeightFormat::kQ5_0,
                               WeightFormat::kQ5_1, WeightFormat::kQ8_0}) {
    const WeightFormatInfo info = weight_format_info(f);
    EXPECT_EQ(packed_group_bytes(f, 576), kPackRows * 576 / 32 * info.block_bytes) << info.name;
  }
  // K-quant factors are f32 products: 6 bits per value for Q4_K, 10 for Q6_K.
  EXPECT_EQ(packed_group_bytes(WeightFormat::kQ4_K, 256), size_t{kPackRows} * 256 * 6 / 8);
  EXPECT_EQ(packed_group_bytes(WeightFormat::kQ6_K, 256), size_t{kPackRows} * 256 * 10 / 8);
  EXPECT_TRUE(packed_supported(WeightFormat::kQ5_K));
  EXPECT_FALSE(packed_supported(WeightFormat::kQ2_K));
  EXPECT_FALSE(packed_supported(WeightFormat::kQ3_K));
  EXPECT_FALSE(packed_supported(WeightFormat::kBF16));
}

struct Shape {
  WeightFormat format;
  int64_t n;
  int64_t rows;
};

void PrintTo(const Shape& s, std::ostream* os) {
  *os << weight_format_info(s.format).name << " n=" << s.n << " rows=" << s.rows;
}

class PackedDot : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    const Shape s = GetParam();
    const WeightFormatInfo info = weight_format_info(s.format);
    row_bytes = static_cast<size_t>(s.n / info.block_values) * info.block_bytes + 4;
    std::mt19937_64 rng(static_cast<uint64_t>(s.n) * 31 + static_cast<uint64_t>(s.rows) * 7 +
                        static_cast<uint64_t>(s.format));
    rows = random_rows(s.format, s.rows, s.n, row_bytes, rng);
    packed.resize(static_cast<size_t>(packed_groups(s.rows)) * packed_group_bytes(s.format, s.n));
    scalar::pack_rows(s.format, rows.data(), row_bytes, s.rows, s.n, packed.data());
    // Tokens of varied scale; the last has every value at +kActMax (the
    // largest J, and Q8_0's largest correction).
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> exponent(-8.0f, 8.0f);
    std::vector<float> x(static_cast<size_t>(kTokens * s.n));
    for (int t = 0; t < kTokens; ++t) {
      for (int64_t c = 0; c < s.n / kActChunk; ++c) {
        const float scale = std::exp2(exponent(rng));
        for (int i = 0; i < kActChunk; ++i) {
          x[static_cast<size_t>(t * s.n + c * kActChunk + i)] =
              t == kTokens - 1 ? scale : scale * normal(rng);
        }
      }
    }
    chunks = static_cast<size_t>(s.n / kActChunk);
    xq.resize(x.size() / kActChunk);
    scalar::quantize_activations(x.data(), static_cast<int64_t>(x.size()), xq.data());
    xb.resize(xq.size());
    scalar::split_activations(xq.data(), static_cast<int64_t>(xq.size()), xb.data());
    ref.resize(static_cast<size_t>(kTokens * s.rows));
    ref_abs.resize(ref.size());
    scalar::dot_rows_int16(s.format, rows.data(), row_bytes, s.rows, xq.data(), chunks, kTokens,
                           s.n, ref.data(), static_cast<size_t>(s.rows), ref_abs.data());
  }

  static constexpr int kTokens = 7;
  size_t row_bytes = 0, chunks = 0;
  std::vector<uint8_t> rows, packed;
  std::vector<ActChunk> xq;
  std::vector<ActBytes> xb;
  std::vector<float> ref;
  std::vector<double> ref_abs;
};

TEST_P(PackedDot, ScalarEqualsUnpackedProductBitForBit) {
  const Shape s = GetParam();
  std::vector<float> got(ref.size()), got_split(ref.size());
  scalar::dot_packed(s.format, packed.data(), s.rows, xq.data(), chunks, kTokens, s.n, got.data(),
                     static_cast<size_t>(s.rows));
  scalar::dot_packed(s.format, packed.data(), s.rows, xb.data(), chunks, kTokens, s.n,
                     got_split.data(), static_cast<size_t>(s.rows));
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(ref[i])) << "output " << i;
    ASSERT_EQ(std::bit_cast<uint32_t>(got_split[i]), std::bit_cast<uint32_t>(ref[i]))
        << "output " << i;
  }
}

TEST_P(PackedDot, SimdWithinSummationBoundOnEveryTarget) {
  const Shape s = GetParam();
  const double roundings = 2.0 * static_cast<double>(chunks) + 2;
  const size_t stride = static_cast<size_t>(s.rows) + 3;  // 3 sentinels after each token's rows
  const float sentinel = -12345.0f;
  bool ran_vnni = false;
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    ran_vnni = ran_vnni || simd::packed_dot_available();
    std::vector<float> got(kTokens * stride, sentinel);
    simd::dot_packed(s.format, packed.data(), s.rows, xb.data(), chunks, kTokens, s.n, got.data(),
                     stride);
    for (int t = 0; t < kTokens; ++t) {
      for (int64_t r = 0; r < s.rows; ++r) {
        const size_t i = static_cast<size_t>(t * s.rows + r);
        const double tol =
            roundings * 0x1p-24 * ref_abs[i] * (1 + 1e-6) + 0x1p-24 * std::fabs(ref[i]);
        ASSERT_NEAR(got[t * stride + r], ref[i], tol)
            << hwy::TargetName(target) << " row " << r << " token " << t;
      }
      for (size_t k = static_cast<size_t>(s.rows); k < stride; ++k) {
        ASSERT_EQ(got[t * stride + k], sentinel) << hwy::TargetName(target) << " wrote past row";
      }
      // A token's result does not depend on the tokens read with it.
      std::vector<float> one(static_cast<size_t>(s.rows));
      simd::dot_packed(s.format, packed.data(), s.rows, xb.data() + t * chunks, chunks, 1, s.n,
                       one.data(), 1);
      for (int64_t r = 0; r < s.rows; ++r) {
        ASSERT_EQ(std::bit_cast<uint32_t>(one[r]), std::bit_cast<uint32_t>(got[t * stride + r]))
            << hwy::TargetName(target) << " row " << r << " token " << t;
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  if (!ran_vnni) GTEST_SKIP() << "no target with AVX-512 VNNI here: only the scalar path ran";
}

TEST_P(PackedDot, NonFiniteActivationGivesNaN) {
  const Shape s = GetParam();
  std::vector<float> bad(static_cast<size_t>(s.n), 1.0f);
  bad.back() = std::numeric_limits<float>::quiet_NaN();
  std::vector<ActChunk> q(chunks);
  std::vector<ActBytes> b(chunks);
  scalar::quantize_activations(bad.data(), s.n, q.data());
  scalar::split_activations(q.data(), static_cast<int64_t>(chunks), b.data());
  std::vector<float> y(static_cast<size_t>(s.rows));
  simd::dot_packed(s.format, packed.data(), s.rows, b.data(), chunks, 1, s.n, y.data(), 1);
  for (float v : y) EXPECT_TRUE(std::isnan(v)) << v;
}

INSTANTIATE_TEST_SUITE_P(
    Formats, PackedDot,
    ::testing::Values(Shape{WeightFormat::kQ4_0, 64, 16}, Shape{WeightFormat::kQ4_0, 576, 37},
                      Shape{WeightFormat::kQ4_1, 32, 5}, Shape{WeightFormat::kQ4_1, 1536, 48},
                      Shape{WeightFormat::kQ5_0, 640, 21}, Shape{WeightFormat::kQ5_1, 2048, 16},
                      Shape{WeightFormat::kQ8_0, 32, 17}, Shape{WeightFormat::kQ8_0, 2048, 40},
                      Shape{WeightFormat::kQ4_K, 256, 16}, Shape{WeightFormat::kQ4_K, 1024, 37},
                      Shape{WeightFormat::kQ5_K, 512, 21}, Shape{WeightFormat::kQ6_K, 256, 16},
                      Shape{WeightFormat::kQ6_K, 768, 37}),
    [](const ::testing::TestParamInfo<Shape>& info) {
      return std::string(weight_format_info(info.param.format).name) + "_n" +
             std::to_string(info.param.n) + "_rows" + std::to_string(info.param.rows);
    });

}  // namespace
}  // namespace innerq::kernels
