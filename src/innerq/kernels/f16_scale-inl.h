// innerq/kernels/f16_scale-inl.h — one fp16 scale field in f32, for the
// Highway kernels that read ggml blocks (weight_blocks_simd.cc,
// weight_int8_simd.cc). Highway's per-target include guard: this file is
// included once per target, inside each kernel file's HWY_NAMESPACE.
#if defined(INNERQ_KERNELS_F16_SCALE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef INNERQ_KERNELS_F16_SCALE_INL_H_
#undef INNERQ_KERNELS_F16_SCALE_INL_H_
#else
#define INNERQ_KERNELS_F16_SCALE_INL_H_
#endif

#include "hwy/highway.h"
#include "innerq/base/fp16.h"

HWY_BEFORE_NAMESPACE();
namespace innerq::kernels::HWY_NAMESPACE {

// Exact, NaN and Inf included. With F16C (AVX2 and up) one instruction; the
// emulated conversion of older targets mishandles Inf/NaN, so they use the
// exact scalar one.
HWY_INLINE float ScaleF32(const f16_bits& h) {
#if HWY_TARGET <= HWY_AVX2
  namespace hn = hwy::HWY_NAMESPACE;
  const hn::CappedTag<float, 1> d1;
  const hn::Rebind<hwy::float16_t, decltype(d1)> dh1;
  return hn::GetLane(
      hn::PromoteTo(d1, hn::LoadU(dh1, reinterpret_cast<const hwy::float16_t*>(&h))));
#else
  return f16_to_f32(h);
#endif
}

}  // namespace innerq::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // INNERQ_KERNELS_F16_SCALE_INL_H_
