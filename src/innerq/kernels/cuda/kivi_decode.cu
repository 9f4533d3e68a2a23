// innerq/kernels/cuda/kivi_decode.cu — the launcher of the KIVI decode kernels
// (kivi_layout.cuh).
#include <string>

#include "innerq/kernels/cuda/decode_launch.cuh"
#include "innerq/kernels/cuda/kivi_layout.cuh"

namespace innerq::cuda {

cudaError_t launch_decode_kivi(const KiviDecodeParams& params, cudaStream_t stream) {
  check_decode_shape(params.shape, params.work);
  if (!is_supported_bits(params.bits)) {
    throw Error("cuda kivi decode: bits " + std::to_string(params.bits) +
                " is not one of 2, 3, 4, 8");
  }
  if (!is_supported_group(params.group) || params.shape.head_dim % params.group != 0) {
    throw Error("cuda kivi decode: group " + std::to_string(params.group) +
                " must be 32, 64 or 128 and divide head_dim " +
                std::to_string(params.shape.head_dim));
  }
  const int nq = padded_query_heads(params.shape);
  return INNERQ_DISPATCH_DECODE(params.shape.head_dim, nq,
                                (launch_split_and_merge<KiviLayout, D, NQ>(params, stream)));
}

}  // namespace innerq::cuda
