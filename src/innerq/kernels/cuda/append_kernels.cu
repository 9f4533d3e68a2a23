// innerq/kernels/cuda/append_kernels.cu — the launchers of the
// quantize-on-append kernels (append_device.cuh).
#include "innerq/kernels/cuda/append_kernels.h"

#include <string>

#include "innerq/base/error.h"
#include "innerq/kernels/cuda/append_device.cuh"

namespace innerq::cuda {
namespace {

void check_format(const char* what, int bits, int group, int head_dim) {
  if (!is_supported_bits(bits)) {
    throw Error(std::string(what) + ": bits " + std::to_string(bits) + " is not one of 2, 3, 4, 8");
  }
  if (!is_supported_group(group) || head_dim % group != 0 || head_dim % kTileRows != 0) {
    throw Error(std::string(what) + ": group " + std::to_string(group) +
                " must be 32, 64 or 128 and divide head_dim " + std::to_string(head_dim) +
                " (a multiple of 16)");
  }
}

unsigned blocks_for(long long threads) {
  return static_cast<unsigned>((threads + kAppendThreads - 1) / kAppendThreads);
}

}  // namespace

cudaError_t launch_append_keys(const AppendKeysParams& p, cudaStream_t stream) {
  check_format("cuda append keys", p.bits, p.group, p.head_dim);
  const long long n = static_cast<long long>(p.n_kv_heads) * p.n_rows * (p.head_dim / p.group);
  if (n == 0) return cudaSuccess;
  append_keys_kernel<<<blocks_for(n), kAppendThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_append_values(const AppendValuesParams& p, cudaStream_t stream) {
  check_format("cuda append values", p.bits, p.group, p.head_dim);
  const long long n = static_cast<long long>(p.n_kv_heads) * p.n_blocks * p.head_dim;
  if (n == 0) return cudaSuccess;
  append_values_kernel<<<blocks_for(n), kAppendThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace innerq::cuda
