// innerq/kernels/weight_int16.h — the weight product with int16 activations
// (docs/architecture.md, "Quantized activations"): the activations of a
// matmul are quantized once per call to int16 in chunks of 32 values, and
// each weight block multiplies its integer codes with them in integers
// (pairwise multiply-add, x86 madd), one float multiply-add per 16 or 32
// values. llama.cpp does the same with int8; int16 costs the same
// instructions on AVX-512 and leaves the activations 256 times finer, so the
// product stays within about 2⁻¹⁶ of the f32 one and a cache's quality is
// measured the same with either (int8 added a KL-divergence floor of 0.003
// on SmolLM2, eight times what a q8_0 cache costs).
//
// Activations. Chunk c of a row of n values (n a multiple of 32) holds
//   d = amax / kActMax (f32; amax = max |x_i| over the chunk; kActMax = 32639,
//     not 32767, so that weight_packed.h can split q into two signed bytes),
//   q_i = clamp(round_half_even(x_i · (1/d)), −kActMax, kActMax) as int16,
//   ds_half[h] = fl(d · Σ q_i over values 16h .. 16h + 15),
//   ds = fl(d · Σ q_i over the chunk),
// so x_i ≈ d·q_i with |x_i − d·q_i| ≤ d·(1/2 + 2⁻⁸). A chunk with amax <
// 2⁻⁹⁰ is all zero (d = 0); a chunk holding NaN or ±Inf has d = ds = NaN
// and q = 0, so every product with it is NaN. scalar:: and simd:: quantize to the
// same bits.
//
// Weights. Every block format (weight_blocks.h) but BF16 is read as chunks of
// 32 values with unsigned integer codes u_i (Q8_0: signed), so that the
// weight of value i in half h is w_i = W_h·u_i + B_h (up to the rounding of
// the dequantized value):
//   format  u_i                W_h            B_h (offset)
//   Q4_0    q (4 bits)         d              −8d
//   Q4_1    q                  d              m
//   Q5_0    q (5 bits)         d              −16d
//   Q5_1    q                  d              m
//   Q8_0    q (int8)           d              —
//   Q2_K    q (2 bits)         d·sc_s         −dmin·m_s
//   Q3_K    low + 4·high       d·sc_s         −4·d·sc_s
//   Q4_K    q (4 bits)         d·sc_j         −dmin·m_j
//   Q5_K    q (5 bits)         d·sc_j         −dmin·m_j
//   Q6_K    q (6 bits)         d·sc_s         −32·d·sc_s
// (s: the 16-value sub-block of the half, j: the 32-value one; W_h and B_h
// single f32 products of the stored fields, −8d, −16d, −4·dl and −32·dl
// exact.) The 32-value formats have one W and B per chunk; a chunk adds
//   F·J + O,  F = fl(W·d_x),  J = Σ u_i·q_i,  O = fl(B·ds);
// the K-quants add, for each half h,
//   F_h·J_h + O_h,  F_h = fl(W_h·d_x),  J_h = Σ_{i∈h} u_i·q_i,  O_h = fl(B_h·ds_half[h]).
// J is exact in int32, and so is every partial sum the kernels convert to
// f32 (at most two products, |u·q| ≤ 128·kActMax). scalar::dot_rows_int16 adds
// the terms in double and rounds once. simd::dot_rows_int16 accumulates the
// J terms lane by lane in f32 (one fused multiply-add by F per vector), the
// O terms in f32, and adds the two at the end. So SIMD and scalar differ only
// by f32 summation: at most (2·chunks + log2(lanes) + 4)·2⁻²⁴·(Σ|F|·Σ|u_i·q_i|
// + Σ|O|) (lanes may cancel, so the bound takes each product's magnitude),
// which scalar::dot_rows_int16 reports per output. Several tokens are read
// with the weights decoded once; each token's arithmetic is exactly that of
// a call with that token alone, so a prefill and a decode of the same token
// agree bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "innerq/kernels/weight_blocks.h"

namespace innerq::kernels {

inline constexpr int kActChunk = 32;
inline constexpr int kActMax = 32639;  // largest |q| of an int16 activation

// 32 activations as d·q (layout above); 80 bytes, q first so it stays aligned.
struct ActChunk {
  int16_t q[kActChunk];
  float d;
  float ds;
  float ds_half[2];
};
static_assert(sizeof(ActChunk) == 80, "an activation chunk is 64 + 16 bytes");

// Whether dot_rows_int16 reads format f (every block format but BF16).
constexpr bool int16_dot_supported(WeightFormat f) {
  return f != WeightFormat::kBF16;
}

// Both namespaces have the same contracts:
//   quantize_activations: x: [n] (n a multiple of 32) → out: [n / 32].
//   dot_rows_int16: rows as weight_blocks.h's dot_rows (rows and row_bytes
//     2-byte aligned, as GGUF's are, for the fp16 fields), f supported; x: token
//     t's chunks at x + t·x_stride ([n / 32] each); y[t·y_stride + r] =
//     Σ_i w[r][i]·x̂_t[i] for r < n_rows, t < n_tokens.
namespace scalar {

void quantize_activations(const float* x, int64_t n, ActChunk* out);
// y_abs (may be null): per output, Σ|F|·Σ|u_i·q_i| + Σ|O| (the rounding bound's scale).
void dot_rows_int16(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows,
                    const ActChunk* x, size_t x_stride, int n_tokens, int64_t n, float* y,
                    size_t y_stride, double* y_abs = nullptr);

}  // namespace scalar

namespace simd {

void quantize_activations(const float* x, int64_t n, ActChunk* out);
void dot_rows_int16(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows,
                    const ActChunk* x, size_t x_stride, int n_tokens, int64_t n, float* y,
                    size_t y_stride);
// f32 lanes of each accumulator on the target dispatch picks now.
size_t int16_dot_lanes();

}  // namespace simd

}  // namespace innerq::kernels
