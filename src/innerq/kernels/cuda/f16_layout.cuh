// innerq/kernels/cuda/f16_layout.cuh — decode attention over the plain f16
// cache, the baseline that bounds what reading fewer bytes can buy.
//
// Same split/merge skeleton and the same care as the quantized kernels:
//   scores: K tiles are [tile][D][16], so a thread owns a pair of tokens and
//           reads one half2 per channel — 8 threads cover a tile row of 32
//           bytes, a warp four tiles — with lanes over tokens and no
//           reduction across lanes unless channels are split;
//   p·V:    V is row-major, a thread owns a channel pair (half2 loads, a warp
//           reads 128 contiguous bytes of a row) and strides over tokens.
#pragma once

#include <cuda_fp16.h>

#include "innerq/kernels/cuda/decode_split.cuh"
#include "innerq/kernels/cuda/device_format.cuh"

namespace innerq::cuda {

struct F16Layout {
  using Params = F16DecodeParams;
  static constexpr const char* kName = "f16";

  INNERQ_HD static size_t scratch_bytes(const Params&, int) { return 0; }

  F16SeqView view;
  int head_dim;

  __device__ F16Layout(const Params& p, const F16SeqView& v)
      : view(v), head_dim(p.shape.head_dim) {}

  __device__ ChunkPlan plan(int chunk) const { return plan_of(view, chunk); }

  __device__ float edge_k(int h, int t, int c) const {
    const size_t i =
        (static_cast<size_t>(t / kTileRows) * head_dim + c) * kTileRows + t % kTileRows;
    return half_bits_to_float(view.k_tiles[h * view.k_stride + i]);
  }
  __device__ float edge_v(int h, int t, int c) const {
    return half_bits_to_float(
        view.v_rows[h * view.v_stride + static_cast<size_t>(t) * head_dim + c]);
  }

  // Thread item (token pair, channel part): chunk/2·P items, P = max(1, 256/chunk)
  // adjacent lanes per pair, reduced with shuffles; pairs past n stay idle.
  template <int D, int NQ>
  __device__ void mid_scores(const SplitBlock<D, NQ>& blk, int t0, int n) const {
    const int n_parts = blk.chunk >= 256 ? 1 : 256 / blk.chunk;
    const int items = blk.chunk / 2 * n_parts;
    const auto* tiles = reinterpret_cast<const __half2*>(
        view.k_tiles + blk.kv_head * view.k_stride + static_cast<size_t>(t0) * D);
    for (int item = threadIdx.x; item < items; item += kDecodeThreads) {
      const int pair = item / n_parts, part = item % n_parts;
      // Tile pair/8, tokens 2·(pair mod 8) and +1: half2 index (tile·D + c)·8 + pair mod 8.
      const __half2* tile = tiles + static_cast<size_t>(pair / 8) * D * 8 + pair % 8;
      const bool active = 2 * pair < n;
      float acc[NQ][2] = {};
#pragma unroll 8
      for (int c = part; active && c < D; c += n_parts) {
        const float2 k = __half22float2(__ldg(tile + c * 8));
#pragma unroll
        for (int j = 0; j < NQ; ++j) {
          acc[j][0] += blk.qf[j * D + c] * k.x;
          acc[j][1] += blk.qf[j * D + c] * k.y;
        }
      }
      for (int o = 1; o < n_parts; o *= 2) {
#pragma unroll
        for (int j = 0; j < NQ; ++j) {
          acc[j][0] += __shfl_xor_sync(0xffffffffu, acc[j][0], o);
          acc[j][1] += __shfl_xor_sync(0xffffffffu, acc[j][1], o);
        }
      }
      if (active && part == 0) {
#pragma unroll
        for (int j = 0; j < NQ; ++j) {
          blk.p[j * blk.chunk + 2 * pair] = acc[j][0];
          blk.p[j * blk.chunk + 2 * pair + 1] = acc[j][1];
        }
      }
    }
  }

  // Thread (channel pair cp, part): channels 2·cp, 2·cp+1, tokens part, part + kParts, ...
  template <int D, int NQ>
  __device__ void mid_pv(const SplitBlock<D, NQ>& blk, int t0, int n) const {
    constexpr int kParts = kDecodeThreads / (D / 2);
    const int cp = threadIdx.x % (D / 2), part = threadIdx.x / (D / 2);
    const auto* rows = reinterpret_cast<const __half2*>(view.v_rows + blk.kv_head * view.v_stride +
                                                        static_cast<size_t>(t0) * D);
    float acc[NQ][2] = {};
#pragma unroll 4
    for (int t = part; t < n; t += kParts) {
      const float2 v = __half22float2(__ldg(rows + static_cast<size_t>(t) * (D / 2) + cp));
#pragma unroll
      for (int j = 0; j < NQ; ++j) {
        acc[j][0] += blk.p[j * blk.chunk + t] * v.x;
        acc[j][1] += blk.p[j * blk.chunk + t] * v.y;
      }
    }
    add_parts_in_order(part, kParts, [&] {
#pragma unroll
      for (int j = 0; j < NQ; ++j) {
        blk.out[j * D + 2 * cp] += acc[j][0];
        blk.out[j * D + 2 * cp + 1] += acc[j][1];
      }
    });
  }
};

}  // namespace innerq::cuda
