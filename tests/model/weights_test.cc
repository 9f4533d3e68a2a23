// Weight kernels: the Highway matmul (decode matvec and prefill tiles) against
// the scalar reference, for every supported format and awkward shapes.
#include "innerq/model/weights.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <hwy/targets.h>

#include "innerq/base/fp16.h"

namespace innerq::model {
namespace {

// Random rows in `type`'s byte layout.
std::vector<uint8_t> random_matrix(GgmlType type, int64_t rows, int64_t cols, size_t* row_bytes,
                                   std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  switch (type) {
    case GgmlType::kF32:
      *row_bytes = static_cast<size_t>(cols) * 4;
      break;
    case GgmlType::kF16:
      *row_bytes = static_cast<size_t>(cols) * 2;
      break;
    case GgmlType::kQ8_0:
      *row_bytes = static_cast<size_t>(cols / 32) * sizeof(BlockQ8_0);
      break;
    case GgmlType::kQ4_1:
      *row_bytes = static_cast<size_t>(cols / 32) * sizeof(BlockQ4_1);
      break;
    default:
      ADD_FAILURE();
      break;
  }
  std::vector<uint8_t> data(*row_bytes * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = data.data() + static_cast<size_t>(r) * *row_bytes;
    if (type == GgmlType::kF32) {
      for (int64_t c = 0; c < cols; ++c) {
        const float v = normal(rng);
        std::memcpy(row + 4 * c, &v, 4);
      }
    } else if (type == GgmlType::kF16) {
      for (int64_t c = 0; c < cols; ++c) {
        const f16_bits h = f32_to_f16(normal(rng));
        std::memcpy(row + 2 * c, &h, 2);
      }
    } else {
      for (size_t i = 0; i < *row_bytes; ++i) row[i] = static_cast<uint8_t>(byte(rng));
      // Finite, realistic scales: d ~ 0.01..0.1, m ~ -0.5..0.
      const size_t block = type == GgmlType::kQ8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_1);
      for (size_t b = 0; b < *row_bytes / block; ++b) {
        const f16_bits d = f32_to_f16(0.01f + 0.09f * static_cast<float>(byte(rng)) / 255.0f);
        std::memcpy(row + b * block, &d, 2);
        if (type == GgmlType::kQ4_1) {
          const f16_bits m = f32_to_f16(-0.5f * static_cast<float>(byte(rng)) / 255.0f);
          std::memcpy(row + b * block + 2, &m, 2);
        }
      }
    }
  }
  return data;
}

struct Case {
  GgmlType type;
  int64_t rows, cols;
  int n_tokens;
};

class MatmulVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(MatmulVsReference, MatchesWithinRoundingBound) {
  const Case c = GetParam();
  std::mt19937_64 rng(static_cast<uint64_t>(c.rows * 131 + c.cols * 7 + c.n_tokens));
  WeightMatrix w;
  w.name = "test";
  w.type = c.type;
  w.rows = c.rows;
  w.cols = c.cols;
  const std::vector<uint8_t> data = random_matrix(c.type, c.rows, c.cols, &w.row_bytes, rng);
  w.data = data.data();

  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(c.n_tokens * c.cols));
  for (float& v : x) v = normal(rng);
  std::vector<float> ref(static_cast<size_t>(c.n_tokens * c.rows));
  matmul_reference(w, x.data(), c.n_tokens, ref.data());

  // f32 accumulation in any order: |error| ≤ cols·ε·Σ|w·x| (γ_n bound; the
  // block-wise scale and offset add two more roundings per block).
  std::vector<double> tol(ref.size());
  std::vector<float> row(static_cast<size_t>(c.cols));
  const double eps = std::ldexp(1.0, -24);
  for (int64_t r = 0; r < c.rows; ++r) {
    dequantize_row(w, r, row.data());
    for (int t = 0; t < c.n_tokens; ++t) {
      double abs_sum = 0.0;
      for (int64_t i = 0; i < c.cols; ++i) abs_sum += std::fabs(row[i] * x[t * c.cols + i]);
      tol[static_cast<size_t>(t * c.rows + r)] = static_cast<double>(c.cols + 2) * eps * abs_sum;
    }
  }

  // Every SIMD target compiled in and supported here (AVX-512, AVX2, SSE4,
  // emulated 128-bit, ...), not only the one dispatch would pick.
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    std::vector<float> y(ref.size());
    matmul(w, x.data(), c.n_tokens, y.data(), 2);
    for (size_t at = 0; at < y.size(); ++at) {
      ASSERT_NEAR(y[at], ref[at], tol[at])
          << hwy::TargetName(target) << " " << ggml_type_name(c.type) << " rows=" << c.rows
          << " cols=" << c.cols << " tokens=" << c.n_tokens << " at row "
          << static_cast<int64_t>(at) % c.rows << " token " << static_cast<int64_t>(at) / c.rows;
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, MatmulVsReference,
    ::testing::Values(Case{GgmlType::kF32, 13, 172, 1}, Case{GgmlType::kF32, 13, 172, 5},
                      Case{GgmlType::kF32, 64, 8, 3}, Case{GgmlType::kF16, 37, 96, 1},
                      Case{GgmlType::kF16, 37, 100, 70}, Case{GgmlType::kQ8_0, 50, 576, 1},
                      Case{GgmlType::kQ8_0, 50, 576, 9}, Case{GgmlType::kQ8_0, 7, 64, 131},
                      Case{GgmlType::kQ4_1, 45, 576, 1}, Case{GgmlType::kQ4_1, 45, 1536, 2},
                      Case{GgmlType::kQ4_1, 6, 64, 67}),
    [](const ::testing::TestParamInfo<Case>& info) {
      const Case& c = info.param;
      std::ostringstream name;
      name << ggml_type_name(c.type) << "_" << c.rows << "x" << c.cols << "_t" << c.n_tokens;
      return name.str();
    });

TEST(DequantizeRow, Q4_1NibbleOrder) {
  BlockQ4_1 b{};
  b.d = f32_to_f16(2.0f);
  b.m = f32_to_f16(-1.0f);
  for (int i = 0; i < 16; ++i) b.q[i] = static_cast<uint8_t>(i | ((15 - i) << 4));
  WeightMatrix w;
  w.type = GgmlType::kQ4_1;
  w.rows = 1;
  w.cols = 32;
  w.row_bytes = sizeof(b);
  w.data = reinterpret_cast<const uint8_t*>(&b);
  float out[32];
  dequantize_row(w, 0, out);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(out[i], 2.0f * i - 1.0f);
    EXPECT_EQ(out[16 + i], 2.0f * (15 - i) - 1.0f);
  }
}

}  // namespace
}  // namespace innerq::model
