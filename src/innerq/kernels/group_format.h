// innerq/kernels/group_format.h — the canonical byte layout of one quantized
// group, shared by the scalar reference, the Highway kernels, the KV cache and
// the CUDA kernels. Nothing here depends on a SIMD width.
//
// A group is G consecutive values along the *inner* dimension of the product
// that consumes them (docs/architecture.md, "Group format"), quantized to b
// bits with fp16 metadata:
//
//   x̂_i = s·u_i + z          u_i ∈ [0, 2^b − 1]   (unsigned code)
//
//   asymmetric: z = lo (stored fp16), s = (hi − lo)/(2^b − 1)
//   symmetric : z = −kSymOffset(b)·s (not stored), so x̂ = s·(u − 2^(b−1))
//
// Every code is stored unsigned; a symmetric group's signed level is
// u − 2^(b−1). Kernels therefore always compute
//   Σ_i q_i·x̂_i = s·Σ_i q_i·u_i + z·Σ_i q_i
// with z taken from the zero slot (asym) or derived as −2^(b−1)·s (sym).
//
// ---------------------------------------------------------------------------
// Record layout of one group, (b, G, mode):
//
//   [ codes: G·b/8 bytes ][ scale: fp16 ][ zero: fp16, only if mode ≠ sym ]
//
// The scale is never negative, so its sign bit carries the per-group choice of
// hybrid mode: bit 15 set = this group is symmetric (its zero slot is present
// but ignored). Pure-sym and pure-asym records use the same convention (sym
// groups always have the bit set), so a reader needs only (b, G, has_zero).
//
// Codes: the group is cut into chunks of 32 codes (G/32 chunks, in order). A
// chunk is stored as bit planes of width w ∈ {1, 2, 4, 8}: b = 2 → one 2-bit
// plane; b = 3 → a 2-bit plane (low bits) followed by a 1-bit plane (bit 2);
// b = 4 → one 4-bit plane; b = 8 → one 8-bit plane. A w-bit plane occupies 4·w
// bytes, and code i (0..31) of the chunk sits in
//
//   byte  i mod 4w,  bits [w·⌊i / 4w⌋, w·⌊i / 4w⌋ + w)
//
// So each aligned 32-bit word of a plane, shifted right by w·k and masked with
// (2^w − 1) per byte, yields four *consecutive* codes as bytes — the unpack is
// whole-vector shifts and masks, and four consecutive codes land in one 32-bit
// lane, ready for a u8×i8 dot-accumulate. Every code region is a whole number
// of 32-bit words (G·b/8 is a multiple of 4).
//
// Bits per value including metadata: b + 16/G (sym) or b + 32/G (asym, hybrid).
//   G = 32: b=2: 2.5 / 3.0   b=3: 3.5 / 4.0   b=4: 4.5 / 5.0   b=8: 8.5 / 9.0
// ---------------------------------------------------------------------------
#pragma once

#include <cstddef>
#include <cstdint>

#include "innerq/base/fp16.h"

namespace innerq {

enum class QuantMode : uint8_t { kSymmetric, kAsymmetric, kHybrid };

inline constexpr int kChunk = 32;  // codes per plane chunk
inline constexpr int kSupportedBits[] = {2, 3, 4, 8};
inline constexpr int kSupportedGroups[] = {32, 64, 128};
inline constexpr f16_bits kSymFlag = 0x8000;  // sign bit of the fp16 scale

constexpr bool is_supported_bits(int b) {
  return b == 2 || b == 3 || b == 4 || b == 8;
}
constexpr bool is_supported_group(int g) {
  return g == 32 || g == 64 || g == 128;
}

// Offset between the unsigned code and the signed symmetric level.
constexpr int sym_offset(int bits) {
  return 1 << (bits - 1);
}
constexpr int max_code(int bits) {
  return (1 << bits) - 1;
}

constexpr bool mode_has_zero(QuantMode m) {
  return m != QuantMode::kSymmetric;
}

// Bytes of packed codes for one group (all planes of all chunks).
constexpr size_t group_code_bytes(int bits, int group) {
  return static_cast<size_t>(group) * static_cast<size_t>(bits) / 8;
}
constexpr size_t group_meta_bytes(QuantMode m) {
  return mode_has_zero(m) ? 4 : 2;
}
constexpr size_t group_record_bytes(int bits, int group, QuantMode m) {
  return group_code_bytes(bits, group) + group_meta_bytes(m);
}
constexpr double bits_per_value(int bits, int group, QuantMode m) {
  return 8.0 * static_cast<double>(group_record_bytes(bits, group, m)) / group;
}

// Plane widths of a chunk, low bits first. b = 3 is a 2-bit then a 1-bit plane.
struct PlaneSplit {
  int n;
  int width[2];
};
constexpr PlaneSplit planes_of(int bits) {
  return bits == 3 ? PlaneSplit{2, {2, 1}} : PlaneSplit{1, {bits, 0}};
}
constexpr size_t plane_bytes(int width) {
  return static_cast<size_t>(4 * width);
}

static_assert(group_code_bytes(2, 32) == 8);
static_assert(group_code_bytes(3, 32) == 12);
static_assert(group_code_bytes(4, 32) == 16);
static_assert(group_code_bytes(8, 32) == 32);
static_assert(group_record_bytes(3, 32, QuantMode::kSymmetric) == 14);  // 3.5 bits/value
static_assert(group_record_bytes(2, 32, QuantMode::kHybrid) == 12);     // 3.0 bits/value
static_assert(group_record_bytes(4, 128, QuantMode::kAsymmetric) == 68);
static_assert(plane_bytes(2) + plane_bytes(1) == group_code_bytes(3, 32));
static_assert(group_code_bytes(3, 64) % 4 == 0 && group_code_bytes(2, 32) % 4 == 0);

// Scalar access to code i (0..G−1) of a group's code bytes: the definition of
// the layout above, used by the scalar reference and the tests.
inline int read_code(const uint8_t* codes, int bits, int i) {
  const PlaneSplit p = planes_of(bits);
  const uint8_t* chunk = codes + static_cast<size_t>(i / kChunk) * (bits * kChunk / 8);
  const int j = i % kChunk;
  int code = 0, shift = 0;
  for (int k = 0; k < p.n; ++k) {
    const int w = p.width[k];
    const int bytes = 4 * w;
    code |= ((chunk[j % bytes] >> (w * (j / bytes))) & ((1 << w) - 1)) << shift;
    chunk += bytes;
    shift += w;
  }
  return code;
}

inline void write_code(uint8_t* codes, int bits, int i, int code) {
  const PlaneSplit p = planes_of(bits);
  uint8_t* chunk = codes + static_cast<size_t>(i / kChunk) * (bits * kChunk / 8);
  const int j = i % kChunk;
  for (int k = 0; k < p.n; ++k) {
    const int w = p.width[k];
    const int bytes = 4 * w;
    const int pos = w * (j / bytes);
    const int mask = ((1 << w) - 1) << pos;
    chunk[j % bytes] = static_cast<uint8_t>((chunk[j % bytes] & ~mask) | ((code << pos) & mask));
    code >>= w;
    chunk += bytes;
  }
}

// ---------------------------------------------------------------------------
// Levels (docs/architecture.md, "Codebook levels"). A group's codes index
// its levels: uniform (x̂ = s·u + z, above) or, for symmetric key groups
// with `klevels=normal`, a fixed codebook of 2^b levels placed for a normal
// distribution (Lloyd-Max for N(0, 1), scaled so the outermost is ±63):
//
//   x̂_i = s·(T_b[u_i] − 64)        T_b[u] ∈ [1, 127], increasing in u
//
// The kernels keep their form Σ q_i·x̂_i = s·Σ q_i·T[u_i] + z·Σ q_i with
// z = −64·s: a byte-table lookup turns each unpacked code into T[u] before
// the same u8×i8 dot product (T ≤ 127 keeps AVX2's maddubs exact).
// ---------------------------------------------------------------------------
enum class Levels : uint8_t { kUniform, kNormal };
inline constexpr int kNormalLevelOffset = 64;

// T_b for b = 2, 3, 4 (16 bytes each; entries past 2^b are unused):
// round(63·λ_u / λ_max) + 64 for the Lloyd-Max levels λ of N(0, 1)
// (b=2: ±0.4528 ±1.5104; b=3: ±0.2451 ±0.7560 ±1.3440 ±2.1520; b=4: ±0.1284
// ±0.3881 ±0.6568 ±0.9424 ±1.2562 ±1.6180 ±2.0690 ±2.7326).
inline constexpr uint8_t kNormalLevels[3][16] = {
    {1, 45, 83, 127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 25, 42, 57, 71, 86, 103, 127, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 16, 27, 35, 42, 49, 55, 61, 67, 73, 79, 86, 93, 101, 112, 127},
};

constexpr bool levels_support_bits(Levels l, int bits) {
  return l == Levels::kUniform || (bits >= 2 && bits <= 4);
}
// Whether groups of `bits` in `mode` can use levels l: codebooks exist for
// symmetric 2-4 bit groups (the one rule the spec, the cache, the quantizer
// and tune apply).
constexpr bool levels_fit(Levels l, int bits, QuantMode mode) {
  return l == Levels::kUniform || (mode == QuantMode::kSymmetric && levels_support_bits(l, bits));
}
// The table of `bits` (levels_support_bits), 16 bytes.
constexpr const uint8_t* normal_level_table(int bits) {
  return kNormalLevels[bits - 2];
}
// The value a code stands for before the scale: u (uniform) or T_b[u].
constexpr int level_value(Levels l, int bits, int u) {
  return l == Levels::kUniform ? u : normal_level_table(bits)[u];
}
// The symmetric offset: x̂ = s·(level_value − offset).
constexpr int level_offset(Levels l, int bits) {
  return l == Levels::kUniform ? sym_offset(bits) : kNormalLevelOffset;
}

// Metadata of one group, decoded.
struct GroupMeta {
  float scale;  // s ≥ 0
  float zero;   // z: the stored zero (asym) or −2^(b−1)·s (sym)
  bool symmetric;
};

inline GroupMeta decode_meta(f16_bits scale_bits, f16_bits zero_bits, int bits) {
  const bool sym = (scale_bits & kSymFlag) != 0;
  const float s = f16_to_f32(static_cast<f16_bits>(scale_bits & ~kSymFlag));
  return {s, sym ? -static_cast<float>(sym_offset(bits)) * s : f16_to_f32(zero_bits), sym};
}

}  // namespace innerq
