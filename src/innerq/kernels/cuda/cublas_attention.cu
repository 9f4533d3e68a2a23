// innerq/kernels/cuda/cublas_attention.cu — see cublas_attention.h.
//
// cuBLAS is column-major; a row-major [R][C] matrix is a column-major C×R one.
// Per batch (sequence, KV head) with nq = n_heads/n_kv_heads query heads:
//   Sᵀ (N×nq)  = op_T(K: D×N col-major) · (Qᵀ: D×nq)      m=N, n=nq, k=D
//   Oᵀ (D×nq)  = (Vᵀ: D×N) · (Pᵀ: N×nq)                    m=D, n=nq, k=N
#include "innerq/kernels/cuda/cublas_attention.h"

#include <cmath>
#include <string>

#include <cuda_fp16.h>

#include "innerq/base/error.h"

namespace innerq::cuda {
namespace {

constexpr int kSoftmaxThreads = 256;

// One row of N f32 scores per block (the 1/sqrt(D) scale is applied by the
// first GEMM): weights = f16(e^(s − max)), inv_sum = 1 / Σ e^(s − max).
__global__ void __launch_bounds__(kSoftmaxThreads)
    softmax_rows_kernel(const float* scores, __half* weights, float* inv_sum, int n) {
  __shared__ float red[kSoftmaxThreads / 32];
  const float* row = scores + static_cast<size_t>(blockIdx.x) * n;
  __half* w = weights + static_cast<size_t>(blockIdx.x) * n;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  auto block_reduce = [&](float x, bool is_max) {
    for (int o = 16; o > 0; o /= 2) {
      const float y = __shfl_xor_sync(0xffffffffu, x, o);
      x = is_max ? fmaxf(x, y) : x + y;
    }
    if (lane == 0) red[warp] = x;
    __syncthreads();
    float r = red[0];
    for (int i = 1; i < kSoftmaxThreads / 32; ++i) r = is_max ? fmaxf(r, red[i]) : r + red[i];
    __syncthreads();
    return r;
  };

  float m = -INFINITY;
  for (int t = threadIdx.x; t < n; t += kSoftmaxThreads) m = fmaxf(m, row[t]);
  m = block_reduce(m, true);
  float l = 0.0f;
  for (int t = threadIdx.x; t < n; t += kSoftmaxThreads) {
    const float e = expf(row[t] - m);
    w[t] = __float2half_rn(e);
    l += e;
  }
  l = block_reduce(l, false);
  if (threadIdx.x == 0) inv_sum[blockIdx.x] = 1.0f / l;
}

// out[row][c] *= inv_sum[row]: grid (rows), D threads.
__global__ void normalize_rows_kernel(float* out, const float* inv_sum, int head_dim) {
  out[static_cast<size_t>(blockIdx.x) * head_dim + threadIdx.x] *= inv_sum[blockIdx.x];
}

void check_launch(const char* what) {
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) {
    throw Error(std::string("cublas attention: ") + what + " launch: " + cudaGetErrorString(e));
  }
}

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw Error(std::string("cublas attention: ") + what + ": " + cublasGetStatusString(status));
  }
}

}  // namespace

void cublas_decode_attention(cublasHandle_t handle, const CublasAttentionParams& p) {
  const int nq = p.n_heads / p.n_kv_heads;
  const int batch = p.n_seqs * p.n_kv_heads;
  const long long kv_stride = static_cast<long long>(p.n_tokens) * p.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.head_dim));
  const float one = 1.0f, zero = 0.0f;
  check(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, p.n_tokens, nq, p.head_dim,
                                   &scale, p.k, CUDA_R_16F, p.head_dim, kv_stride, p.q, CUDA_R_16F,
                                   p.head_dim, static_cast<long long>(nq) * p.head_dim, &zero,
                                   p.scores, CUDA_R_32F, p.n_tokens,
                                   static_cast<long long>(nq) * p.n_tokens, batch,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "q·Kᵀ");
  cudaStream_t stream;
  check(cublasGetStream(handle, &stream), "stream");
  const auto rows = static_cast<unsigned>(p.n_seqs * p.n_heads);
  softmax_rows_kernel<<<rows, kSoftmaxThreads, 0, stream>>>(
      p.scores, reinterpret_cast<__half*>(p.weights), p.inv_sum, p.n_tokens);
  check_launch("softmax");
  check(
      cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, p.head_dim, nq, p.n_tokens, &one,
                                 p.v, CUDA_R_16F, p.head_dim, kv_stride, p.weights, CUDA_R_16F,
                                 p.n_tokens, static_cast<long long>(nq) * p.n_tokens, &zero, p.out,
                                 CUDA_R_32F, p.head_dim, static_cast<long long>(nq) * p.head_dim,
                                 batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "p·V");
  normalize_rows_kernel<<<rows, static_cast<unsigned>(p.head_dim), 0, stream>>>(p.out, p.inv_sum,
                                                                                p.head_dim);
  check_launch("normalization");
}

}  // namespace innerq::cuda
