// innerq/attn/prefill_attention.cc — causal f32 attention over the prompt's
// own keys and values. Each (query head, position) row is independent: scores
// against keys 0..i, one softmax, then the weighted sum of values. Rows are
// spread over OpenMP threads (dynamic: row i costs i+1 keys); the inner loops
// are `omp simd` reductions so they vectorize without -ffast-math.
#include "innerq/attn/prefill_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <fmt/core.h>

#include "innerq/base/error.h"

namespace innerq::attn {

void prefill_attention(const PrefillShape& shape, const float* q, const float* k, const float* v,
                       float* out, int n_threads) {
  const int n = shape.n_tokens;
  const int n_heads = shape.n_heads;
  const int n_kv = shape.n_kv_heads;
  const int hd = shape.head_dim;
  if (n < 0 || n_heads <= 0 || n_kv <= 0 || hd <= 0 || n_heads % n_kv != 0) {
    throw Error(
        fmt::format("prefill_attention: bad shape (tokens {}, heads {}, kv heads {}, head_dim {})",
                    n, n_heads, n_kv, hd));
  }
  const int group = n_heads / n_kv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t q_stride = static_cast<int64_t>(n_heads) * hd;  // between positions in q, out
  const int64_t kv_stride = static_cast<int64_t>(n_kv) * hd;    // between positions in k, v
  const int64_t n_rows = static_cast<int64_t>(n) * n_heads;

  // Small prompts stay on the calling thread (waking a team costs more).
  const bool parallel = n_rows * n * hd >= (int64_t{1} << 16);
#pragma omp parallel num_threads(std::max(1, n_threads)) if (parallel)
  {
    std::vector<float> scores(static_cast<size_t>(n));
    std::vector<float> acc(static_cast<size_t>(hd));
#pragma omp for schedule(dynamic, 16)
    for (int64_t row = n_rows - 1; row >= 0; --row) {  // longest rows first
      const int i = static_cast<int>(row / n_heads);
      const int h = static_cast<int>(row % n_heads);
      const float* qi = q + i * q_stride + h * hd;                 // [head_dim]
      const float* kh = k + static_cast<int64_t>(h / group) * hd;  // key j at kh + j·kv_stride
      const float* vh = v + static_cast<int64_t>(h / group) * hd;

      float max_score = -INFINITY;
      for (int j = 0; j <= i; ++j) {
        const float* kj = kh + j * kv_stride;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int d = 0; d < hd; ++d) s += qi[d] * kj[d];
        s *= scale;
        scores[static_cast<size_t>(j)] = s;
        max_score = std::max(max_score, s);
      }
      float sum = 0.0f;
      for (int j = 0; j <= i; ++j) {
        const float p = std::exp(scores[static_cast<size_t>(j)] - max_score);
        scores[static_cast<size_t>(j)] = p;
        sum += p;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int j = 0; j <= i; ++j) {
        const float* vj = vh + j * kv_stride;
        const float p = scores[static_cast<size_t>(j)];
        float* a = acc.data();
#pragma omp simd
        for (int d = 0; d < hd; ++d) a[d] += p * vj[d];
      }
      float* oi = out + i * q_stride + h * hd;
      const float inv = 1.0f / sum;
      for (int d = 0; d < hd; ++d) oi[d] = acc[static_cast<size_t>(d)] * inv;
    }
  }
}

}  // namespace innerq::attn
