// innerq/kernels/cuda/innerq_layout.cuh — fused decode attention over an
// InnerQ cache: sink + quantized middle + recent, one softmax.
//
// Middle chunk, scores (K tiles, groups along head_dim): the block first
// quantizes q'_j = q_j·f (key normalization) to int8 per 32 channels,
// q'_i ≈ a_c·qi_i. Thread (tile, row) loads the row's D·b/32 code words once
// — 16 threads read 16 consecutive words of a tile — and for every query head
// of the KV group takes, per 32-channel chunk c of group g,
//   Σ_{i∈c} q'_i·x̂_i ≈ a_c·(s_g·Σ qi_i·u_i + z_g·Σ qi_i)
// with the integer dot on raw codes (dp4a) and dequantization after it: one
// scale load serves 32 multiply-adds per head, Σ qi is computed once.
//
// Middle chunk, p·V (V blocks, groups along tokens): p_j is quantized to u8
// per 32 tokens, p_t ≈ b_c·pu_t. Thread (channel) reads its row of each
// G-token block's channel tile and takes
//   Σ_{t∈c} p_t·x̂_{t} ≈ b_c·(s·Σ pu_t·u_t + z·Σ pu_t).
//
// Edge tokens (sink, tail, K-only-quantized tokens) are read one value at a
// time through edge_k / edge_v.
#pragma once

#include "innerq/kernels/cuda/decode_split.cuh"
#include "innerq/kernels/cuda/device_format.cuh"
#include "innerq/kernels/tile_format.h"

namespace innerq::cuda {

struct InnerQLayout {
  using Params = InnerQDecodeParams;
  static constexpr const char* kName = "innerq";

  // Scratch: int8 query quads, per-chunk query scale and Σ qi; u8 p, per-chunk
  // p scale and Σ pu.
  struct Scratch {
    int nq, head_dim, chunk;
    INNERQ_HD size_t qi_offset() const { return 0; }  // int8 [NQ][D]
    INNERQ_HD size_t qscale_offset() const {          // f32 [NQ][D/32]
      return SplitSmem::align16(static_cast<size_t>(nq) * head_dim);
    }
    INNERQ_HD size_t qsum_offset() const {  // f32 [NQ][D/32]
      return qscale_offset() + SplitSmem::align16(sizeof(float) * nq * head_dim / 32);
    }
    INNERQ_HD size_t pu_offset() const {  // u8 [NQ][chunk]
      return qsum_offset() + SplitSmem::align16(sizeof(float) * nq * head_dim / 32);
    }
    INNERQ_HD size_t pscale_offset() const {  // f32 [NQ][chunk/32]
      return pu_offset() + SplitSmem::align16(static_cast<size_t>(nq) * chunk);
    }
    INNERQ_HD size_t psum_offset() const {  // f32 [NQ][chunk/32]
      return pscale_offset() + SplitSmem::align16(sizeof(float) * nq * chunk / 32);
    }
    INNERQ_HD size_t bytes() const {
      return psum_offset() + SplitSmem::align16(sizeof(float) * nq * chunk / 32);
    }
  };

  INNERQ_HD static size_t scratch_bytes(const Params& p, int nq) {
    return Scratch{nq, p.shape.head_dim, p.work.chunk_tokens}.bytes();
  }

  InnerQSeqView view;
  int head_dim;
  TileFormat k_fmt, v_fmt;

  __device__ InnerQLayout(const Params& p, const InnerQSeqView& v)
      : view(v),
        head_dim(p.shape.head_dim),
        k_fmt{p.k_bits, p.key_group(), p.shape.head_dim / p.key_group(), p.k_has_zero},
        v_fmt{p.v_bits, p.group, 1, p.v_has_zero} {}

  __device__ ChunkPlan plan(int chunk) const { return plan_of(view, chunk, v_fmt.group); }

  // ---- edge readers: one value of token t, channel c, KV head h ----------
  __device__ float edge_k(int h, int t, int c) const {
    const int D = head_dim;
    if (t < view.n_sink) return half_bits_to_float(view.k_sink[h * view.sink_stride + t * D + c]);
    const int m = t - view.n_sink;
    if (m >= view.k_mid) {
      return half_bits_to_float(
          view.k_recent[h * view.k_recent_stride + static_cast<size_t>(m - view.k_mid) * D + c]);
    }
    const uint8_t* tile = view.k_tiles + h * view.k_tiles_stride + (m / kTileRows) * k_fmt.bytes();
    const int row = m % kTileRows, g = c / k_fmt.group;
    const auto* words = reinterpret_cast<const uint32_t*>(tile) +
                        static_cast<size_t>(g) * k_fmt.words_per_group() * kTileRows;
    const int u = tile_read_code(words, k_fmt.bits, row, c % k_fmt.group);
    const DeviceMeta meta = tile_meta(k_fmt, tile, g, row);
    return (meta.scale * static_cast<float>(u) + meta.zero) * view.key_norm[h * D + c];
  }

  __device__ float edge_v(int h, int t, int c) const {
    const int D = head_dim;
    if (t < view.n_sink) return half_bits_to_float(view.v_sink[h * view.sink_stride + t * D + c]);
    const int m = t - view.n_sink;
    if (m >= view.v_mid) {
      return half_bits_to_float(
          view.v_recent[h * view.v_recent_stride + static_cast<size_t>(m - view.v_mid) * D + c]);
    }
    const int G = v_fmt.group;
    const uint8_t* tile =
        view.v_blocks + h * view.v_blocks_stride +
        (static_cast<size_t>(m / G) * (D / kTileRows) + c / kTileRows) * v_fmt.bytes();
    const int row = c % kTileRows;
    const int u = tile_read_code(reinterpret_cast<const uint32_t*>(tile), v_fmt.bits, row, m % G);
    const DeviceMeta meta = tile_meta(v_fmt, tile, 0, row);
    return meta.scale * static_cast<float>(u) + meta.zero;
  }

  __device__ static DeviceMeta tile_meta(const TileFormat& f, const uint8_t* tile, int g, int row) {
    const auto* scales = reinterpret_cast<const uint16_t*>(tile + f.scales_offset());
    const auto* zeros = reinterpret_cast<const uint16_t*>(tile + f.zeros_offset());
    const int i = g * kTileRows + row;
    return decode_meta_device(scales[i], f.has_zero ? zeros[i] : uint16_t{0}, f.has_zero, f.bits);
  }

  // ---- middle chunk: scores ------------------------------------------------
  template <int D, int NQ>
  __device__ void mid_scores(const SplitBlock<D, NQ>& blk, int m0, int n) const {
    switch (k_fmt.bits) {
      case 2:
        return mid_scores_bits<D, NQ, 2>(blk, m0, n);
      case 3:
        return mid_scores_bits<D, NQ, 3>(blk, m0, n);
      case 4:
        return mid_scores_bits<D, NQ, 4>(blk, m0, n);
      default:
        return mid_scores_bits<D, NQ, 8>(blk, m0, n);
    }
  }

  // m0: middle index of the chunk's first token (a multiple of the chunk);
  // n: its tokens (a multiple of G).
  template <int D, int NQ, int KB>
  __device__ void mid_scores_bits(const SplitBlock<D, NQ>& blk, int m0, int n) const {
    constexpr int kChunks = D / kChunk;
    const Scratch sc{NQ, D, blk.chunk};
    auto* qi = reinterpret_cast<int8_t*>(blk.scratch + sc.qi_offset());
    auto* qscale = reinterpret_cast<float*>(blk.scratch + sc.qscale_offset());
    auto* qsum = reinterpret_cast<float*>(blk.scratch + sc.qsum_offset());
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    // q' = q·f → int8 per (head j, 32-channel chunk): one warp per pair.
    const float* f = view.key_norm + blk.kv_head * D;
    for (int pair = warp; pair < NQ * kChunks; pair += kWarps) {
      const int j = pair / kChunks, c = (pair % kChunks) * kChunk + lane;
      const float x = blk.qf[j * D + c] * f[c];
      const float amax = warp_max(fabsf(x));
      const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      const int v = __float2int_rn(x * inv);
      qi[j * D + c] = static_cast<int8_t>(v);
      const int sum = warp_sum(v);
      if (lane == 0) {
        qscale[pair] = amax / 127.0f;
        qsum[pair] = static_cast<float>(sum);
      }
    }
    __syncthreads();

    // Thread (tile lt, row): 8 tiles = 128 tokens per pass.
    const size_t tile_bytes = k_fmt.bytes();
    const uint8_t* tiles =
        view.k_tiles + blk.kv_head * view.k_tiles_stride + (m0 / kTileRows) * tile_bytes;
    const int row = threadIdx.x % kTileRows;
    for (int lt = threadIdx.x / kTileRows; lt < n / kTileRows; lt += kDecodeThreads / kTileRows) {
      const uint8_t* tile = tiles + lt * tile_bytes;
      const auto* tile_words = reinterpret_cast<const uint32_t*>(tile);
      uint32_t words[kChunks][KB];
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
#pragma unroll
        for (int b = 0; b < KB; ++b)
          words[c][b] = __ldg(tile_words + (c * KB + b) * kTileRows + row);
      }
      float acc[NQ] = {};
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        const DeviceMeta meta = tile_meta(k_fmt, tile, c * kChunk / k_fmt.group, row);
        uint32_t quads[8];
        unpack_chunk<KB>(words[c], quads);
#pragma unroll
        for (int j = 0; j < NQ; ++j) {
          const auto* q4 = reinterpret_cast<const uint4*>(qi + j * D + c * kChunk);
          const uint4 lo = q4[0], hi = q4[1];
          int dot = dot4_s8u8(lo.x, quads[0], 0);
          dot = dot4_s8u8(lo.y, quads[1], dot);
          dot = dot4_s8u8(lo.z, quads[2], dot);
          dot = dot4_s8u8(lo.w, quads[3], dot);
          dot = dot4_s8u8(hi.x, quads[4], dot);
          dot = dot4_s8u8(hi.y, quads[5], dot);
          dot = dot4_s8u8(hi.z, quads[6], dot);
          dot = dot4_s8u8(hi.w, quads[7], dot);
          const int i = j * kChunks + c;
          acc[j] += qscale[i] * (meta.scale * static_cast<float>(dot) + meta.zero * qsum[i]);
        }
      }
#pragma unroll
      for (int j = 0; j < NQ; ++j) blk.p[j * blk.chunk + lt * kTileRows + row] = acc[j];
    }
  }

  // ---- middle chunk: p·V ---------------------------------------------------
  template <int D, int NQ>
  __device__ void mid_pv(const SplitBlock<D, NQ>& blk, int m0, int n) const {
    switch (v_fmt.bits) {
      case 2:
        return mid_pv_bits<D, NQ, 2>(blk, m0, n);
      case 3:
        return mid_pv_bits<D, NQ, 3>(blk, m0, n);
      case 4:
        return mid_pv_bits<D, NQ, 4>(blk, m0, n);
      default:
        return mid_pv_bits<D, NQ, 8>(blk, m0, n);
    }
  }

  template <int D, int NQ, int VB>
  __device__ void mid_pv_bits(const SplitBlock<D, NQ>& blk, int m0, int n) const {
    const Scratch sc{NQ, D, blk.chunk};
    auto* pu = blk.scratch + sc.pu_offset();
    auto* pscale = reinterpret_cast<float*>(blk.scratch + sc.pscale_offset());
    auto* psum = reinterpret_cast<float*>(blk.scratch + sc.psum_offset());
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int chunks = blk.chunk / kChunk, used = n / kChunk;

    // p → u8 per (head j, 32 tokens): one warp per pair, lane = token.
    for (int pair = warp; pair < NQ * used; pair += kWarps) {
      const int j = pair / used, ch = pair % used, t = ch * kChunk + lane;
      const float x = blk.p[j * blk.chunk + t];
      const float pmax = warp_max(x);
      const float inv = pmax > 0.0f ? 255.0f / pmax : 0.0f;
      const unsigned v = min(__float2uint_rn(x * inv), 255u);
      pu[j * blk.chunk + t] = static_cast<unsigned char>(v);
      const int sum = warp_sum(static_cast<int>(v));
      if (lane == 0) {
        pscale[j * chunks + ch] = pmax / 255.0f;
        psum[j * chunks + ch] = static_cast<float>(sum);
      }
    }
    __syncthreads();

    // Thread (channel c, part): V blocks part, part + kParts, ... of the
    // chunk, each block's 32-token chunks in order: `items` (block, chunk)
    // pairs, kPvBatch of them loaded before the first is used so that their
    // loads are in flight together.
    constexpr int kParts = kDecodeThreads / D;
    constexpr int kPvBatch = 4;
    const int c = threadIdx.x % D, part = threadIdx.x / D, row = c % kTileRows;
    const int G = v_fmt.group, group_chunks = G / kChunk, n_blocks = n / G;
    const int items = n_blocks > part ? (n_blocks - part + kParts - 1) / kParts * group_chunks : 0;
    const size_t tile_bytes = v_fmt.bytes();
    const uint8_t* blocks = view.v_blocks + blk.kv_head * view.v_blocks_stride +
                            static_cast<size_t>(m0 / G) * (D / kTileRows) * tile_bytes;
    float acc[NQ] = {};
    for (int k0 = 0; k0 < items; k0 += kPvBatch) {  // warp-uniform
      uint32_t words[kPvBatch][VB];
      DeviceMeta meta[kPvBatch];
      int ch[kPvBatch];  // 32-token chunk within the split
#pragma unroll
      for (int u = 0; u < kPvBatch; ++u) {
        const int k = min(k0 + u, items - 1);  // past items: a valid chunk, unused
        const int b = part + k / group_chunks * kParts, gc = k % group_chunks;
        const uint8_t* tile =
            blocks + (static_cast<size_t>(b) * (D / kTileRows) + c / kTileRows) * tile_bytes;
        const auto* tile_words = reinterpret_cast<const uint32_t*>(tile);
        meta[u] = tile_meta(v_fmt, tile, 0, row);
#pragma unroll
        for (int w = 0; w < VB; ++w) {
          words[u][w] = __ldg(tile_words + (gc * VB + w) * kTileRows + row);
        }
        ch[u] = b * group_chunks + gc;
      }
#pragma unroll
      for (int u = 0; u < kPvBatch; ++u) {
        if (k0 + u >= items) break;
        uint32_t quads[8];
        unpack_chunk<VB>(words[u], quads);
#pragma unroll
        for (int j = 0; j < NQ; ++j) {
          const auto* p4 = reinterpret_cast<const uint4*>(pu + j * blk.chunk + ch[u] * kChunk);
          const uint4 lo = p4[0], hi = p4[1];
          unsigned dot = dot4_u8u8(quads[0], lo.x, 0u);
          dot = dot4_u8u8(quads[1], lo.y, dot);
          dot = dot4_u8u8(quads[2], lo.z, dot);
          dot = dot4_u8u8(quads[3], lo.w, dot);
          dot = dot4_u8u8(quads[4], hi.x, dot);
          dot = dot4_u8u8(quads[5], hi.y, dot);
          dot = dot4_u8u8(quads[6], hi.z, dot);
          dot = dot4_u8u8(quads[7], hi.w, dot);
          const int i = j * chunks + ch[u];
          acc[j] += pscale[i] * (meta[u].scale * static_cast<float>(dot) + meta[u].zero * psum[i]);
        }
      }
    }
    add_parts_in_order(part, kParts, [&] {
#pragma unroll
      for (int j = 0; j < NQ; ++j) blk.out[j * D + c] += acc[j];
    });
  }
};

}  // namespace innerq::cuda
