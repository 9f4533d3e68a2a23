// innerq/kernels/exp_nonpositive-inl.h — e^x for softmax's x ≤ 0 without
// subnormals, for the Highway files that take a softmax (attn_kernels_simd.cc,
// attn/prefill_attention.cc). Highway's per-target include guard: included
// once per target, inside each file's HWY_NAMESPACE.
#if defined(INNERQ_KERNELS_EXP_NONPOSITIVE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef INNERQ_KERNELS_EXP_NONPOSITIVE_INL_H_
#undef INNERQ_KERNELS_EXP_NONPOSITIVE_INL_H_
#else
#define INNERQ_KERNELS_EXP_NONPOSITIVE_INL_H_
#endif

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "innerq/kernels/attn_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace innerq::kernels::HWY_NAMESPACE {

// e^x for x ≤ 0, and exactly 0 below kExpFloor (attn_kernels.h), where e^x
// would be subnormal or 0. The vector exp only ever sees x ≥ kExpFloor:
// arithmetic that makes subnormals takes a microcode assist on Intel cores,
// and sharp attention (scores hundreds apart) made a softmax 4–5× slower
// (docs/architecture.md, "Softmax without subnormals").
template <class D>
HWY_INLINE hwy::HWY_NAMESPACE::Vec<D> ExpOfNonPositive(D d, hwy::HWY_NAMESPACE::Vec<D> x) {
  namespace hn = hwy::HWY_NAMESPACE;
  const auto floor = hn::Set(d, kExpFloor);
  return hn::IfThenZeroElse(hn::Lt(x, floor), hn::Exp(d, hn::Max(x, floor)));
}

}  // namespace innerq::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // INNERQ_KERNELS_EXP_NONPOSITIVE_INL_H_
