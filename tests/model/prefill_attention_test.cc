// attn::prefill_attention (written with the model layer) against a double
// precision causal softmax, for MHA/GQA shapes and lengths that end inside and
// on key-block boundaries, with and without a sliding window.
#include "innerq/attn/prefill_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <hwy/targets.h>

namespace innerq::attn {
namespace {

struct Shape {
  int n, heads, kv_heads, head_dim;
  int window = 0;  // > 0: position i attends to the last `window` positions only
};

// out against a double-precision causal softmax over the same q, k, v.
void expect_matches_reference(const Shape& s, const std::vector<float>& q,
                              const std::vector<float>& k, const std::vector<float>& v,
                              const std::vector<float>& out) {
  const size_t q_dim = static_cast<size_t>(s.heads) * s.head_dim;
  const size_t kv_dim = static_cast<size_t>(s.kv_heads) * s.head_dim;

  const int group = s.heads / s.kv_heads;
  const double eps = std::ldexp(1.0, -24);
  for (int i = 0; i < s.n; ++i) {
    for (int h = 0; h < s.heads; ++h) {
      const float* qi = &q[i * q_dim + h * s.head_dim];
      const int g = h / group;
      const int first = s.window > 0 ? std::max(0, i - s.window + 1) : 0;
      std::vector<double> p(static_cast<size_t>(i + 1), 0.0);  // zero before `first`
      double mx = -INFINITY, sum = 0.0, q_norm = 0.0;
      for (int d = 0; d < s.head_dim; ++d) q_norm += std::fabs(qi[d]);
      for (int j = first; j <= i; ++j) {
        double dot = 0.0;
        for (int d = 0; d < s.head_dim; ++d)
          dot += double(qi[d]) * k[j * kv_dim + g * s.head_dim + d];
        p[j] = dot / std::sqrt(double(s.head_dim));
        mx = std::max(mx, p[j]);
      }
      for (int j = first; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
      double max_v = 0.0;
      for (int d = 0; d < s.head_dim; ++d) {
        double o = 0.0;
        for (int j = first; j <= i; ++j) {
          o += p[j] / sum * v[j * kv_dim + g * s.head_dim + d];
          max_v = std::max(max_v, std::fabs(double(v[j * kv_dim + g * s.head_dim + d])));
        }
        // A score error δ ≈ head_dim·ε·Σ|q||k| moves each weight by ~δ
        // relatively; the output moves by at most that times max|v|, plus the
        // f32 sums over i+1 keys.
        const double score_err = s.head_dim * eps * q_norm * 4.0;
        const double tol = (score_err + (i + 1) * eps * 4.0) * max_v * 2.0;
        ASSERT_NEAR(out[i * q_dim + h * s.head_dim + d], o, tol)
            << "n=" << s.n << " heads=" << s.heads << "/" << s.kv_heads << " hd=" << s.head_dim
            << " at position " << i << " head " << h << " dim " << d;
      }
    }
  }
}

class PrefillVsReference : public ::testing::TestWithParam<Shape> {};

TEST_P(PrefillVsReference, MatchesDoublePrecisionSoftmax) {
  const Shape s = GetParam();
  std::mt19937_64 rng(static_cast<uint64_t>(s.n * 1000 + s.head_dim));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const size_t q_dim = static_cast<size_t>(s.heads) * s.head_dim;
  const size_t kv_dim = static_cast<size_t>(s.kv_heads) * s.head_dim;
  std::vector<float> q(s.n * q_dim), k(s.n * kv_dim), v(s.n * kv_dim), out(s.n * q_dim);
  for (float& x : q) x = 2.0f * normal(rng);
  for (float& x : k) x = normal(rng);
  for (float& x : v) x = normal(rng);
  // Every SIMD target compiled in and supported here.
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    prefill_attention({s.n, s.heads, s.kv_heads, s.head_dim, s.window}, q.data(), k.data(),
                      v.data(), out.data(), 2);
    expect_matches_reference(s, q, k, v, out);
  }
  hwy::SetSupportedTargetsForTest(0);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PrefillVsReference,
    ::testing::Values(Shape{1, 2, 1, 8}, Shape{17, 8, 4, 8}, Shape{64, 4, 4, 16},
                      Shape{130, 9, 3, 64}, Shape{257, 6, 2, 32}, Shape{40, 8, 2, 16},
                      Shape{33, 10, 2, 8}, Shape{40, 4, 1, 256, 20}, Shape{130, 9, 3, 64, 7},
                      Shape{257, 6, 2, 32, 128}, Shape{17, 2, 1, 8, 1}, Shape{20, 2, 1, 16, 64},
                      // Tiles of 8, 6, 4 and 3 positions with a partial last
                      // tile; a window inside a tile; 6 heads per KV head.
                      Shape{19, 4, 4, 64, 5}, Shape{23, 4, 2, 16}, Shape{45, 12, 2, 32},
                      Shape{70, 8, 2, 24, 9}),
    [](const ::testing::TestParamInfo<Shape>& info) {
      const Shape& s = info.param;
      std::ostringstream name;
      name << "n" << s.n << "_h" << s.heads << "_kv" << s.kv_heads << "_d" << s.head_dim;
      if (s.window > 0) name << "_w" << s.window;
      return name.str();
    });

}  // namespace
}  // namespace innerq::attn
