// innerq/kernels/cuda/decode_launch.cuh — the host side of the split
// kernels: validation, the dispatch of head_dim and query heads per KV head to
// template arguments, and the launch of split kernel + merge.
#pragma once

#include <string>
#include <type_traits>

#include <cuda_runtime.h>

#include "innerq/base/error.h"
#include "innerq/kernels/cuda/decode_split.cuh"
#include "innerq/kernels/cuda/smem_opt_in.h"

namespace innerq::cuda {

// merge_splits for every (head, seq, channel): grid (n_heads, n_seqs), D threads.
__global__ void merge_splits_kernel(DecodeWork work, int n_heads, int head_dim);

// Query heads per KV head, padded to the compiled variants {1, 4, 8}.
int padded_query_heads(const DecodeShape& shape);

// Validation shared by the launchers; throws innerq::Error naming the field.
void check_decode_shape(const DecodeShape& shape, const DecodeWork& work);

#define INNERQ_CHECK_CUDA_LAUNCH()                          \
  do {                                                      \
    const cudaError_t launch_status = cudaGetLastError();   \
    if (launch_status != cudaSuccess) return launch_status; \
  } while (0)

// Turns the runtime head_dim and padded query-head count into the template
// arguments D and NQ of `body`; anything else throws innerq::Error.
#define INNERQ_DISPATCH_DECODE(head_dim, nq, body)                                  \
  [&] {                                                                             \
    auto with_nq = [&](auto d_tag) {                                                \
      constexpr int D = decltype(d_tag)::value;                                     \
      switch (nq) {                                                                 \
        case 1: {                                                                   \
          constexpr int NQ = 1;                                                     \
          return body;                                                              \
        }                                                                           \
        case 4: {                                                                   \
          constexpr int NQ = 4;                                                     \
          return body;                                                              \
        }                                                                           \
        case 8: {                                                                   \
          constexpr int NQ = 8;                                                     \
          return body;                                                              \
        }                                                                           \
        default:                                                                    \
          throw ::innerq::Error("cuda decode: padded query heads per KV head " +    \
                                std::to_string(nq) + " is not one of 1, 4, 8");     \
      }                                                                             \
    };                                                                              \
    switch (head_dim) {                                                             \
      case 64:                                                                      \
        return with_nq(std::integral_constant<int, 64>{});                          \
      case 128:                                                                     \
        return with_nq(std::integral_constant<int, 128>{});                         \
      default:                                                                      \
        throw ::innerq::Error("cuda decode: head_dim " + std::to_string(head_dim) + \
                              " is not supported (64, 128)");                       \
    }                                                                               \
  }()

// Launches the split kernel of Layout and the merge.
template <class Layout, int D, int NQ>
cudaError_t launch_split_and_merge(const typename Layout::Params& params, cudaStream_t stream) {
  const DecodeShape& s = params.shape;
  const SplitSmem sm{NQ, D, params.work.chunk_tokens, Layout::scratch_bytes(params, NQ)};
  const auto kernel = decode_split_kernel<Layout, D, NQ>;
  static SmemOptIn opt_in;  // one per kernel instantiation
  if (const cudaError_t e = opt_in.ensure(reinterpret_cast<const void*>(kernel), sm.bytes(),
                                          Layout::kName, D, NQ, params.work.chunk_tokens);
      e != cudaSuccess) {
    return e;
  }
  const dim3 grid(static_cast<unsigned>(params.work.max_splits),
                  static_cast<unsigned>(s.n_kv_heads), static_cast<unsigned>(s.n_seqs));
  kernel<<<grid, kDecodeThreads, sm.bytes(), stream>>>(params);
  INNERQ_CHECK_CUDA_LAUNCH();
  merge_splits_kernel<<<dim3(static_cast<unsigned>(s.n_heads), static_cast<unsigned>(s.n_seqs)),
                        static_cast<unsigned>(s.head_dim), 0, stream>>>(params.work, s.n_heads,
                                                                        s.head_dim);
  return cudaGetLastError();
}

}  // namespace innerq::cuda
