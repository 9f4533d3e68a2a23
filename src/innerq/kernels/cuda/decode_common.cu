// innerq/kernels/cuda/decode_common.cu — the merge of split partials and the
// host-side checks and choices shared by every decode launcher, and the
// shared-memory opt-in (smem_opt_in.h).
#include <string>

#include "innerq/kernels/cuda/decode_launch.cuh"
#include "innerq/kernels/cuda/smem_opt_in.h"

namespace innerq::cuda {

__global__ void merge_splits_kernel(DecodeWork work, int n_heads, int head_dim) {
  const int head = blockIdx.x, seq = blockIdx.y, c = threadIdx.x;
  work.out[(static_cast<size_t>(seq) * n_heads + head) * head_dim + c] =
      merge_splits(work, n_heads, head_dim, seq, head, c);
}

int padded_query_heads(const DecodeShape& shape) {
  const int nq = shape.n_heads / shape.n_kv_heads;
  return nq == 1 ? 1 : nq <= 4 ? 4 : 8;
}

void check_decode_shape(const DecodeShape& shape, const DecodeWork& work) {
  if (shape.n_seqs < 1 || shape.n_kv_heads < 1 || shape.n_heads < 1) {
    throw Error("cuda decode: n_seqs, n_kv_heads and n_heads must be positive");
  }
  if (shape.n_heads % shape.n_kv_heads != 0 ||
      shape.n_heads / shape.n_kv_heads > kMaxQueryHeadsPerKv) {
    throw Error("cuda decode: n_heads " + std::to_string(shape.n_heads) +
                " must be 1 to 8 times n_kv_heads " + std::to_string(shape.n_kv_heads));
  }
  if (work.chunk_tokens != 128 && work.chunk_tokens != 256 && work.chunk_tokens != 512) {
    throw Error("cuda decode: chunk_tokens " + std::to_string(work.chunk_tokens) +
                " is not one of 128, 256, 512");
  }
  if (work.max_splits < 1) throw Error("cuda decode: max_splits must be positive");
}

cudaError_t SmemOptIn::ensure(const void* kernel, size_t bytes, const char* layout, int head_dim,
                              int nq, int chunk) {
  if (bytes <= kDefaultBytes) return cudaSuccess;
  int device = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  const std::lock_guard<std::mutex> lock(mutex_);
  if (static_cast<size_t>(device) < granted_.size() && granted_[device] >= bytes) {
    return cudaSuccess;
  }
  int limit = 0;
  if (const cudaError_t e =
          cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
      e != cudaSuccess) {
    return e;
  }
  if (bytes > static_cast<size_t>(limit)) {
    throw Error("cuda decode: the " + std::string(layout) + " split block (head_dim " +
                std::to_string(head_dim) + ", " + std::to_string(nq) +
                " query heads per KV head, chunk " + std::to_string(chunk) + ") needs " +
                std::to_string(bytes) + " bytes of shared memory; device " +
                std::to_string(device) + " allows " + std::to_string(limit) +
                " per block (use a shorter chunk)");
  }
  if (const cudaError_t e = cudaFuncSetAttribute(
          kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
      e != cudaSuccess) {
    return e;  // not remembered: the next launch asks again
  }
  if (granted_.size() <= static_cast<size_t>(device)) granted_.resize(device + 1, 0);
  granted_[device] = bytes;
  return cudaSuccess;
}

int choose_chunk_tokens(int max_tokens, int n_kv_heads, int n_seqs, int sm_count) {
  const long long heads = static_cast<long long>(n_kv_heads) * n_seqs;
  for (const int chunk : {512, 256}) {
    if (heads * (max_tokens / chunk) >= 4LL * sm_count) return chunk;
  }
  return 128;
}

}  // namespace innerq::cuda
