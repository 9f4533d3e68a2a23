// innerq/base/fp16.h — IEEE binary16 storage type and round-to-nearest-even
// conversions. Metadata (scales, zeros) and the f16 caches are stored as raw
// 16-bit patterns so that CPU and CUDA code read the same bytes.
#pragma once

#include <cstdint>
#include <cstring>

namespace innerq {

using f16_bits = uint16_t;

// The compiler's half type: _Float16, or for clang before 15 (no _Float16 on
// x86; the `asan` preset builds with Debian's clang 14) its storage type
// __fp16, whose conversions round the same way (f16_convert_test compares
// them with the hardware conversion on all 2^16 patterns and on edge cases).
#if defined(__clang__) && __clang_major__ < 15
using f16_native = __fp16;
#else
using f16_native = _Float16;
#endif

// f32 -> f16 with round-to-nearest-even, the same rounding as F16C's
// vcvtps2ph and CUDA's __float2half_rn. Overflow gives ±inf, NaN stays NaN.
inline f16_bits f32_to_f16(float f) {
  const f16_native h = static_cast<f16_native>(f);
  f16_bits bits;
  std::memcpy(&bits, &h, sizeof bits);  // __fp16 cannot be bit_cast to
  return bits;
}

inline float f16_to_f32(f16_bits bits) {
  f16_native h;
  std::memcpy(&h, &bits, sizeof h);
  return static_cast<float>(h);
}

// Largest finite binary16 value.
inline constexpr float kF16Max = 65504.0f;

}  // namespace innerq
