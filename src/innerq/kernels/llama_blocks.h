// innerq/kernels/llama_blocks.h — llama.cpp's q8_0 and q4_0 block formats,
// used by the `q8_0` / `q4_0` baseline caches (blocks of 32 along head_dim,
// symmetric absmax, one fp16 scale per block).
//   q8_0: x = d·c, c ∈ [−127, 127] int8, d = absmax/127          (8.5 bits/value)
//   q4_0: x = d·(c − 8), c ∈ [0, 15], d = max/−8 where max is the value of
//         largest magnitude (so d carries a sign)                  (4.5 bits/value)
//         byte j holds element j (low nibble) and element j+16 (high), as ggml.
#pragma once

#include <cstdint>

#include "innerq/base/fp16.h"

namespace innerq {

inline constexpr int kLlamaBlock = 32;

struct BlockQ8_0 {
  f16_bits d;
  int8_t qs[kLlamaBlock];
};
struct BlockQ4_0 {
  f16_bits d;
  uint8_t qs[kLlamaBlock / 2];
};
static_assert(sizeof(BlockQ8_0) == 34, "q8_0 block: 2 + 32 bytes = 8.5 bits/value");
static_assert(sizeof(BlockQ4_0) == 18, "q4_0 block: 2 + 16 bytes = 4.5 bits/value");

void quantize_block(const float* x, BlockQ8_0* out);  // x: [32]
void quantize_block(const float* x, BlockQ4_0* out);  // x: [32]
void dequantize_block(const BlockQ8_0& b, float* x);  // x: [32]
void dequantize_block(const BlockQ4_0& b, float* x);  // x: [32]

}  // namespace innerq
