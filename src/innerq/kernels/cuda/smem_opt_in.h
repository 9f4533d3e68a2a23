// innerq/kernels/cuda/smem_opt_in.h — the dynamic shared memory a kernel may
// use above the 48 KB that every device grants by default.
//
// cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize) applies
// to one function on the current device, so the opt-in is decided per
// device: ensure() checks `bytes` against the device's opt-in limit
// (cudaDevAttrMaxSharedMemoryPerBlockOptin) and throws innerq::Error naming
// the kernel's layout, head_dim, query heads, chunk and both sizes when it is
// over; otherwise it raises the kernel's limit and remembers the device only
// when that call succeeded, so a failed opt-in is retried by the next launch.
// Plain C++; thread-safe.
#pragma once

#include <cstddef>
#include <mutex>
#include <vector>

#include <cuda_runtime_api.h>

namespace innerq::cuda {

class SmemOptIn {
 public:
  static constexpr size_t kDefaultBytes = 48 * 1024;

  // The CUDA error of a failed query or opt-in, else cudaSuccess.
  cudaError_t ensure(const void* kernel, size_t bytes, const char* layout, int head_dim, int nq,
                     int chunk);

 private:
  std::mutex mutex_;
  std::vector<size_t> granted_;  // by device ordinal: the limit set, 0 = none
};

}  // namespace innerq::cuda
