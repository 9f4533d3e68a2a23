// The randomized Hadamard rotation (hadamard.h): the scalar fast transform
// equals the dense matrix (1/√B)·H·diag(s) built from its definition, the
// transform is orthogonal to float precision, and every SIMD target equals
// the scalar reference bit for bit.
#include "innerq/kernels/hadamard.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "hwy/targets.h"

namespace innerq::kernels {
namespace {

class HadamardDims : public ::testing::TestWithParam<int> {};

std::vector<float> random_rows(size_t n_rows, int dim, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(n_rows * static_cast<size_t>(dim));
  for (float& v : x) v = g(rng);
  // An outlier channel, as post-RoPE keys have.
  for (size_t r = 0; r < n_rows; ++r) x[r * static_cast<size_t>(dim) + 3] *= 40.0f;
  return x;
}

// R[i][j] of one row (block-diagonal), from the definition.
double dense_entry(int dim, int i, int j) {
  const int B = hadamard_block(dim);
  if (i / B != j / B) return 0.0;
  const int a = i % B, b = j % B;
  const double h = (std::popcount(static_cast<unsigned>(a & b)) % 2) ? -1.0 : 1.0;
  return h * hadamard_sign(j) / std::sqrt(static_cast<double>(B));
}

TEST_P(HadamardDims, ScalarEqualsDenseMatrix) {
  const int dim = GetParam();
  const size_t rows = 5;
  const std::vector<float> x = random_rows(rows, dim, 1);
  std::vector<float> fwd = x, inv = x;
  scalar::hadamard_rotate(fwd.data(), rows, dim, false);
  scalar::hadamard_rotate(inv.data(), rows, dim, true);
  std::vector<double> xd(x.begin(), x.end());
  scalar::hadamard_rotate(xd.data(), rows, dim, false);
  const double eps = std::ldexp(1.0, -24);
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * dim;
    double abs_sum = 0.0;
    for (int j = 0; j < dim; ++j) abs_sum += std::fabs(xr[j]);
    // log2(B) additions per output, each rounding by at most eps of a partial
    // sum bounded by Σ|x|/√B, plus the final scaling.
    const int B = hadamard_block(dim);
    const double tol = (std::log2(B) + 2) * eps * abs_sum;
    for (int i = 0; i < dim; ++i) {
      double y = 0.0, yt = 0.0;
      for (int j = 0; j < dim; ++j) {
        y += dense_entry(dim, i, j) * xr[j];
        yt += dense_entry(dim, j, i) * xr[j];  // Rᵀ
      }
      ASSERT_NEAR(fwd[r * dim + i], y, tol) << "dim " << dim << " row " << r << " ch " << i;
      ASSERT_NEAR(inv[r * dim + i], yt, tol) << "inverse, dim " << dim << " ch " << i;
      ASSERT_NEAR(xd[r * dim + i], y, 1e-12 * abs_sum) << "double, dim " << dim;
    }
  }
}

TEST_P(HadamardDims, OrthogonalToFloatPrecision) {
  const int dim = GetParam();
  // Columns of R: rotate the unit vectors; RᵀR = I.
  std::vector<float> cols(static_cast<size_t>(dim) * dim, 0.0f);
  for (int i = 0; i < dim; ++i) cols[static_cast<size_t>(i) * dim + i] = 1.0f;
  scalar::hadamard_rotate(cols.data(), dim, dim, false);
  for (int i = 0; i < dim; ++i) {
    for (int j = 0; j < dim; ++j) {
      double dot = 0.0;
      for (int c = 0; c < dim; ++c) dot += double(cols[i * dim + c]) * cols[j * dim + c];
      ASSERT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-6) << "dim " << dim << " cols " << i << "," << j;
    }
  }
  // Inverse after forward gives the input back; norms are kept.
  std::vector<float> x = random_rows(3, dim, 2), y = x;
  simd::hadamard_rotate(y.data(), 3, dim, false);
  double nx = 0.0, ny = 0.0;
  for (size_t i = 0; i < x.size(); ++i) nx += double(x[i]) * x[i], ny += double(y[i]) * y[i];
  EXPECT_NEAR(ny, nx, 1e-5 * nx);
  simd::hadamard_rotate(y.data(), 3, dim, true);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(y[i], x[i], 1e-5 * std::sqrt(nx)) << i;
}

TEST_P(HadamardDims, SimdEqualsScalarOnEveryTarget) {
  const int dim = GetParam();
  const std::vector<float> x = random_rows(7, dim, 3);
  for (const bool inverse : {false, true}) {
    std::vector<float> ref = x;
    scalar::hadamard_rotate(ref.data(), 7, dim, inverse);
    for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      std::vector<float> y = x;
      simd::hadamard_rotate(y.data(), 7, dim, inverse);
      ASSERT_EQ(0, std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)))
          << hwy::TargetName(target) << " dim " << dim << " inverse " << inverse;
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

INSTANTIATE_TEST_SUITE_P(HeadDims, HadamardDims, ::testing::Values(8, 32, 64, 96, 128, 160, 256));

TEST(Hadamard, BlockIsLargestPowerOfTwoDivisor) {
  EXPECT_EQ(hadamard_block(64), 64);
  EXPECT_EQ(hadamard_block(96), 32);
  EXPECT_EQ(hadamard_block(160), 32);
  EXPECT_EQ(hadamard_block(256), 256);
  int plus = 0;
  for (int i = 0; i < 256; ++i) plus += hadamard_sign(i) > 0;
  EXPECT_GT(plus, 96);  // a mixed pattern, not constant
  EXPECT_LT(plus, 160);
}

}  // namespace
}  // namespace innerq::kernels
