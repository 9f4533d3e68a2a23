// innerq/attn/prefill_attention.cc — causal f32 attention over the prompt's
// own keys and values (Highway, self-including foreach_target pattern; one
// dispatch per call).
//
// Keys are first transposed per KV head to [head_dim][n] so that the scores of
// one query put SIMD lanes across keys (DESIGN.md §7): 4 vectors of keys are
// accumulated over head_dim with broadcast query values, no horizontal sums.
// Then one softmax (vector exp) and the weighted sum of values (lanes across
// head_dim, accumulators in registers).
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
#include <hwy/contrib/math/math-inl.h>
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

// p[0..n) = softmax(p[0..n)), with a vector exp.
void SoftmaxInPlace(float* p, int n) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const size_t nn = static_cast<size_t>(n);
  size_t j = 0;
  auto vmax = hn::Set(df, -INFINITY);
  for (; j + N <= nn; j += N) vmax = hn::Max(vmax, hn::LoadU(df, p + j));
  float mx = hn::GetLane(hn::MaxOfLanes(df, vmax));
  for (; j < nn; ++j) mx = std::max(mx, p[j]);

  const auto vm = hn::Set(df, mx);
  auto vsum = hn::Zero(df);
  j = 0;
  for (; j + N <= nn; j += N) {
    const auto e = hn::Exp(df, hn::Sub(hn::LoadU(df, p + j), vm));
    hn::StoreU(e, df, p + j);
    vsum = hn::Add(vsum, e);
  }
  float sum = hn::GetLane(hn::SumOfLanes(df, vsum));
  for (; j < nn; ++j) sum += (p[j] = std::exp(p[j] - mx));
  const float inv = 1.0f / sum;
  for (j = 0; j < nn; ++j) p[j] *= inv;
}

// out[d] = Σ_j p[j]·v[j·stride + d] for d < hd: lanes across head_dim, four
// vectors of accumulators in registers per pass over the keys.
void WeightedValues(const float* p, const float* v, int64_t stride, int n, int hd, float* out) {
  const DF df;
  const int N = static_cast<int>(hn::Lanes(df));
  int d0 = 0;
  for (; d0 + 4 * N <= hd; d0 += 4 * N) {
    auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    for (int j = 0; j < n; ++j) {
      const float* vj = v + j * stride + d0;
      const auto pj = hn::Set(df, p[j]);
      a0 = hn::MulAdd(pj, hn::LoadU(df, vj), a0);
      a1 = hn::MulAdd(pj, hn::LoadU(df, vj + N), a1);
      a2 = hn::MulAdd(pj, hn::LoadU(df, vj + 2 * N), a2);
      a3 = hn::MulAdd(pj, hn::LoadU(df, vj + 3 * N), a3);
    }
    hn::StoreU(a0, df, out + d0);
    hn::StoreU(a1, df, out + d0 + N);
    hn::StoreU(a2, df, out + d0 + 2 * N);
    hn::StoreU(a3, df, out + d0 + 3 * N);
  }
  for (; d0 + N <= hd; d0 += N) {
    auto a = hn::Zero(df);
    for (int j = 0; j < n; ++j)
      a = hn::MulAdd(hn::Set(df, p[j]), hn::LoadU(df, v + j * stride + d0), a);
    hn::StoreU(a, df, out + d0);
  }
  for (; d0 < hd; ++d0) {  // head_dim below one vector (e.g. 8 on AVX-512)
    float a = 0.0f;
    for (int j = 0; j < n; ++j) a += p[j] * v[j * stride + d0];
    out[d0] = a;
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
#pragma omp for schedule(dynamic, 8)
    for (int64_t row = n_rows - 1; row >= 0; --row) {  // longest rows first
      const int i = static_cast<int>(row / n_heads);
      const int h = static_cast<int>(row % n_heads);
      const int g = h / group;
      const float* qi = q + i * q_stride + h * hd;  // [head_dim]
      Scores(qi, kt.data() + static_cast<size_t>(g) * hd * stride, stride, hd, i + 1, scale,
             scores.data());

      float* oi = out + i * q_stride + h * hd;
      SoftmaxInPlace(scores.data(), i + 1);
      WeightedValues(scores.data(), v + g * hd, kv_stride, i + 1, hd, oi);
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
