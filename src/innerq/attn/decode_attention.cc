// Decode attention over a layer cache: chunks of the token axis per KV head,
// a partial softmax per chunk, and an exact merge (flash-decoding on a CPU).
#include "innerq/attn/decode_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/base/parallel_errors.h"
#include "innerq/kernels/attn_kernels.h"
#include "innerq/kernels/group_format.h"
#include "innerq/kernels/channel_order.h"
#include "innerq/kernels/hadamard.h"
#include "innerq/kernels/llama_blocks.h"
#include "innerq/kv/layer_caches.h"
#include "innerq/kv/segments.h"

namespace innerq::attn {
namespace {

using kv::HeadSegments;
using kv::Segment;
using kv::SegmentForm;

// The region kernels, from kernels::simd or (for tests) kernels::scalar.
#define INNERQ_KERNEL(name, ...) \
  (options.scalar_kernels ? kernels::scalar::name(__VA_ARGS__) : kernels::simd::name(__VA_ARGS__))

// The number of positions attended to (n_visible, or all when 0).
int check_shape(const kv::LayerCache& cache, int n_heads, int n_visible) {
  if (dynamic_cast<const kv::WindowLayerCache*>(&cache) != nullptr) {
    throw Error("decode attention: a sliding-window layer is read by attn::window_attention");
  }
  if (n_heads <= 0 || n_heads % cache.n_kv_heads() != 0) {
    throw Error(fmt::format("decode attention: {} query heads cannot share {} KV heads", n_heads,
                            cache.n_kv_heads()));
  }
  if (cache.n_tokens() == 0) throw Error("decode attention: the cache is empty");
  if (n_visible < 0 || n_visible > cache.n_tokens()) {
    throw Error(fmt::format("decode attention: {} visible positions, the cache holds {}", n_visible,
                            cache.n_tokens()));
  }
  return n_visible > 0 ? n_visible : cache.n_tokens();
}

// One thread's buffers of a chunk: a chunk cut inside a G-token group
// (n_visible) scores (or weighs) the whole group in `cut`; the InnerQ kernels
// round the query (or weights) to int8 in `kernel`.
struct ChunkBuffers {
  float* cut;
  kernels::KernelScratch kernel;
};

// The query of InnerQ's quantized keys, which store K / f with channel
// perm[j] at position j: q_norm[j] = q[perm[j]]·f[perm[j]], so that
// q_norm·(stored row) = q·K (f, perm: null for none).
void query_for_middle(const float* q, const float* f, const uint16_t* perm, int D, float* q_norm) {
  for (int j = 0; j < D; ++j) {
    const int c = perm != nullptr ? perm[j] : j;
    q_norm[j] = f != nullptr ? q[c] * f[c] : q[c];
  }
}

// Scores of tokens [a, b) from the segments that overlap them.
void chunk_scores(const std::vector<Segment>& segments, int a, int b, const float* q,
                  const float* q_norm, int nq, int D, float* scores, size_t stride,
                  const DecodeOptions& options, const ChunkBuffers& buffers) {
  for (const Segment& whole : segments) {
    const int lo = std::max(a, whole.start), hi = std::min(b, whole.start + whole.length);
    if (lo >= hi) continue;
    const Segment s = whole.tail(lo - whole.start, D);
    const int n = hi - lo;
    const kernels::QueryHeads heads{s.form == SegmentForm::kInnerQK ? q_norm : q, nq, D};
    const kernels::HeadRows out{scores + (lo - a), stride};
    switch (s.form) {
      case SegmentForm::kTilesF32:
        INNERQ_KERNEL(k_scores_tiles, static_cast<const float*>(s.data), n, heads, out);
        break;
      case SegmentForm::kTilesF16:
        INNERQ_KERNEL(k_scores_tiles, static_cast<const f16_bits*>(s.data), n, heads, out);
        break;
      case SegmentForm::kRowsF16:
        INNERQ_KERNEL(k_scores_rows, static_cast<const f16_bits*>(s.data), n, heads, out);
        break;
      case SegmentForm::kQ8_0:
        INNERQ_KERNEL(k_scores_blocks, static_cast<const BlockQ8_0*>(s.data), n, heads, out);
        break;
      case SegmentForm::kQ4_0:
        INNERQ_KERNEL(k_scores_blocks, static_cast<const BlockQ4_0*>(s.data), n, heads, out);
        break;
      case SegmentForm::kInnerQK:
        INNERQ_KERNEL(k_scores_innerq, s.tile, static_cast<const uint8_t*>(s.data), n, heads, out,
                      buffers.kernel);
        break;
      case SegmentForm::kKiviK:
        if (n % s.group == 0) {
          INNERQ_KERNEL(k_scores_kivi, s.bits, s.group, static_cast<const uint8_t*>(s.data), n,
                        heads, out);
        } else {  // cut inside a G-token group (n_visible): score the whole group aside
          const int whole = (n + s.group - 1) / s.group * s.group;
          INNERQ_KERNEL(k_scores_kivi, s.bits, s.group, static_cast<const uint8_t*>(s.data), whole,
                        heads, (kernels::HeadRows{buffers.cut, static_cast<size_t>(whole)}));
          for (int j = 0; j < nq; ++j) {
            std::copy_n(buffers.cut + static_cast<size_t>(j) * whole, n, out.x + j * out.stride);
          }
        }
        break;
      case SegmentForm::kRowsF32:
      case SegmentForm::kInnerQV:
      case SegmentForm::kKiviV:
        throw Error("decode attention: a V segment among the keys");
    }
  }
}

// o [nq][D] += p·V over tokens [a, b).
void chunk_values(const std::vector<Segment>& segments, int a, int b, const float* p, size_t stride,
                  int nq, int D, float* o, const DecodeOptions& options,
                  const ChunkBuffers& buffers) {
  for (const Segment& whole : segments) {
    const int lo = std::max(a, whole.start), hi = std::min(b, whole.start + whole.length);
    if (lo >= hi) continue;
    const Segment s = whole.tail(lo - whole.start, D);
    const int n = hi - lo;
    const kernels::ConstHeadRows w{p + (lo - a), stride};
    switch (s.form) {
      case SegmentForm::kRowsF32:
        INNERQ_KERNEL(v_accumulate_rows, static_cast<const float*>(s.data), n, nq, D, w, o);
        break;
      case SegmentForm::kRowsF16:
        INNERQ_KERNEL(v_accumulate_rows, static_cast<const f16_bits*>(s.data), n, nq, D, w, o);
        break;
      case SegmentForm::kQ8_0:
        INNERQ_KERNEL(v_accumulate_blocks, static_cast<const BlockQ8_0*>(s.data), n, nq, D, w, o);
        break;
      case SegmentForm::kQ4_0:
        INNERQ_KERNEL(v_accumulate_blocks, static_cast<const BlockQ4_0*>(s.data), n, nq, D, w, o);
        break;
      case SegmentForm::kInnerQV:
        if (n % s.tile.group == 0) {
          INNERQ_KERNEL(v_accumulate_innerq, s.tile, static_cast<const uint8_t*>(s.data),
                        n / s.tile.group, nq, D, w, o, buffers.kernel);
        } else {  // cut inside a G-token group (n_visible): the rest weighs 0
          const int whole = (n + s.tile.group - 1) / s.tile.group * s.tile.group;
          float* const padded = buffers.cut;
          std::fill(padded, padded + static_cast<size_t>(whole) * nq, 0.0f);
          for (int j = 0; j < nq; ++j) {
            std::copy_n(w.x + j * w.stride, n, padded + static_cast<size_t>(j) * whole);
          }
          INNERQ_KERNEL(v_accumulate_innerq, s.tile, static_cast<const uint8_t*>(s.data),
                        whole / s.tile.group, nq, D,
                        (kernels::ConstHeadRows{padded, static_cast<size_t>(whole)}), o,
                        buffers.kernel);
        }
        break;
      case SegmentForm::kKiviV:
        INNERQ_KERNEL(v_accumulate_kivi, s.bits, s.group, static_cast<const uint8_t*>(s.data), n,
                      nq, D, w, o);
        break;
      case SegmentForm::kTilesF32:
      case SegmentForm::kTilesF16:
      case SegmentForm::kInnerQK:
      case SegmentForm::kKiviK:
        throw Error("decode attention: a K segment among the values");
    }
  }
}

#undef INNERQ_KERNEL

// The chunk's softmax: the scalar reference where the options ask for the
// scalar kernels, else the SIMD one.
using SoftmaxKernel = void (*)(kernels::HeadRows, int, int, float*, float*);
SoftmaxKernel softmax_kernel(const DecodeOptions& options) {
  return options.scalar_kernels ? kernels::scalar::softmax_partial : kernels::simd::softmax_partial;
}

// Cuts [0, n) into chunks whose inner cuts sit at origin + k·size. The
// longest chunk is the first: origin + size.
void chunk_cuts(int n, int origin, int n_kv_heads, int n_threads, std::vector<int>& cuts) {
  const int size = decode_chunk_tokens(n, n_kv_heads, n_threads);
  cuts.assign(1, 0);
  for (long cut = origin + size; cut < n; cut += size) cuts.push_back(static_cast<int>(cut));
  cuts.push_back(n);
}

}  // namespace

void decode_attention(const kv::LayerCache& cache, const float* q, int n_heads, float* out,
                      const DecodeOptions& options) {
  AttentionScratch scratch;
  decode_attention(cache, q, n_heads, out, options, scratch);
}

void decode_attention(const kv::LayerCache& cache, const float* q, int n_heads, float* out,
                      const DecodeOptions& options, AttentionScratch& scratch) {
  const int n = check_shape(cache, n_heads, options.n_visible);
  const int D = cache.head_dim(), n_kv = cache.n_kv_heads();
  const int nq = n_heads / n_kv;
  const int n_threads = std::max(1, options.n_threads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // Every buffer below is the caller's, sized for the longest chunk this
  // cache can need: a decode step allocates nothing (docs/architecture.md,
  // "No allocation per token").
  scratch.fit(AttentionScratch::sizes(cache, n_heads, n_threads));

  std::vector<HeadSegments>& heads = scratch.heads_;
  for (int h = 0; h < n_kv; ++h) cache.segments(h, heads[static_cast<size_t>(h)]);
  std::vector<int>& cuts = scratch.cuts_;
  chunk_cuts(n, heads[0].origin, n_kv, n_threads, cuts);
  const int n_chunks = static_cast<int>(cuts.size()) - 1;

  // Queries: rotated (for rotated keys), scaled by 1/sqrt(D), and also by
  // the key factors. [n_heads][D] each.
  float* const q_rot = scratch.queries_.data();
  float* const q_scaled = q_rot + static_cast<size_t>(n_heads) * D;
  float* const q_norm = q_scaled + static_cast<size_t>(n_heads) * D;
  // Permuted and rotated keys (kernels/channel_order.h, kernels/hadamard.h):
  // the query is permuted and rotated alike, so (R P q)·(R P k) = q·k.
  const kv::LayerConfig& config = cache.config();
  const bool permute = config.kperm != kernels::ChannelOrder::kAsIs;
  if (permute) {
    for (int h = 0; h < n_heads; ++h) {
      const size_t at = static_cast<size_t>(h) * D;
      kernels::permute_channels(q + at, q_rot + at, D, config.kperm);
    }
    q = q_rot;
  }
  if (config.rot_k) {
    if (!permute) std::copy_n(q, static_cast<size_t>(n_heads) * D, q_rot);
    if (options.scalar_kernels)
      kernels::scalar::hadamard_rotate(q_rot, static_cast<size_t>(n_heads), D, false);
    else
      kernels::simd::hadamard_rotate(q_rot, static_cast<size_t>(n_heads), D, false);
    q = q_rot;
  }
  for (int h = 0; h < n_heads; ++h) {
    const HeadSegments& seg = heads[static_cast<size_t>(h / nq)];
    const size_t at = static_cast<size_t>(h) * D;
    for (int c = 0; c < D; ++c) q_scaled[at + c] = q[at + c] * scale;
    query_for_middle(q_scaled + at, seg.key_norm, seg.key_perm, D, q_norm + at);
  }

  // Partial results per (KV head, chunk): max and sum of exp per query head,
  // unnormalized output [nq][D].
  const size_t n_tasks = static_cast<size_t>(n_kv) * n_chunks;
  float* const part_m = scratch.partial_.data();
  float* const part_l = part_m + n_tasks * nq;
  float* const part_o = part_l + n_tasks * nq;
  std::fill(part_o, part_o + n_tasks * nq * D, 0.0f);

  ParallelErrors errors;  // a kernel may refuse a segment; no exception may leave the region
  std::vector<AttentionScratch::Thread>& threads = scratch.threads_;
#pragma omp parallel num_threads(n_threads)
  {
    AttentionScratch::Thread& mine = threads[static_cast<size_t>(omp_get_thread_num())];
    const ChunkBuffers buffers{mine.cut.data(), {mine.kernel.data(), mine.kernel.size()}};
#pragma omp for schedule(dynamic, 1)
    for (size_t task = 0; task < n_tasks; ++task)
      errors.run([&] {
        const int h = static_cast<int>(task / n_chunks), c = static_cast<int>(task % n_chunks);
        const int a = cuts[static_cast<size_t>(c)], b = cuts[static_cast<size_t>(c) + 1];
        const size_t stride = static_cast<size_t>(b - a);
        float* const scores = mine.scores.data();  // [nq][stride]
        const size_t q_off = static_cast<size_t>(h) * nq * D;
        const HeadSegments& seg = heads[static_cast<size_t>(h)];
        chunk_scores(seg.k, a, b, q_scaled + q_off, q_norm + q_off, nq, D, scores, stride, options,
                     buffers);
        softmax_kernel(options)({scores, stride}, b - a, nq, &part_m[task * nq],
                                &part_l[task * nq]);
        chunk_values(seg.v, a, b, scores, stride, nq, D, &part_o[task * nq * D], options, buffers);
      });
  }
  errors.rethrow();

  // Merge: o = Σ_c e^{m_c − M}·o_c / Σ_c e^{m_c − M}·l_c.
  for (int h = 0; h < n_heads; ++h) {
    const int kv_head = h / nq, j = h % nq;
    float M = -std::numeric_limits<float>::infinity();
    for (int c = 0; c < n_chunks; ++c) {
      M = std::max(M, part_m[(static_cast<size_t>(kv_head) * n_chunks + c) * nq + j]);
    }
    float* o = out + static_cast<size_t>(h) * D;
    std::fill(o, o + D, 0.0f);
    float L = 0.0f;
    for (int c = 0; c < n_chunks; ++c) {
      const size_t task = static_cast<size_t>(kv_head) * n_chunks + c;
      const float w = std::exp(part_m[task * nq + j] - M);
      L += w * part_l[task * nq + j];
      const float* po = &part_o[(task * nq + j) * D];
      for (int i = 0; i < D; ++i) o[i] += w * po[i];
    }
    for (int i = 0; i < D; ++i) o[i] /= L;
  }
  // Rotated values: o = Σ p·(R v) = R (Σ p·v), rotated back by Rᵀ.
  if (config.rot_v) {
    if (options.scalar_kernels)
      kernels::scalar::hadamard_rotate(out, static_cast<size_t>(n_heads), D, true);
    else
      kernels::simd::hadamard_rotate(out, static_cast<size_t>(n_heads), D, true);
  }
}

// ---------------------------------------------------------------------------
// Chunked extend: the new tokens of one append, each as decode saw it
// (docs/architecture.md, "Chunked extend").
// ---------------------------------------------------------------------------
namespace {

// Score floats a shared-part task holds per thread (rows × chunk tokens):
// sets the chunk length of the shared part.
constexpr size_t kChunkScoreFloats = size_t{1} << 18;

// A row's running softmax (max m, sum l, unnormalized output o[D]) merged
// with the partial result of more tokens (m_c, l_c, o_c).
inline void merge_partial(float m_c, float l_c, const float* o_c, int D, float& m, float& l,
                          float* o) {
  const float M = std::max(m, m_c);
  const float a = m == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(m - M);
  const float b = std::exp(m_c - M);
  l = l * a + l_c * b;
  for (int d = 0; d < D; ++d) o[d] = o[d] * a + o_c[d] * b;
  m = M;
}

// `list` clipped to positions below `end`, then the window rows
// [end, stop) from `rows` (row 0 at position rows_from), when any.
void step_segments(const std::vector<Segment>& list, int end, int stop, const kv::F16Rows* rows,
                   int rows_from, std::vector<Segment>& out) {
  out.clear();
  for (const Segment& s : list) {
    if (s.start >= end) continue;
    Segment c = s;
    c.length = std::min(s.length, end - s.start);
    out.push_back(c);
  }
  if (rows != nullptr && end < stop) {
    out.push_back(
        Segment{SegmentForm::kRowsF16, end, stop - end, 1, rows->row(end - rows_from), {}});
  }
}

}  // namespace

void chunk_attention(const kv::LayerCache& cache, const kv::ChunkSteps& steps, const float* q,
                     int n_heads, float* out, const DecodeOptions& options, ChunkScratch& scratch) {
  check_shape(cache, n_heads, 0);
  const int n = steps.n;
  if (n <= 0 || steps.first + n != cache.n_tokens() ||
      steps.k_end.size() < static_cast<size_t>(n) || steps.v_end.size() < static_cast<size_t>(n) ||
      (steps.has_rows && (steps.k_rows.size() != static_cast<size_t>(cache.n_kv_heads()) ||
                          steps.v_rows.size() != static_cast<size_t>(cache.n_kv_heads())))) {
    throw Error(fmt::format(
        "chunk attention: the steps ({} tokens from position {}) are not those of the cache's "
        "last append (it holds {} tokens)",
        n, steps.first, cache.n_tokens()));
  }
  const int D = cache.head_dim(), n_kv = cache.n_kv_heads();
  const int nq = n_heads / n_kv;
  const int T = std::max(1, options.n_threads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const kv::LayerConfig& config = cache.config();
  const size_t Dz = static_cast<size_t>(D);

  std::vector<HeadSegments>& heads = scratch.heads_;
  if (heads.size() < static_cast<size_t>(n_kv)) heads.resize(static_cast<size_t>(n_kv));
  for (int h = 0; h < n_kv; ++h) cache.segments(h, heads[static_cast<size_t>(h)]);
  const int origin = heads[0].origin;
  if (scratch.threads_.size() < static_cast<size_t>(T)) {
    scratch.threads_.resize(static_cast<size_t>(T));
  }

  const int steps_per_pass = std::max(1, kChunkRows / nq);
  for (int s0 = 0; s0 < n; s0 += steps_per_pass) {
    const int s1 = std::min(n, s0 + steps_per_pass), ns = s1 - s0, rows = ns * nq;
    const size_t R = static_cast<size_t>(rows);
    // Positions [0, c0) every token of the pass sees as stored now (the
    // boundaries only grow with i), cut where every segment can be cut.
    const int seen =
        std::min(steps.k_end[static_cast<size_t>(s0)], steps.v_end[static_cast<size_t>(s0)]);
    const int c0 = seen >= origin ? origin + (seen - origin) / kChunkAlign * kChunkAlign : 0;
    const int C = std::max<int>(
        kChunkAlign, static_cast<int>(kChunkScoreFloats / R / kChunkAlign * kChunkAlign));
    std::vector<int>& cuts = scratch.cuts_;
    cuts.assign(1, 0);
    if (c0 > 0) {
      for (int64_t cut = int64_t{origin} + C; cut < c0; cut += C) {
        cuts.push_back(static_cast<int>(cut));
      }
      cuts.push_back(c0);
    }
    const int n_shared = static_cast<int>(cuts.size()) - 1;
    const size_t longest_shared = c0 > 0 ? static_cast<size_t>(std::min(c0, origin + C)) : 0;
    const size_t longest_tail = static_cast<size_t>(steps.first + s1 - c0);
    const size_t score_floats =
        std::max(R * longest_shared, static_cast<size_t>(nq) * longest_tail);
    const size_t cut_floats = std::max(R * (longest_shared + kChunkAlign),
                                       static_cast<size_t>(nq) * (longest_tail + kChunkAlign));
    size_t kernel_bytes = 0;
    if (config.kind == kv::CacheKind::kInnerQ) {
      const auto& layer = static_cast<const kv::InnerQLayerCache&>(cache);
      kernel_bytes = std::max(kernels::innerq_k_scratch_bytes(layer.k_format(), D),
                              kernels::innerq_v_scratch_bytes(layer.v_format()));
    }
    const size_t acc_rows = static_cast<size_t>(n_kv) * R;
    for (int t = 0; t < T; ++t) {
      ChunkScratch::Thread& th = scratch.threads_[static_cast<size_t>(t)];
      kv::at_least(th.scores, score_floats);
      kv::at_least(th.cut, cut_floats);
      kv::at_least(th.kernel, kernel_bytes);
      kv::at_least(th.o, R * (Dz + 2));
      th.m.assign(acc_rows, -std::numeric_limits<float>::infinity());
      th.l.assign(acc_rows, 0.0f);
      th.acc.assign(acc_rows * Dz, 0.0f);
      // A step's lists: the layer's segments clipped, and one window segment.
      th.step.k.reserve(heads[0].k.size() + 1);
      th.step.v.reserve(heads[0].v.size() + 1);
    }

    // Queries of the pass per KV head, [n_kv][rows][D], row (i − s0)·nq + j
    // = query head h·nq + j of token i: rotated (rotated keys), scaled by
    // 1/sqrt(D), and also by the key factors (InnerQ's middle).
    float* const q_rot = kv::at_least(scratch.queries_, 3 * acc_rows * Dz);
    float* const q_scaled = q_rot + acc_rows * Dz;
    float* const q_norm = q_scaled + acc_rows * Dz;
    for (int h = 0; h < n_kv; ++h) {
      for (int r = 0; r < rows; ++r) {
        const int i = s0 + r / nq, j = r % nq;
        kernels::permute_channels(
            q + (static_cast<size_t>(i) * n_heads + static_cast<size_t>(h) * nq + j) * Dz,
            q_rot + (static_cast<size_t>(h) * R + r) * Dz, D, config.kperm);
      }
    }
    if (config.rot_k) {
      if (options.scalar_kernels)
        kernels::scalar::hadamard_rotate(q_rot, acc_rows, D, false);
      else
        kernels::simd::hadamard_rotate(q_rot, acc_rows, D, false);
    }
    for (size_t row = 0; row < acc_rows; ++row) {
      const HeadSegments& seg = heads[row / R];
      for (size_t c = 0; c < Dz; ++c) q_scaled[row * Dz + c] = q_rot[row * Dz + c] * scale;
      query_for_middle(q_scaled + row * Dz, seg.key_norm, seg.key_perm, D, q_norm + row * Dz);
    }

    const int n_tasks = n_kv * (n_shared + ns);
    ParallelErrors errors;
#pragma omp parallel num_threads(T)
    {
      ChunkScratch::Thread& th = scratch.threads_[static_cast<size_t>(omp_get_thread_num())];
      const ChunkBuffers buffers{th.cut.data(), {th.kernel.data(), th.kernel.size()}};
#pragma omp for schedule(dynamic, 1)
      for (int task = 0; task < n_tasks; ++task)
        errors.run([&] {
          // Shared part: task (h, chunk) for every row of the pass at once.
          // Then task (h, token i): positions [c0, own] as token i saw them.
          const bool shared = task < n_kv * n_shared;
          const int h = shared ? task / n_shared : (task - n_kv * n_shared) / ns;
          const HeadSegments& seg = heads[static_cast<size_t>(h)];
          int a = c0, b = 0, first_row = 0, n_rows = rows;
          const std::vector<Segment>* k_list = &seg.k;
          const std::vector<Segment>* v_list = &seg.v;
          if (shared) {
            const int c = task % n_shared;
            a = cuts[static_cast<size_t>(c)];
            b = cuts[static_cast<size_t>(c) + 1];
          } else {
            const int i = s0 + (task - n_kv * n_shared) % ns;
            const size_t is = static_cast<size_t>(i);
            b = steps.first + i + 1;
            first_row = (i - s0) * nq;
            n_rows = nq;
            step_segments(seg.k, steps.k_end[is], b,
                          steps.has_rows ? &steps.k_rows[static_cast<size_t>(h)] : nullptr,
                          steps.k_rows_from, th.step.k);
            step_segments(seg.v, steps.v_end[is], b,
                          steps.has_rows ? &steps.v_rows[static_cast<size_t>(h)] : nullptr,
                          steps.v_rows_from, th.step.v);
            k_list = &th.step.k;
            v_list = &th.step.v;
          }
          const size_t stride = static_cast<size_t>(b - a);
          const size_t q_off = (static_cast<size_t>(h) * R + first_row) * Dz;
          float* const o = th.o.data();
          float* const pm = o + static_cast<size_t>(n_rows) * Dz;
          float* const pl = pm + n_rows;
          chunk_scores(*k_list, a, b, q_scaled + q_off, q_norm + q_off, n_rows, D, th.scores.data(),
                       stride, options, buffers);
          softmax_kernel(options)({th.scores.data(), stride}, b - a, n_rows, pm, pl);
          std::fill(o, o + static_cast<size_t>(n_rows) * Dz, 0.0f);
          chunk_values(*v_list, a, b, th.scores.data(), stride, n_rows, D, o, options, buffers);
          for (int r = 0; r < n_rows; ++r) {
            const size_t x = static_cast<size_t>(h) * R + first_row + r;
            merge_partial(pm[r], pl[r], o + static_cast<size_t>(r) * Dz, D, th.m[x], th.l[x],
                          &th.acc[x * Dz]);
          }
        });
    }
    errors.rethrow();

    // Every thread's running results merged, row by row, into out.
    for (size_t x = 0; x < acc_rows; ++x) {
      const int h = static_cast<int>(x / R), r = static_cast<int>(x % R);
      const int i = s0 + r / nq, j = r % nq;
      float* const o =
          out + (static_cast<size_t>(i) * n_heads + static_cast<size_t>(h) * nq + j) * Dz;
      float m = -std::numeric_limits<float>::infinity(), l = 0.0f;
      std::fill(o, o + Dz, 0.0f);
      for (int t = 0; t < T; ++t) {
        const ChunkScratch::Thread& th = scratch.threads_[static_cast<size_t>(t)];
        if (th.l[x] == 0.0f) continue;  // no task of this row ran on thread t
        merge_partial(th.m[x], th.l[x], &th.acc[x * Dz], D, m, l, o);
      }
      for (size_t c = 0; c < Dz; ++c) o[c] /= l;
    }
  }
  // Rotated values: each output row rotated back by Rᵀ.
  if (config.rot_v) {
    const size_t n_rows = static_cast<size_t>(n) * n_heads;
    if (options.scalar_kernels)
      kernels::scalar::hadamard_rotate(out, n_rows, D, true);
    else
      kernels::simd::hadamard_rotate(out, n_rows, D, true);
  }
}

// ---------------------------------------------------------------------------
// Reference: every cached row decoded in double from the layout definitions,
// then a plain two-pass softmax.
// ---------------------------------------------------------------------------
namespace {

// A group record's scale and offset in double: element i is
// scale·level(code_i) + offset.
struct GroupAffine {
  double scale, offset;
};
GroupAffine group_affine(int bits, int group, bool has_zero, const uint8_t* record, Levels levels) {
  const size_t code_bytes = group_code_bytes(bits, group);
  f16_bits scale = 0, zero = 0;
  __builtin_memcpy(&scale, record + code_bytes, 2);
  if (has_zero) __builtin_memcpy(&zero, record + code_bytes + 2, 2);
  const GroupMeta m = decode_meta(scale, zero, bits);
  // Codebook levels are symmetric: x̂ = s·(T[u] − 64) (group_format.h).
  return {static_cast<double>(m.scale),
          levels == Levels::kUniform ? m.zero : -kNormalLevelOffset * double{m.scale}};
}

// Element i of a group record, in double.
double group_element_double(int bits, int group, bool has_zero, const uint8_t* record,
                            Levels levels, int i) {
  const GroupAffine a = group_affine(bits, group, has_zero, record, levels);
  return a.scale * level_value(levels, bits, read_code(record, bits, i)) + a.offset;
}

// A whole group record, in double: x [group] (its metadata decoded once).
void decode_group_double(int bits, int group, bool has_zero, const uint8_t* record, double* x,
                         Levels levels = Levels::kUniform) {
  const GroupAffine a = group_affine(bits, group, has_zero, record, levels);
  for (int i = 0; i < group; ++i) {
    x[i] = a.scale * level_value(levels, bits, read_code(record, bits, i)) + a.offset;
  }
}

// Row `t` (0-based within the segment) of a segment, in double.
void segment_row(const Segment& s, int t, int D, const float* key_norm, const uint16_t* key_perm,
                 double* x) {
  const size_t Dz = static_cast<size_t>(D);
  switch (s.form) {
    case SegmentForm::kTilesF32:
    case SegmentForm::kTilesF16: {
      const size_t tile = static_cast<size_t>(t / kTileRows) * Dz * kTileRows;
      for (int c = 0; c < D; ++c) {
        const size_t i = tile + static_cast<size_t>(c) * kTileRows + t % kTileRows;
        x[c] = s.form == SegmentForm::kTilesF32
                   ? static_cast<const float*>(s.data)[i]
                   : f16_to_f32(static_cast<const f16_bits*>(s.data)[i]);
      }
      return;
    }
    case SegmentForm::kRowsF32:
      for (int c = 0; c < D; ++c) x[c] = static_cast<const float*>(s.data)[t * Dz + c];
      return;
    case SegmentForm::kRowsF16:
      for (int c = 0; c < D; ++c)
        x[c] = f16_to_f32(static_cast<const f16_bits*>(s.data)[t * Dz + c]);
      return;
    case SegmentForm::kQ8_0:
    case SegmentForm::kQ4_0: {
      float block[kLlamaBlock];
      for (int b = 0; b < D / kLlamaBlock; ++b) {
        const size_t i = static_cast<size_t>(t) * (Dz / kLlamaBlock) + b;
        if (s.form == SegmentForm::kQ8_0) {
          dequantize_block(static_cast<const BlockQ8_0*>(s.data)[i], block);
        } else {
          dequantize_block(static_cast<const BlockQ4_0*>(s.data)[i], block);
        }
        for (int e = 0; e < kLlamaBlock; ++e) x[b * kLlamaBlock + e] = block[e];
      }
      return;
    }
    case SegmentForm::kInnerQK: {
      const TileFormat& f = s.tile;
      const size_t record_bytes = group_code_bytes(f.bits, f.group) + (f.has_zero ? 4 : 2);
      std::vector<uint8_t> records(f.n_groups * record_bytes);
      tile_load_row(f, static_cast<const uint8_t*>(s.data) + (t / kTileRows) * f.bytes(),
                    t % kTileRows, records.data());
      for (int g = 0; g < f.n_groups; ++g) {
        decode_group_double(f.bits, f.group, f.has_zero, records.data() + g * record_bytes,
                            x + g * f.group, f.levels);
      }
      // Stored keys are K / f, channel key_perm[j] at position j (ksort).
      if (key_perm != nullptr) {
        std::vector<double> stored(x, x + D);
        for (int j = 0; j < D; ++j) x[key_perm[j]] = stored[static_cast<size_t>(j)];
      }
      for (int c = 0; c < D; ++c) x[c] *= key_norm[c];
      return;
    }
    case SegmentForm::kInnerQV: {
      const TileFormat& f = s.tile;
      const size_t record_bytes = group_code_bytes(f.bits, f.group) + (f.has_zero ? 4 : 2);
      const auto* block = static_cast<const uint8_t*>(s.data) +
                          static_cast<size_t>(t / f.group) * (Dz / kTileRows) * f.bytes();
      std::vector<uint8_t> record(record_bytes);
      for (int c = 0; c < D; ++c) {  // token t's element of channel c's group
        tile_load_row(f, block + (c / kTileRows) * f.bytes(), c % kTileRows, record.data());
        x[c] = group_element_double(f.bits, f.group, f.has_zero, record.data(), Levels::kUniform,
                                    t % f.group);
      }
      return;
    }
    case SegmentForm::kKiviK: {
      const size_t record_bytes = group_record_bytes(s.bits, s.group, QuantMode::kAsymmetric);
      const auto* block = static_cast<const uint8_t*>(s.data) +
                          static_cast<size_t>(t / s.group) * Dz * record_bytes;
      for (int c = 0; c < D; ++c) {  // token t's element of channel c's group
        x[c] = group_element_double(s.bits, s.group, true, block + c * record_bytes,
                                    Levels::kUniform, t % s.group);
      }
      return;
    }
    case SegmentForm::kKiviV: {
      const size_t record_bytes = group_record_bytes(s.bits, s.group, QuantMode::kAsymmetric);
      const int ng = D / s.group;
      for (int g = 0; g < ng; ++g) {
        decode_group_double(
            s.bits, s.group, true,
            static_cast<const uint8_t*>(s.data) + (static_cast<size_t>(t) * ng + g) * record_bytes,
            x + g * s.group);
      }
      return;
    }
  }
}

// All rows of a segment list in token order: [n][D].
std::vector<double> dequantize_all(const std::vector<Segment>& segments, int n, int D,
                                   const float* key_norm, const uint16_t* key_perm) {
  std::vector<double> rows(static_cast<size_t>(n) * D);
  for (const Segment& s : segments) {
    for (int t = 0; t < s.length; ++t) {
      segment_row(s, t, D, key_norm, key_perm, &rows[static_cast<size_t>(s.start + t) * D]);
    }
  }
  return rows;
}

}  // namespace

std::vector<double> dequantized_keys(const kv::LayerCache& cache, int kv_head) {
  HeadSegments seg;
  cache.segments(kv_head, seg);
  std::vector<double> rows =
      dequantize_all(seg.k, cache.n_tokens(), cache.head_dim(), seg.key_norm, seg.key_perm);
  if (seg.key_mean != nullptr) {  // every stored key is K − μ
    for (size_t i = 0; i < rows.size(); ++i) rows[i] += seg.key_mean[i % cache.head_dim()];
  }
  if (cache.config().rot_k) {
    kernels::scalar::hadamard_rotate(rows.data(), static_cast<size_t>(cache.n_tokens()),
                                     cache.head_dim(), true);
  }
  if (cache.config().kperm != kernels::ChannelOrder::kAsIs) {
    const size_t D = static_cast<size_t>(cache.head_dim());
    std::vector<double> stored(rows);
    for (size_t at = 0; at < rows.size(); at += D) {
      kernels::permute_channels(stored.data() + at, rows.data() + at, cache.head_dim(),
                                cache.config().kperm, /*inverse=*/true);
    }
  }
  return rows;
}

std::vector<double> dequantized_values(const kv::LayerCache& cache, int kv_head) {
  HeadSegments seg;
  cache.segments(kv_head, seg);
  std::vector<double> rows =
      dequantize_all(seg.v, cache.n_tokens(), cache.head_dim(), nullptr, nullptr);
  if (cache.config().rot_v) {
    kernels::scalar::hadamard_rotate(rows.data(), static_cast<size_t>(cache.n_tokens()),
                                     cache.head_dim(), true);
  }
  return rows;
}

void decode_attention_reference(const kv::LayerCache& cache, const float* q, int n_heads,
                                float* out, int n_visible) {
  const int n = check_shape(cache, n_heads, n_visible);
  const int D = cache.head_dim();
  const int nq = n_heads / cache.n_kv_heads();
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (int kv_head = 0; kv_head < cache.n_kv_heads(); ++kv_head) {
    const std::vector<double> k = dequantized_keys(cache, kv_head);
    const std::vector<double> v = dequantized_values(cache, kv_head);
    for (int h = kv_head * nq; h < (kv_head + 1) * nq; ++h) {
      std::vector<double> p(static_cast<size_t>(n));
      double max = -std::numeric_limits<double>::infinity();
      for (int t = 0; t < n; ++t) {
        double s = 0.0;
        for (int c = 0; c < D; ++c)
          s += static_cast<double>(q[h * D + c]) * k[static_cast<size_t>(t) * D + c];
        p[static_cast<size_t>(t)] = s * scale;
        max = std::max(max, p[static_cast<size_t>(t)]);
      }
      double sum = 0.0;
      for (double& x : p) sum += (x = std::exp(x - max));
      for (int c = 0; c < D; ++c) {
        double acc = 0.0;
        for (int t = 0; t < n; ++t)
          acc += p[static_cast<size_t>(t)] * v[static_cast<size_t>(t) * D + c];
        out[h * D + c] = static_cast<float>(acc / sum);
      }
    }
  }
}

}  // namespace innerq::attn
