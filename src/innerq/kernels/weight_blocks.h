// innerq/kernels/weight_blocks.h — the block formats that GGUF files store
// weights in (ggml's byte layouts, docs/architecture.md "Weight formats") and
// the kernels that read them: dequantize rows, and a fused dequantize-and-dot
// of rows with an f32 vector (the decode matvec).
//
// A row of n values is n / V blocks back to back (V = 32, or 256 for the
// K-quants; BF16 is one value per "block"). Per block, value i is
//
//   format V    bytes bits/v  value
//   Q4_0   32   18    4.5     d·(q − 8)               q: 4 bits, i < 16 low nibble of qs[i],
//                                                        else high nibble of qs[i − 16]
//   Q4_1   32   20    5.0     d·q + m                 q as Q4_0
//   Q5_0   32   22    5.5     d·(q − 16)              q: Q4_0's nibble | bit i of qh (LE u32) << 4
//   Q5_1   32   24    6.0     d·q + m                 q as Q5_0
//   Q8_0   32   34    8.5     d·q                     q = qs[i], int8
//   Q2_K   256  84    2.625   dl·q − ml               q: 2 bits, see below; sub-block of 16
//   Q3_K   256  110   3.4375  dl·q                    q: 2 low bits + 1 high bit − 4
//   Q4_K   256  144   4.5     dl·q − ml               q: 4 bits; sub-block of 32
//   Q5_K   256  176   5.5     dl·q − ml               q: 4 low bits + 1 high bit
//   Q6_K   256  210   6.5625  dl·(q − 32)             q: 4 low bits + 2 high bits
//   BF16   1    2     16      the upper half of an f32
//
// The K-quants hold an fp16 super-scale d (and dmin) per 256 values and small
// integer scales per sub-block: dl = d·sc, ml = dmin·m, each one f32 product.
// Inside a 128-value half h of Q2_K/Q3_K, value 128h + 32j + l (j < 4, l < 32)
// takes bits 2j..2j+1 of qs[32h + l]; Q3_K's high bit is bit 4h + j of
// hmask[l], and a 0 there subtracts 4. Q4_K/Q5_K value 64c + 32k + l takes
// nibble k of qs[32c + l]; Q5_K's fifth bit is bit 2c + k of qh[l]. Q6_K
// value 128h + 32s + l takes nibble s/2 of ql[64h + 32(s%2) + l] and bits
// 2s..2s+1 of qh[32h + l] as its two high bits.
//
// Arithmetic (identical in scalar:: and simd::, so dequantize agrees bit for
// bit on every target, and with ggml's own dequantizers): the fp16 fields are
// converted exactly, dl and ml are single f32 products, and a value is
// fl(fl(dl·q) − ml) (or + m) — a product, then a sum, never fused. NaN/Inf
// scales convert exactly too (targets without F16C use the scalar conversion),
// so a non-finite scale always yields non-finite values.
//
// The dot product does not quantize the activations: simd::dot_rows
// reconstructs each weight exactly as dequantize does, in registers, and
// accumulates w·x in f32 with fused multiply-adds in 2 accumulators of
// simd::dot_lanes() lanes each. Its rounding error is therefore at most
// (⌈n / (2·lanes)⌉ + log2(lanes) + 2)·2⁻²⁴·Σ|w·x|; scalar::dot_rows
// accumulates in double and rounds once.
//
// The kernels trust their arguments (n a multiple of V, row_bytes ≥ the row's
// size, rows and row_bytes 2-byte aligned as in a GGUF file);
// innerq::model::weight_matrix validates tensors before they get here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "innerq/base/fp16.h"
#include "innerq/kernels/llama_blocks.h"

namespace innerq::kernels {

inline constexpr int kWeightBlock = 32;  // values per block of Q4_0 … Q8_0
inline constexpr int kSuperBlock = 256;  // values per block of the K-quants
inline constexpr int kKScaleBytes = 12;  // packed 6-bit scales of Q3_K, Q4_K, Q5_K

// Q4_0 and Q8_0 are innerq::BlockQ4_0 / BlockQ8_0 (llama_blocks.h): the KV
// cache baselines use the same layouts.

struct BlockQ4_1 {
  f16_bits d;
  f16_bits m;
  uint8_t qs[kWeightBlock / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1: 2 + 2 + 16 bytes per 32 values = 5.0 bits/value");

struct BlockQ5_0 {
  f16_bits d;
  uint8_t qh[4];
  uint8_t qs[kWeightBlock / 2];
};
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0: 2 + 4 + 16 bytes per 32 values = 5.5 bits/value");

struct BlockQ5_1 {
  f16_bits d;
  f16_bits m;
  uint8_t qh[4];
  uint8_t qs[kWeightBlock / 2];
};
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1: 2 + 2 + 4 + 16 bytes per 32 values = 6.0 bits/value");

struct BlockQ2_K {
  uint8_t scales[kSuperBlock / 16];  // sub-block k: low nibble sc, high nibble m
  uint8_t qs[kSuperBlock / 4];
  f16_bits d;
  f16_bits dmin;
};
static_assert(sizeof(BlockQ2_K) == 84, "Q2_K: 16 + 64 + 2 + 2 bytes per 256 = 2.625 bits/value");

struct BlockQ3_K {
  uint8_t hmask[kSuperBlock / 8];
  uint8_t qs[kSuperBlock / 4];
  uint8_t scales[kKScaleBytes];  // 16 6-bit scales, see q3k_scale()
  f16_bits d;
};
static_assert(sizeof(BlockQ3_K) == 110, "Q3_K: 32 + 64 + 12 + 2 bytes per 256 = 3.4375 bits/value");

struct BlockQ4_K {
  f16_bits d;
  f16_bits dmin;
  uint8_t scales[kKScaleBytes];  // 8 6-bit scales and 8 6-bit mins, see k_scale_min()
  uint8_t qs[kSuperBlock / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K: 2 + 2 + 12 + 128 bytes per 256 = 4.5 bits/value");

struct BlockQ5_K {
  f16_bits d;
  f16_bits dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kSuperBlock / 8];
  uint8_t qs[kSuperBlock / 2];
};
static_assert(sizeof(BlockQ5_K) == 176,
              "Q5_K: 2 + 2 + 12 + 32 + 128 bytes per 256 = 5.5 bits/value");

struct BlockQ6_K {
  uint8_t ql[kSuperBlock / 2];
  uint8_t qh[kSuperBlock / 4];
  int8_t scales[kSuperBlock / 16];
  f16_bits d;
};
static_assert(sizeof(BlockQ6_K) == 210,
              "Q6_K: 128 + 64 + 16 + 2 bytes per 256 = 6.5625 bits/value");

// Values per block of each block type.
template <class Block>
inline constexpr int kBlockValues = kWeightBlock;
template <>
inline constexpr int kBlockValues<BlockQ2_K> = kSuperBlock;
template <>
inline constexpr int kBlockValues<BlockQ3_K> = kSuperBlock;
template <>
inline constexpr int kBlockValues<BlockQ4_K> = kSuperBlock;
template <>
inline constexpr int kBlockValues<BlockQ5_K> = kSuperBlock;
template <>
inline constexpr int kBlockValues<BlockQ6_K> = kSuperBlock;

// Q4_K/Q5_K: scale and min (6 bits each) of 32-value sub-block j < 8. Bytes
// 0..3 hold scale j (low 6 bits) for j < 4, bytes 4..7 min j; for j ≥ 4 the
// low 4 bits come from the nibbles of byte 8 + (j − 4) (scale low, min high)
// and the top 2 from bits 6..7 of bytes j − 4 (scale) and j (min).
inline void k_scale_min(const uint8_t* s, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] & 63;
    *min = s[j + 4] & 63;
  } else {
    *scale = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q3_K: signed scale of 16-value sub-block j < 16, in [−32, 31]. Its low 4
// bits are nibble j / 8 of byte j % 8, its high 2 bits are bits 2(j/4)..+1 of
// byte 8 + j % 4; the stored 6-bit value is offset by 32.
inline int q3k_scale(const uint8_t* s, int j) {
  const int low = (s[j % 8] >> (4 * (j / 8))) & 15;
  const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

enum class WeightFormat : uint8_t {
  kQ4_0,
  kQ4_1,
  kQ5_0,
  kQ5_1,
  kQ8_0,
  kQ2_K,
  kQ3_K,
  kQ4_K,
  kQ5_K,
  kQ6_K,
  kBF16,
};

struct WeightFormatInfo {
  const char* name;
  int block_values;    // values per block
  size_t block_bytes;  // bytes per block
};

constexpr WeightFormatInfo weight_format_info(WeightFormat f) {
  switch (f) {
    case WeightFormat::kQ4_0:
      return {"Q4_0", kWeightBlock, sizeof(BlockQ4_0)};
    case WeightFormat::kQ4_1:
      return {"Q4_1", kWeightBlock, sizeof(BlockQ4_1)};
    case WeightFormat::kQ5_0:
      return {"Q5_0", kWeightBlock, sizeof(BlockQ5_0)};
    case WeightFormat::kQ5_1:
      return {"Q5_1", kWeightBlock, sizeof(BlockQ5_1)};
    case WeightFormat::kQ8_0:
      return {"Q8_0", kWeightBlock, sizeof(BlockQ8_0)};
    case WeightFormat::kQ2_K:
      return {"Q2_K", kSuperBlock, sizeof(BlockQ2_K)};
    case WeightFormat::kQ3_K:
      return {"Q3_K", kSuperBlock, sizeof(BlockQ3_K)};
    case WeightFormat::kQ4_K:
      return {"Q4_K", kSuperBlock, sizeof(BlockQ4_K)};
    case WeightFormat::kQ5_K:
      return {"Q5_K", kSuperBlock, sizeof(BlockQ5_K)};
    case WeightFormat::kQ6_K:
      return {"Q6_K", kSuperBlock, sizeof(BlockQ6_K)};
    case WeightFormat::kBF16:
      return {"BF16", 1, 2};
  }
  return {"?", 1, 0};
}

// Calls fn.template operator()<Block>() with the block type of f; BF16, which
// has none, calls fn_bf16().
template <class Fn, class FnBf16>
decltype(auto) with_block_type(WeightFormat f, Fn&& fn, FnBf16&& fn_bf16) {
  switch (f) {
    case WeightFormat::kQ4_0:
      return fn.template operator()<BlockQ4_0>();
    case WeightFormat::kQ4_1:
      return fn.template operator()<BlockQ4_1>();
    case WeightFormat::kQ5_0:
      return fn.template operator()<BlockQ5_0>();
    case WeightFormat::kQ5_1:
      return fn.template operator()<BlockQ5_1>();
    case WeightFormat::kQ8_0:
      return fn.template operator()<BlockQ8_0>();
    case WeightFormat::kQ2_K:
      return fn.template operator()<BlockQ2_K>();
    case WeightFormat::kQ3_K:
      return fn.template operator()<BlockQ3_K>();
    case WeightFormat::kQ4_K:
      return fn.template operator()<BlockQ4_K>();
    case WeightFormat::kQ5_K:
      return fn.template operator()<BlockQ5_K>();
    case WeightFormat::kQ6_K:
      return fn.template operator()<BlockQ6_K>();
    case WeightFormat::kBF16:
      break;
  }
  return fn_bf16();
}

// Q4_0/Q4_1/Q5_0/Q5_1 value i of a block: the low nibble of qs[i] for i < 16,
// the high nibble of qs[i − 16] after; Q5's fifth bit is bit i of the
// little-endian word qh.
inline int nibble32(const uint8_t* qs, int i) {
  return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4;
}

inline int fifth_bit32(const uint8_t* qh, int i) {
  uint32_t bits = 0;
  std::memcpy(&bits, qh, sizeof(bits));
  return static_cast<int>((bits >> i) & 1);
}

inline constexpr WeightFormat kAllWeightFormats[] = {
    WeightFormat::kQ4_0, WeightFormat::kQ4_1, WeightFormat::kQ5_0, WeightFormat::kQ5_1,
    WeightFormat::kQ8_0, WeightFormat::kQ2_K, WeightFormat::kQ3_K, WeightFormat::kQ4_K,
    WeightFormat::kQ5_K, WeightFormat::kQ6_K, WeightFormat::kBF16,
};

// Both namespaces have the same contracts:
//   dequantize_rows: rows: [n_rows] rows of row_bytes bytes, each n values in
//     format f → out: row r at out + r·out_stride, n floats.
//   dot_rows: y[r] = Σ_i w[r][i]·x[i] for the same rows, x: [n].
namespace scalar {

void dequantize_rows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows,
                     int64_t n, float* out, size_t out_stride);
void dot_rows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows, const float* x,
              int64_t n, float* y);

}  // namespace scalar

// Highway versions: one dispatch per call, lanes along a block.
namespace simd {

void dequantize_rows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows,
                     int64_t n, float* out, size_t out_stride);
void dot_rows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows, const float* x,
              int64_t n, float* y);

// Lanes per accumulator of dot_rows on the target dispatch picks now (tests
// derive the rounding bound from it).
size_t dot_lanes();

}  // namespace simd

}  // namespace innerq::kernels
