// tests/kernels/activation_test.cc — the SIMD gated activations against the
// scalar reference on every Highway target, within bounds derived from the
// error of each step (kernels/activation.h).
#include "innerq/kernels/activation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <hwy/targets.h>

namespace innerq::kernels {
namespace {

constexpr double kUlp = 1.0 / (1 << 24);  // f32 unit roundoff

// Gate values over the whole range a model produces and past it: normal
// values at several scales, zeros, values where e^−|g| is subnormal
// (|g| > 87) and where g³ overflows; an odd count leaves a scalar tail.
std::vector<float> gates() {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> g;
  for (const float scale : {0.01f, 1.0f, 4.0f, 30.0f}) {
    for (int i = 0; i < 1000; ++i) g.push_back(scale * normal(rng));
  }
  for (const float x : {0.0f, -0.0f, 1e-30f, -1e-30f, 9.0f, -9.0f, 88.0f, -88.0f, 100.0f, -100.0f,
                        1e15f, -1e15f, std::numeric_limits<float>::max()}) {
    g.push_back(x);
  }
  g.push_back(0.5f);  // 4013 values
  return g;
}

std::vector<float> ups(size_t n) {
  std::mt19937 rng(12);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> u(n);
  for (float& x : u) x = normal(rng);
  return u;
}

template <class Simd, class Ref, class Tol>
void expect_within(Simd simd, Ref ref, Tol tol) {
  const std::vector<float> g = gates(), u = ups(g.size());
  std::vector<float> want = g;
  ref(want.data(), u.data(), want.size());
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    std::vector<float> got = g;
    simd(got.data(), u.data(), got.size());
    for (size_t i = 0; i < g.size(); ++i) {
      ASSERT_TRUE(std::isfinite(got[i]) == std::isfinite(want[i])) << "g=" << g[i];
      if (!std::isfinite(want[i])) continue;
      ASSERT_NEAR(got[i], want[i], tol(g[i], u[i], want[i])) << "g=" << g[i] << " up=" << u[i];
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

// σ: e^x within 1 ulp on both sides (libm's and Highway's), then 1 + e, a
// division, at most two products: 8 ulp of the result covers both. Where
// e^−|g| is subnormal (|g| > 87) it keeps no relative precision: an
// absolute 2^−120·|g·up| on top.
TEST(Activation, SiluMatchesTheReference) {
  expect_within(simd::gated_silu, scalar::gated_silu, [](double g, double u, double want) {
    return 8 * kUlp * std::fabs(want) + std::ldexp(std::fabs(g * u), -120);
  });
}

// tanh within 1 ulp (libm) and 4 ulp (Highway) of a value of magnitude ≤ 1,
// on the same argument: |Δ(1 + t)| ≤ 5·2^−24 plus a rounding each; the
// result is ½·g·(1 + t)·up, three products.
TEST(Activation, GeluTanhMatchesTheReference) {
  expect_within(simd::gated_gelu_tanh, scalar::gated_gelu_tanh,
                [](double g, double u, double want) {
                  return 0.5 * std::fabs(g * u) * 9 * kUlp + 6 * kUlp * std::fabs(want);
                });
}

// The reference itself: GeGLU's exact definition in double at ordinary
// values, and the clamp leaves large gates at g·up (tanh = 1) and very
// negative ones at 0.
TEST(Activation, GeluTanhReferenceIsTheDefinition) {
  for (const float g : {-3.0f, -0.5f, 0.0f, 0.25f, 1.0f, 2.5f, 40.0f, -40.0f}) {
    float x = g;
    const float up = 1.5f;
    scalar::gated_gelu_tanh(&x, &up, 1);
    const double c = std::sqrt(2.0 / std::acos(-1.0));
    const double want = 0.5 * g * (1.0 + std::tanh(c * (g + 0.044715 * g * g * g))) * up;
    EXPECT_NEAR(x, want, 1e-6 * (std::fabs(want) + 1.0)) << g;
  }
}

}  // namespace
}  // namespace innerq::kernels
