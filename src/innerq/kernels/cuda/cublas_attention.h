// innerq/kernels/cuda/cublas_attention.h — the "two products" f16 baseline
// (the torch.matmul attention of the InnerQ paper's Figure 3): S = q·Kᵀ with
// cuBLAS, a softmax kernel, O = P·V with cuBLAS, all in f16 storage with f32
// accumulation. K and V are plain row-major [N][D] per KV head.
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
  uint16_t* scores;   // f16 [n_seqs][n_heads][N] workspace: scores, then p
  uint16_t* out;      // f16 [n_seqs][n_heads][D]
  int n_seqs, n_kv_heads, n_heads, head_dim, n_tokens;
};

// Enqueues GEMM, softmax, GEMM on the handle's stream. Throws innerq::Error
// with the cuBLAS or CUDA error string on failure.
void cublas_decode_attention(cublasHandle_t handle, const CublasAttentionParams& params);

}  // namespace innerq::cuda
