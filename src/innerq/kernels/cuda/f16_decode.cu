// innerq/kernels/cuda/f16_decode.cu — the launcher of the f16 decode kernels
// (f16_layout.cuh).
#include <string>

#include "innerq/kernels/cuda/decode_launch.cuh"
#include "innerq/kernels/cuda/f16_layout.cuh"

namespace innerq::cuda {

cudaError_t launch_decode_f16(const F16DecodeParams& params, cudaStream_t stream) {
  check_decode_shape(params.shape, params.work);
  const int nq = padded_query_heads(params.shape);
  return INNERQ_DISPATCH_DECODE(params.shape.head_dim, nq,
                                (launch_split_and_merge<F16Layout, D, NQ>(params, stream)));
}

}  // namespace innerq::cuda
