// Highway version of the randomized Hadamard rotation (hadamard.h). Stages
// with a butterfly stride h below the vector length pair lane i with lane
// i ^ h by a table permutation p, and compute v·σ + p with σ_i = +1 where
// bit h of i is clear (a + b) and −1 where it is set (a − b): multiplying by
// ±1 is exact, so the result equals the scalar butterflies bit for bit.
// Wider strides pair whole vectors. Rows shorter than a vector (or a block
// smaller than one) take the scalar path.
#include <cmath>
#include <cstddef>
#include <cstdint>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "innerq/kernels/hadamard_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "innerq/kernels/hadamard.h"

HWY_BEFORE_NAMESPACE();
namespace innerq::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

void HadamardRotate(float* x, size_t n_rows, int dim, bool inverse) {
  const DF df;
  const int N = static_cast<int>(hn::Lanes(df));
  const int B = hadamard_block(dim);
  if (N < 2 || B < N || dim > kHadamardSignTable) {
    scalar::hadamard_rotate(x, n_rows, dim, inverse);
    return;
  }
  // Per in-register stage (h = 1, 2, .. N/2): lane permutation and signs.
  constexpr int kMaxStages = 5;  // N ≤ 32 lanes of f32
  HWY_ALIGN int32_t idx[kMaxStages][hn::MaxLanes(df)];
  HWY_ALIGN float sgn[kMaxStages][hn::MaxLanes(df)];
  int stages = 0;
  for (int h = 1; h < N; h *= 2, ++stages) {
    for (int i = 0; i < N; ++i) {
      idx[stages][i] = i ^ h;
      sgn[stages][i] = (i & h) ? -1.0f : 1.0f;
    }
  }
  const float* signs = hadamard_signs();
  const VF norm = hn::Set(df, static_cast<float>(1.0 / std::sqrt(static_cast<double>(B))));

  for (size_t r = 0; r < n_rows; ++r) {
    float* row = x + r * static_cast<size_t>(dim);
    if (!inverse) {
      for (int i = 0; i < dim; i += N) {
        hn::StoreU(hn::Mul(hn::LoadU(df, row + i), hn::LoadU(df, signs + i)), df, row + i);
      }
    }
    for (int b0 = 0; b0 < dim; b0 += B) {
      float* blk = row + b0;
      for (int i = 0; i < B; i += N) {
        VF v = hn::LoadU(df, blk + i);
        for (int s = 0; s < stages; ++s) {
          const VF p = hn::TableLookupLanes(v, hn::SetTableIndices(df, idx[s]));
          v = hn::MulAdd(v, hn::Load(df, sgn[s]), p);
        }
        hn::StoreU(v, df, blk + i);
      }
      for (int h = N; h < B; h *= 2) {
        for (int i = 0; i < B; i += 2 * h) {
          for (int j = i; j < i + h; j += N) {
            const VF a = hn::LoadU(df, blk + j), b = hn::LoadU(df, blk + j + h);
            hn::StoreU(hn::Add(a, b), df, blk + j);
            hn::StoreU(hn::Sub(a, b), df, blk + j + h);
          }
        }
      }
      for (int i = 0; i < B; i += N) hn::StoreU(hn::Mul(hn::LoadU(df, blk + i), norm), df, blk + i);
    }
    if (inverse) {
      for (int i = 0; i < dim; i += N) {
        hn::StoreU(hn::Mul(hn::LoadU(df, row + i), hn::LoadU(df, signs + i)), df, row + i);
      }
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace innerq::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace innerq::kernels {
HWY_EXPORT(HadamardRotate);
namespace simd {
void hadamard_rotate(float* x, size_t n_rows, int dim, bool inverse) {
  HWY_DYNAMIC_DISPATCH(HadamardRotate)(x, n_rows, dim, inverse);
}
}  // namespace simd
}  // namespace innerq::kernels
#endif  // HWY_ONCE
