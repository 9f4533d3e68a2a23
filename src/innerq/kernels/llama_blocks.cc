// llama.cpp-compatible q8_0 / q4_0 block quantization (llama_blocks.h).
#include "innerq/kernels/llama_blocks.h"

#include <algorithm>
#include <cmath>

namespace innerq {

void quantize_block(const float* x, BlockQ8_0* out) {
  float amax = 0.0f;
  for (int i = 0; i < kLlamaBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  out->d = f32_to_f16(d);
  for (int i = 0; i < kLlamaBlock; ++i) out->qs[i] = static_cast<int8_t>(std::nearbyint(x[i] * id));
}

void quantize_block(const float* x, BlockQ4_0* out) {
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < kLlamaBlock; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  out->d = f32_to_f16(d);
  for (int j = 0; j < kLlamaBlock / 2; ++j) {
    const int lo = std::min(15, static_cast<int>(x[j] * id + 8.5f));
    const int hi = std::min(15, static_cast<int>(x[j + 16] * id + 8.5f));
    out->qs[j] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

void dequantize_block(const BlockQ8_0& b, float* x) {
  const float d = f16_to_f32(b.d);
  for (int i = 0; i < kLlamaBlock; ++i) x[i] = d * static_cast<float>(b.qs[i]);
}

void dequantize_block(const BlockQ4_0& b, float* x) {
  const float d = f16_to_f32(b.d);
  for (int j = 0; j < kLlamaBlock / 2; ++j) {
    x[j] = d * static_cast<float>((b.qs[j] & 0x0F) - 8);
    x[j + 16] = d * static_cast<float>((b.qs[j] >> 4) - 8);
  }
}

}  // namespace innerq
