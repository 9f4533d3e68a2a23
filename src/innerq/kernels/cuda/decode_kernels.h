// innerq/kernels/cuda/decode_kernels.h — CUDA decode attention over the
// canonical cache layouts (group_format.h, tile_format.h, kv/layer_caches.h),
// flash-decoding style: the tokens of every (sequence, KV head) are cut into
// splits, one thread block per split computes a partial softmax and p·V for
// all query heads of the KV group, and a merge kernel combines the splits.
//
// A split is either a *middle chunk* — up to `chunk_tokens` consecutive tokens
// whose K and V are both in the layout's bulk form (quantized middle, or the
// plain f16 cache) — or an *edge chunk* — up to `chunk_tokens` of the
// remaining tokens (sink, and the tail where K or V is still in a
// high-precision window), read token by token.
//
// Plain C++ may include this header: it needs only the CUDA runtime API types.
// Launchers throw innerq::Error for unsupported shapes or bit widths (naming
// the value and the supported set) and return the CUDA error of the launch.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#if defined(__CUDACC__)
#define INNERQ_HD __host__ __device__
#else
#define INNERQ_HD
#endif

namespace innerq::cuda {

inline constexpr int kDecodeThreads = 128;  // threads per split block
inline constexpr int kMaxQueryHeadsPerKv = 8;

// Token ranges of one (sequence, KV head), the same for every KV head.
//   middle: [n_sink, n_sink + n_bulk), where K and V are both in bulk form;
//           chunk i holds tokens [n_sink + i·chunk, +mid_length(i)), the last
//           chunk possibly shorter (n_bulk is a multiple of the layout's
//           granule: G for quantized layouts, 32 for f16)
//   edge:   [0, n_sink) then [n_sink + n_bulk, n_tokens), in chunks of `chunk`
struct ChunkPlan {
  int n_sink;
  int n_bulk;
  int n_tokens;
  int chunk;

  INNERQ_HD int mid_chunks() const { return (n_bulk + chunk - 1) / chunk; }
  INNERQ_HD int mid_length(int i) const {
    return n_bulk - i * chunk < chunk ? n_bulk - i * chunk : chunk;
  }
  INNERQ_HD int tail_begin() const { return n_sink + n_bulk; }
  INNERQ_HD int edge_tokens() const { return n_tokens - n_bulk; }
  INNERQ_HD int edge_chunks() const { return (edge_tokens() + chunk - 1) / chunk; }
  INNERQ_HD int splits() const { return mid_chunks() + edge_chunks(); }
  INNERQ_HD int edge_token(int e) const { return e < n_sink ? e : tail_begin() + (e - n_sink); }
};

// n_bulk_max: how far from n_sink both K and V are in bulk form; rounded
// down to `granule`.
INNERQ_HD inline ChunkPlan make_chunk_plan(int n_sink, int n_bulk_max, int n_tokens, int chunk,
                                           int granule) {
  return {n_sink, n_bulk_max / granule * granule, n_tokens, chunk};
}

// ---------------------------------------------------------------------------
// Per-sequence device views. Every region holds all KV heads, head h at
// base + h·stride (strides in elements of the pointer type).
// ---------------------------------------------------------------------------

// f16 cache: K in 16-token tiles transposed to [tile][D][16], V row-major.
struct F16SeqView {
  const uint16_t* k_tiles;  // [H][k_stride]: [ceil(n/16)][D][16]
  const uint16_t* v_rows;   // [H][v_stride]: [n][D]
  size_t k_stride, v_stride;
  int n_tokens;
};

inline constexpr int kF16Granule = 32;

INNERQ_HD inline ChunkPlan plan_of(const F16SeqView& s, int chunk) {
  return make_chunk_plan(0, s.n_tokens, s.n_tokens, chunk, kF16Granule);
}

// KIVI cache (asymmetric, b = bits for K and V, groups of G):
//   K: tokens [0, k_quant) in G-token blocks of D channel records; the rest in
//      the f16 residual. V: tokens [0, v_quant) as per-token rows of D/G
//      records; the rest in the f16 residual.
struct KiviSeqView {
  const uint8_t* k_blocks;  // [H][k_stride bytes]: [k_quant/G][D records]
  const uint8_t* v_rows;    // [H][v_stride bytes]: [v_quant][D/G records]
  const uint16_t* k_res;    // [H][k_res_stride]: [n − k_quant][D]
  const uint16_t* v_res;    // [H][v_res_stride]: [n − v_quant][D]
  size_t k_stride, v_stride, k_res_stride, v_res_stride;
  int n_tokens, k_quant, v_quant;
};

INNERQ_HD inline ChunkPlan plan_of(const KiviSeqView& s, int chunk, int group) {
  return make_chunk_plan(0, s.k_quant < s.v_quant ? s.k_quant : s.v_quant, s.n_tokens, chunk,
                         group);
}

// InnerQ cache. Token t < n_sink: sinks. K: [n_sink, n_sink + k_mid) in
// tiles (keys divided by key_norm), then k_recent f16 rows. V: [n_sink,
// n_sink + v_mid) in G-token blocks of D/16 channel tiles, then v_recent rows.
struct InnerQSeqView {
  const uint16_t* k_sink;    // [H][sink_stride]: [n_sink][D]
  const uint16_t* v_sink;    // [H][sink_stride]: [n_sink][D]
  const uint8_t* k_tiles;    // [H][k_tiles_stride bytes]: [ceil(k_mid/16)][K tile]
  const uint8_t* v_blocks;   // [H][v_blocks_stride bytes]: [v_mid/G][D/16][V tile]
  const uint16_t* k_recent;  // [H][k_recent_stride]: [n − n_sink − k_mid][D]
  const uint16_t* v_recent;  // [H][v_recent_stride]: [n − n_sink − v_mid][D]
  const float* key_norm;     // [H][D]
  size_t sink_stride, k_tiles_stride, v_blocks_stride, k_recent_stride, v_recent_stride;
  int n_tokens, n_sink, k_mid, v_mid;
};

INNERQ_HD inline ChunkPlan plan_of(const InnerQSeqView& s, int chunk, int group) {
  return make_chunk_plan(s.n_sink, s.k_mid < s.v_mid ? s.k_mid : s.v_mid, s.n_tokens, chunk, group);
}

// ---------------------------------------------------------------------------
// Launch parameters shared by every layout.
// ---------------------------------------------------------------------------
struct DecodeShape {
  int n_seqs;
  int n_kv_heads;
  int n_heads;  // query heads per sequence; a multiple of n_kv_heads
  int head_dim;
};

struct DecodeWork {
  const float* q;     // [n_seqs][n_heads][D] post-RoPE queries
  float* out;         // [n_seqs][n_heads][D]
  float* partial_o;   // [n_seqs][n_heads][max_splits][D] workspace
  float* partial_ml;  // [n_seqs][n_heads][max_splits][2] workspace: max (log2), sum
  int chunk_tokens;   // 128, 256 or 512
  int max_splits;     // ≥ plan_of(seq, chunk_tokens, ...).splits() of every seq
};

struct F16DecodeParams {
  const F16SeqView* seqs;  // device array [n_seqs]
  DecodeShape shape;
  DecodeWork work;
};

struct KiviDecodeParams {
  const KiviSeqView* seqs;
  DecodeShape shape;
  DecodeWork work;
  int bits;   // 2, 3, 4, 8
  int group;  // 32, 64, 128
};

struct InnerQDecodeParams {
  const InnerQSeqView* seqs;
  DecodeShape shape;
  DecodeWork work;
  int k_bits, v_bits;  // 2, 3, 4, 8
  int group;           // 32, 64, 128: V's token groups (and K's channel groups)
  bool k_has_zero, v_has_zero;
  int k_group = 0;  // 32, 64, 128: K's channel groups; 0: the same as group

  INNERQ_HD int key_group() const { return k_group > 0 ? k_group : group; }
};

// Workspace floats for partial_o and partial_ml.
inline size_t partial_o_floats(const DecodeShape& s, int max_splits) {
  return static_cast<size_t>(s.n_seqs) * s.n_heads * max_splits * s.head_dim;
}
inline size_t partial_ml_floats(const DecodeShape& s, int max_splits) {
  return static_cast<size_t>(s.n_seqs) * s.n_heads * max_splits * 2;
}

// Chunk length that gives every SM a few blocks: the longest of 512, 256,
// 128 that still yields ≥ 4·sm_count blocks (128 if none does).
int choose_chunk_tokens(int max_tokens, int n_kv_heads, int n_seqs, int sm_count);

// Split kernels, then the merge, on `stream`. Throw innerq::Error on an
// unsupported head_dim (64, 128), query heads per KV head (1..8), bit width,
// group or chunk length.
cudaError_t launch_decode_f16(const F16DecodeParams& params, cudaStream_t stream);
cudaError_t launch_decode_kivi(const KiviDecodeParams& params, cudaStream_t stream);
cudaError_t launch_decode_innerq(const InnerQDecodeParams& params, cudaStream_t stream);

}  // namespace innerq::cuda
