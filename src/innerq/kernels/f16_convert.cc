// Highway bulk fp16 conversions (f16_convert.h). Targets with F16C (AVX2 and
// the AVX-512 targets) convert in hardware with round-to-nearest-even, the
// same bits as f32_to_f16 / f16_to_f32; the others use those per value.
#include <cstddef>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "innerq/kernels/f16_convert.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "innerq/kernels/f16_convert.h"

HWY_BEFORE_NAMESPACE();
namespace innerq::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr bool kHardwareF16 =
    HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL;

void F32ToF16(const float* x, size_t n, f16_bits* out) {
  size_t i = 0;
  if constexpr (kHardwareF16) {
    const hn::ScalableTag<float> df;
    const hn::Rebind<hwy::float16_t, decltype(df)> dh;
    auto* h = reinterpret_cast<hwy::float16_t*>(out);
    for (; i + hn::Lanes(df) <= n; i += hn::Lanes(df)) {
      hn::StoreU(hn::DemoteTo(dh, hn::LoadU(df, x + i)), dh, h + i);
    }
  }
  for (; i < n; ++i) out[i] = innerq::f32_to_f16(x[i]);
}

void F16ToF32(const f16_bits* x, size_t n, float* out) {
  size_t i = 0;
  if constexpr (kHardwareF16) {
    const hn::ScalableTag<float> df;
    const hn::Rebind<hwy::float16_t, decltype(df)> dh;
    const auto* h = reinterpret_cast<const hwy::float16_t*>(x);
    for (; i + hn::Lanes(df) <= n; i += hn::Lanes(df)) {
      hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, h + i)), df, out + i);
    }
  }
  for (; i < n; ++i) out[i] = innerq::f16_to_f32(x[i]);
}

}  // namespace HWY_NAMESPACE
}  // namespace innerq::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace innerq::kernels {

HWY_EXPORT(F32ToF16);
HWY_EXPORT(F16ToF32);

void f32_to_f16(const float* x, size_t n, f16_bits* out) {
  HWY_DYNAMIC_DISPATCH(F32ToF16)(x, n, out);
}
void f16_to_f32(const f16_bits* x, size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(F16ToF32)(x, n, out);
}

}  // namespace innerq::kernels
#endif  // HWY_ONCE
