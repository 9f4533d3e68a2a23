// innerq/kernels/attn_kernels.h — the per-region kernels of decode attention.
//
// Every kernel serves the nq query heads that share one KV head (GQA), so each
// cached byte is loaded once per KV head. K kernels write raw scores
// s[h·stride + t] = q_h · k_t for the region's tokens t = 0..n−1 (the caller
// folds 1/sqrt(D) and, for InnerQ's middle, the key-normalization factors into
// q). V kernels accumulate o[h·D + c] += Σ_t p[h·stride + t] · v_t[c].
//
// Layouts are those of the cache (kv/layer_caches.h): plain K in 16-token
// tiles transposed [tile][D][16], rows [n][D], InnerQ tiles (tile_format.h),
// KIVI blocks and rows of group records (group_format.h), llama.cpp blocks.
//
// The scalar:: functions are the references, written from the layout
// definitions; simd:: are the Highway versions (one dispatch per call). The
// InnerQ simd kernels quantize each group of the query (and each G-token
// group of p) to int8 with one f32 scale and use integer dot products on the
// raw codes (AVX-512 VNNI, AVX2/AVX-512BW maddubs, portable widening
// elsewhere), then dequantize once per group:
//   Σ_i q_i·x̂_i ≈ s·σ_q·Σ_i q8_i·u_i + z·Σ_i σ_q·q8_i.
// The query rounding adds at most (σ_q/2)·Σ_i |x̂_i| per group; tests bound
// the difference to the scalar reference by exactly that. Their int8 query
// (or weights) and its per-group scales live in caller-owned scratch of a
// bounded size per call (KernelScratch): the kernels allocate nothing.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "innerq/base/fp16.h"
#include "innerq/kernels/group_format.h"
#include "innerq/kernels/llama_blocks.h"
#include "innerq/kernels/tile_format.h"

namespace innerq::kernels {

// Bytes a buffer of KIVI records must hold after its last record: the SIMD
// unpack reads 16 bytes from the start of each 32-code chunk.
inline constexpr size_t kRecordTailPad = 16;

// nq query heads of one KV head: q [nq][head_dim].
struct QueryHeads {
  const float* q;
  int nq;
  int head_dim;
};

// Scores or softmax weights of nq heads over a region: x[h·stride + t].
struct HeadRows {
  float* x;
  size_t stride;
};
struct ConstHeadRows {
  const float* x;
  size_t stride;
};

// Scratch of one InnerQ kernel call, owned by the caller (decode attention
// keeps one per thread in attn::AttentionScratch): `bytes` bytes at `data`,
// aligned for floats, at least innerq_k_scratch_bytes / innerq_v_scratch_bytes.
struct KernelScratch {
  uint8_t* data = nullptr;
  size_t bytes = 0;
};
// Query heads an InnerQ kernel rounds to int8 at once (at most: 8 where
// the target's registers hold their accumulators, AVX-512; 4 elsewhere), and
// G-token blocks v_accumulate_innerq rounds at once: what bounds the scratch
// per call.
inline constexpr int kInnerQHeadsPerPass = 8;
inline constexpr int kInnerQBlocksPerPass = 32;
// k_scores_innerq: the int8 query of kInnerQHeadsPerPass heads
// (head_dim bytes each) and a scale and a sum per group and head (f32).
constexpr size_t innerq_k_scratch_bytes(const TileFormat& f, int head_dim) {
  return static_cast<size_t>(kInnerQHeadsPerPass) *
         (static_cast<size_t>(head_dim) + 2 * sizeof(float) * static_cast<size_t>(f.n_groups));
}
// v_accumulate_innerq: the int8 weights of kInnerQBlocksPerPass G-token
// blocks for kInnerQHeadsPerPass heads, and a scale and a sum per block.
constexpr size_t innerq_v_scratch_bytes(const TileFormat& f) {
  return static_cast<size_t>(kInnerQHeadsPerPass) * kInnerQBlocksPerPass *
         (static_cast<size_t>(f.group) + 2 * sizeof(float));
}

// softmax_partial's weights below e^kExpFloor are 0 (both versions): the
// smallest normal float is e^−87.34, and subnormal results cost the SIMD
// exp a microcode assist per lane on Intel cores.
inline constexpr float kExpFloor = -87.0f;
// e^x for softmax's x ≤ 0, exactly 0 below kExpFloor: the scalar reference
// and the SIMD tails (the vectors: kernels/exp_nonpositive-inl.h).
inline float exp_of_nonpositive(float x) {
  return x < kExpFloor ? 0.0f : std::exp(x);
}

#define INNERQ_ATTN_KERNELS                                                                       \
  /* tiles: [ceil(n/16)][D][16] */                                                                \
  void k_scores_tiles(const float* tiles, int n, const QueryHeads& q, HeadRows s);                \
  void k_scores_tiles(const f16_bits* tiles, int n, const QueryHeads& q, HeadRows s);             \
  /* rows: [n][D] */                                                                              \
  void k_scores_rows(const f16_bits* rows, int n, const QueryHeads& q, HeadRows s);               \
  /* blocks: [n][D/32] */                                                                         \
  void k_scores_blocks(const BlockQ8_0* blocks, int n, const QueryHeads& q, HeadRows s);          \
  void k_scores_blocks(const BlockQ4_0* blocks, int n, const QueryHeads& q, HeadRows s);          \
  /* InnerQ K tiles: [ceil(n/16)] tiles of f.bytes(), rows = tokens */                            \
  void k_scores_innerq(const TileFormat& f, const uint8_t* tiles, int n, const QueryHeads& q,     \
                       HeadRows s, KernelScratch scratch);                                        \
  /* KIVI K: n/G blocks, each D records of G tokens (record c = channel c) */                     \
  void k_scores_kivi(int bits, int group, const uint8_t* blocks, int n, const QueryHeads& q,      \
                     HeadRows s);                                                                 \
  /* rows: [n][D] */                                                                              \
  void v_accumulate_rows(const float* rows, int n, int nq, int head_dim, ConstHeadRows p,         \
                         float* o);                                                               \
  void v_accumulate_rows(const f16_bits* rows, int n, int nq, int head_dim, ConstHeadRows p,      \
                         float* o);                                                               \
  void v_accumulate_blocks(const BlockQ8_0* blocks, int n, int nq, int head_dim, ConstHeadRows p, \
                           float* o);                                                             \
  void v_accumulate_blocks(const BlockQ4_0* blocks, int n, int nq, int head_dim, ConstHeadRows p, \
                           float* o);                                                             \
  /* InnerQ V: n_blocks G-token blocks, each D/16 tiles of f.bytes(), rows = channels */          \
  void v_accumulate_innerq(const TileFormat& f, const uint8_t* blocks, int n_blocks, int nq,      \
                           int head_dim, ConstHeadRows p, float* o, KernelScratch scratch);       \
  /* KIVI V: n rows of D/G records along channels */                                              \
  void v_accumulate_kivi(int bits, int group, const uint8_t* rows, int n, int nq, int head_dim,   \
                         ConstHeadRows p, float* o);                                              \
  /* In place over each head's n scores: m_h = max_t s, s <- exp(s - m_h), */                     \
  /* l_h = sum_t exp(s - m_h). m, l: [nq]. */                                                     \
  void softmax_partial(HeadRows s, int n, int nq, float* m, float* l);

namespace scalar {
INNERQ_ATTN_KERNELS
}  // namespace scalar

namespace simd {
INNERQ_ATTN_KERNELS
}  // namespace simd

#undef INNERQ_ATTN_KERNELS

}  // namespace innerq::kernels
