// innerq/attn/prefill_attention.cc — causal f32 attention over the prompt's
// own keys and values (Highway, self-including foreach_target pattern; one
// dispatch per call).
//
// Keys are first transposed per KV head to [head_dim][n] so that the scores of
// one query put SIMD lanes across keys (DESIGN.md §7): 4 vectors of keys are
// accumulated over head_dim with broadcast query values, no horizontal sums.
// Then one softmax and the weighted sum of values (lanes across head_dim).
// Rows (query head, position) are spread over OpenMP threads, longest first.
#include "innerq/attn/prefill_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <fmt/core.h>

#include "innerq/base/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "innerq/attn/prefill_attention.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace innerq::attn {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::CappedTag<float, 16>;

// Keys per score block: four vectors.
inline size_t KeyBlock() {
  return 4 * hn::Lanes(DF());
}

// scores[j] = scale · q·k_j for j < n_keys, rounded up to whole key blocks.
// kt: [head_dim][stride], stride a multiple of KeyBlock().
void Scores(const float* q, const float* kt, size_t stride, int hd, int n_keys, float scale,
            float* scores) {
  const DF df;
  const size_t N = hn::Lanes(df);
  for (size_t j0 = 0; j0 < static_cast<size_t>(n_keys); j0 += 4 * N) {
    auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    for (int d = 0; d < hd; ++d) {
      const auto qd = hn::Set(df, q[d]);
      const float* row = kt + static_cast<size_t>(d) * stride + j0;
      a0 = hn::MulAdd(qd, hn::LoadU(df, row), a0);
      a1 = hn::MulAdd(qd, hn::LoadU(df, row + N), a1);
      a2 = hn::MulAdd(qd, hn::LoadU(df, row + 2 * N), a2);
      a3 = hn::MulAdd(qd, hn::LoadU(df, row + 3 * N), a3);
    }
    const auto s = hn::Set(df, scale);
    hn::StoreU(hn::Mul(a0, s), df, scores + j0);
    hn::StoreU(hn::Mul(a1, s), df, scores + j0 + N);
    hn::StoreU(hn::Mul(a2, s), df, scores + j0 + 2 * N);
    hn::StoreU(hn::Mul(a3, s), df, scores + j0 + 3 * N);
  }
}

void PrefillAttentionImpl(const PrefillShape& shape, const float* q, const float* k, const float* v,
                          float* out, int n_threads) {
  const int n = shape.n_tokens;
  const int n_heads = shape.n_heads;
  const int n_kv = shape.n_kv_heads;
  const int hd = shape.head_dim;
  const int group = n_heads / n_kv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t q_stride = static_cast<int64_t>(n_heads) * hd;  // between positions in q, out
  const int64_t kv_stride = static_cast<int64_t>(n_kv) * hd;    // between positions in k, v
  const int64_t n_rows = static_cast<int64_t>(n) * n_heads;
  const size_t block = KeyBlock();
  const size_t stride = (static_cast<size_t>(n) + block - 1) / block * block;

  // Small prompts stay on the calling thread (waking a team costs more).
  const bool parallel = n_rows * n * hd >= (int64_t{1} << 18);

  // kt: [n_kv][head_dim][stride] keys transposed, zero-padded past n.
  std::vector<float> kt(static_cast<size_t>(n_kv) * hd * stride, 0.0f);
#pragma omp parallel for num_threads(n_threads) schedule(static) if (parallel)
  for (int g = 0; g < n_kv; ++g) {
    for (int j = 0; j < n; ++j) {
      const float* kj = k + j * kv_stride + g * hd;
      for (int d = 0; d < hd; ++d) kt[(static_cast<size_t>(g) * hd + d) * stride + j] = kj[d];
    }
  }

#pragma omp parallel num_threads(n_threads) if (parallel)
  {
    std::vector<float> scores(stride);
    std::vector<float> acc(static_cast<size_t>(hd));
#pragma omp for schedule(dynamic, 8)
    for (int64_t row = n_rows - 1; row >= 0; --row) {  // longest rows first
      const int i = static_cast<int>(row / n_heads);
      const int h = static_cast<int>(row % n_heads);
      const int g = h / group;
      const float* qi = q + i * q_stride + h * hd;  // [head_dim]
      Scores(qi, kt.data() + static_cast<size_t>(g) * hd * stride, stride, hd, i + 1, scale,
             scores.data());

      float max_score = -INFINITY;
      for (int j = 0; j <= i; ++j) max_score = std::max(max_score, scores[static_cast<size_t>(j)]);
      float sum = 0.0f;
      for (int j = 0; j <= i; ++j) {
        const float p = std::exp(scores[static_cast<size_t>(j)] - max_score);
        scores[static_cast<size_t>(j)] = p;
        sum += p;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      float* a = acc.data();
      for (int j = 0; j <= i; ++j) {
        const float* vj = v + j * kv_stride + g * hd;
        const float p = scores[static_cast<size_t>(j)];
#pragma omp simd
        for (int d = 0; d < hd; ++d) a[d] += p * vj[d];
      }
      float* oi = out + i * q_stride + h * hd;
      const float inv = 1.0f / sum;
      for (int d = 0; d < hd; ++d) oi[d] = a[d] * inv;
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace innerq::attn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace innerq::attn {

HWY_EXPORT(PrefillAttentionImpl);

void prefill_attention(const PrefillShape& shape, const float* q, const float* k, const float* v,
                       float* out, int n_threads) {
  if (shape.n_tokens < 0 || shape.n_heads <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0 ||
      shape.n_heads % shape.n_kv_heads != 0) {
    throw Error(
        fmt::format("prefill_attention: bad shape (tokens {}, heads {}, kv heads {}, head_dim {})",
                    shape.n_tokens, shape.n_heads, shape.n_kv_heads, shape.head_dim));
  }
  HWY_DYNAMIC_DISPATCH(PrefillAttentionImpl)(shape, q, k, v, out, std::max(1, n_threads));
}

}  // namespace innerq::attn
#endif  // HWY_ONCE
