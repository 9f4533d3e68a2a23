// innerq/kernels/weight_packed_simd.cc — the packed 16-row product on
// AVX-512 VNNI (layout and arithmetic in weight_packed.h). Self-including
// Highway pattern: one dispatch per call; targets without VNNI run the
// scalar product (the model packs only where packed_dot_available()).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "innerq/kernels/weight_packed_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"

#include <cstring>

#include "innerq/kernels/weight_packed.h"

HWY_BEFORE_NAMESPACE();
#if HWY_TARGET == HWY_AVX3_DL
// Highway 1.0.3's AVX3_DL target string lacks avx512vnni, which vpdpbusd on
// zmm registers needs; the CPUs of that target (Ice Lake and later, Zen 4)
// have it.
#pragma GCC target("avx512vnni")
#endif
namespace innerq::kernels::HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3_DL
#define INNERQ_PACKED_VNNI 1

// Tokens whose products share one unpacking of a chunk's codes (the
// registers hold 8 code vectors and 4 tokens' accumulators).
constexpr int kTokensPerPass = 4;

HWY_INLINE __m512i Load64(const uint8_t* p) {
  return _mm512_loadu_si512(p);
}

HWY_INLINE int32_t Word(const int8_t* p) {
  int32_t w = 0;
  std::memcpy(&w, p, sizeof(w));
  return w;
}

// One group of 16 rows, NT tokens: out[t] = the rows' products with token t.
template <WeightFormat F, int NT>
HWY_INLINE void GroupTokens(const uint8_t* group, int64_t chunks, const ActBytes* x,
                            size_t x_stride, __m512 out[NT]) {
  constexpr bool kBytes = F == WeightFormat::kQ8_0 || F == WeightFormat::kQ6_K;
  constexpr bool kFifth =
      F == WeightFormat::kQ5_0 || F == WeightFormat::kQ5_1 || F == WeightFormat::kQ5_K;
  constexpr bool kKQuant =
      F == WeightFormat::kQ4_K || F == WeightFormat::kQ5_K || F == WeightFormat::kQ6_K;
  constexpr bool kMin = F == WeightFormat::kQ4_1 || F == WeightFormat::kQ5_1;
  constexpr bool kPerHalf = F == WeightFormat::kQ6_K;  // W per 16-value half
  constexpr bool kOffset = F != WeightFormat::kQ8_0 && F != WeightFormat::kQ6_K;
  constexpr float kZeroPoint = F == WeightFormat::kQ4_0 ? -8.0f : -16.0f;  // Q4_0, Q5_0
  constexpr size_t kCodeBytes = kBytes ? 512 : 256;
  constexpr size_t kBitBytes = kFifth ? 64 : 0;
  constexpr size_t kFactorBytes = packed_chunk_bytes(F) - kCodeBytes - kBitBytes;
  const size_t C = static_cast<size_t>(chunks);
  const uint8_t* codes = group;
  const uint8_t* bits = codes + C * kCodeBytes;
  const uint8_t* factors = bits + C * kBitBytes;
  const __m512i low4 = _mm512_set1_epi8(15);
  const __m512i sixteen = _mm512_set1_epi8(16);
  __m512 acc[NT], off[NT];
  for (int t = 0; t < NT; ++t) acc[t] = off[t] = _mm512_setzero_ps();
  for (size_t c = 0; c < C; ++c) {
    __m512i v[8];
    if constexpr (kBytes) {
      for (int i = 0; i < 8; ++i) v[i] = Load64(codes + kCodeBytes * c + 64 * i);
    } else {
      for (int k = 0; k < 4; ++k) {
        const __m512i raw = Load64(codes + kCodeBytes * c + 64 * k);
        v[2 * k] = _mm512_and_si512(raw, low4);
        v[2 * k + 1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4);
      }
      if constexpr (kFifth) {
        for (int i = 0; i < 8; ++i) {
          uint64_t word = 0;
          std::memcpy(&word, bits + kBitBytes * c + 8 * i, sizeof(word));
          v[i] = _mm512_mask_add_epi8(v[i], _cvtu64_mask64(word), v[i], sixteen);
        }
      }
    }
    const uint8_t* at = factors + kFactorBytes * c;
    const auto fp16 = [](const uint8_t* p) {
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    };
    const __m512 w = kKQuant ? _mm512_loadu_ps(at) : fp16(at);
    __m512 w1 = w, b = _mm512_setzero_ps();
    if constexpr (kPerHalf) {
      w1 = _mm512_loadu_ps(at + 64);
    } else if constexpr (kKQuant) {
      b = _mm512_loadu_ps(at + 64);
    } else if constexpr (kMin) {
      b = fp16(at + 32);
    } else if constexpr (kOffset) {
      b = _mm512_mul_ps(w, _mm512_set1_ps(kZeroPoint));
    }
    for (int t = 0; t < NT; ++t) {
      const ActBytes& a = x[static_cast<size_t>(t) * x_stride + c];
      // Two accumulators per byte plane: alternate runs, or (kPerHalf) one per half.
      __m512i jh[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
      __m512i jl[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
      for (int i = 0; i < 8; ++i) {
        const int k = kPerHalf ? i / 4 : i % 2;
        jh[k] = _mm512_dpbusd_epi32(jh[k], v[i], _mm512_set1_epi32(Word(a.h + 4 * i)));
        jl[k] = _mm512_dpbusd_epi32(jl[k], v[i], _mm512_set1_epi32(Word(a.l + 4 * i)));
      }
      const __m512 d = _mm512_set1_ps(a.d);
      if constexpr (kPerHalf) {  // Q6_K: Σ(u − 32)·q per half, in the integers
        for (int h = 0; h < 2; ++h) {
          const __m512i j = _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32(jh[h], 8), jl[h]),
                                             _mm512_set1_epi32(32 * a.sum_half[h]));
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(j), _mm512_mul_ps(h ? w1 : w, d), acc[t]);
        }
        continue;
      }
      __m512i j = _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(jh[0], jh[1]), 8),
                                   _mm512_add_epi32(jl[0], jl[1]));
      if constexpr (!kOffset) {  // Q8_0: the codes carry + 128
        j = _mm512_sub_epi32(j, _mm512_set1_epi32(128 * (a.sum_half[0] + a.sum_half[1])));
      }
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(j), _mm512_mul_ps(w, d), acc[t]);
      if constexpr (kOffset) off[t] = _mm512_fmadd_ps(b, _mm512_set1_ps(a.ds), off[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = _mm512_add_ps(acc[t], off[t]);
}

template <WeightFormat F>
void DotPackedOf(const uint8_t* packed, int64_t n_rows, const ActBytes* x, size_t x_stride,
                 int n_tokens, int64_t n, float* y, size_t y_stride) {
  const int64_t chunks = n / kActChunk;
  const size_t group_bytes = packed_group_bytes(F, n);
  for (int64_t g = 0; g < packed_groups(n_rows); ++g) {
    const uint8_t* group = packed + static_cast<size_t>(g) * group_bytes;
    const int64_t left = n_rows - g * kPackRows;
    const __mmask16 rows =
        left >= kPackRows ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << left) - 1u);
    for (int t0 = 0; t0 < n_tokens; t0 += kTokensPerPass) {
      const ActBytes* xt = x + static_cast<size_t>(t0) * x_stride;
      __m512 out[kTokensPerPass];
      const int nt = n_tokens - t0 < kTokensPerPass ? n_tokens - t0 : kTokensPerPass;
      switch (nt) {
        case 1:
          GroupTokens<F, 1>(group, chunks, xt, x_stride, out);
          break;
        case 2:
          GroupTokens<F, 2>(group, chunks, xt, x_stride, out);
          break;
        case 3:
          GroupTokens<F, 3>(group, chunks, xt, x_stride, out);
          break;
        default:
          GroupTokens<F, kTokensPerPass>(group, chunks, xt, x_stride, out);
          break;
      }
      for (int t = 0; t < nt; ++t) {
        _mm512_mask_storeu_ps(y + static_cast<size_t>(t0 + t) * y_stride + g * kPackRows, rows,
                              out[t]);
      }
    }
  }
}
#endif  // HWY_TARGET == HWY_AVX3_DL

void DotPacked(WeightFormat f, const uint8_t* packed, int64_t n_rows, const ActBytes* x,
               size_t x_stride, int n_tokens, int64_t n, float* y, size_t y_stride) {
#ifdef INNERQ_PACKED_VNNI
  switch (f) {
#define INNERQ_PACKED_CASE(F) \
  case WeightFormat::F:       \
    return DotPackedOf<WeightFormat::F>(packed, n_rows, x, x_stride, n_tokens, n, y, y_stride);
    INNERQ_PACKED_CASE(kQ4_0)
    INNERQ_PACKED_CASE(kQ4_1)
    INNERQ_PACKED_CASE(kQ5_0)
    INNERQ_PACKED_CASE(kQ5_1)
    INNERQ_PACKED_CASE(kQ8_0)
    INNERQ_PACKED_CASE(kQ4_K)
    INNERQ_PACKED_CASE(kQ5_K)
    INNERQ_PACKED_CASE(kQ6_K)
#undef INNERQ_PACKED_CASE
    default:
      break;  // not packed_supported: callers check
  }
#else
  scalar::dot_packed(f, packed, n_rows, x, x_stride, n_tokens, n, y, y_stride);
#endif
}

bool PackedDotAvailable() {
#ifdef INNERQ_PACKED_VNNI
  return true;
#else
  return false;
#endif
}

#undef INNERQ_PACKED_VNNI

}  // namespace innerq::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace innerq::kernels::simd {

HWY_EXPORT(DotPacked);
HWY_EXPORT(PackedDotAvailable);

bool packed_dot_available() {
  return HWY_DYNAMIC_DISPATCH(PackedDotAvailable)();
}

void dot_packed(WeightFormat f, const uint8_t* packed, int64_t n_rows, const ActBytes* x,
                size_t x_stride, int n_tokens, int64_t n, float* y, size_t y_stride) {
  HWY_DYNAMIC_DISPATCH(DotPacked)(f, packed, n_rows, x, x_stride, n_tokens, n, y, y_stride);
}

}  // namespace innerq::kernels::simd
#endif  // HWY_ONCE
