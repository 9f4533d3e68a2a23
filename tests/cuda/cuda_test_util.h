// tests/cuda/cuda_test_util.h — shared pieces of the GPU tests: the skip
// when no device is present and deterministic synthetic K/V.
#pragma once

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "innerq/attn/cuda/device_attention.h"

// Every GPU test starts with this: without a usable device it skips with the
// reason instead of failing.
#define INNERQ_REQUIRE_CUDA_DEVICE()                   \
  do {                                                 \
    std::string why;                                   \
    if (!innerq::attn::cuda::device_available(&why)) { \
      GTEST_SKIP() << "no CUDA device: " << why;       \
    }                                                  \
  } while (0)

namespace innerq::test {

// [n_tokens][n_kv_heads][head_dim] keys and values: gaussian, keys with two
// channels ×20 (post-RoPE outliers), token 0 with a ×4 key (a sink).
inline void synthetic_kv(int n_tokens, int n_kv_heads, int head_dim, unsigned seed,
                         std::vector<float>& k, std::vector<float>& v) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const size_t n = static_cast<size_t>(n_tokens) * n_kv_heads * head_dim;
  k.resize(n);
  v.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(i % static_cast<size_t>(head_dim));
    const bool outlier = c == 3 || c == 17;
    const bool sink = i < static_cast<size_t>(n_kv_heads) * head_dim;
    k[i] = normal(rng) * (outlier ? 20.0f : 1.0f) * (sink ? 4.0f : 1.0f);
    v[i] = normal(rng);
  }
}

inline std::vector<float> random_queries(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(n);
  for (float& x : q) x = normal(rng);
  return q;
}

}  // namespace innerq::test
