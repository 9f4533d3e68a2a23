// innerq/kernels/quant_kernels.h — quantize, dequantize and the fused InnerQ
// products over records in the layout of group_format.h.
//
// Every operation exists twice with the same signature: `scalar::` is the
// always-compiled reference, written straight from the layout definition
// (read_code / write_code); `simd::` is the Highway version, dispatched once
// per call to the best target of the running CPU. Tests compare the two.
//
// Quantization rules (identical in both, so codes and metadata are identical):
//   - A group's min `lo`, max `hi` and absmax are taken exactly; the scale and
//     zero are rounded to fp16 first (asym: zero down, scale up, so the levels
//     cover [lo, hi]; sym: scale to nearest), and the codes are computed from
//     the rounded values: u = clamp(round_half_even((x − z)·inv_s)) (asym) or
//     u = clamp(round_half_even(x·inv_s)) + 2^(b−1) (sym), inv_s = 1/s in f32,
//     inv_s = 0 when s = 0, so a zero scale gives x̂ = z exactly.
//   - Symmetric groups try two scales, absmax/2^(b−1) and absmax/(2^(b−1)−1),
//     and keep the one with the lower L2 error (quantize_rules.h, with the
//     measurements); asymmetric groups have one candidate.
//   - Hybrid keeps the candidate (sym either scale, asym) with the lowest L2
//     reconstruction error Σ(x − x̂)², x̂ computed from the stored fp16
//     metadata exactly as dequantize does; ties choose symmetric. The sum is
//     accumulated in f32 in one canonical order (16 interleaved partial sums,
//     then a fixed tree), so scalar and SIMD choose the same bit for bit.
//   - Input validation: a group holding NaN or ±Inf, or a value with
//     |x| > 65504 (beyond fp16, where the zero or scale could not be stored),
//     makes quantize throw innerq::Error naming the group index. Records of
//     the groups before it are written; the rest of the output is unspecified.
//   - Dequantize computes x̂ = s·u + z in f32 (a product, then a sum — never
//     fused), the same in both paths.
//   - Codebook levels (GroupSpec::levels = kNormal, symmetric groups only,
//     group_format.h): u is the nearest level of x/s (the lower on a tie),
//     x̂ = s·(T[u] − 64), and the scale is searched: ρ·absmax/63 for ρ = 1,
//     0.95, …, 0.5, each rounded to fp16 first, keeping the lowest canonical
//     L2 error (the first on a tie). These formats run the scalar code in both
//     namespaces (an evaluation format: only the fused attention kernel has a
//     Highway version, kernels/attn_kernels.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "innerq/kernels/group_format.h"

namespace innerq::kernels {

// Shape of one group record. The kernels trust it; innerq::quant::GroupFormat
// validates user input before building one.
struct GroupSpec {
  int bits;
  int group;
  QuantMode mode;
  Levels levels = Levels::kUniform;  // kNormal: symmetric groups only

  constexpr size_t record_bytes() const { return group_record_bytes(bits, group, mode); }
};

// Decoded metadata of one record (layout of group_format.h).
GroupMeta record_meta(const GroupSpec& spec, const uint8_t* record);

// ---------------------------------------------------------------------------
// Scalar reference.
// ---------------------------------------------------------------------------
namespace scalar {

// x: [n_groups·G] floats (one K row along head_dim) → n_groups records, back to back.
void quantize_row(const GroupSpec& spec, const float* x, size_t n_groups, uint8_t* records);

// n_groups records → x: [n_groups·G].
void dequantize_row(const GroupSpec& spec, const uint8_t* records, size_t n_groups, float* x);

// block: [G tokens, dim] row-major → dim records; record c is the group block[0..G−1][c].
void quantize_token_block(const GroupSpec& spec, const float* block, size_t dim, uint8_t* records);

// dim records → block: [G tokens, dim].
void dequantize_token_block(const GroupSpec& spec, const uint8_t* records, size_t dim,
                            float* block);

// q: [n_groups·G] → q_sums: [n_groups], Σ_i q_i per group. Computed once per
// query and passed to every dot_rows call.
void group_sums(int group, const float* q, size_t n_groups, float* q_sums);

// rows: [n_rows][n_groups records], q: [n_groups·G] → scores: [n_rows],
//   scores[r] = Σ_g s_g·Σ_i q_i·u_i + z_g·q_sums[g]   (= Σ_i q_i·x̂_{r,i}).
void dot_rows(const GroupSpec& spec, const float* q, const float* q_sums, const uint8_t* rows,
              size_t n_groups, size_t n_rows, float* scores);

// p: [n_blocks·G] token weights, blocks: [n_blocks][dim records] (token blocks
// as written by quantize_token_block) → out: [dim],
//   out[c] += Σ_blocks s_c·Σ_t p_t·u_{t,c} + z_c·Σ_t p_t,
// with Σ_t p_t computed once per block and reused for every channel.
void accumulate_token_blocks(const GroupSpec& spec, const float* p, const uint8_t* blocks,
                             size_t dim, size_t n_blocks, float* out);

}  // namespace scalar

// ---------------------------------------------------------------------------
// Highway versions: same contracts as scalar::, one dispatch per call.
// ---------------------------------------------------------------------------
namespace simd {

void quantize_row(const GroupSpec& spec, const float* x, size_t n_groups, uint8_t* records);
void dequantize_row(const GroupSpec& spec, const uint8_t* records, size_t n_groups, float* x);
void quantize_token_block(const GroupSpec& spec, const float* block, size_t dim, uint8_t* records);
void dequantize_token_block(const GroupSpec& spec, const uint8_t* records, size_t dim,
                            float* block);
void group_sums(int group, const float* q, size_t n_groups, float* q_sums);
void dot_rows(const GroupSpec& spec, const float* q, const float* q_sums, const uint8_t* rows,
              size_t n_groups, size_t n_rows, float* scores);
void accumulate_token_blocks(const GroupSpec& spec, const float* p, const uint8_t* blocks,
                             size_t dim, size_t n_blocks, float* out);

}  // namespace simd

}  // namespace innerq::kernels
