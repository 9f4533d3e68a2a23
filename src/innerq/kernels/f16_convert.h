// innerq/kernels/f16_convert.h — bulk f32 ↔ f16 conversion with the rounding
// of base/fp16.h (round to nearest even), through F16C instructions where the
// CPU has them. The scalar conversions compile to a libgcc call per value
// without F16C, which showed up at 10–20 % of cache-append time.
#pragma once

#include <cstddef>

#include "innerq/base/fp16.h"

namespace innerq::kernels {

void f32_to_f16(const float* x, size_t n, f16_bits* out);
void f16_to_f32(const f16_bits* x, size_t n, float* out);

}  // namespace innerq::kernels
