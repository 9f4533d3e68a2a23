// innerq/kernels/cuda/kivi_layout.cuh — decode attention over a KIVI
// (outer-grouped) cache, the baseline InnerQ is measured against.
//
// Groups lie across the summed dimension, so every element of a dot product
// has its own (scale, zero) and dequantization sits inside the inner loop:
//   score_t = Σ_c q_c·(s_{c}·u_{t,c} + z_{c})      (K: one group per channel)
//   o_c     = Σ_t p_t·(s_{t}·u_{t,c} + z_{t})      (V: one group per token)
// The kernel gives this layout the same care as the InnerQ one: the split's
// codes are staged in shared memory with coalesced 16-byte loads, codes are
// unpacked four at a time with whole-word shifts and converted to float with
// a byte permute (no integer conversion instruction), and all query heads of
// the KV group share each unpacked code.
#pragma once

#include "innerq/kernels/cuda/decode_split.cuh"
#include "innerq/kernels/cuda/device_format.cuh"

namespace innerq::cuda {

// Stages `bytes` (a multiple of 16, 16-byte aligned) from global to shared.
__device__ __forceinline__ void stage_to_shared(const uint8_t* src, unsigned char* dst,
                                                size_t bytes) {
  const auto* s = reinterpret_cast<const uint4*>(src);
  auto* d = reinterpret_cast<uint4*>(dst);
  for (size_t i = threadIdx.x; i < bytes / 16; i += kDecodeThreads) d[i] = __ldg(s + i);
}

struct KiviLayout {
  using Params = KiviDecodeParams;
  static constexpr const char* kName = "kivi";

  // Scratch: the split's K blocks, then (reused) its V rows; both are
  // chunk·D·(b/8 + 4/G) bytes.
  INNERQ_HD static size_t scratch_bytes(const Params& p, int) {
    return static_cast<size_t>(p.work.chunk_tokens) * p.shape.head_dim / p.group *
           group_record_bytes(p.bits, p.group, QuantMode::kAsymmetric);
  }

  KiviSeqView view;
  int head_dim, bits, group;
  size_t record_bytes;

  __device__ KiviLayout(const Params& p, const KiviSeqView& v)
      : view(v),
        head_dim(p.shape.head_dim),
        bits(p.bits),
        group(p.group),
        record_bytes(group_record_bytes(p.bits, p.group, QuantMode::kAsymmetric)) {}

  __device__ DeviceMeta meta_of(const uint8_t* record) const {
    return record_meta_device(record, bits, group, true);
  }

  __device__ ChunkPlan plan(int chunk) const { return plan_of(view, chunk, group); }

  // ---- edge readers --------------------------------------------------------
  __device__ float edge_k(int h, int t, int c) const {
    if (t >= view.k_quant) {
      return half_bits_to_float(
          view.k_res[h * view.k_res_stride + static_cast<size_t>(t - view.k_quant) * head_dim + c]);
    }
    const uint8_t* record = view.k_blocks + h * view.k_stride +
                            (static_cast<size_t>(t / group) * head_dim + c) * record_bytes;
    const DeviceMeta meta = meta_of(record);
    return meta.scale * static_cast<float>(device_read_code(record, bits, t % group)) + meta.zero;
  }

  __device__ float edge_v(int h, int t, int c) const {
    if (t >= view.v_quant) {
      return half_bits_to_float(
          view.v_res[h * view.v_res_stride + static_cast<size_t>(t - view.v_quant) * head_dim + c]);
    }
    const uint8_t* record =
        view.v_rows + h * view.v_stride +
        (static_cast<size_t>(t) * (head_dim / group) + c / group) * record_bytes;
    const DeviceMeta meta = meta_of(record);
    return meta.scale * static_cast<float>(device_read_code(record, bits, c % group)) + meta.zero;
  }

  // ---- middle chunk: scores ------------------------------------------------
  template <int D, int NQ>
  __device__ void mid_scores(const SplitBlock<D, NQ>& blk, int t0, int n) const {
    switch (bits) {
      case 2:
        return mid_scores_bits<D, NQ, 2>(blk, t0, n);
      case 3:
        return mid_scores_bits<D, NQ, 3>(blk, t0, n);
      case 4:
        return mid_scores_bits<D, NQ, 4>(blk, t0, n);
      default:
        return mid_scores_bits<D, NQ, 8>(blk, t0, n);
    }
  }

  // Thread (token quad, channel part): 4 consecutive tokens of one block,
  // channels part, part + P, ...; P adjacent lanes share a quad and reduce
  // with shuffles. chunk/4·P = kDecodeThreads; quads past n stay idle.
  template <int D, int NQ, int B>
  __device__ void mid_scores_bits(const SplitBlock<D, NQ>& blk, int t0, int n) const {
    const size_t block_bytes = static_cast<size_t>(D) * record_bytes;
    stage_to_shared(view.k_blocks + blk.kv_head * view.k_stride + (t0 / group) * block_bytes,
                    blk.scratch, n / group * block_bytes);
    __syncthreads();

    const int n_parts = 4 * kDecodeThreads / blk.chunk;
    const int tq = threadIdx.x / n_parts, part = threadIdx.x % n_parts;
    const int quads_per_block = group / 4;
    const int b = tq / quads_per_block, gc = tq % quads_per_block / 8, m = tq % 8;
    const unsigned char* block = blk.scratch + b * block_bytes;
    const bool active = 4 * tq < n;
    float acc[NQ][4] = {};
    for (int c = part; active && c < D; c += n_parts) {
      const uint8_t* record = block + c * record_bytes;
      const uint32_t quad = chunk_quad<B>(reinterpret_cast<const uint32_t*>(record) + gc * B, m);
      const DeviceMeta meta = meta_of(record);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float x = meta.scale * quad_byte_to_float(quad, e) + meta.zero;
#pragma unroll
        for (int j = 0; j < NQ; ++j) acc[j][e] += blk.qf[j * D + c] * x;
      }
    }
    for (int o = 1; o < n_parts; o *= 2) {
#pragma unroll
      for (int j = 0; j < NQ; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] += __shfl_xor_sync(0xffffffffu, acc[j][e], o);
      }
    }
    if (active && part == 0) {
#pragma unroll
      for (int j = 0; j < NQ; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) blk.p[j * blk.chunk + 4 * tq + e] = acc[j][e];
      }
    }
  }

  // ---- middle chunk: p·V ---------------------------------------------------
  template <int D, int NQ>
  __device__ void mid_pv(const SplitBlock<D, NQ>& blk, int t0, int n) const {
    switch (bits) {
      case 2:
        return mid_pv_bits<D, NQ, 2>(blk, t0, n);
      case 3:
        return mid_pv_bits<D, NQ, 3>(blk, t0, n);
      case 4:
        return mid_pv_bits<D, NQ, 4>(blk, t0, n);
      default:
        return mid_pv_bits<D, NQ, 8>(blk, t0, n);
    }
  }

  // Thread (channel quad, part): channels 4·cq..4·cq+3, tokens part, part +
  // kParts, ...
  template <int D, int NQ, int B>
  __device__ void mid_pv_bits(const SplitBlock<D, NQ>& blk, int t0, int n) const {
    const size_t row_bytes = static_cast<size_t>(D / group) * record_bytes;
    stage_to_shared(view.v_rows + blk.kv_head * view.v_stride + t0 * row_bytes, blk.scratch,
                    n * row_bytes);
    __syncthreads();

    constexpr int kParts = kDecodeThreads / (D / 4);
    const int cq = threadIdx.x % (D / 4), part = threadIdx.x / (D / 4);
    const int quads_per_group = group / 4;
    const int g = cq / quads_per_group, gc = cq % quads_per_group / 8, m = cq % 8;
    float acc[NQ][4] = {};
    for (int t = part; t < n; t += kParts) {
      const unsigned char* record = blk.scratch + t * row_bytes + g * record_bytes;
      const uint32_t quad = chunk_quad<B>(reinterpret_cast<const uint32_t*>(record) + gc * B, m);
      const DeviceMeta meta = meta_of(record);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float x = meta.scale * quad_byte_to_float(quad, e) + meta.zero;
#pragma unroll
        for (int j = 0; j < NQ; ++j) acc[j][e] += blk.p[j * blk.chunk + t] * x;
      }
    }
    add_parts_in_order(part, kParts, [&] {
#pragma unroll
      for (int j = 0; j < NQ; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) blk.out[j * D + 4 * cq + e] += acc[j][e];
      }
    });
  }
};

}  // namespace innerq::cuda
