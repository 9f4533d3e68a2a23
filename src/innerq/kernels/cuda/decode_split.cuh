// innerq/kernels/cuda/decode_split.cuh — the flash-decoding skeleton every
// layout plugs into: one block per (split, KV head, sequence) computes, for
// the NQ query heads of the KV group,
//
//   scores s[j][t] = log2(e)/sqrt(D) · q_j·k_t     over the split's tokens t
//   m_j = max_t s, p[j][t] = 2^(s − m_j), l_j = Σ_t p, o_j = Σ_t p[j][t]·v_t
//
// and writes (o_j, m_j, l_j) to the workspace; merge_splits_kernel combines
// the splits exactly. A Layout supplies its token plan (plan), the bulk path
// of a middle chunk (mid_scores / mid_pv over its n tokens, a multiple of 32)
// and scalar readers for edge tokens (edge_k / edge_v); everything else — query load, softmax, edge
// loops, the deterministic reduction of per-thread partial outputs — lives here.
#pragma once

#include <cmath>
#include <cstdint>

#include <cuda_runtime.h>

#include "innerq/kernels/cuda/decode_kernels.h"

namespace innerq::cuda {

inline constexpr int kWarps = kDecodeThreads / 32;
inline constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ int warp_sum(int x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Shared memory of one split block, carved from dynamic shared memory. The
// same arithmetic runs on the host (launch size) and the device (offsets).
struct SplitSmem {
  static constexpr size_t align16(size_t n) { return (n + 15) / 16 * 16; }

  int nq, head_dim, chunk;
  size_t layout_bytes;  // the layout's own scratch

  INNERQ_HD size_t qf_offset() const { return 0; }  // f32 [NQ][D]
  INNERQ_HD size_t scores_offset() const {          // f32 [NQ][chunk]: scores, then p
    return qf_offset() + align16(sizeof(float) * nq * head_dim);
  }
  INNERQ_HD size_t out_offset() const {  // f32 [NQ][D]: Σ p·v of the split
    return scores_offset() + align16(sizeof(float) * nq * chunk);
  }
  INNERQ_HD size_t ml_offset() const {  // f32 [NQ][2]: m, l
    return out_offset() + align16(sizeof(float) * nq * head_dim);
  }
  INNERQ_HD size_t layout_offset() const { return ml_offset() + align16(sizeof(float) * nq * 2); }
  INNERQ_HD size_t bytes() const { return layout_offset() + align16(layout_bytes); }
};

// What a Layout's methods see of the block.
template <int D, int NQ>
struct SplitBlock {
  float* qf;   // [NQ][D]  query · log2(e)/sqrt(D), zero for padded heads
  float* p;    // [NQ][chunk] scores, then probabilities
  float* out;  // [NQ][D]
  unsigned char* scratch;
  int chunk;
  int kv_head;
};

// Threads holding partial outputs add them into blk.out one part at a time,
// so the sum order is fixed (deterministic results). add() is called by the
// threads of part r in round r; every thread reaches every barrier.
template <typename Add>
__device__ __forceinline__ void add_parts_in_order(int part, int n_parts, Add add) {
  for (int r = 0; r < n_parts; ++r) {
    if (part == r) add();
    __syncthreads();
  }
}

// Edge scores: a warp takes kEdgeTokens tokens at a time, lanes over
// channels; every value of the group is loaded before the first is used, so
// their loads are in flight together (one memory latency per group, not per
// token).
inline constexpr int kEdgeTokens = 4;

template <int D, int NQ, class Layout>
__device__ void edge_scores(const Layout& layout, const SplitBlock<D, NQ>& blk,
                            const ChunkPlan& plan, int e0, int n) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int e = warp * kEdgeTokens; e < n; e += kWarps * kEdgeTokens) {  // warp-uniform
    float k[kEdgeTokens][D / 32];
#pragma unroll
    for (int u = 0; u < kEdgeTokens; ++u) {
      const int t = plan.edge_token(e0 + min(e + u, n - 1));  // past n: a valid token, unused
#pragma unroll
      for (int i = 0; i < D / 32; ++i) k[u][i] = layout.edge_k(blk.kv_head, t, lane + 32 * i);
    }
#pragma unroll
    for (int u = 0; u < kEdgeTokens; ++u) {
      float acc[NQ] = {};
#pragma unroll
      for (int i = 0; i < D / 32; ++i) {
#pragma unroll
        for (int j = 0; j < NQ; ++j) acc[j] += blk.qf[j * D + lane + 32 * i] * k[u][i];
      }
#pragma unroll
      for (int j = 0; j < NQ; ++j) {
        const float s = warp_sum(acc[j]);
        if (lane == 0 && e + u < n) blk.p[j * blk.chunk + e + u] = s;
      }
    }
  }
}

// Edge p·V: thread (channel c, part), parts striding over the tokens,
// kEdgeValues of a thread's tokens loaded before the first is used; each
// thread still adds its tokens in order.
inline constexpr int kEdgeValues = 8;

template <int D, int NQ, class Layout>
__device__ void edge_pv(const Layout& layout, const SplitBlock<D, NQ>& blk, const ChunkPlan& plan,
                        int e0, int n) {
  constexpr int kParts = kDecodeThreads / D;
  const int c = threadIdx.x % D, part = threadIdx.x / D;
  float acc[NQ] = {};
  for (int e = part; e < n; e += kParts * kEdgeValues) {
    float v[kEdgeValues];
#pragma unroll
    for (int u = 0; u < kEdgeValues; ++u) {
      const int eu = min(e + u * kParts, n - 1);  // past n: a valid token, unused
      v[u] = layout.edge_v(blk.kv_head, plan.edge_token(e0 + eu), c);
    }
#pragma unroll
    for (int u = 0; u < kEdgeValues; ++u) {
      if (e + u * kParts < n) {
#pragma unroll
        for (int j = 0; j < NQ; ++j) acc[j] += blk.p[j * blk.chunk + e + u * kParts] * v[u];
      }
    }
  }
  add_parts_in_order(part, kParts, [&] {
#pragma unroll
    for (int j = 0; j < NQ; ++j) blk.out[j * D + c] += acc[j];
  });
}

// Softmax over the first n scores of each head (in place: scores → p).
template <int D, int NQ>
__device__ void split_softmax(const SplitBlock<D, NQ>& blk, float* ml, int n) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int j = warp; j < NQ; j += kWarps) {
    float* s = blk.p + j * blk.chunk;
    float m = -INFINITY;
    for (int t = lane; t < n; t += 32) m = fmaxf(m, s[t]);
    m = warp_max(m);
    float l = 0.0f;
    for (int t = lane; t < blk.chunk; t += 32) {
      const float p = t < n ? exp2f(s[t] - m) : 0.0f;
      s[t] = p;
      l += p;
    }
    l = warp_sum(l);
    if (lane == 0) {
      ml[2 * j] = m;
      ml[2 * j + 1] = l;
    }
  }
}

// Blocks per SM the compiler must fit (it caps registers to 65536 /
// (blocks·threads)); 1 leaves registers uncapped. The build sets it from the
// CMake cache variable INNERQ_CUDA_DECODE_MIN_BLOCKS, so a bench run can
// compare occupancy against spills.
#ifndef INNERQ_DECODE_MIN_BLOCKS
#define INNERQ_DECODE_MIN_BLOCKS 1
#endif

// One block per (split, KV head, sequence); see the file comment.
template <class Layout, int D, int NQ>
__global__ void __launch_bounds__(kDecodeThreads, INNERQ_DECODE_MIN_BLOCKS)
    decode_split_kernel(const typename Layout::Params params) {
  extern __shared__ __align__(16) unsigned char smem[];
  const DecodeShape& shape = params.shape;
  const DecodeWork& work = params.work;
  const int split = blockIdx.x, kv_head = blockIdx.y, seq = blockIdx.z;
  const int nq = shape.n_heads / shape.n_kv_heads;
  const int chunk = work.chunk_tokens;
  const Layout layout(params, params.seqs[seq]);
  const ChunkPlan plan = layout.plan(chunk);

  const SplitSmem sm{NQ, D, chunk, Layout::scratch_bytes(params, NQ)};
  const SplitBlock<D, NQ> blk{reinterpret_cast<float*>(smem + sm.qf_offset()),
                              reinterpret_cast<float*>(smem + sm.scores_offset()),
                              reinterpret_cast<float*>(smem + sm.out_offset()),
                              smem + sm.layout_offset(),
                              chunk,
                              kv_head};
  float* ml = reinterpret_cast<float*>(smem + sm.ml_offset());

  const size_t head0 = static_cast<size_t>(seq) * shape.n_heads + kv_head * nq;
  float* part_o = work.partial_o + (head0 * work.max_splits + split) * D;
  float* part_ml = work.partial_ml + (head0 * work.max_splits + split) * 2;
  if (split >= plan.splits()) {
    // An unused split contributes nothing: m = −inf, l = 0, o = 0.
    for (int i = threadIdx.x; i < nq * D; i += kDecodeThreads) {
      part_o[static_cast<size_t>(i / D) * work.max_splits * D + i % D] = 0.0f;
    }
    for (int j = threadIdx.x; j < nq; j += kDecodeThreads) {
      part_ml[static_cast<size_t>(j) * work.max_splits * 2] = -INFINITY;
      part_ml[static_cast<size_t>(j) * work.max_splits * 2 + 1] = 0.0f;
    }
    return;
  }

  const float q_scale = kLog2e * rsqrtf(static_cast<float>(D));
  const float* q = work.q + head0 * D;
  for (int i = threadIdx.x; i < NQ * D; i += kDecodeThreads) {
    blk.qf[i] = i < nq * D ? q[i] * q_scale : 0.0f;
    blk.out[i] = 0.0f;
  }
  __syncthreads();

  const bool middle = split < plan.mid_chunks();
  const int e0 = (split - plan.mid_chunks()) * chunk;
  const int n = middle ? plan.mid_length(split) : min(chunk, plan.edge_tokens() - e0);
  const int m0 = split * chunk;  // middle index of a middle chunk's first token
  if (middle) {
    layout.template mid_scores<D, NQ>(blk, m0, n);
  } else {
    edge_scores<D, NQ>(layout, blk, plan, e0, n);
  }
  __syncthreads();
  split_softmax<D, NQ>(blk, ml, n);
  __syncthreads();
  if (middle) {
    layout.template mid_pv<D, NQ>(blk, m0, n);
  } else {
    edge_pv<D, NQ>(layout, blk, plan, e0, n);
  }
  __syncthreads();

  for (int i = threadIdx.x; i < nq * D; i += kDecodeThreads) {
    part_o[static_cast<size_t>(i / D) * work.max_splits * D + i % D] = blk.out[i];
  }
  for (int j = threadIdx.x; j < nq; j += kDecodeThreads) {
    part_ml[static_cast<size_t>(j) * work.max_splits * 2] = ml[2 * j];
    part_ml[static_cast<size_t>(j) * work.max_splits * 2 + 1] = ml[2 * j + 1];
  }
}

// Channel c of query head `head` of sequence `seq`, merged over the splits:
// Σ_s 2^(m_s − M)·o_s[c] / Σ_s 2^(m_s − M)·l_s, M = max_s m_s.
__host__ __device__ inline float merge_splits(const DecodeWork& work, int n_heads, int head_dim,
                                              int seq, int head, int c) {
  const size_t row = static_cast<size_t>(seq) * n_heads + head;
  const float* ml = work.partial_ml + row * work.max_splits * 2;
  const float* o = work.partial_o + row * work.max_splits * head_dim;
  float m = -INFINITY;
  for (int s = 0; s < work.max_splits; ++s) m = fmaxf(m, ml[2 * s]);
  float l = 0.0f, acc = 0.0f;
  for (int s = 0; s < work.max_splits; ++s) {
    const float w = exp2f(ml[2 * s] - m);  // 0 for an unused split (m_s = −inf)
    l += w * ml[2 * s + 1];
    acc += w * o[static_cast<size_t>(s) * head_dim + c];
  }
  return acc / l;
}

}  // namespace innerq::cuda
