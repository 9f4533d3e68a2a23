// Weight block kernels (weight_blocks.h): the layouts sit at ggml's offsets,
// the packed scales unpack as documented, a few hand-built blocks decode to
// the values their definition gives, and on every compiled SIMD target
// dequantize equals the scalar reference bit for bit and the fused dot stays
// within its rounding bound of the double-precision reference. (The
// comparison with ggml's own dequantizers is weight_blocks_gguf_test.cc.)
#include "innerq/kernels/weight_blocks.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "weight_block_samples.h"

namespace innerq::kernels {
namespace {

using testing::random_rows;

TEST(WeightBlocks, FieldsSitAtGgmlOffsets) {
  EXPECT_EQ(offsetof(BlockQ5_0, qh), 2u);
  EXPECT_EQ(offsetof(BlockQ5_0, qs), 6u);
  EXPECT_EQ(offsetof(BlockQ5_1, qh), 4u);
  EXPECT_EQ(offsetof(BlockQ5_1, qs), 8u);
  EXPECT_EQ(offsetof(BlockQ2_K, qs), 16u);
  EXPECT_EQ(offsetof(BlockQ2_K, d), 80u);
  EXPECT_EQ(offsetof(BlockQ2_K, dmin), 82u);
  EXPECT_EQ(offsetof(BlockQ3_K, qs), 32u);
  EXPECT_EQ(offsetof(BlockQ3_K, scales), 96u);
  EXPECT_EQ(offsetof(BlockQ3_K, d), 108u);
  EXPECT_EQ(offsetof(BlockQ4_K, scales), 4u);
  EXPECT_EQ(offsetof(BlockQ4_K, qs), 16u);
  EXPECT_EQ(offsetof(BlockQ5_K, qh), 16u);
  EXPECT_EQ(offsetof(BlockQ5_K, qs), 48u);
  EXPECT_EQ(offsetof(BlockQ6_K, qh), 128u);
  EXPECT_EQ(offsetof(BlockQ6_K, scales), 192u);
  EXPECT_EQ(offsetof(BlockQ6_K, d), 208u);
}

// Packs 8 scales and 8 mins (6 bits each) the way k_scale_min() documents.
void pack_k_scales(const int sc[8], const int m[8], uint8_t s[12]) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

TEST(WeightBlocks, KScalesUnpackAsPacked) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> six_bits(0, 63);
  for (int trial = 0; trial < 100; ++trial) {
    int sc[8], m[8];
    for (int j = 0; j < 8; ++j) sc[j] = six_bits(rng), m[j] = six_bits(rng);
    uint8_t s[12];
    pack_k_scales(sc, m, s);
    for (int j = 0; j < 8; ++j) {
      int got_sc = -1, got_m = -1;
      k_scale_min(s, j, &got_sc, &got_m);
      ASSERT_EQ(got_sc, sc[j]) << "sub-block " << j;
      ASSERT_EQ(got_m, m[j]) << "sub-block " << j;
    }
  }
}

TEST(WeightBlocks, Q3KScalesUnpackAsPacked) {
  std::mt19937 rng(4);
  std::uniform_int_distribution<int> six_bits(0, 63);
  for (int trial = 0; trial < 100; ++trial) {
    int raw[16];
    uint8_t s[12] = {};
    for (int j = 0; j < 16; ++j) {
      raw[j] = six_bits(rng);
      s[j % 8] |= static_cast<uint8_t>((raw[j] & 15) << (4 * (j / 8)));
      s[8 + j % 4] |= static_cast<uint8_t>((raw[j] >> 4) << (2 * (j / 4)));
    }
    for (int j = 0; j < 16; ++j) ASSERT_EQ(q3k_scale(s, j), raw[j] - 32) << "sub-block " << j;
  }
}

std::vector<float> dequantized(WeightFormat f, const void* block, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  scalar::dequantize_rows(f, static_cast<const uint8_t*>(block), 0, 1, n, out.data(), 0);
  return out;
}

TEST(WeightBlocks, Q5_0HighBitsComeFromQh) {
  BlockQ5_0 b{};
  b.d = f32_to_f16(0.5f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const uint32_t qh = 0x8000'0001u;  // values 0 and 31
  std::memcpy(b.qh, &qh, 4);
  const std::vector<float> x = dequantized(WeightFormat::kQ5_0, &b, 32);
  for (int i = 0; i < 32; ++i) {
    const int q = (i < 16 ? i : 31 - i) + ((i == 0 || i == 31) ? 16 : 0);
    EXPECT_EQ(x[i], 0.5f * static_cast<float>(q - 16)) << "value " << i;
  }
}

TEST(WeightBlocks, Q3KClearHighBitSubtractsFour) {
  BlockQ3_K b{};
  b.d = f32_to_f16(1.0f);
  // Every scale 33 (stored 6-bit value, so dl = 1): low nibbles 1, high bits 2.
  for (int k = 0; k < 8; ++k) b.scales[k] = 0x11;
  for (int k = 8; k < 12; ++k) b.scales[k] = 0xAA;
  for (int l = 0; l < 64; ++l) b.qs[l] = 0xE4;  // j = 0..3 hold codes 0, 1, 2, 3
  for (int l = 0; l < 32; ++l) b.hmask[l] = static_cast<uint8_t>(l % 2 ? 0xFF : 0x00);
  const std::vector<float> x = dequantized(WeightFormat::kQ3_K, &b, 256);
  for (int i = 0; i < 256; ++i) {
    const int low = i % 128 / 32, high = i % 2;
    EXPECT_EQ(x[i], static_cast<float>(low - (high ? 0 : 4))) << "value " << i;
  }
}

TEST(WeightBlocks, Q6KValueOrder) {
  BlockQ6_K b{};
  b.d = f32_to_f16(1.0f);
  for (int k = 0; k < 16; ++k) b.scales[k] = static_cast<int8_t>(k + 1);
  // Value 128h + 32s + l gets code 32 + s: low nibble s, high bits 2.
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      b.ql[64 * h + l] = static_cast<uint8_t>(0 | (2 << 4));
      b.ql[64 * h + 32 + l] = static_cast<uint8_t>(1 | (3 << 4));
      b.qh[32 * h + l] = 0xAA;
    }
  }
  const std::vector<float> x = dequantized(WeightFormat::kQ6_K, &b, 256);
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(x[i], static_cast<float>((i / 16 + 1) * (i % 128 / 32))) << "value " << i;
  }
}

TEST(WeightBlocks, Q4KSubBlockScalesAndMins) {
  BlockQ4_K b{};
  b.d = f32_to_f16(0.5f);
  b.dmin = f32_to_f16(0.25f);
  int sc[8], m[8];
  for (int j = 0; j < 8; ++j) sc[j] = 60 - j, m[j] = 3 * j + 20;
  pack_k_scales(sc, m, b.scales);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l)
      b.qs[32 * c + l] = static_cast<uint8_t>((l % 16) | (15 - l % 16) << 4);
  }
  const std::vector<float> x = dequantized(WeightFormat::kQ4_K, &b, 256);
  for (int i = 0; i < 256; ++i) {
    const int j = i / 32, l = i % 32;
    const int q = j % 2 ? 15 - l % 16 : l % 16;
    EXPECT_EQ(x[i], 0.5f * static_cast<float>(sc[j]) * static_cast<float>(q) -
                        0.25f * static_cast<float>(m[j]))
        << "value " << i;
  }
}

struct Shape {
  WeightFormat format;
  int64_t n;
};

void PrintTo(const Shape& s, std::ostream* os) {
  *os << weight_format_info(s.format).name << " n=" << s.n;
}

class WeightBlockKernels : public ::testing::TestWithParam<Shape> {};

TEST_P(WeightBlockKernels, SimdDequantizeEqualsScalarBitForBit) {
  const Shape s = GetParam();
  const WeightFormatInfo info = weight_format_info(s.format);
  const int64_t rows = 5;
  const size_t row_bytes = static_cast<size_t>(s.n / info.block_values) * info.block_bytes + 6;
  const size_t out_stride = static_cast<size_t>(s.n) + 3;
  std::mt19937_64 rng(static_cast<uint64_t>(s.n) * 31 + static_cast<uint64_t>(s.format));
  const std::vector<uint8_t> data = random_rows(s.format, rows, s.n, row_bytes, rng);
  std::vector<float> ref(rows * out_stride, -7.0f);
  scalar::dequantize_rows(s.format, data.data(), row_bytes, rows, s.n, ref.data(), out_stride);
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    std::vector<float> got(ref.size(), -7.0f);  // the gaps between rows stay untouched
    simd::dequantize_rows(s.format, data.data(), row_bytes, rows, s.n, got.data(), out_stride);
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(ref[i]))
          << hwy::TargetName(target) << " " << info.name << " n=" << s.n << " row "
          << i / out_stride << " value " << i % out_stride << ": " << got[i] << " vs " << ref[i];
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST_P(WeightBlockKernels, SimdDotWithinRoundingBoundOfReference) {
  const Shape s = GetParam();
  const WeightFormatInfo info = weight_format_info(s.format);
  const int64_t rows = 7;
  const size_t row_bytes = static_cast<size_t>(s.n / info.block_values) * info.block_bytes;
  std::mt19937_64 rng(static_cast<uint64_t>(s.n) * 17 + static_cast<uint64_t>(s.format));
  const std::vector<uint8_t> data = random_rows(s.format, rows, s.n, row_bytes, rng);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(s.n));
  for (float& v : x) v = normal(rng);
  std::vector<float> ref(rows);
  scalar::dot_rows(s.format, data.data(), row_bytes, rows, x.data(), s.n, ref.data());

  // Σ|w·x| per row, from the dequantized weights the SIMD dot multiplies.
  std::vector<float> w(static_cast<size_t>(rows * s.n));
  scalar::dequantize_rows(s.format, data.data(), row_bytes, rows, s.n, w.data(),
                          static_cast<size_t>(s.n));
  std::vector<double> abs_sum(rows, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < s.n; ++i)
      abs_sum[r] += std::fabs(static_cast<double>(w[r * s.n + i]) * x[i]);
  }

  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    // Each accumulator lane sums ⌈n / (2·lanes)⌉ products, then one add joins
    // the two accumulators and log2(lanes) adds reduce the lanes; the
    // reference rounds once more (weight_blocks.h).
    const double lanes = static_cast<double>(simd::dot_lanes());
    const double roundings =
        std::ceil(static_cast<double>(s.n) / (2 * lanes)) + std::log2(lanes) + 2;
    std::vector<float> got(rows);
    simd::dot_rows(s.format, data.data(), row_bytes, rows, x.data(), s.n, got.data());
    for (int64_t r = 0; r < rows; ++r) {
      const double tol = roundings * std::ldexp(1.0, -24) * abs_sum[r] * (1 + 1e-6);
      ASSERT_NEAR(got[r], ref[r], tol) << hwy::TargetName(target) << " " << info.name
                                       << " n=" << s.n << " row " << r << " lanes " << lanes;
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, WeightBlockKernels,
    ::testing::Values(Shape{WeightFormat::kQ4_0, 32}, Shape{WeightFormat::kQ4_0, 2048},
                      Shape{WeightFormat::kQ4_1, 2048}, Shape{WeightFormat::kQ5_0, 32},
                      Shape{WeightFormat::kQ5_0, 2048}, Shape{WeightFormat::kQ5_1, 2048},
                      Shape{WeightFormat::kQ8_0, 2048}, Shape{WeightFormat::kQ2_K, 256},
                      Shape{WeightFormat::kQ2_K, 4096}, Shape{WeightFormat::kQ3_K, 256},
                      Shape{WeightFormat::kQ3_K, 4096}, Shape{WeightFormat::kQ4_K, 256},
                      Shape{WeightFormat::kQ4_K, 4096}, Shape{WeightFormat::kQ5_K, 256},
                      Shape{WeightFormat::kQ5_K, 4096}, Shape{WeightFormat::kQ6_K, 256},
                      Shape{WeightFormat::kQ6_K, 4096}, Shape{WeightFormat::kBF16, 5},
                      Shape{WeightFormat::kBF16, 1003}),
    [](const ::testing::TestParamInfo<Shape>& info) {
      return std::string(weight_format_info(info.param.format).name) + "_n" +
             std::to_string(info.param.n);
    });

}  // namespace
}  // namespace innerq::kernels
