// Decode attention over a sliding-window layer's ring, and of a chunk of new
// positions over a copy of it (window_attention.h): the plain f16 kernels of
// decode attention.
#include "innerq/attn/window_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/base/fp16.h"
#include "innerq/kernels/attn_kernels.h"
#include "innerq/kernels/f16_convert.h"
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

// o_h = softmax_t(q_h·k_t / sqrt(D)) · v over n positions, in double; k(h, t,
// c) and v(h, t, c) give the element of position t seen by query head h.
template <class KeyAt, class ValueAt>
void reference_attention(const float* q, int n_heads, int D, int n, float* out, KeyAt k_at,
                         ValueAt v_at) {
  std::vector<double> s(static_cast<size_t>(n));
  for (int h = 0; h < n_heads; ++h) {
    const float* qh = q + static_cast<size_t>(h) * D;
    double mx = -INFINITY;
    for (int t = 0; t < n; ++t) {
      double dot = 0.0;
      for (int c = 0; c < D; ++c) dot += double{qh[c]} * k_at(h, t, c);
      s[static_cast<size_t>(t)] = dot / std::sqrt(static_cast<double>(D));
      mx = std::max(mx, s[static_cast<size_t>(t)]);
    }
    double sum = 0.0;
    for (double& x : s) sum += (x = std::exp(x - mx));
    for (int c = 0; c < D; ++c) {
      double o = 0.0;
      for (int t = 0; t < n; ++t) o += s[static_cast<size_t>(t)] * v_at(h, t, c);
      out[static_cast<size_t>(h) * D + c] = static_cast<float>(o / sum);
    }
  }
}

// The scratch's buffers of one call (AttentionScratch::fit_window).
struct WindowBuffers {
  float* queries;  // [nq][D]
  float* scores;   // [nq][lead + n]
  float* partial;  // m, l: [nq] each
};

// o = softmax(q·k / sqrt(D)) · v over n f16 positions for every KV head g:
// k_scores(g, queries, scores) writes g's scores, of which the first `lead`
// are dropped (slots before the window in its first K tile);
// v_accumulate(g, weights, o) adds p·V. The kernels of decode attention's
// f16 regions.
template <class KScores, class VAccumulate>
void attend_heads(int n_kv_heads, int n_heads, int D, int n, int lead, const float* q, float* out,
                  const WindowBuffers& b, KScores&& k_scores, VAccumulate&& v_accumulate) {
  const int nq = n_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const size_t stride = static_cast<size_t>(lead + n);
  float* const m = b.partial;
  float* const l = b.partial + nq;
  for (int g = 0; g < n_kv_heads; ++g) {
    const float* qg = q + static_cast<size_t>(g) * nq * D;  // [nq][D]
    for (size_t j = 0; j < static_cast<size_t>(nq) * D; ++j) b.queries[j] = qg[j] * scale;
    k_scores(g, kernels::QueryHeads{b.queries, nq, D}, kernels::HeadRows{b.scores, stride});
    kernels::simd::softmax_partial({b.scores + lead, stride}, n, nq, m, l);
    float* og = out + static_cast<size_t>(g) * nq * D;
    std::fill(og, og + static_cast<size_t>(nq) * D, 0.0f);
    v_accumulate(g, kernels::ConstHeadRows{b.scores + lead, stride}, og);
    for (int h = 0; h < nq; ++h) {
      const float inv = 1.0f / l[static_cast<size_t>(h)];
      for (int c = 0; c < D; ++c) og[h * D + c] *= inv;
    }
  }
}

}  // namespace

void window_attention(const kv::WindowLayerCache& cache, const float* q, int n_heads, float* out) {
  AttentionScratch scratch;
  window_attention(cache, q, n_heads, out, scratch);
}

void window_attention(const kv::WindowLayerCache& cache, const float* q, int n_heads, float* out,
                      AttentionScratch& scratch) {
  check_shape(cache, n_heads);
  const int n = cache.n_held(), D = cache.head_dim(), nq = n_heads / cache.n_kv_heads();
  // The last n positions: one run of slots, or two where the ring wraps.
  // Plain f16 K tiles are scored from a tile's start, so the first run's
  // scores start `lead` slots early.
  const kv::WindowLayerCache::SlotRuns runs = cache.runs(int64_t{cache.n_tokens()} - n, n);
  const int lead = runs.start[0] % kTileRows;
  scratch.fit_window(nq, D, static_cast<size_t>(lead + n));
  const WindowBuffers buffers{scratch.queries_.data(), scratch.threads_[0].scores.data(),
                              scratch.partial_.data()};
  const size_t tile = static_cast<size_t>(D) * kTileRows;
  attend_heads(
      cache.n_kv_heads(), n_heads, D, n, lead, q, out, buffers,
      [&](int g, const kernels::QueryHeads& qh, kernels::HeadRows s) {
        kernels::simd::k_scores_tiles(
            cache.k_tiles(g) + static_cast<size_t>(runs.start[0] / kTileRows) * tile,
            lead + runs.length[0], qh, s);
        if (runs.n == 2) {
          kernels::simd::k_scores_tiles(cache.k_tiles(g), runs.length[1], qh,
                                        {s.x + lead + runs.length[0], s.stride});
        }
      },
      [&](int g, kernels::ConstHeadRows p, float* og) {
        for (int r = 0, done = 0; r < runs.n; done += runs.length[r++]) {
          kernels::simd::v_accumulate_rows(cache.v_rows(g) + static_cast<size_t>(runs.start[r]) * D,
                                           runs.length[r], nq, D, {p.x + done, p.stride}, og);
        }
      });
}

void window_attention_reference(const kv::WindowLayerCache& cache, const float* q, int n_heads,
                                float* out) {
  check_shape(cache, n_heads);
  const int D = cache.head_dim(), nq = n_heads / cache.n_kv_heads(), n = cache.n_held();
  const int64_t first = int64_t{cache.n_tokens()} - n;  // position of t = 0
  reference_attention(
      q, n_heads, D, n, out,
      [&](int h, int t, int c) {
        const int s = cache.slot(first + t);
        const f16_bits* tile =
            cache.k_tiles(h / nq) + static_cast<size_t>(s / kTileRows) * D * kTileRows;
        return f16_to_f32(tile[c * kTileRows + s % kTileRows]);
      },
      [&](int h, int t, int c) {
        return f16_to_f32(cache.v_rows(h / nq)[static_cast<size_t>(cache.slot(first + t)) * D + c]);
      });
}

// ---------------------------------------------------------------------------
// A chunk of new positions
// ---------------------------------------------------------------------------

void WindowChunk::begin(const kv::WindowLayerCache& ring, int n_chunk) {
  if (n_chunk <= 0) throw Error(fmt::format("window chunk: {} positions", n_chunk));
  window_ = ring.window();
  n_kv_heads_ = ring.n_kv_heads();
  head_dim_ = ring.head_dim();
  n_chunk_ = n_chunk;
  // The chunk's first query (position N) sees N − window + 1..N.
  const int N = ring.n_tokens();
  n_past_ = std::min(N, window_ - 1);
  const size_t need = static_cast<size_t>(n_kv_heads_) * (n_past_ + n_chunk_) * head_dim_;
  if (k_.size() < need) {
    k_.resize(need);
    v_.resize(need);
  }
  const int D = head_dim_;
  for (int h = 0; h < n_kv_heads_; ++h) {
    const f16_bits* tiles = ring.k_tiles(h);
    const f16_bits* rows = ring.v_rows(h);
    f16_bits* k = k_.data() + head_offset(h);
    f16_bits* v = v_.data() + head_offset(h);
    for (int t = 0; t < n_past_; ++t) {
      const int slot = ring.slot(N - n_past_ + t);
      const f16_bits* tile = tiles + static_cast<size_t>(slot / kTileRows) * D * kTileRows;
      for (int c = 0; c < D; ++c)
        k[static_cast<size_t>(t) * D + c] = tile[c * kTileRows + slot % kTileRows];
      std::copy_n(rows + static_cast<size_t>(slot) * D, D, v + static_cast<size_t>(t) * D);
    }
  }
}

void WindowChunk::add_chunk(const float* k, const float* v) {
  const int D = head_dim_;
  const size_t per_token = static_cast<size_t>(n_kv_heads_) * D;
  for (int h = 0; h < n_kv_heads_; ++h) {
    for (int i = 0; i < n_chunk_; ++i) {
      const size_t src = static_cast<size_t>(i) * per_token + static_cast<size_t>(h) * D;
      const size_t dst = head_offset(h) + static_cast<size_t>(n_past_ + i) * D;
      kernels::f32_to_f16(k + src, static_cast<size_t>(D), k_.data() + dst);
      kernels::f32_to_f16(v + src, static_cast<size_t>(D), v_.data() + dst);
    }
  }
}

namespace {

// Rows [first, last) of the chunk's K/V that its position i sees.
struct VisibleRows {
  int first, last;
};

VisibleRows visible_rows(const WindowChunk& chunk, int i, int n_heads) {
  if (i < 0 || i >= chunk.n_chunk()) {
    throw Error(fmt::format("window chunk attention: position {} outside the chunk of {}", i,
                            chunk.n_chunk()));
  }
  if (n_heads <= 0 || n_heads % chunk.n_kv_heads() != 0) {
    throw Error(fmt::format("window chunk attention: {} query heads cannot share {} KV heads",
                            n_heads, chunk.n_kv_heads()));
  }
  const int last = chunk.n_past() + i + 1;
  return {std::max(0, last - chunk.window()), last};
}

}  // namespace

void window_chunk_attention(const WindowChunk& chunk, int i, const float* q, int n_heads,
                            float* out) {
  AttentionScratch scratch;
  window_chunk_attention(chunk, i, q, n_heads, out, scratch);
}

void window_chunk_attention(const WindowChunk& chunk, int i, const float* q, int n_heads,
                            float* out, AttentionScratch& scratch) {
  const VisibleRows rows = visible_rows(chunk, i, n_heads);
  const int n = rows.last - rows.first, nq = n_heads / chunk.n_kv_heads();
  const size_t row0 = static_cast<size_t>(rows.first) * chunk.head_dim();
  scratch.fit_window(nq, chunk.head_dim(), static_cast<size_t>(n));
  const WindowBuffers buffers{scratch.queries_.data(), scratch.threads_[0].scores.data(),
                              scratch.partial_.data()};
  attend_heads(
      chunk.n_kv_heads(), n_heads, chunk.head_dim(), n, 0, q, out, buffers,
      [&](int g, const kernels::QueryHeads& qh, kernels::HeadRows s) {
        kernels::simd::k_scores_rows(chunk.k_rows(g) + row0, n, qh, s);
      },
      [&](int g, kernels::ConstHeadRows p, float* og) {
        kernels::simd::v_accumulate_rows(chunk.v_rows(g) + row0, n, nq, chunk.head_dim(), p, og);
      });
}

void window_chunk_attention_reference(const WindowChunk& chunk, int i, const float* q, int n_heads,
                                      float* out) {
  // (Not a structured binding: clang 14, the sanitizer build, cannot
  // capture one in a lambda.)
  const auto visible = visible_rows(chunk, i, n_heads);
  const int first = visible.first, last = visible.last;
  const int D = chunk.head_dim(), nq = n_heads / chunk.n_kv_heads();
  const auto at = [&](const f16_bits* rows, int t, int c) {
    return f16_to_f32(rows[static_cast<size_t>(first + t) * D + c]);
  };
  reference_attention(
      q, n_heads, D, last - first, out,
      [&](int h, int t, int c) { return at(chunk.k_rows(h / nq), t, c); },
      [&](int h, int t, int c) { return at(chunk.v_rows(h / nq), t, c); });
}

}  // namespace innerq::attn
