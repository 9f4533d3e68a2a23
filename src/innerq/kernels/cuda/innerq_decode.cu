// innerq/kernels/cuda/innerq_decode.cu — the launcher of the InnerQ decode kernels
// (innerq_layout.cuh).
#include <string>

#include "innerq/kernels/cuda/decode_launch.cuh"
#include "innerq/kernels/cuda/innerq_layout.cuh"

namespace innerq::cuda {

cudaError_t launch_decode_innerq(const InnerQDecodeParams& params, cudaStream_t stream) {
  check_decode_shape(params.shape, params.work);
  for (const int bits : {params.k_bits, params.v_bits}) {
    if (!is_supported_bits(bits)) {
      throw Error("cuda innerq decode: bits " + std::to_string(bits) + " is not one of 2, 3, 4, 8");
    }
  }
  for (const int group : {params.group, params.key_group()}) {
    if (!is_supported_group(group) || params.shape.head_dim % group != 0) {
      throw Error("cuda innerq decode: group " + std::to_string(group) +
                  " must be 32, 64 or 128 and divide head_dim " +
                  std::to_string(params.shape.head_dim));
    }
  }
  const int nq = padded_query_heads(params.shape);
  return INNERQ_DISPATCH_DECODE(params.shape.head_dim, nq,
                                (launch_split_and_merge<InnerQLayout, D, NQ>(params, stream)));
}

}  // namespace innerq::cuda
