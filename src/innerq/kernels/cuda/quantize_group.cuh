// innerq/kernels/cuda/quantize_group.cuh — one group quantized exactly as
// the CPU quantizer does (quantize_rules.h, quant_kernels.h), and its record
// written into a tile (tile_format.h). Host and device functions: the device
// path uses explicitly rounded intrinsics (__fadd_rn, __fmul_rn, __fdiv_rn,
// never contracted into a fused multiply-add, as the CPU builds with
// -ffp-contract=off), the host path plain IEEE operators (C++20 mode, no
// contraction), so tests/cuda/device_format_test checks the arithmetic
// against the CPU on any machine. fp16 rounding is __float2half_rn (round to
// nearest even, as f32_to_f16), round_half_even is rintf.
#pragma once

#include <cmath>
#include <cstdint>

#include <cuda_fp16.h>

#include "innerq/base/fp16.h"
#include "innerq/kernels/cuda/device_format.cuh"
#include "innerq/kernels/group_format.h"
#include "innerq/kernels/tile_format.h"

namespace innerq::cuda {

inline constexpr int kMaxGroupSize = 128;
inline constexpr int kErrorPartials = 16;  // quantize_rules.h: the canonical error order

// ---- correctly rounded f32 arithmetic on both sides -------------------------
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ float add_rn(float a, float b) {
  return __fadd_rn(a, b);
}
__device__ __forceinline__ float sub_rn(float a, float b) {
  return __fsub_rn(a, b);
}
__device__ __forceinline__ float mul_rn(float a, float b) {
  return __fmul_rn(a, b);
}
__device__ __forceinline__ float div_rn(float a, float b) {
  return __fdiv_rn(a, b);
}
#else
inline float add_rn(float a, float b) {
  return a + b;
}
inline float sub_rn(float a, float b) {
  return a - b;
}
inline float mul_rn(float a, float b) {
  return a * b;
}
inline float div_rn(float a, float b) {
  return a / b;
}
#endif

// ---- fp16 rounding helpers (quantize_rules.h) -------------------------------
__host__ __device__ inline uint16_t f16_rn(float x) {
  return __half_as_ushort(__float2half_rn(x));
}
__host__ __device__ inline uint16_t f16_next_down(uint16_t h) {
  if (h == 0x0000) return 0x8001;
  return (h & 0x8000) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h - 1);
}
__host__ __device__ inline uint16_t f16_next_up(uint16_t h) {
  if (h == 0x8000) return 0x0001;
  return (h & 0x8000) ? static_cast<uint16_t>(h - 1) : static_cast<uint16_t>(h + 1);
}
__host__ __device__ inline uint16_t f16_round_down(float x) {
  const uint16_t h = f16_rn(x);
  return half_bits_to_float(h) > x ? f16_next_down(h) : h;
}
__host__ __device__ inline uint16_t f16_round_up(float x) {
  const uint16_t h = f16_rn(x);
  return half_bits_to_float(h) < x ? f16_next_up(h) : h;
}
__host__ __device__ inline float inverse_or_zero(float s) {
  return s > 0.0f ? div_rn(1.0f, s) : 0.0f;
}

// ModeParams of quantize_rules.h.
struct Mode {
  uint16_t scale_bits, zero_bits;
  float scale, zero, shift, inv_scale, min_level, max_level, offset;
};

__host__ __device__ inline Mode asymmetric_mode(float lo, float hi, int bits) {
  const uint16_t zero_bits = f16_round_down(lo);
  const float zero = half_bits_to_float(zero_bits);
  const uint16_t scale_bits =
      f16_round_up(div_rn(sub_rn(hi, zero), static_cast<float>(max_code(bits))));
  const float scale = half_bits_to_float(scale_bits);
  return {scale_bits, zero_bits,
          scale,      zero,
          zero,       inverse_or_zero(scale),
          0.0f,       static_cast<float>(max_code(bits)),
          0.0f};
}

// divisor: 2^(b−1) (full levels) or 2^(b−1) − 1 (narrow), quantize_rules.h.
__host__ __device__ inline Mode symmetric_mode(float absmax, int bits, float divisor) {
  const float offset = static_cast<float>(sym_offset(bits));
  const uint16_t magnitude_bits = f16_rn(div_rn(absmax, divisor));
  const float scale = half_bits_to_float(magnitude_bits);
  return {static_cast<uint16_t>(magnitude_bits | kSymFlag),
          0,
          scale,
          mul_rn(-offset, scale),
          0.0f,
          inverse_or_zero(scale),
          -offset,
          offset - 1.0f,
          offset};
}

// Codes of one group under one mode; returns the canonical L2 error.
__host__ __device__ inline float encode_group(const Mode& m, const float* x, int n,
                                              uint8_t* codes) {
  float partial[kErrorPartials] = {};
  for (int i = 0; i < n; ++i) {
    const float level = rintf(mul_rn(sub_rn(x[i], m.shift), m.inv_scale));
    const float u = add_rn(fminf(fmaxf(level, m.min_level), m.max_level), m.offset);
    codes[i] = static_cast<uint8_t>(u);
    const float err = sub_rn(x[i], add_rn(mul_rn(m.scale, u), m.zero));
    partial[i % kErrorPartials] = add_rn(partial[i % kErrorPartials], mul_rn(err, err));
  }
  for (int width = kErrorPartials / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) partial[j] = add_rn(partial[j], partial[j + width]);
  }
  return partial[0];
}

struct QuantizedGroup {
  uint8_t codes[kMaxGroupSize];
  uint16_t scale_bits, zero_bits;
};

// quantize_group of the scalar reference; false if the group is invalid.
// Candidates in order of preference on a tie of the error (candidates_for):
// symmetric full, symmetric narrow (unless asym), asymmetric (unless sym).
__host__ __device__ inline bool quantize_group(const float* x, int n, int bits, QuantMode mode,
                                               QuantizedGroup& out) {
  float lo = x[0], hi = x[0];
  for (int i = 0; i < n; ++i) {
    if (!(fabsf(x[i]) <= kF16Max)) return false;  // also NaN and ±inf
    lo = fminf(lo, x[i]);
    hi = fmaxf(hi, x[i]);
  }
  // canonical_range: −0 folds into +0.
  lo = add_rn(lo, 0.0f);
  hi = add_rn(hi, 0.0f);
  const float absmax = add_rn(-lo > hi ? -lo : hi, 0.0f);
  Mode candidates[3];
  int n_candidates = 0;
  if (mode != QuantMode::kAsymmetric) {
    const float full = static_cast<float>(sym_offset(bits));
    candidates[n_candidates++] = symmetric_mode(absmax, bits, full);
    candidates[n_candidates++] = symmetric_mode(absmax, bits, full - 1.0f);
  }
  if (mode != QuantMode::kSymmetric) candidates[n_candidates++] = asymmetric_mode(lo, hi, bits);

  uint8_t codes[kMaxGroupSize];
  float best_error = encode_group(candidates[0], x, n, out.codes);
  int best = 0;
  for (int k = 1; k < n_candidates; ++k) {
    const float error = encode_group(candidates[k], x, n, codes);
    if (error < best_error) {
      best = k;
      best_error = error;
      for (int i = 0; i < n; ++i) out.codes[i] = codes[i];
    }
  }
  out.scale_bits = candidates[best].scale_bits;
  out.zero_bits = candidates[best].zero_bits;
  return true;
}

// Writes a group into row `row`, group g of a tile (tile_format.h): the
// record's words (pack_chunk of quantize_rules.h, chunk by chunk) go to
// [g][w][16], the metadata to the SoA arrays.
__host__ __device__ inline void store_group_in_tile(const QuantizedGroup& q, const TileFormat& f,
                                                    uint8_t* tile, int g, int row) {
  auto* words = reinterpret_cast<uint32_t*>(tile);
  const PlaneSplit planes = planes_of(f.bits);
  int w_index = 0;
  for (int chunk = 0; chunk < f.group / kChunk; ++chunk) {
    const uint8_t* codes = q.codes + chunk * kChunk;
    int low_bit = 0;
    for (int k = 0; k < planes.n; ++k) {
      const int w = planes.width[k];
      for (int j = 0; j < w; ++j) {
        uint32_t word = 0;
        for (int stripe = 0; stripe < 8 / w; ++stripe) {
          for (int e = 0; e < 4; ++e) {
            const uint32_t code = codes[4 * (j + w * stripe) + e];
            word |= ((code >> low_bit) & ((1u << w) - 1u)) << (8 * e + w * stripe);
          }
        }
        words[f.word_index(g, w_index++, row)] = word;
      }
      low_bit += w;
    }
  }
  auto* scales = reinterpret_cast<uint16_t*>(tile + f.scales_offset());
  scales[g * kTileRows + row] = q.scale_bits;
  if (f.has_zero) {
    reinterpret_cast<uint16_t*>(tile + f.zeros_offset())[g * kTileRows + row] = q.zero_bits;
  }
}

}  // namespace innerq::cuda
