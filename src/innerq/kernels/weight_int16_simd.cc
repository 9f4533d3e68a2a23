// innerq/kernels/weight_int16_simd.cc — Highway versions of the
// int16-activation weight product (contracts and arithmetic in
// weight_int16.h). Self-including Highway pattern: one dispatch per call.
//
// Each format has one decoder, DecodeInt(block, sink): per 32-value chunk it
// builds the codes of each 16-value half as 16 bytes and hands them to the
// sink with the chunk's W and B. The sink widens the codes to int16 once and
// multiplies them with each token's int16 activations by pairwise
// multiply-add (x86 madd), so the weights are decoded once for up to
// kTokensPerPass tokens. On AVX-512 the 32-value formats take a 512-bit path
// instead: a whole chunk per multiply-add.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "innerq/kernels/weight_int16_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/cache_control.h"
#include "hwy/highway.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "innerq/kernels/f16_scale-inl.h"
#include "innerq/kernels/weight_int16.h"

HWY_BEFORE_NAMESPACE();
namespace innerq::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET != HWY_SCALAR  // the one-lane target runs the reference (DotRowsInt16)

// A half chunk: 16 code bytes, and its int16 codes and activations.
using DU8 = hn::CappedTag<uint8_t, 16>;
using DI8 = hn::RebindToSigned<DU8>;
using DH = hn::CappedTag<int16_t, 16>;
using DW = hn::Repartition<int32_t, DH>;
using DF = hn::Repartition<float, DH>;
using VU8 = hn::Vec<DU8>;
using VH = hn::Vec<DH>;
using VW = hn::Vec<DW>;
using VF = hn::Vec<DF>;

constexpr int kHalfVecs = 16 / static_cast<int>(hn::MaxLanes(DH()));  // int16 vectors per half

// Tokens whose products share one decode of the weights.
constexpr int kTokensPerPass = 4;
// Rows ahead of the one being read whose bytes are prefetched: the decode is
// too dense for the out-of-order window to keep enough misses in flight.
constexpr int64_t kPrefetchRows = 2;

// The int16 codes of one half (kSigned: the bytes are int8).
struct HalfCodes {
  VH v[kHalfVecs];
};

template <bool kSigned, class D = DH>
HWY_INLINE HalfCodes Widen(VU8 bytes) {
  const D d;
  HalfCodes c;
  if constexpr (kHalfVecs == 1) {
    if constexpr (kSigned) {
      c.v[0] = hn::PromoteTo(d, hn::BitCast(DI8(), bytes));
    } else {
      c.v[0] = hn::BitCast(d, hn::PromoteTo(hn::RebindToUnsigned<D>(), bytes));
    }
  } else {
    const hn::Half<DU8> dh;
    const hn::Half<DI8> dhs;
    for (int v = 0; v < kHalfVecs; ++v) {
      const auto part = v == 0 ? hn::LowerHalf(dh, bytes) : hn::UpperHalf(dh, bytes);
      if constexpr (kSigned) {
        c.v[v] = hn::PromoteTo(d, hn::BitCast(dhs, part));
      } else {
        c.v[v] = hn::BitCast(d, hn::PromoteTo(hn::RebindToUnsigned<D>(), part));
      }
    }
  }
  return c;
}

// Σ codes·q over one half, as int32 lanes of at most 2·kHalfVecs products.
HWY_INLINE VW HalfDot(const HalfCodes& c, const int16_t* q) {
  const DH d;
  const DW dw;
  VW sum0 = hn::Zero(dw), sum1 = hn::Zero(dw);
  for (int v = 0; v < kHalfVecs; ++v) {
    sum0 = hn::ReorderWidenMulAccumulate(dw, c.v[v], hn::LoadU(d, q + v * hn::MaxLanes(d)), sum0,
                                         sum1);
  }
  return hn::Add(sum0, sum1);
}

// W and B of a chunk's halves (weight_int16.h).
struct Factors {
  float w[2];
  float b[2];
};

HWY_INLINE Factors Whole(float w, float b) {
  return {{w, w}, {b, b}};
}

// Up to kTokensPerPass tokens of one row: per token two accumulators and
// one offset sum, exactly as a single-token call. kPerHalf (K-quants and
// Q8_0): one multiply-add per half, half 0 into acc[0], half 1 into acc[1];
// else the halves' integer sums join (|J| of 4·kHalfVecs products of ≤ 31 ×
// kActMax stays exact in f32) and the chunks alternate.
template <int NT>
struct RowSink {
  const ActChunk* x[NT];
  VF acc[NT][2];
  float off[NT];

  RowSink(const ActChunk* x0, size_t x_stride) {
    for (int t = 0; t < NT; ++t) {
      x[t] = x0 + static_cast<size_t>(t) * x_stride;
      acc[t][0] = acc[t][1] = hn::Zero(DF());
      off[t] = 0.0f;
    }
  }

  template <bool kPerHalf, bool kSigned, bool kOffset>
  HWY_INLINE void Chunk(VU8 h0, VU8 h1, const Factors& f) {
    const DF df;
    const HalfCodes c0 = Widen<kSigned>(h0), c1 = Widen<kSigned>(h1);
    for (int t = 0; t < NT; ++t) {
      const ActChunk& a = *x[t]++;
      const VW j0 = HalfDot(c0, a.q), j1 = HalfDot(c1, a.q + 16);
      if constexpr (kPerHalf) {
        acc[t][0] = hn::MulAdd(hn::ConvertTo(df, j0), hn::Set(df, f.w[0] * a.d), acc[t][0]);
        acc[t][1] = hn::MulAdd(hn::ConvertTo(df, j1), hn::Set(df, f.w[1] * a.d), acc[t][1]);
        if constexpr (kOffset) {
          off[t] += f.b[0] * a.ds_half[0];
          off[t] += f.b[1] * a.ds_half[1];
        }
      } else {
        acc[t][0] =
            hn::MulAdd(hn::ConvertTo(df, hn::Add(j0, j1)), hn::Set(df, f.w[0] * a.d), acc[t][0]);
        std::swap(acc[t][0], acc[t][1]);
        if constexpr (kOffset) off[t] += f.b[0] * a.ds;
      }
    }
  }

  float Result(int t) const {
    return hn::GetLane(hn::SumOfLanes(DF(), hn::Add(acc[t][0], acc[t][1]))) + off[t];
  }
};

// ---------------------------------------------------------------------------
// Decoders (codes and factors as weight_int16.h's table).
// ---------------------------------------------------------------------------

HWY_INLINE VU8 Low4(VU8 v) {
  return hn::And(v, hn::Set(DU8(), uint8_t{15}));
}

HWY_INLINE VU8 Load16(const uint8_t* p) {
  return hn::LoadU(DU8(), p);
}

// Bits 16h + l (l < 16) of the little-endian word at qh, as 0 or 16 per byte.
HWY_INLINE VU8 FifthBits(const uint8_t* qh, int h) {
  const DU8 du8;
  const hn::Repartition<uint32_t, DU8> du32;
  uint32_t bits = 0;
  std::memcpy(&bits, qh, sizeof(bits));
  const VU8 word = hn::BitCast(du8, hn::Set(du32, bits));
  alignas(16) static constexpr uint8_t kByte[2][16] = {
      {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
      {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3}};
  alignas(16) static constexpr uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128,
                                                   1, 2, 4, 8, 16, 32, 64, 128};
  const VU8 bytes = hn::TableLookupBytes(word, hn::Load(du8, kByte[h]));
  return hn::IfThenElseZero(hn::TestBit(bytes, hn::Load(du8, kBit)), hn::Set(du8, uint8_t{16}));
}

template <class Sink>
HWY_INLINE void DecodeInt(const BlockQ4_0& b, Sink& sink) {
  const VU8 v = Load16(b.qs);
  const float d = ScaleF32(b.d);
  sink.template Chunk<false, false, true>(Low4(v), hn::ShiftRight<4>(v), Whole(d, -8.0f * d));
}

template <class Sink>
HWY_INLINE void DecodeInt(const BlockQ4_1& b, Sink& sink) {
  const VU8 v = Load16(b.qs);
  sink.template Chunk<false, false, true>(Low4(v), hn::ShiftRight<4>(v),
                                          Whole(ScaleF32(b.d), ScaleF32(b.m)));
}

template <class Sink>
HWY_INLINE void DecodeInt(const BlockQ5_0& b, Sink& sink) {
  const VU8 v = Load16(b.qs);
  const float d = ScaleF32(b.d);
  sink.template Chunk<false, false, true>(hn::Or(Low4(v), FifthBits(b.qh, 0)),
                                          hn::Or(hn::ShiftRight<4>(v), FifthBits(b.qh, 1)),
                                          Whole(d, -16.0f * d));
}

template <class Sink>
HWY_INLINE void DecodeInt(const BlockQ5_1& b, Sink& sink) {
  const VU8 v = Load16(b.qs);
  sink.template Chunk<false, false, true>(hn::Or(Low4(v), FifthBits(b.qh, 0)),
                                          hn::Or(hn::ShiftRight<4>(v), FifthBits(b.qh, 1)),
                                          Whole(ScaleF32(b.d), ScaleF32(b.m)));
}

// Signed codes: per half, so that each int32 lane sums few enough products
// to stay exact in f32.
template <class Sink>
HWY_INLINE void DecodeInt(const BlockQ8_0& b, Sink& sink) {
  const auto* qs = reinterpret_cast<const uint8_t*>(b.qs);
  sink.template Chunk<true, true, false>(Load16(qs), Load16(qs + 16), Whole(ScaleF32(b.d), 0.0f));
}

// Q2_K chunk k = 4h + j: bits 2j..2j+1 of qs[32h + l].
template <class Sink>
HWY_INLINE void DecodeInt(const BlockQ2_K& b, Sink& sink) {
  const float d = ScaleF32(b.d), dmin = ScaleF32(b.dmin);
  const VU8 three = hn::Set(DU8(), uint8_t{3});
  for (int k = 0; k < 8; ++k) {
    const uint8_t* qs = b.qs + 32 * (k / 4);
    const int shift = 2 * (k % 4);
    Factors f;
    for (int h = 0; h < 2; ++h) {
      const int sc = b.scales[2 * k + h];
      f.w[h] = d * static_cast<float>(sc & 15);
      f.b[h] = -(dmin * static_cast<float>(sc >> 4));
    }
    sink.template Chunk<true, false, true>(
        hn::And(hn::ShiftRightSame(Load16(qs), shift), three),
        hn::And(hn::ShiftRightSame(Load16(qs + 16), shift), three), f);
  }
}

// Q3_K: Q2_K's 2 bits, plus 4 where bit 4h + j of hmask[l] is set.
template <class Sink>
HWY_INLINE void DecodeInt(const BlockQ3_K& b, Sink& sink) {
  const float d = ScaleF32(b.d);
  const VU8 three = hn::Set(DU8(), uint8_t{3}), one = hn::Set(DU8(), uint8_t{1});
  for (int k = 0; k < 8; ++k) {
    const uint8_t* qs = b.qs + 32 * (k / 4);
    const int shift = 2 * (k % 4), hbit = 4 * (k / 4) + k % 4;
    VU8 half[2];
    Factors f;
    for (int h = 0; h < 2; ++h) {
      const VU8 low = hn::And(hn::ShiftRightSame(Load16(qs + 16 * h), shift), three);
      const VU8 high = hn::And(hn::ShiftRightSame(Load16(b.hmask + 16 * h), hbit), one);
      half[h] = hn::Or(low, hn::ShiftLeft<2>(high));
      f.w[h] = d * static_cast<float>(q3k_scale(b.scales, 2 * k + h));
      f.b[h] = -4.0f * f.w[h];
    }
    sink.template Chunk<true, false, true>(half[0], half[1], f);
  }
}

// Q4_K/Q5_K chunk k: nibble k % 2 of qs[32(k / 2) + l]; Q5_K adds bit k of qh[l].
template <bool kFifth, class Block, class Sink>
HWY_INLINE void DecodeIntK(const Block& b, Sink& sink) {
  const float d = ScaleF32(b.d), dmin = ScaleF32(b.dmin);
  const VU8 one = hn::Set(DU8(), uint8_t{1});
  for (int k = 0; k < 8; ++k) {
    int sc = 0, m = 0;
    k_scale_min(b.scales, k, &sc, &m);
    VU8 half[2];
    for (int h = 0; h < 2; ++h) {
      const VU8 v = Load16(b.qs + 32 * (k / 2) + 16 * h);
      half[h] = k % 2 ? hn::ShiftRight<4>(v) : Low4(v);
      if constexpr (kFifth) {
        const VU8 high = hn::And(hn::ShiftRightSame(Load16(b.qh + 16 * h), k), one);
        half[h] = hn::Or(half[h], hn::ShiftLeft<4>(high));
      }
    }
    sink.template Chunk<true, false, true>(
        half[0], half[1], Whole(d * static_cast<float>(sc), -(dmin * static_cast<float>(m))));
  }
}

template <class Sink>
HWY_INLINE void DecodeInt(const BlockQ4_K& b, Sink& sink) {
  DecodeIntK<false>(b, sink);
}

template <class Sink>
HWY_INLINE void DecodeInt(const BlockQ5_K& b, Sink& sink) {
  DecodeIntK<true>(b, sink);
}

// Q6_K chunk k = 4h + s: nibble s / 2 of ql[64h + 32(s % 2) + l], bits 2s..2s+1 of qh[32h + l].
template <class Sink>
HWY_INLINE void DecodeInt(const BlockQ6_K& b, Sink& sink) {
  const float d = ScaleF32(b.d);
  const VU8 three = hn::Set(DU8(), uint8_t{3});
  for (int k = 0; k < 8; ++k) {
    const int h = k / 4, s = k % 4;
    VU8 half[2];
    Factors f;
    for (int l = 0; l < 2; ++l) {
      const VU8 low =
          Low4(hn::ShiftRightSame(Load16(b.ql + 64 * h + 32 * (s % 2) + 16 * l), 4 * (s / 2)));
      const VU8 high = hn::And(hn::ShiftRightSame(Load16(b.qh + 32 * h + 16 * l), 2 * s), three);
      half[l] = hn::Or(low, hn::ShiftLeft<4>(high));
      f.w[l] = d * static_cast<float>(b.scales[2 * k + l]);
      f.b[l] = -32.0f * f.w[l];
    }
    sink.template Chunk<true, false, true>(half[0], half[1], f);
  }
}

// ---------------------------------------------------------------------------
// AVX-512: the 32-value formats, a whole chunk per 512-bit multiply-add.
// ---------------------------------------------------------------------------

#undef INNERQ_INT16_AVX512  // set again for each target that has the path
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define INNERQ_INT16_AVX512 1

// The 32 code bytes of a chunk (values 0..15 the low nibbles of qs, 16..31
// the high ones).
HWY_INLINE __m256i Nibbles32(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
}

// Byte i = 16 where bit i of the little-endian word at qh is set, else 0.
HWY_INLINE __m256i FifthBits32(const uint8_t* qh) {
  uint32_t word = 0;
  std::memcpy(&word, qh, sizeof(word));
  const __mmask32 set = _cvtu32_mask32(word);
  return _mm256_maskz_mov_epi8(set, _mm256_set1_epi8(16));
}

// [fp16 at p, fp16 at p + 2] in f32 lanes 0 and 1.
HWY_INLINE __m128 TwoScales(const void* p) {
  int32_t pair = 0;
  std::memcpy(&pair, p, sizeof(pair));
  return _mm_cvtph_ps(_mm_cvtsi32_si128(pair));
}

// [d, z·d] (z a power of two: exact).
HWY_INLINE __m128 ScaleAndZeroPoint(const f16_bits& d, float z) {
  uint16_t bits = 0;
  std::memcpy(&bits, &d, sizeof(bits));
  const __m128 both = _mm_cvtph_ps(_mm_set1_epi16(static_cast<int16_t>(bits)));
  return _mm_mul_ps(both, _mm_set_ps(0.0f, 0.0f, z, 1.0f));
}

// A chunk's int16 codes and [W, B].
struct WideChunk {
  __m512i codes;
  __m128 wb;
};

HWY_INLINE WideChunk WideDecode(const BlockQ4_0& b) {
  return {_mm512_cvtepu8_epi16(Nibbles32(b.qs)), ScaleAndZeroPoint(b.d, -8.0f)};
}
HWY_INLINE WideChunk WideDecode(const BlockQ4_1& b) {
  return {_mm512_cvtepu8_epi16(Nibbles32(b.qs)), TwoScales(&b.d)};
}
HWY_INLINE WideChunk WideDecode(const BlockQ5_0& b) {
  return {_mm512_cvtepu8_epi16(_mm256_or_si256(Nibbles32(b.qs), FifthBits32(b.qh))),
          ScaleAndZeroPoint(b.d, -16.0f)};
}
HWY_INLINE WideChunk WideDecode(const BlockQ5_1& b) {
  return {_mm512_cvtepu8_epi16(_mm256_or_si256(Nibbles32(b.qs), FifthBits32(b.qh))),
          TwoScales(&b.d)};
}
HWY_INLINE WideChunk WideDecode(const BlockQ8_0& b) {
  return {_mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs))),
          _mm_set_ss(ScaleF32(b.d))};
}

// One row, NT tokens: per token two accumulators that alternate by chunk
// (each lane two products: exact in f32), and the offsets in lane 1 of an
// f32x4 (lane 0 sums the F, unused).
template <class Block, int NT>
HWY_INLINE void WideRowTokens(const uint8_t* row, const ActChunk* x, size_t x_stride, int64_t n,
                              float* y, size_t y_stride) {
  constexpr bool kOffset = !std::is_same_v<Block, BlockQ8_0>;
  const auto* blocks = reinterpret_cast<const Block*>(row);
  __m512 acc[NT][2];
  __m128 off[NT];
  const ActChunk* xt[NT];
  for (int t = 0; t < NT; ++t) {
    acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    off[t] = _mm_setzero_ps();
    xt[t] = x + static_cast<size_t>(t) * x_stride;
  }
  for (int64_t b = 0; b < n / kActChunk; ++b) {
    const WideChunk ch = WideDecode(blocks[b]);
    for (int t = 0; t < NT; ++t) {
      const ActChunk& a = xt[t][b];
      const __m512i j = _mm512_madd_epi16(ch.codes, _mm512_loadu_si512(a.q));
      const __m128 dds = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(&a.d)));
      const __m128 fo = _mm_mul_ps(ch.wb, dds);  // [F, O]
      acc[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(j), _mm512_broadcastss_ps(fo), acc[t][0]);
      std::swap(acc[t][0], acc[t][1]);
      if constexpr (kOffset) off[t] = _mm_add_ps(off[t], fo);
    }
  }
  for (int t = 0; t < NT; ++t) {
    float result = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]));
    if constexpr (kOffset) result += _mm_cvtss_f32(_mm_movehdup_ps(off[t]));
    y[static_cast<size_t>(t) * y_stride] = result;
  }
}
#endif

// ---------------------------------------------------------------------------
// Rows.
// ---------------------------------------------------------------------------

template <class Block, int NT>
HWY_INLINE void DotRowTokens(const uint8_t* row, const ActChunk* x, size_t x_stride, int64_t n,
                             float* y, size_t y_stride) {
#ifdef INNERQ_INT16_AVX512
  if constexpr (kBlockValues<Block> == kActChunk) {
    return WideRowTokens<Block, NT>(row, x, x_stride, n, y, y_stride);
  }
#endif
  RowSink<NT> sink(x, x_stride);
  const auto* blocks = reinterpret_cast<const Block*>(row);
  for (int64_t b = 0; b < n / kBlockValues<Block>; ++b) DecodeInt(blocks[b], sink);
  for (int t = 0; t < NT; ++t) y[static_cast<size_t>(t) * y_stride] = sink.Result(t);
}

template <class Block>
void DotRowsOf(const uint8_t* rows, size_t row_bytes, int64_t n_rows, const ActChunk* x,
               size_t x_stride, int n_tokens, int64_t n, float* y, size_t y_stride) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* row = rows + static_cast<size_t>(r) * row_bytes;
    if (r + kPrefetchRows < n_rows) {
      const uint8_t* ahead = row + kPrefetchRows * row_bytes;
      for (size_t i = 0; i < row_bytes; i += 64) hwy::Prefetch(ahead + i);
    }
    for (int t = 0; t < n_tokens; t += kTokensPerPass) {
      const ActChunk* xt = x + static_cast<size_t>(t) * x_stride;
      float* yt = y + static_cast<size_t>(t) * y_stride + r;
      switch (std::min(kTokensPerPass, n_tokens - t)) {
        case 1:
          DotRowTokens<Block, 1>(row, xt, x_stride, n, yt, y_stride);
          break;
        case 2:
          DotRowTokens<Block, 2>(row, xt, x_stride, n, yt, y_stride);
          break;
        case 3:
          DotRowTokens<Block, 3>(row, xt, x_stride, n, yt, y_stride);
          break;
        default:
          DotRowTokens<Block, kTokensPerPass>(row, xt, x_stride, n, yt, y_stride);
          break;
      }
    }
  }
}

#endif  // HWY_TARGET != HWY_SCALAR

void DotRowsInt16(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows,
                  const ActChunk* x, size_t x_stride, int n_tokens, int64_t n, float* y,
                  size_t y_stride) {
#if HWY_TARGET == HWY_SCALAR
  // Single lanes cannot hold the half chunks the decoders build: the
  // one-lane target (CPUs without SSSE3) runs the reference.
  return scalar::dot_rows_int16(f, rows, row_bytes, n_rows, x, x_stride, n_tokens, n, y, y_stride);
#else
  with_block_type(
      f,
      [&]<class Block>() {
        DotRowsOf<Block>(rows, row_bytes, n_rows, x, x_stride, n_tokens, n, y, y_stride);
      },
      [] {});  // BF16: not supported (int16_dot_supported); callers check
#endif
}

// ---------------------------------------------------------------------------
// Activations.
// ---------------------------------------------------------------------------

void QuantizeActivations(const float* x, int64_t n, ActChunk* out) {
  const hn::CappedTag<float, 16> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<int16_t, decltype(df)> d16;
  using V = hn::Vec<decltype(df)>;
  constexpr int kF = static_cast<int>(hn::MaxLanes(decltype(df)()));
  for (int64_t c = 0; c < n / kActChunk; ++c) {
    const float* xc = x + c * kActChunk;
    ActChunk& a = out[c];
    V amax = hn::Zero(df), probe = hn::Zero(df);
    for (int i = 0; i < kActChunk; i += kF) {
      const V v = hn::LoadU(df, xc + i);
      amax = hn::Max(amax, hn::Abs(v));
      probe = hn::Add(probe, hn::Mul(v, hn::Zero(df)));  // NaN iff some value is not finite
    }
    a = ActChunk{};
    if (hn::GetLane(hn::SumOfLanes(df, probe)) != 0.0f) {
      a.d = a.ds = a.ds_half[0] = a.ds_half[1] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    const float m = hn::GetLane(hn::MaxOfLanes(df, amax));
    if (m < 0x1p-90f) continue;
    a.d = m / static_cast<float>(kActMax);
    const V id = hn::Set(df, 1.0f / a.d);
    const V lo = hn::Set(df, -static_cast<float>(kActMax));
    const V hi = hn::Set(df, static_cast<float>(kActMax));
    int32_t sum[2] = {0, 0};
    for (int i = 0; i < kActChunk; i += kF) {
      const V q = hn::Min(hn::Max(hn::Round(hn::Mul(hn::LoadU(df, xc + i), id)), lo), hi);
      const hn::Vec<decltype(di)> qi = hn::ConvertTo(di, q);
      hn::StoreU(hn::DemoteTo(d16, qi), d16, a.q + i);
      sum[i / 16] += hn::GetLane(hn::SumOfLanes(di, qi));
    }
    a.ds = a.d * static_cast<float>(sum[0] + sum[1]);
    a.ds_half[0] = a.d * static_cast<float>(sum[0]);
    a.ds_half[1] = a.d * static_cast<float>(sum[1]);
  }
}

size_t Int16DotLanes() {
#if defined(INNERQ_INT16_AVX512)
  return 16;
#elif HWY_TARGET == HWY_SCALAR
  return 1;
#else
  return hn::Lanes(DF());
#endif
}

}  // namespace innerq::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace innerq::kernels::simd {

HWY_EXPORT(QuantizeActivations);
HWY_EXPORT(DotRowsInt16);
HWY_EXPORT(Int16DotLanes);

void quantize_activations(const float* x, int64_t n, ActChunk* out) {
  HWY_DYNAMIC_DISPATCH(QuantizeActivations)(x, n, out);
}

void dot_rows_int16(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows,
                    const ActChunk* x, size_t x_stride, int n_tokens, int64_t n, float* y,
                    size_t y_stride) {
  HWY_DYNAMIC_DISPATCH(DotRowsInt16)
  (f, rows, row_bytes, n_rows, x, x_stride, n_tokens, n, y, y_stride);
}

size_t int16_dot_lanes() {
  return HWY_DYNAMIC_DISPATCH(Int16DotLanes)();
}

}  // namespace innerq::kernels::simd
#endif  // HWY_ONCE
