// innerq/attn/prefill_attention.cc — causal f32 attention over the prompt's
// own keys and values (Highway, self-including foreach_target pattern; one
// dispatch per call).
//
// Keys are first transposed per KV head to [head_dim][n] so that the scores of
// one query put SIMD lanes across keys (docs/architecture.md, "Tile
// format"): vectors of keys are accumulated over head_dim with broadcast
// query values, no horizontal sums.
// Then one softmax (vector exp) and the weighted sum of values (lanes across
// head_dim, accumulators in registers). The query heads sharing a KV head are
// done together so each key/value load serves all of them. Tasks (position,
// KV head) are spread over OpenMP threads, longest first.
#include "innerq/attn/prefill_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <omp.h>

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

// Keys per score block: two vectors (the key padding is a multiple of it).
inline size_t KeyBlock() {
  return 2 * hn::Lanes(DF());
}

// The G query heads that share one KV head are processed together, so every
// key or value vector loaded serves all of them.
//
// scores[g][j] = scale · q_g·k_j for j < n_keys, rounded up to whole key
// blocks. q: [G][head_dim]; kt: [head_dim][stride]; scores: [G][stride].
template <int G>
void ScoresGroup(const float* q, const float* kt, size_t stride, int hd, int n_keys, float scale,
                 float* scores) {
  using V = decltype(hn::Zero(DF()));
  const DF df;
  const size_t N = hn::Lanes(df);
  for (size_t j0 = 0; j0 < static_cast<size_t>(n_keys); j0 += 2 * N) {
    V acc[G][2];
    for (int g = 0; g < G; ++g) acc[g][0] = acc[g][1] = hn::Zero(df);
    for (int d = 0; d < hd; ++d) {
      const float* row = kt + static_cast<size_t>(d) * stride + j0;
      const V k0 = hn::LoadU(df, row);
      const V k1 = hn::LoadU(df, row + N);
      for (int g = 0; g < G; ++g) {
        const V qd = hn::Set(df, q[g * hd + d]);
        acc[g][0] = hn::MulAdd(qd, k0, acc[g][0]);
        acc[g][1] = hn::MulAdd(qd, k1, acc[g][1]);
      }
    }
    const V s = hn::Set(df, scale);
    for (int g = 0; g < G; ++g) {
      hn::StoreU(hn::Mul(acc[g][0], s), df, scores + g * stride + j0);
      hn::StoreU(hn::Mul(acc[g][1], s), df, scores + g * stride + j0 + N);
    }
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

// out[g][d] = Σ_j p[g][j]·v[j·v_stride + d]: lanes across head_dim, two
// vectors per head of accumulators in registers per pass over the keys.
// p: [G][p_stride]; out: [G][head_dim].
template <int G>
void WeightedValuesGroup(const float* p, size_t p_stride, const float* v, int64_t v_stride, int n,
                         int hd, float* out) {
  using V = decltype(hn::Zero(DF()));
  const DF df;
  const int N = static_cast<int>(hn::Lanes(df));
  int d0 = 0;
  for (; d0 + 2 * N <= hd; d0 += 2 * N) {
    V acc[G][2];
    for (int g = 0; g < G; ++g) acc[g][0] = acc[g][1] = hn::Zero(df);
    for (int j = 0; j < n; ++j) {
      const float* vj = v + j * v_stride + d0;
      const V v0 = hn::LoadU(df, vj);
      const V v1 = hn::LoadU(df, vj + N);
      for (int g = 0; g < G; ++g) {
        const V pj = hn::Set(df, p[g * p_stride + static_cast<size_t>(j)]);
        acc[g][0] = hn::MulAdd(pj, v0, acc[g][0]);
        acc[g][1] = hn::MulAdd(pj, v1, acc[g][1]);
      }
    }
    for (int g = 0; g < G; ++g) {
      hn::StoreU(acc[g][0], df, out + g * hd + d0);
      hn::StoreU(acc[g][1], df, out + g * hd + d0 + N);
    }
  }
  for (; d0 < hd; ++d0) {  // head_dim not a multiple of two vectors (e.g. 8 on AVX-512)
    for (int g = 0; g < G; ++g) {
      float a = 0.0f;
      for (int j = 0; j < n; ++j)
        a += p[g * p_stride + static_cast<size_t>(j)] * v[j * v_stride + d0];
      out[g * hd + d0] = a;
    }
  }
}

// One position's attention for G query heads of KV head g.
// q, out: [G][head_dim]; scores: [G][stride] scratch.
template <int G>
void AttendGroup(const float* q, const float* kt, size_t stride, const float* v, int64_t v_stride,
                 int n_keys, int hd, float scale, float* scores, float* out) {
  ScoresGroup<G>(q, kt, stride, hd, n_keys, scale, scores);
  for (int g = 0; g < G; ++g) SoftmaxInPlace(scores + g * stride, n_keys);
  WeightedValuesGroup<G>(scores, stride, v, v_stride, n_keys, hd, out);
}

void PrefillAttentionImpl(const PrefillShape& shape, const float* q, const float* k, const float* v,
                          float* out, int n_threads) {
  const int n = shape.n_tokens;
  const int n_heads = shape.n_heads;
  const int n_kv = shape.n_kv_heads;
  const int hd = shape.head_dim;
  const int group = n_heads / n_kv;
  const int window = shape.window;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t q_stride = static_cast<int64_t>(n_heads) * hd;  // between positions in q, out
  const int64_t kv_stride = static_cast<int64_t>(n_kv) * hd;    // between positions in k, v
  const size_t block = KeyBlock();
  const size_t stride = (static_cast<size_t>(n) + block - 1) / block * block;

  // Small prompts stay on the calling thread (waking a team costs more).
  const bool parallel = int64_t{n} * n * n_heads * hd >= (int64_t{1} << 18);

  // kt: [n_kv][head_dim][stride] keys transposed, zero-padded past n, and one
  // key block more: a sliding window's scores start at an unaligned column
  // and may read up to a block past the last row.
  std::vector<float> kt(static_cast<size_t>(n_kv) * hd * stride + block, 0.0f);
#pragma omp parallel for num_threads(n_threads) schedule(static) if (parallel)
  for (int g = 0; g < n_kv; ++g) {
    for (int j = 0; j < n; ++j) {
      const float* kj = k + j * kv_stride + g * hd;
      for (int d = 0; d < hd; ++d) kt[(static_cast<size_t>(g) * hd + d) * stride + j] = kj[d];
    }
  }

  // Score rows per thread, allocated here: nothing inside the region may
  // throw (docs/architecture.md, "Errors and threads").
  const size_t per_thread = static_cast<size_t>(group) * stride;
  std::vector<float> scores_all(static_cast<size_t>(std::max(n_threads, 1)) * per_thread);
#pragma omp parallel num_threads(n_threads) if (parallel)
  {
    float* const scores =
        scores_all.data() + static_cast<size_t>(omp_get_thread_num()) * per_thread;
    const int64_t n_tasks = static_cast<int64_t>(n) * n_kv;  // (position, KV head)
#pragma omp for schedule(dynamic, 4)
    for (int64_t task = n_tasks - 1; task >= 0; --task) {  // longest first
      const int i = static_cast<int>(task / n_kv);
      const int g = static_cast<int>(task % n_kv);
      const int first = window > 0 ? std::max(0, i - window + 1) : 0;  // first key attended
      const int n_keys = i + 1 - first;
      const float* qg = q + i * q_stride + static_cast<int64_t>(g) * group * hd;  // [group][hd]
      const float* ktg = kt.data() + static_cast<size_t>(g) * hd * stride + first;
      const float* vg = v + first * kv_stride + static_cast<int64_t>(g) * hd;
      float* og = out + i * q_stride + static_cast<int64_t>(g) * group * hd;
      switch (group) {
        case 1:
          AttendGroup<1>(qg, ktg, stride, vg, kv_stride, n_keys, hd, scale, scores, og);
          break;
        case 2:
          AttendGroup<2>(qg, ktg, stride, vg, kv_stride, n_keys, hd, scale, scores, og);
          break;
        case 3:
          AttendGroup<3>(qg, ktg, stride, vg, kv_stride, n_keys, hd, scale, scores, og);
          break;
        case 4:
          AttendGroup<4>(qg, ktg, stride, vg, kv_stride, n_keys, hd, scale, scores, og);
          break;
        default:  // larger groups: one head at a time
          for (int h = 0; h < group; ++h) {
            AttendGroup<1>(qg + h * hd, ktg, stride, vg, kv_stride, n_keys, hd, scale, scores,
                           og + h * hd);
          }
      }
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
      shape.n_heads % shape.n_kv_heads != 0 || shape.window < 0) {
    throw Error(fmt::format(
        "prefill_attention: bad shape (tokens {}, heads {}, kv heads {}, head_dim {}, window {})",
        shape.n_tokens, shape.n_heads, shape.n_kv_heads, shape.head_dim, shape.window));
  }
  HWY_DYNAMIC_DISPATCH(PrefillAttentionImpl)(shape, q, k, v, out, std::max(1, n_threads));
}

}  // namespace innerq::attn
#endif  // HWY_ONCE
