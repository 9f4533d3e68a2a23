// innerq/kernels/channel_order.h — fixed permutations of a key row's channels
// before it is grouped (docs/architecture.md, "Channel order").
//
// A cache whose keys are grouped along head_dim (q8_0, q4_0, InnerQ's
// per-token key groups) sees different groups depending on where RoPE put
// each pair's two components. ggml's NORM RoPE (llama, qwen2, GGUF order)
// rotates adjacent channels (2i, 2i+1); NEOX RoPE (gemma3, qwen3, and
// transformers' own order) rotates channels i and i + D/2. A permutation P
// of the key channels is free at decode: the query is permuted the same way
// and (P q)·(P k) = q·k, as with the rotation (kernels/hadamard.h), which it
// precedes when both are on.
//
//   kEvenOdd  y[j] = x[2j],  y[D/2 + j] = x[2j + 1]   adjacent pairs → halves
//   kPairs    y[2j] = x[j],  y[2j + 1] = x[D/2 + j]   halves → adjacent pairs
//
// Each is the other's inverse. A pure data move: no arithmetic, so there is
// no SIMD version to compare; every caller uses this one.
#pragma once

#include <cstdint>

namespace innerq::kernels {

enum class ChannelOrder : uint8_t { kAsIs, kEvenOdd, kPairs };

// out[0 .. dim) = the channels of in[0 .. dim) in `order` (or, with
// inverse, back from it). dim even; in and out must not overlap. kAsIs
// copies.
template <typename T>
void permute_channels(const T* in, T* out, int dim, ChannelOrder order, bool inverse = false) {
  if (order == ChannelOrder::kAsIs) {
    for (int i = 0; i < dim; ++i) out[i] = in[i];
    return;
  }
  const bool to_halves = (order == ChannelOrder::kEvenOdd) != inverse;
  const int half = dim / 2;
  for (int j = 0; j < half; ++j) {
    if (to_halves) {
      out[j] = in[2 * j];
      out[half + j] = in[2 * j + 1];
    } else {
      out[2 * j] = in[j];
      out[2 * j + 1] = in[half + j];
    }
  }
}

}  // namespace innerq::kernels
