// innerq/base/fp16.h — IEEE binary16 storage type and round-to-nearest-even
// conversions. Metadata (scales, zeros) and the f16 caches are stored as raw
// 16-bit patterns so that CPU and CUDA code read the same bytes.
#pragma once

#include <bit>
#include <cstdint>

namespace innerq {

using f16_bits = uint16_t;

// f32 -> f16 with round-to-nearest-even, the same rounding as F16C's
// vcvtps2ph and CUDA's __float2half_rn. Overflow gives ±inf, NaN stays NaN.
inline f16_bits f32_to_f16(float f) {
  return std::bit_cast<f16_bits>(static_cast<_Float16>(f));
}

inline float f16_to_f32(f16_bits h) {
  return static_cast<float>(std::bit_cast<_Float16>(h));
}

// Largest finite binary16 value.
inline constexpr float kF16Max = 65504.0f;

}  // namespace innerq
