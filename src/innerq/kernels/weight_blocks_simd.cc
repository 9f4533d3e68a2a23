// innerq/kernels/weight_blocks_simd.cc — Highway versions of the weight block
// kernels (contracts in weight_blocks.h). Self-including Highway pattern: one
// dispatch per call.
//
// Each format has one decoder, Decode(block, sink): it unpacks the block's
// scales once (K-quants: the 8 or 16 sub-block scales and mins as f32
// products), then widens the codes a vector at a time (u8 → i32 → f32) and
// hands the sink each vector of finished weights w = dl·q − ml with the
// offset of its first value. Dequantize's sink stores them; the dot's sink
// multiplies them into two accumulators. So the dot sees exactly the weights
// that dequantize writes, and both match the scalar reference bit for bit.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "innerq/kernels/weight_blocks_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"

#include <cstring>
#include <utility>

#include "innerq/kernels/f16_scale-inl.h"
#include "innerq/kernels/weight_blocks.h"

HWY_BEFORE_NAMESPACE();
namespace innerq::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most 16 lanes, so a vector never spans two sub-blocks (16 values at
// least) or the two nibble halves of a 32-value block.
using DF = hn::CappedTag<float, 16>;
using DI = hn::RebindToSigned<DF>;
using DU32 = hn::RebindToUnsigned<DF>;
using DU8 = hn::Rebind<uint8_t, DF>;
using DI8 = hn::Rebind<int8_t, DF>;
using DU16 = hn::Rebind<uint16_t, DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;

// Lanes() bytes at p, widened to i32.
HWY_INLINE VI LoadBytes(const uint8_t* p) {
  return hn::PromoteTo(DI(), hn::LoadU(DU8(), p));
}

HWY_INLINE VF ToFloat(VI q) {
  return hn::ConvertTo(DF(), q);
}

// dl·q − ml, a product then a difference (never fused), as the scalar reference.
HWY_INLINE VF ScaleMinusMin(float dl, VI q, float ml) {
  const DF df;
  return hn::Sub(hn::Mul(hn::Set(df, dl), ToFloat(q)), hn::Set(df, ml));
}

// ---------------------------------------------------------------------------
// Sinks: what happens to each vector of decoded weights.
// ---------------------------------------------------------------------------

// out[i .. i + Lanes) = w.
struct StoreSink {
  float* out;

  HWY_INLINE void operator()(size_t i, VF w) { hn::StoreU(w, DF(), out + i); }
  // Only the first `count` lanes of w exist (the end of a BF16 row).
  HWY_INLINE void Partial(size_t i, VF w, size_t count) {
    HWY_ALIGN float lanes[16];
    hn::Store(w, DF(), lanes);
    std::memcpy(out + i, lanes, count * sizeof(float));
  }
  void Advance(size_t values) { out += values; }
};

// Σ w·x over two accumulators that alternate vector by vector.
struct DotSink {
  const float* x;
  VF acc0 = hn::Zero(DF());
  VF acc1 = hn::Zero(DF());

  HWY_INLINE void operator()(size_t i, VF w) {
    acc0 = hn::MulAdd(w, hn::LoadU(DF(), x + i), acc0);
    std::swap(acc0, acc1);
  }
  HWY_INLINE void Partial(size_t i, VF w, size_t count) {
    HWY_ALIGN float lanes[16] = {};
    std::memcpy(lanes, x + i, count * sizeof(float));
    acc0 = hn::MulAdd(w, hn::Load(DF(), lanes), acc0);
    std::swap(acc0, acc1);
  }
  void Advance(size_t values) { x += values; }
  float Sum() const {
    const DF df;
    return hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0, acc1)));
  }
};

// ---------------------------------------------------------------------------
// Decoders, one per format (value order and formulas in weight_blocks.h).
// ---------------------------------------------------------------------------

// Q4_0 and Q4_1: value i < 16 is the low nibble of qs[i], value 16 + i the high.
template <class Sink>
HWY_INLINE void Decode(const BlockQ4_0& b, Sink& sink) {
  const DF df;
  const DI di;
  const VF d = hn::Set(df, ScaleF32(b.d));
  const VI mask = hn::Set(di, 15), eight = hn::Set(di, 8);
  for (size_t i = 0; i < kWeightBlock / 2; i += hn::Lanes(df)) {
    const VI q = LoadBytes(b.qs + i);
    sink(i, hn::Mul(d, ToFloat(hn::Sub(hn::And(q, mask), eight))));
    sink(kWeightBlock / 2 + i, hn::Mul(d, ToFloat(hn::Sub(hn::ShiftRight<4>(q), eight))));
  }
}

template <class Sink>
HWY_INLINE void Decode(const BlockQ4_1& b, Sink& sink) {
  const DF df;
  const DI di;
  const VF d = hn::Set(df, ScaleF32(b.d)), m = hn::Set(df, ScaleF32(b.m));
  const VI mask = hn::Set(di, 15);
  for (size_t i = 0; i < kWeightBlock / 2; i += hn::Lanes(df)) {
    const VI q = LoadBytes(b.qs + i);
    sink(i, hn::Add(hn::Mul(d, ToFloat(hn::And(q, mask))), m));
    sink(kWeightBlock / 2 + i, hn::Add(hn::Mul(d, ToFloat(hn::ShiftRight<4>(q))), m));
  }
}

// Q5_0 and Q5_1: Q4's nibbles, with bit i of the little-endian word qh on top.
// Calls emit(i, q) with the 5-bit codes of values i .. i + Lanes.
template <class Block, class Emit>
HWY_INLINE void FiveBitCodes(const Block& b, Emit&& emit) {
  const DF df;
  const DI di;
  uint32_t qh = 0;
  std::memcpy(&qh, b.qh, sizeof(qh));
  const VI bits = hn::Set(di, static_cast<int32_t>(qh));
  const VI mask = hn::Set(di, 15), one = hn::Set(di, 1), sixteen = hn::Set(di, 16);
  for (size_t i = 0; i < kWeightBlock / 2; i += hn::Lanes(df)) {
    const VI q = LoadBytes(b.qs + i);
    const VI index = hn::Iota(di, static_cast<int32_t>(i));
    const VI high_lo = hn::ShiftLeft<4>(hn::And(bits >> index, one));
    const VI high_hi = hn::ShiftLeft<4>(hn::And(bits >> hn::Add(index, sixteen), one));
    emit(i, hn::Or(hn::And(q, mask), high_lo));
    emit(kWeightBlock / 2 + i, hn::Or(hn::ShiftRight<4>(q), high_hi));
  }
}

template <class Sink>
HWY_INLINE void Decode(const BlockQ5_0& b, Sink& sink) {
  const DF df;
  const VF d = hn::Set(df, ScaleF32(b.d));
  const VI sixteen = hn::Set(DI(), 16);
  FiveBitCodes(b, [&](size_t i, VI q) { sink(i, hn::Mul(d, ToFloat(hn::Sub(q, sixteen)))); });
}

template <class Sink>
HWY_INLINE void Decode(const BlockQ5_1& b, Sink& sink) {
  const DF df;
  const VF d = hn::Set(df, ScaleF32(b.d)), m = hn::Set(df, ScaleF32(b.m));
  FiveBitCodes(b, [&](size_t i, VI q) { sink(i, hn::Add(hn::Mul(d, ToFloat(q)), m)); });
}

template <class Sink>
HWY_INLINE void Decode(const BlockQ8_0& b, Sink& sink) {
  const DF df;
  const VF d = hn::Set(df, ScaleF32(b.d));
  for (size_t i = 0; i < kWeightBlock; i += hn::Lanes(df)) {
    sink(i, hn::Mul(d, ToFloat(hn::PromoteTo(DI(), hn::LoadU(DI8(), b.qs + i)))));
  }
}

// Q2_K: 16 sub-blocks of 16; byte qs[32h + l] holds value 128h + 32j + l in bits 2j..2j+1.
template <class Sink>
HWY_INLINE void Decode(const BlockQ2_K& b, Sink& sink) {
  const DF df;
  const DI di;
  const float d = ScaleF32(b.d), dmin = ScaleF32(b.dmin);
  float dl[16], ml[16];
  for (int k = 0; k < 16; ++k) {
    dl[k] = d * static_cast<float>(b.scales[k] & 15);
    ml[k] = dmin * static_cast<float>(b.scales[k] >> 4);
  }
  const VI three = hn::Set(di, 3);
  for (size_t h = 0; h < 2; ++h) {
    for (size_t l = 0; l < 32; l += hn::Lanes(df)) {
      const VI bytes = LoadBytes(b.qs + 32 * h + l);
      for (int j = 0; j < 4; ++j) {
        const size_t sub = 8 * h + 2 * j + l / 16;
        const VI q = hn::And(hn::ShiftRightSame(bytes, 2 * j), three);
        sink(128 * h + 32 * j + l, ScaleMinusMin(dl[sub], q, ml[sub]));
      }
    }
  }
}

// Q3_K: as Q2_K's codes, minus 4 where bit 4h + j of hmask[l] is clear.
template <class Sink>
HWY_INLINE void Decode(const BlockQ3_K& b, Sink& sink) {
  const DF df;
  const DI di;
  const float d = ScaleF32(b.d);
  float dl[16];
  for (int k = 0; k < 16; ++k) dl[k] = d * static_cast<float>(q3k_scale(b.scales, k));
  const VI three = hn::Set(di, 3), one = hn::Set(di, 1), four = hn::Set(di, 4);
  for (size_t h = 0; h < 2; ++h) {
    for (size_t l = 0; l < 32; l += hn::Lanes(df)) {
      const VI bytes = LoadBytes(b.qs + 32 * h + l);
      const VI hmask = LoadBytes(b.hmask + l);
      for (int j = 0; j < 4; ++j) {
        const size_t sub = 8 * h + 2 * j + l / 16;
        const VI low = hn::And(hn::ShiftRightSame(bytes, 2 * j), three);
        const VI high = hn::And(hn::ShiftRightSame(hmask, static_cast<int>(4 * h) + j), one);
        const VI q = hn::Sub(hn::Add(low, hn::ShiftLeft<2>(high)), four);
        sink(128 * h + 32 * j + l, hn::Mul(hn::Set(df, dl[sub]), ToFloat(q)));
      }
    }
  }
}

// Q4_K/Q5_K scales: dl = d·sc, ml = dmin·m for the 8 sub-blocks of 32.
template <class Block>
HWY_INLINE void KScales(const Block& b, float dl[8], float ml[8]) {
  const float d = ScaleF32(b.d), dmin = ScaleF32(b.dmin);
  for (int j = 0; j < 8; ++j) {
    int sc = 0, m = 0;
    k_scale_min(b.scales, j, &sc, &m);
    dl[j] = d * static_cast<float>(sc);
    ml[j] = dmin * static_cast<float>(m);
  }
}

// Q4_K: byte qs[32c + l] holds value 64c + l (low nibble) and 64c + 32 + l (high).
template <class Sink>
HWY_INLINE void Decode(const BlockQ4_K& b, Sink& sink) {
  const DF df;
  float dl[8], ml[8];
  KScales(b, dl, ml);
  const VI mask = hn::Set(DI(), 15);
  for (size_t c = 0; c < 4; ++c) {
    for (size_t l = 0; l < 32; l += hn::Lanes(df)) {
      const VI bytes = LoadBytes(b.qs + 32 * c + l);
      sink(64 * c + l, ScaleMinusMin(dl[2 * c], hn::And(bytes, mask), ml[2 * c]));
      sink(64 * c + 32 + l, ScaleMinusMin(dl[2 * c + 1], hn::ShiftRight<4>(bytes), ml[2 * c + 1]));
    }
  }
}

// Q5_K: Q4_K's nibbles with bit 2c (low) and 2c + 1 (high) of qh[l] on top.
template <class Sink>
HWY_INLINE void Decode(const BlockQ5_K& b, Sink& sink) {
  const DF df;
  const DI di;
  float dl[8], ml[8];
  KScales(b, dl, ml);
  const VI mask = hn::Set(di, 15), one = hn::Set(di, 1);
  for (size_t l = 0; l < 32; l += hn::Lanes(df)) {
    const VI high = LoadBytes(b.qh + l);
    for (int c = 0; c < 4; ++c) {
      const VI bytes = LoadBytes(b.qs + 32 * c + l);
      const VI high_lo = hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(high, 2 * c), one));
      const VI high_hi = hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(high, 2 * c + 1), one));
      sink(64 * c + l, ScaleMinusMin(dl[2 * c], hn::Or(hn::And(bytes, mask), high_lo), ml[2 * c]));
      sink(64 * c + 32 + l,
           ScaleMinusMin(dl[2 * c + 1], hn::Or(hn::ShiftRight<4>(bytes), high_hi), ml[2 * c + 1]));
    }
  }
}

// Q6_K: in half h, ql[64h + l] and ql[64h + 32 + l] give the low nibbles of
// values +l, +32+l (low) and +64+l, +96+l (high); qh[32h + l] their top 2 bits.
template <class Sink>
HWY_INLINE void Decode(const BlockQ6_K& b, Sink& sink) {
  const DF df;
  const DI di;
  const float d = ScaleF32(b.d);
  float dl[16];
  for (int k = 0; k < 16; ++k) dl[k] = d * static_cast<float>(b.scales[k]);
  const VI mask = hn::Set(di, 15), three = hn::Set(di, 3), bias = hn::Set(di, 32);
  for (size_t h = 0; h < 2; ++h) {
    for (size_t l = 0; l < 32; l += hn::Lanes(df)) {
      const VI a = LoadBytes(b.ql + 64 * h + l);
      const VI c = LoadBytes(b.ql + 64 * h + 32 + l);
      const VI high = LoadBytes(b.qh + 32 * h + l);
      const VI q[4] = {
          hn::Or(hn::And(a, mask), hn::ShiftLeft<4>(hn::And(high, three))),
          hn::Or(hn::And(c, mask), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<2>(high), three))),
          hn::Or(hn::ShiftRight<4>(a), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<4>(high), three))),
          hn::Or(hn::ShiftRight<4>(c), hn::ShiftLeft<4>(hn::ShiftRight<6>(high))),
      };
      for (size_t s = 0; s < 4; ++s) {
        const size_t sub = 8 * h + 2 * s + l / 16;
        sink(128 * h + 32 * s + l, hn::Mul(hn::Set(df, dl[sub]), ToFloat(hn::Sub(q[s], bias))));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Rows.
// ---------------------------------------------------------------------------

template <class Block, class Sink>
HWY_INLINE void DecodeRow(const uint8_t* row, int64_t n, Sink& sink) {
  constexpr int V = kBlockValues<Block>;
  const auto* blocks = reinterpret_cast<const Block*>(row);
  for (int64_t b = 0; b < n / V; ++b) {
    Decode(blocks[b], sink);
    sink.Advance(V);
  }
}

// BF16: a row of n values, the last partial vector padded.
template <class Sink>
HWY_INLINE void DecodeRowBf16(const uint8_t* row, int64_t n, Sink& sink) {
  const DF df;
  const DU32 du32;
  const DU16 du16;
  const size_t N = hn::Lanes(df);
  const auto* h = reinterpret_cast<const uint16_t*>(row);
  const auto widen = [&](const uint16_t* p) {
    return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, p))));
  };
  size_t i = 0;
  for (; i + N <= static_cast<size_t>(n); i += N) sink(i, widen(h + i));
  if (i < static_cast<size_t>(n)) {
    HWY_ALIGN uint16_t tail[16] = {};
    std::memcpy(tail, h + i, (static_cast<size_t>(n) - i) * sizeof(uint16_t));
    sink.Partial(i, widen(tail), static_cast<size_t>(n) - i);
  }
}

template <class Sink>
HWY_INLINE void DecodeAnyRow(WeightFormat f, const uint8_t* row, int64_t n, Sink& sink) {
  switch (f) {
    case WeightFormat::kQ4_0:
      return DecodeRow<BlockQ4_0>(row, n, sink);
    case WeightFormat::kQ4_1:
      return DecodeRow<BlockQ4_1>(row, n, sink);
    case WeightFormat::kQ5_0:
      return DecodeRow<BlockQ5_0>(row, n, sink);
    case WeightFormat::kQ5_1:
      return DecodeRow<BlockQ5_1>(row, n, sink);
    case WeightFormat::kQ8_0:
      return DecodeRow<BlockQ8_0>(row, n, sink);
    case WeightFormat::kQ2_K:
      return DecodeRow<BlockQ2_K>(row, n, sink);
    case WeightFormat::kQ3_K:
      return DecodeRow<BlockQ3_K>(row, n, sink);
    case WeightFormat::kQ4_K:
      return DecodeRow<BlockQ4_K>(row, n, sink);
    case WeightFormat::kQ5_K:
      return DecodeRow<BlockQ5_K>(row, n, sink);
    case WeightFormat::kQ6_K:
      return DecodeRow<BlockQ6_K>(row, n, sink);
    case WeightFormat::kBF16:
      return DecodeRowBf16(row, n, sink);
  }
}

void DequantizeRows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows,
                    int64_t n, float* out, size_t out_stride) {
  for (int64_t r = 0; r < n_rows; ++r) {
    StoreSink sink{out + static_cast<size_t>(r) * out_stride};
    DecodeAnyRow(f, rows + static_cast<size_t>(r) * row_bytes, n, sink);
  }
}

constexpr int64_t kPrefetchRows = 2;

void DotRows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows, const float* x,
             int64_t n, float* y) {
  for (int64_t r = 0; r < n_rows; ++r) {
    // The decode is too dense for the out-of-order window to keep enough
    // cache misses in flight: fetch the row kPrefetchRows ahead
    // (docs/architecture.md, "Quantized activations").
    if (r + kPrefetchRows < n_rows) {
      const uint8_t* ahead = rows + static_cast<size_t>(r + kPrefetchRows) * row_bytes;
      for (size_t i = 0; i < row_bytes; i += 64) hwy::Prefetch(ahead + i);
    }
    DotSink sink{x};
    DecodeAnyRow(f, rows + static_cast<size_t>(r) * row_bytes, n, sink);
    y[r] = sink.Sum();
  }
}

size_t DotLanes() {
  return hn::Lanes(DF());
}

}  // namespace innerq::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace innerq::kernels::simd {

HWY_EXPORT(DequantizeRows);
HWY_EXPORT(DotRows);
HWY_EXPORT(DotLanes);

void dequantize_rows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows,
                     int64_t n, float* out, size_t out_stride) {
  HWY_DYNAMIC_DISPATCH(DequantizeRows)(f, rows, row_bytes, n_rows, n, out, out_stride);
}

void dot_rows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows, const float* x,
              int64_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(DotRows)(f, rows, row_bytes, n_rows, x, n, y);
}

size_t dot_lanes() {
  return HWY_DYNAMIC_DISPATCH(DotLanes)();
}

}  // namespace innerq::kernels::simd
#endif  // HWY_ONCE
