// innerq/kernels/quantize_rules.h — the arithmetic both quantizers share:
// fp16 metadata of a group, the code formula, the canonical error sum of the
// hybrid choice and whole-word (SWAR) packing of a 32-code chunk. The scalar
// reference and the Highway kernels both build on these definitions, which is
// what makes their codes and metadata identical.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "innerq/base/fp16.h"
#include "innerq/kernels/group_format.h"

namespace innerq::kernels {

static_assert(std::endian::native == std::endian::little,
              "records are little-endian; SWAR packing reads them as u32 words");

inline constexpr int kMaxGroup = 128;

// ---------------------------------------------------------------------------
// Symmetric scale. The dequant formula is fixed, x̂ = s·(u − 2^(b−1)), with
// signed levels L = u − 2^(b−1) ∈ [−2^(b−1), 2^(b−1) − 1]. Two scale rules fit:
//   (a) narrow: s = absmax/(2^(b−1) − 1), levels ±(2^(b−1) − 1) (L = −2^(b−1) unused);
//   (b) full:   s = absmax/2^(b−1), all levels (a positive absmax clips to
//       (2^(b−1) − 1)·s).
// Measured rel_rmse, G = 32, 8192 groups, pure symmetric
// (tests/kernels/sym_level_rule_test.cc prints this table):
//                 b=2 (a)  (b)    per-group  b=3 (a)  (b)    per-group  b=4 (a)  (b)    per-group
//   gaussian        0.6586 0.3930 0.3930       0.2272 0.1902 0.1890       0.0973 0.0941 0.0903
//   laplace         0.6547 0.4478 0.4466       0.2735 0.2311 0.2297       0.1210 0.1167 0.1126
//   outliers(3×20)  0.0473 0.1623 0.0403       0.0286 0.0836 0.0273       0.0211 0.0444 0.0205
// Neither rule wins: (b)'s extra level wins on gaussian and laplace, but when
// the absmax is a positive outlier (b) clips it by s — 3–4× the error at
// b = 2. Both rules store the same record and use the same dequant, so the
// quantizer tries both per group and keeps the lower L2 error (ties → (b)),
// like the hybrid choice; it is never worse than either rule on any group.
// ---------------------------------------------------------------------------
enum class SymScale { kFull, kNarrow };

constexpr float sym_scale_divisor(int bits, SymScale rule) {
  return static_cast<float>(rule == SymScale::kFull ? sym_offset(bits) : sym_offset(bits) - 1);
}
constexpr int sym_min_level(int bits) {
  return -sym_offset(bits);
}
constexpr int sym_max_level(int bits) {
  return sym_offset(bits) - 1;
}

// How one mode turns x into a code u, and the rounded metadata it stores:
//   u = clamp(round_half_even((x − shift)·inv_scale), min_level, max_level) + offset
//   x̂ = scale·u + zero
// Asymmetric: shift = zero = fp16(lo), offset 0. Symmetric: shift = 0,
// offset = 2^(b−1), zero = −2^(b−1)·scale (not stored).
struct ModeParams {
  f16_bits scale_bits;  // as stored, kSymFlag included for symmetric
  f16_bits zero_bits;   // stored zero slot (0 for symmetric)
  float scale;
  float zero;
  float shift;
  float inv_scale;  // 1/scale, 0 when scale = 0 (then every x̂ = zero)
  float min_level;
  float max_level;
  float offset;
};

// A group's exact range with −0 folded into +0, so that min/max reductions in
// any order (std::min, SIMD min, whichever zero they keep) give the same bits.
struct GroupRange {
  float lo;
  float hi;
  float absmax;
};
inline GroupRange canonical_range(float lo, float hi) {
  const float canonical_lo = lo + 0.0f, canonical_hi = hi + 0.0f;
  const float absmax = -canonical_lo > canonical_hi ? -canonical_lo : canonical_hi;
  return {canonical_lo, canonical_hi, absmax + 0.0f};
}

inline float inverse_or_zero(float s) {
  return s > 0.0f ? 1.0f / s : 0.0f;
}

// fp16 neighbours in the direction of −∞ / +∞ (h finite).
inline f16_bits f16_next_down(f16_bits h) {
  if (h == 0x0000) return 0x8001;
  return (h & 0x8000) ? static_cast<f16_bits>(h + 1) : static_cast<f16_bits>(h - 1);
}
inline f16_bits f16_next_up(f16_bits h) {
  if (h == 0x8000) return 0x0001;
  return (h & 0x8000) ? static_cast<f16_bits>(h - 1) : static_cast<f16_bits>(h + 1);
}
// Largest fp16 ≤ x and smallest fp16 ≥ x, for |x| ≤ 65504.
inline f16_bits f16_round_down(float x) {
  const f16_bits h = f32_to_f16(x);
  return f16_to_f32(h) > x ? f16_next_down(h) : h;
}
inline f16_bits f16_round_up(float x) {
  const f16_bits h = f32_to_f16(x);
  return f16_to_f32(h) < x ? f16_next_up(h) : h;
}

// Asymmetric: the zero rounds down to fp16 and the scale, computed from it,
// rounds up, so the levels [z, z + (2^b − 1)·s] cover [lo, hi] and no code is
// clamped by metadata rounding — a group far from zero with a small range
// (1000.3 ± 0.01) is not shifted by the fp16 spacing of its offset.
inline ModeParams asymmetric_params(float lo, float hi, int bits) {
  const f16_bits zero_bits = f16_round_down(lo);
  const float zero = f16_to_f32(zero_bits);
  const f16_bits scale_bits = f16_round_up((hi - zero) / static_cast<float>(max_code(bits)));
  const float scale = f16_to_f32(scale_bits);
  return {scale_bits, zero_bits,
          scale,      zero,
          zero,       inverse_or_zero(scale),
          0.0f,       static_cast<float>(max_code(bits)),
          0.0f};
}

// Symmetric: the scale rounds to nearest (a code clamps by at most 2^−11 of a
// level when it rounds down).
inline ModeParams symmetric_params(float absmax, int bits, SymScale rule) {
  const f16_bits magnitude_bits = f32_to_f16(absmax / sym_scale_divisor(bits, rule));
  const float scale = f16_to_f32(magnitude_bits);
  const float offset = static_cast<float>(sym_offset(bits));
  return {static_cast<f16_bits>(magnitude_bits | kSymFlag),
          0,
          scale,
          -offset * scale,
          0.0f,
          inverse_or_zero(scale),
          static_cast<float>(sym_min_level(bits)),
          static_cast<float>(sym_max_level(bits)),
          offset};
}

// The candidate encodings of a group under `mode`, in order of preference on
// a tie of the error: symmetric full, symmetric narrow, asymmetric.
struct Candidates {
  ModeParams params[3];
  int n;
};
inline Candidates candidates_for(QuantMode mode, const GroupRange& range, int bits) {
  Candidates c{};
  if (mode != QuantMode::kAsymmetric) {
    c.params[c.n++] = symmetric_params(range.absmax, bits, SymScale::kFull);
    c.params[c.n++] = symmetric_params(range.absmax, bits, SymScale::kNarrow);
  }
  if (mode != QuantMode::kSymmetric) c.params[c.n++] = asymmetric_params(range.lo, range.hi, bits);
  return c;
}

// The L2 error Σ e_i² that picks among candidates, in one canonical order: partial[i mod 16]
// accumulates e_i² in increasing i, then the 16 partials fold in a fixed tree
// (j += j+8, j += j+4, j += j+2, j += j+1). A SIMD kernel with N | 16 lanes
// reproduces it exactly with 16/N accumulator vectors.
inline constexpr int kErrorPartials = 16;

inline float fold_error_partials(float* partial) {
  for (int width = kErrorPartials / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) partial[j] += partial[j + width];
  }
  return partial[0];
}

// Throws innerq::Error naming `group_index` and the first value that is
// non-finite or beyond ±65504. values: count floats, `stride` apart.
[[noreturn]] void throw_invalid_group(size_t group_index, const float* values, size_t count,
                                      size_t stride);

// ---------------------------------------------------------------------------
// Record access.
// ---------------------------------------------------------------------------
inline f16_bits load_f16(const uint8_t* p) {
  f16_bits h;
  std::memcpy(&h, p, sizeof h);
  return h;
}
inline void store_f16(uint8_t* p, f16_bits h) {
  std::memcpy(p, &h, sizeof h);
}

// Exact fp16 → f32 for finite values with integer operations and one exact
// multiply (re-biases the exponent; subnormals come out right), so the SIMD
// kernels avoid a library call per group. Equal to f16_to_f32 on every finite
// pattern (tested exhaustively).
inline float f16_to_f32_finite(f16_bits h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const float magnitude = std::bit_cast<float>(static_cast<uint32_t>(h & 0x7fffu) << 13) * 0x1p112f;
  return std::bit_cast<float>(std::bit_cast<uint32_t>(magnitude) | sign);
}

// decode_meta of the record's metadata, through f16_to_f32_finite.
inline GroupMeta read_meta_finite(const uint8_t* record, size_t code_bytes, bool has_zero,
                                  int bits) {
  const f16_bits scale_bits = load_f16(record + code_bytes);
  const bool sym = (scale_bits & kSymFlag) != 0;
  const float s = f16_to_f32_finite(static_cast<f16_bits>(scale_bits & ~kSymFlag));
  const float z = sym || !has_zero ? -static_cast<float>(sym_offset(bits)) * s
                                   : f16_to_f32_finite(load_f16(record + code_bytes + 2));
  return {s, z, sym};
}

// ---------------------------------------------------------------------------
// Whole-word packing of one chunk of 32 codes (one code per byte) into its bit
// planes, and back. Output word m of the unpacked codes (codes 4m..4m+3) is
// plane word m mod w shifted right by w·⌊m / w⌋, masked to w bits per byte —
// the layout rule of group_format.h applied to four codes at once.
// ---------------------------------------------------------------------------
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store_u32(uint8_t* p, uint32_t v) {
  std::memcpy(p, &v, sizeof v);
}

constexpr uint32_t low_bits_per_byte(int width) {
  return 0x01010101u * static_cast<uint32_t>((1 << width) - 1);
}

// codes: [32] bytes → chunk: bits·4 bytes.
inline void pack_chunk(const uint8_t* codes, int bits, uint8_t* chunk) {
  const PlaneSplit planes = planes_of(bits);
  int low_bit = 0;
  for (int k = 0; k < planes.n; ++k) {
    const int w = planes.width[k];
    for (int j = 0; j < w; ++j) {
      uint32_t word = 0;
      for (int stripe = 0; stripe < 8 / w; ++stripe) {
        const uint32_t four_codes = load_u32(codes + 4 * (j + w * stripe));
        word |= ((four_codes >> low_bit) & low_bits_per_byte(w)) << (w * stripe);
      }
      store_u32(chunk + 4 * j, word);
    }
    chunk += plane_bytes(w);
    low_bit += w;
  }
}

// chunk: bits·4 bytes → codes: [32] bytes.
inline void unpack_chunk(const uint8_t* chunk, int bits, uint8_t* codes) {
  const PlaneSplit planes = planes_of(bits);
  for (int m = 0; m < kChunk / 4; ++m) {
    const uint8_t* plane = chunk;
    uint32_t four_codes = 0;
    int low_bit = 0;
    for (int k = 0; k < planes.n; ++k) {
      const int w = planes.width[k];
      const uint32_t word = load_u32(plane + 4 * (m % w));
      four_codes |= ((word >> (w * (m / w))) & low_bits_per_byte(w)) << low_bit;
      plane += plane_bytes(w);
      low_bit += w;
    }
    store_u32(codes + 4 * m, four_codes);
  }
}

}  // namespace innerq::kernels
