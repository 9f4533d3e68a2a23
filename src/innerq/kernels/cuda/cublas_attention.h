// innerq/kernels/cuda/cublas_attention.h — the "two products" f16 baseline
// (the torch.matmul attention of the InnerQ paper's Figure 3): S = q·Kᵀ with
// cuBLAS, a softmax kernel, O = P·V with cuBLAS, f16 K, V and query with f32
// accumulation. K and V are plain row-major [N][D] per KV head.
//
// Scores and the softmax statistics stay in f32. cuBLAS multiplies only
// operands of one type, so the second product's weights are f16; they are
// the unnormalized e^(s − max) ∈ (0, 1], which stay normal f16 wherever a
// weight matters (≥ 2^-14 of the largest), instead of p = e^(s − max)/l,
// which at 128k tokens sits near 2^-17 and would be f16-subnormal. The
// product is then divided by l in f32 (a fourth, tiny kernel).
#pragma once

#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace innerq::cuda {

// Every sequence holds the same N tokens; batch b = seq·n_kv_heads + kv_head.
struct CublasAttentionParams {
  const uint16_t* q;  // f16 [n_seqs][n_heads][D]
  const uint16_t* k;  // f16 [n_seqs·n_kv_heads][N][D]
  const uint16_t* v;  // f16 [n_seqs·n_kv_heads][N][D]
  float* scores;      // f32 [n_seqs][n_heads][N] workspace
  uint16_t* weights;  // f16 [n_seqs][n_heads][N] workspace: e^(s − max)
  float* inv_sum;     // f32 [n_seqs][n_heads] workspace: 1 / Σ e^(s − max)
  float* out;         // f32 [n_seqs][n_heads][D]
  int n_seqs, n_kv_heads, n_heads, head_dim, n_tokens;
};

// Enqueues GEMM, softmax, GEMM, normalization on the handle's stream. Throws
// innerq::Error with the cuBLAS or CUDA error string on failure.
void cublas_decode_attention(cublasHandle_t handle, const CublasAttentionParams& params);

}  // namespace innerq::cuda
