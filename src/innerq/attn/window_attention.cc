// Decode attention over a sliding-window layer's ring (window_attention.h):
// the plain f16 kernels of decode attention, over one chunk.
#include "innerq/attn/window_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/base/fp16.h"
#include "innerq/kernels/attn_kernels.h"
#include "innerq/kernels/tile_format.h"

namespace innerq::attn {
namespace {

void check_shape(const kv::WindowLayerCache& cache, int n_heads) {
  if (n_heads <= 0 || n_heads % cache.n_kv_heads() != 0) {
    throw Error(fmt::format("window attention: {} query heads cannot share {} KV heads", n_heads,
                            cache.n_kv_heads()));
  }
  if (cache.n_held() == 0) throw Error("window attention: the cache is empty");
}

}  // namespace

void window_attention(const kv::WindowLayerCache& cache, const float* q, int n_heads, float* out) {
  check_shape(cache, n_heads);
  const int n = cache.n_held(), D = cache.head_dim(), nq = n_heads / cache.n_kv_heads();
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const size_t stride = static_cast<size_t>(n);
  // Kept across calls: decode runs this once per window layer per token.
  thread_local std::vector<float> q_scaled, scores, m, l;
  q_scaled.resize(static_cast<size_t>(nq) * D);
  scores.resize(stride * nq);
  m.resize(static_cast<size_t>(nq));
  l.resize(static_cast<size_t>(nq));
  for (int g = 0; g < cache.n_kv_heads(); ++g) {
    const float* qg = q + static_cast<size_t>(g) * nq * D;  // [nq][D]
    for (size_t i = 0; i < q_scaled.size(); ++i) q_scaled[i] = qg[i] * scale;
    kernels::simd::k_scores_tiles(cache.k_tiles(g), n, {q_scaled.data(), nq, D},
                                  {scores.data(), stride});
    kernels::simd::softmax_partial({scores.data(), stride}, n, nq, m.data(), l.data());
    float* og = out + static_cast<size_t>(g) * nq * D;
    std::fill(og, og + static_cast<size_t>(nq) * D, 0.0f);
    kernels::simd::v_accumulate_rows(cache.v_rows(g), n, nq, D, {scores.data(), stride}, og);
    for (int h = 0; h < nq; ++h) {
      const float inv = 1.0f / l[static_cast<size_t>(h)];
      for (int c = 0; c < D; ++c) og[h * D + c] *= inv;
    }
  }
}

void window_attention_reference(const kv::WindowLayerCache& cache, const float* q, int n_heads,
                                float* out) {
  check_shape(cache, n_heads);
  const int n = cache.n_held(), D = cache.head_dim(), nq = n_heads / cache.n_kv_heads();
  std::vector<double> s(static_cast<size_t>(n));
  for (int h = 0; h < n_heads; ++h) {
    const int g = h / nq;
    const f16_bits* kt = cache.k_tiles(g);
    const f16_bits* vr = cache.v_rows(g);
    const float* qh = q + static_cast<size_t>(h) * D;
    double mx = -INFINITY;
    for (int t = 0; t < n; ++t) {
      const f16_bits* tile = kt + static_cast<size_t>(t / kTileRows) * D * kTileRows;
      double dot = 0.0;
      for (int c = 0; c < D; ++c)
        dot += double{qh[c]} * f16_to_f32(tile[c * kTileRows + t % kTileRows]);
      s[static_cast<size_t>(t)] = dot / std::sqrt(static_cast<double>(D));
      mx = std::max(mx, s[static_cast<size_t>(t)]);
    }
    double sum = 0.0;
    for (double& x : s) sum += (x = std::exp(x - mx));
    for (int c = 0; c < D; ++c) {
      double o = 0.0;
      for (int t = 0; t < n; ++t)
        o += s[static_cast<size_t>(t)] * f16_to_f32(vr[static_cast<size_t>(t) * D + c]);
      out[static_cast<size_t>(h) * D + c] = static_cast<float>(o / sum);
    }
  }
}

}  // namespace innerq::attn
