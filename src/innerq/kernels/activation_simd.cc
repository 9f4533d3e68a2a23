// innerq/kernels/activation_simd.cc — Highway versions of the gated
// activations (activation.h); self-including foreach_target pattern, one
// dispatch per call. The last n mod lanes values take the scalar reference.
#include <cstddef>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "innerq/kernels/activation_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "innerq/kernels/activation.h"

HWY_BEFORE_NAMESPACE();
namespace innerq::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

void GatedSilu(float* gate, const float* up, size_t n) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const auto one = hn::Set(df, 1.0f);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto g = hn::LoadU(df, gate + i);
    const auto e = hn::Exp(df, hn::Neg(hn::Abs(g)));  // e^−|g| ∈ (0, 1]
    const auto s = hn::Div(one, hn::Add(one, e));     // σ(|g|)
    const auto sigma = hn::IfThenElse(hn::Lt(g, hn::Zero(df)), hn::Mul(e, s), s);
    hn::StoreU(hn::Mul(hn::Mul(g, sigma), hn::LoadU(df, up + i)), df, gate + i);
  }
  scalar::gated_silu(gate + i, up + i, n - i);
}

void GatedGeluTanh(float* gate, const float* up, size_t n) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const auto c = hn::Set(df, kGeluTanhC), k = hn::Set(df, 0.044715f), half = hn::Set(df, 0.5f);
  const auto one = hn::Set(df, 1.0f), lo = hn::Set(df, -kGeluTanhClamp),
             hi = hn::Set(df, kGeluTanhClamp);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto g = hn::LoadU(df, gate + i);
    const auto g3 = hn::Mul(hn::Mul(g, g), g);
    const auto arg = hn::Min(hn::Max(hn::Mul(c, hn::Add(g, hn::Mul(k, g3))), lo), hi);
    const auto t = hn::Tanh(df, arg);
    const auto r = hn::Mul(hn::Mul(hn::Mul(half, g), hn::Add(one, t)), hn::LoadU(df, up + i));
    hn::StoreU(r, df, gate + i);
  }
  scalar::gated_gelu_tanh(gate + i, up + i, n - i);
}

}  // namespace HWY_NAMESPACE
}  // namespace innerq::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace innerq::kernels {
HWY_EXPORT(GatedSilu);
HWY_EXPORT(GatedGeluTanh);
namespace simd {
void gated_silu(float* gate, const float* up, size_t n) {
  HWY_DYNAMIC_DISPATCH(GatedSilu)(gate, up, n);
}
void gated_gelu_tanh(float* gate, const float* up, size_t n) {
  HWY_DYNAMIC_DISPATCH(GatedGeluTanh)(gate, up, n);
}
}  // namespace simd
}  // namespace innerq::kernels
#endif  // HWY_ONCE
