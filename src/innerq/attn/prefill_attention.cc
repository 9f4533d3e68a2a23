// innerq/attn/prefill_attention.cc — causal f32 attention over the prompt's
// own keys and values (Highway, self-including foreach_target pattern; one
// dispatch per call).
//
// Keys are first transposed per KV head to [head_dim][n] so that the scores
// put SIMD lanes across keys (docs/architecture.md, "Tile format"): vectors of
// keys are accumulated over head_dim with broadcast query values, no
// horizontal sums. Then a softmax per row (vector exp) and the weighted sum
// of values (lanes across head_dim). A task is a tile of consecutive query
// positions times the query heads that share one KV head: every key or value
// vector loaded serves all of the tile's rows (up to 12), so the keys and
// values stream through the cache once per tile, not once per position
// (docs/architecture.md, "Prefill attention"). Tasks (tile, KV head) are
// spread over OpenMP threads, longest first.
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

#include "innerq/kernels/exp_nonpositive-inl.h"

HWY_BEFORE_NAMESPACE();
namespace innerq::attn {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::CappedTag<float, 16>;

// Score rows of one task: kTileRows at most, accumulators in registers:
// one vector per row (plus the loaded vector and a broadcast: AVX2's 16
// registers), two where there are 32 (AVX-512), which halves the loads per
// multiply-add.
constexpr int kTileRows = 12;
#if HWY_TARGET <= HWY_AVX3
constexpr int kVecs = 2;
#else
constexpr int kVecs = 1;
#endif

// Query positions per tile for G heads per KV head (G > 4: one head at a
// time, as G = 1).
constexpr int TilePositions(int group) {
  return group == 1 ? 8 : group == 2 ? 6 : group == 3 ? 4 : group == 4 ? 3 : 8;
}

// scores[r][j] = scale · q_r·k_j for j < n_keys, rounded up to whole
// vectors. q[r]: head_dim floats; kt: [head_dim][stride]; scores:
// [R][s_stride].
template <int R>
void ScoresRows(const float* const* q, const float* kt, size_t stride, int hd, int n_keys,
                float scale, float* scores, size_t s_stride) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const auto s = hn::Set(df, scale);
  for (size_t j0 = 0; j0 < static_cast<size_t>(n_keys); j0 += kVecs * N) {
    decltype(hn::Zero(df)) acc[R][kVecs];
    for (int r = 0; r < R; ++r) {
      for (int u = 0; u < kVecs; ++u) acc[r][u] = hn::Zero(df);
    }
    for (int d = 0; d < hd; ++d) {
      decltype(hn::Zero(df)) k[kVecs];
      for (int u = 0; u < kVecs; ++u) {
        k[u] = hn::LoadU(df, kt + static_cast<size_t>(d) * stride + j0 + u * N);
      }
      for (int r = 0; r < R; ++r) {
        const auto qd = hn::Set(df, q[r][d]);
        for (int u = 0; u < kVecs; ++u) acc[r][u] = hn::MulAdd(qd, k[u], acc[r][u]);
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int u = 0; u < kVecs; ++u) {
        hn::StoreU(hn::Mul(acc[r][u], s), df, scores + r * s_stride + j0 + u * N);
      }
    }
  }
}

// p[0..n) = softmax(p[0..n)), with a vector exp (weights below e^kExpFloor
// are 0: kernels/exp_nonpositive-inl.h).
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
    const auto e = kernels::HWY_NAMESPACE::ExpOfNonPositive(df, hn::Sub(hn::LoadU(df, p + j), vm));
    hn::StoreU(e, df, p + j);
    vsum = hn::Add(vsum, e);
  }
  float sum = hn::GetLane(hn::SumOfLanes(df, vsum));
  for (; j < nn; ++j) sum += (p[j] = kernels::exp_of_nonpositive(p[j] - mx));
  const float inv = 1.0f / sum;
  for (j = 0; j < nn; ++j) p[j] *= inv;
}

// out[r][d] = Σ_j p[r][j]·v[j·v_stride + d] for j < n: lanes across
// head_dim, accumulators per row in registers per pass over the keys (U
// vectors of head_dim per pass). p: [R][p_stride]. Returns the first d not
// done.
template <int R, int U>
int WeightedValuesPass(const float* p, size_t p_stride, const float* v, int64_t v_stride, int n,
                       int hd, int d0, float* const* out) {
  const DF df;
  const int N = static_cast<int>(hn::Lanes(df));
  for (; d0 + U * N <= hd; d0 += U * N) {
    decltype(hn::Zero(df)) acc[R][U];
    for (int r = 0; r < R; ++r) {
      for (int u = 0; u < U; ++u) acc[r][u] = hn::Zero(df);
    }
    for (int j = 0; j < n; ++j) {
      decltype(hn::Zero(df)) vj[U];
      for (int u = 0; u < U; ++u) vj[u] = hn::LoadU(df, v + j * v_stride + d0 + u * N);
      for (int r = 0; r < R; ++r) {
        const auto pj = hn::Set(df, p[r * p_stride + static_cast<size_t>(j)]);
        for (int u = 0; u < U; ++u) acc[r][u] = hn::MulAdd(pj, vj[u], acc[r][u]);
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int u = 0; u < U; ++u) hn::StoreU(acc[r][u], df, out[r] + d0 + u * N);
    }
  }
  return d0;
}

// The same for all of head_dim: kVecs vectors per pass, then one, then
// single lanes (head_dim not a multiple of a vector, e.g. 8 on AVX-512).
template <int R>
void WeightedValuesRows(const float* p, size_t p_stride, const float* v, int64_t v_stride, int n,
                        int hd, float* const* out) {
  int d0 = WeightedValuesPass<R, kVecs>(p, p_stride, v, v_stride, n, hd, 0, out);
  if constexpr (kVecs > 1) d0 = WeightedValuesPass<R, 1>(p, p_stride, v, v_stride, n, hd, d0, out);
  for (; d0 < hd; ++d0) {
    for (int r = 0; r < R; ++r) {
      float a = 0.0f;
      for (int j = 0; j < n; ++j) {
        a += p[r * p_stride + static_cast<size_t>(j)] * v[j * v_stride + d0];
      }
      out[r][d0] = a;
    }
  }
}

// Where a task's rows come from and go to: rows past the prompt's end (the
// last tile) repeat its last position and write to a scratch row.
struct TileRows {
  const float* q[kTileRows];
  float* out[kTileRows];
  int last_key[kTileRows];  // the row's position i: keys first..i
  int first_key[kTileRows];
};

// One task: R rows over keys [lo, hi) of one KV head. Each row's softmax
// covers its own keys; the rest of its scores are zeroed, so the value sum
// runs over the whole range.
template <int R>
void AttendTile(const TileRows& rows, const float* kt, size_t stride, const float* v,
                int64_t v_stride, int lo, int hi, int hd, float scale, float* scores,
                size_t s_stride) {
  const int n = hi - lo;
  ScoresRows<R>(rows.q, kt + lo, stride, hd, n, scale, scores, s_stride);
  for (int r = 0; r < R; ++r) {
    float* p = scores + r * s_stride;
    const int a = rows.first_key[r] - lo, b = rows.last_key[r] + 1 - lo;
    std::fill(p, p + a, 0.0f);
    SoftmaxInPlace(p + a, b - a);
    std::fill(p + b, p + n, 0.0f);
  }
  WeightedValuesRows<R>(scores, s_stride, v + lo * v_stride, v_stride, n, hd, rows.out);
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
  const size_t N = hn::Lanes(DF());
  // A row of transposed keys: n rounded up to a vector, plus one vector so
  // that rows are not a multiple of 4 KiB apart (head_dim rows read in turn
  // would share one L1 set).
  const size_t stride = (static_cast<size_t>(n) + N - 1) / N * N + N;
  // Heads per task and positions per tile.
  const int heads = group <= 4 ? group : 1;
  const int tile = TilePositions(group);
  const int rows_per_task = heads * tile;  // ≤ kTileRows
  const int n_tiles = (n + tile - 1) / tile;
  const int head_sets = group / heads;  // tasks per (tile, KV head)

  // Small prompts stay on the calling thread (waking a team costs more).
  const bool parallel = int64_t{n} * n * n_heads * hd >= (int64_t{1} << 18);

  // kt: [n_kv][head_dim][stride] keys transposed, zero-padded past n, and one
  // vector more: a score vector may read up to a vector past a row (into the
  // next row: finite values, scores past the row's keys are never used).
  std::vector<float> kt(static_cast<size_t>(n_kv) * hd * stride + N, 0.0f);
#pragma omp parallel for num_threads(n_threads) schedule(static) if (parallel)
  for (int g = 0; g < n_kv; ++g) {
    for (int j = 0; j < n; ++j) {
      const float* kj = k + j * kv_stride + g * hd;
      for (int d = 0; d < hd; ++d) kt[(static_cast<size_t>(g) * hd + d) * stride + j] = kj[d];
    }
  }

  // Score rows and a row for outputs past the prompt's end, per thread,
  // allocated here: nothing inside the region may throw
  // (docs/architecture.md, "Errors and threads").
  const size_t per_thread = static_cast<size_t>(rows_per_task) * stride + hd;
  std::vector<float> scratch(static_cast<size_t>(std::max(n_threads, 1)) * per_thread);
#pragma omp parallel num_threads(n_threads) if (parallel)
  {
    float* const scores = scratch.data() + static_cast<size_t>(omp_get_thread_num()) * per_thread;
    float* const discard = scores + static_cast<size_t>(rows_per_task) * stride;
    const int64_t n_tasks = static_cast<int64_t>(n_tiles) * n_kv * head_sets;
#pragma omp for schedule(dynamic, 2)
    for (int64_t task = n_tasks - 1; task >= 0; --task) {  // longest first
      const int t0 = static_cast<int>(task / (n_kv * head_sets)) * tile;
      const int g = static_cast<int>(task % (n_kv * head_sets)) / head_sets;
      const int h0 = g * group + static_cast<int>(task % head_sets) * heads;  // first query head
      TileRows rows;
      int lo = n, hi = 0;
      for (int t = 0; t < tile; ++t) {
        const int i = std::min(t0 + t, n - 1);
        const int first = window > 0 ? std::max(0, i - window + 1) : 0;
        lo = std::min(lo, first);
        hi = std::max(hi, i + 1);
        for (int h = 0; h < heads; ++h) {
          const int r = t * heads + h;
          rows.q[r] = q + i * q_stride + static_cast<int64_t>(h0 + h) * hd;
          rows.out[r] =
              t0 + t < n ? out + i * q_stride + static_cast<int64_t>(h0 + h) * hd : discard;
          rows.first_key[r] = first;
          rows.last_key[r] = i;
        }
      }
      const float* ktg = kt.data() + static_cast<size_t>(g) * hd * stride;
      const float* vg = v + static_cast<int64_t>(g) * hd;
      switch (rows_per_task) {  // 8 or 12 (TilePositions)
        case 8:
          AttendTile<8>(rows, ktg, stride, vg, kv_stride, lo, hi, hd, scale, scores, stride);
          break;
        default:
          AttendTile<12>(rows, ktg, stride, vg, kv_stride, lo, hi, hd, scale, scores, stride);
          break;
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
