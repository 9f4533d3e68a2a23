// innerq/kernels/quant_kernels_simd.cc — Highway versions of the quantization
// kernels (contracts in quant_kernels.h). Self-including Highway pattern: this
// file is compiled once per target, and each public function dispatches once
// per call to the best target of the running CPU.
//
// Lanes run along a group (G = 32..128 values, 2..32 vectors). Codes are
// unpacked a 32-code chunk at a time with whole-word shifts and masks
// (unpack_chunk), then widened u8 → i32 → f32 a vector at a time. Quantize
// uses the same formulas and the same canonical error order as the scalar
// reference, with separate multiply and add (no fused MulAdd) wherever the
// result must match it bit for bit.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "innerq/kernels/quant_kernels_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include "innerq/kernels/quant_kernels.h"
#include "innerq/kernels/quantize_rules.h"

HWY_BEFORE_NAMESPACE();
namespace innerq::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using DU8 = hn::Rebind<uint8_t, DF>;
using VF = hn::Vec<DF>;

static_assert(kErrorPartials % HWY_LANES(float) == 0, "canonical error order needs N | 16");

// Codes of one group under one candidate, one byte per code; returns the
// canonical L2 error when `want_error` (more than one candidate), else 0.
float EncodeGroup(const ModeParams& p, const float* x, int group, bool want_error, uint8_t* codes) {
  const DF df;
  const DI di;
  const DU8 du8;
  const size_t N = hn::Lanes(df);
  const size_t vectors_per_partial_set = kErrorPartials / N;  // N divides 16 on every target
  const VF shift = hn::Set(df, p.shift), inv_scale = hn::Set(df, p.inv_scale);
  const VF min_level = hn::Set(df, p.min_level), max_level = hn::Set(df, p.max_level);
  const VF offset = hn::Set(df, p.offset), scale = hn::Set(df, p.scale), zero = hn::Set(df, p.zero);

  VF partial[kErrorPartials];
  for (size_t k = 0; k < vectors_per_partial_set; ++k) partial[k] = hn::Zero(df);
  for (size_t i = 0, k = 0; i < static_cast<size_t>(group); i += N, ++k) {
    const VF v = hn::LoadU(df, x + i);
    const VF level = hn::Round(hn::Mul(hn::Sub(v, shift), inv_scale));
    const VF u = hn::Add(hn::Min(hn::Max(level, min_level), max_level), offset);
    hn::StoreU(hn::DemoteTo(du8, hn::ConvertTo(di, u)), du8, codes + i);
    if (want_error) {
      const VF err = hn::Sub(v, hn::Add(hn::Mul(scale, u), zero));
      VF& acc = partial[k % vectors_per_partial_set];
      acc = hn::Add(acc, hn::Mul(err, err));
    }
  }
  if (!want_error) return 0.0f;
  HWY_ALIGN float lanes[kErrorPartials];
  for (size_t k = 0; k < vectors_per_partial_set; ++k) hn::Store(partial[k], df, lanes + k * N);
  return fold_error_partials(lanes);
}

// x: [G] → one record.
void QuantizeGroup(const GroupSpec& spec, const float* x, size_t group_index, uint8_t* record) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const VF zero = hn::Zero(df);
  VF lo = hn::LoadU(df, x), hi = lo;
  VF non_finite_probe = zero;  // Σ x·0: NaN iff some x is NaN or ±Inf
  for (size_t i = 0; i < static_cast<size_t>(spec.group); i += N) {
    const VF v = hn::LoadU(df, x + i);
    lo = hn::Min(lo, v);
    hi = hn::Max(hi, v);
    non_finite_probe = hn::Add(non_finite_probe, hn::Mul(v, zero));
  }
  const float group_lo = hn::GetLane(hn::MinOfLanes(df, lo));
  const float group_hi = hn::GetLane(hn::MaxOfLanes(df, hi));
  if (!(hn::GetLane(hn::SumOfLanes(df, non_finite_probe)) == 0.0f) || group_lo < -kF16Max ||
      group_hi > kF16Max) {
    throw_invalid_group(group_index, x, static_cast<size_t>(spec.group), 1);
  }
  const Candidates candidates =
      candidates_for(spec.mode, canonical_range(group_lo, group_hi), spec.bits);

  HWY_ALIGN uint8_t codes[3][kMaxGroup];
  const bool choose = candidates.n > 1;
  int best = 0;
  float best_error = EncodeGroup(candidates.params[0], x, spec.group, choose, codes[0]);
  for (int k = 1; k < candidates.n; ++k) {
    const float error = EncodeGroup(candidates.params[k], x, spec.group, true, codes[k]);
    if (error < best_error) {
      best = k;
      best_error = error;
    }
  }

  const ModeParams& chosen = candidates.params[best];
  const size_t chunk_bytes = group_code_bytes(spec.bits, kChunk);
  for (int c = 0; c < spec.group / kChunk; ++c) {
    pack_chunk(codes[best] + c * kChunk, spec.bits, record + c * chunk_bytes);
  }
  uint8_t* meta = record + group_code_bytes(spec.bits, spec.group);
  store_f16(meta, chosen.scale_bits);
  if (mode_has_zero(spec.mode)) store_f16(meta + 2, chosen.zero_bits);
}

// Calls `consume(i, u)` for every vector of codes of a record, u = f32 codes
// i..i+N−1.
template <class Consume>
HWY_INLINE void ForEachCodeVector(const uint8_t* record, int bits, int group, Consume&& consume) {
  const DF df;
  const DI di;
  const DU8 du8;
  const size_t N = hn::Lanes(df);
  const size_t chunk_bytes = group_code_bytes(bits, kChunk);
  HWY_ALIGN uint8_t codes[kChunk];
  for (int c = 0; c < group / kChunk; ++c) {
    unpack_chunk(record + c * chunk_bytes, bits, codes);
    for (size_t i = 0; i < static_cast<size_t>(kChunk); i += N) {
      consume(c * kChunk + i, hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(du8, codes + i))));
    }
  }
}

// One record → x̂: [G].
void DequantizeGroup(const GroupSpec& spec, const uint8_t* record, float* x) {
  const DF df;
  const GroupMeta meta = read_meta_finite(record, group_code_bytes(spec.bits, spec.group),
                                          mode_has_zero(spec.mode), spec.bits);
  const VF scale = hn::Set(df, meta.scale), zero = hn::Set(df, meta.zero);
  ForEachCodeVector(record, spec.bits, spec.group, [&](size_t i, VF u) {
    hn::StoreU(hn::Add(hn::Mul(scale, u), zero), df, x + i);
  });
}

// Σ_i w_i·u_i over one record's codes, w: [G].
float CodeDot(const uint8_t* record, int bits, int group, const float* w) {
  const DF df;
  VF acc = hn::Zero(df);
  ForEachCodeVector(record, bits, group,
                    [&](size_t i, VF u) { acc = hn::MulAdd(hn::LoadU(df, w + i), u, acc); });
  return hn::GetLane(hn::SumOfLanes(df, acc));
}

float Sum(const float* x, size_t n) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF acc = hn::Zero(df);
  for (size_t i = 0; i < n; i += N) acc = hn::Add(acc, hn::LoadU(df, x + i));
  return hn::GetLane(hn::SumOfLanes(df, acc));
}

// ---------------------------------------------------------------------------
// Entry points (one dispatch each).
// ---------------------------------------------------------------------------
void QuantizeRow(const GroupSpec& spec, const float* x, size_t n_groups, uint8_t* records) {
  const size_t G = static_cast<size_t>(spec.group);
  for (size_t g = 0; g < n_groups; ++g) {
    QuantizeGroup(spec, x + g * G, g, records + g * spec.record_bytes());
  }
}

void DequantizeRow(const GroupSpec& spec, const uint8_t* records, size_t n_groups, float* x) {
  const size_t G = static_cast<size_t>(spec.group);
  for (size_t g = 0; g < n_groups; ++g) {
    DequantizeGroup(spec, records + g * spec.record_bytes(), x + g * G);
  }
}

// Channels are gathered to a contiguous group and quantized along their tokens
// ([G] per channel); lanes therefore run over tokens, the block stays in L1.
void QuantizeTokenBlock(const GroupSpec& spec, const float* block, size_t dim, uint8_t* records) {
  HWY_ALIGN float channel[kMaxGroup];
  for (size_t c = 0; c < dim; ++c) {
    for (int t = 0; t < spec.group; ++t) channel[t] = block[static_cast<size_t>(t) * dim + c];
    QuantizeGroup(spec, channel, c, records + c * spec.record_bytes());
  }
}

void DequantizeTokenBlock(const GroupSpec& spec, const uint8_t* records, size_t dim, float* block) {
  HWY_ALIGN float channel[kMaxGroup];
  for (size_t c = 0; c < dim; ++c) {
    DequantizeGroup(spec, records + c * spec.record_bytes(), channel);
    for (int t = 0; t < spec.group; ++t) block[static_cast<size_t>(t) * dim + c] = channel[t];
  }
}

void GroupSums(int group, const float* q, size_t n_groups, float* q_sums) {
  const size_t G = static_cast<size_t>(group);
  for (size_t g = 0; g < n_groups; ++g) q_sums[g] = Sum(q + g * G, G);
}

// Per row: one vector accumulator of s_g·(q·u)_g across groups, one horizontal
// sum at the end; the z_g·Σq terms are scalar.
void DotRows(const GroupSpec& spec, const float* q, const float* q_sums, const uint8_t* rows,
             size_t n_groups, size_t n_rows, float* scores) {
  const DF df;
  const size_t G = static_cast<size_t>(spec.group);
  const size_t code_bytes = group_code_bytes(spec.bits, spec.group);
  const bool has_zero = mode_has_zero(spec.mode);
  for (size_t r = 0; r < n_rows; ++r) {
    VF acc = hn::Zero(df);
    float zero_terms = 0.0f;
    for (size_t g = 0; g < n_groups; ++g) {
      const uint8_t* record = rows + (r * n_groups + g) * spec.record_bytes();
      const GroupMeta meta = read_meta_finite(record, code_bytes, has_zero, spec.bits);
      const float* qg = q + g * G;
      VF code_dot = hn::Zero(df);
      ForEachCodeVector(record, spec.bits, spec.group, [&](size_t i, VF u) {
        code_dot = hn::MulAdd(hn::LoadU(df, qg + i), u, code_dot);
      });
      acc = hn::MulAdd(hn::Set(df, meta.scale), code_dot, acc);
      zero_terms += meta.zero * q_sums[g];
    }
    scores[r] = hn::GetLane(hn::SumOfLanes(df, acc)) + zero_terms;
  }
}

void AccumulateTokenBlocks(const GroupSpec& spec, const float* p, const uint8_t* blocks, size_t dim,
                           size_t n_blocks, float* out) {
  const size_t G = static_cast<size_t>(spec.group);
  const size_t code_bytes = group_code_bytes(spec.bits, spec.group);
  const bool has_zero = mode_has_zero(spec.mode);
  for (size_t b = 0; b < n_blocks; ++b) {
    const float* weights = p + b * G;
    const float weight_sum = Sum(weights, G);
    for (size_t c = 0; c < dim; ++c) {
      const uint8_t* record = blocks + (b * dim + c) * spec.record_bytes();
      const GroupMeta meta = read_meta_finite(record, code_bytes, has_zero, spec.bits);
      out[c] +=
          meta.scale * CodeDot(record, spec.bits, spec.group, weights) + meta.zero * weight_sum;
    }
  }
}

}  // namespace innerq::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace innerq::kernels {

HWY_EXPORT(QuantizeRow);
HWY_EXPORT(DequantizeRow);
HWY_EXPORT(QuantizeTokenBlock);
HWY_EXPORT(DequantizeTokenBlock);
HWY_EXPORT(GroupSums);
HWY_EXPORT(DotRows);
HWY_EXPORT(AccumulateTokenBlocks);

namespace simd {

void quantize_row(const GroupSpec& spec, const float* x, size_t n_groups, uint8_t* records) {
  if (spec.levels != Levels::kUniform) return scalar::quantize_row(spec, x, n_groups, records);
  HWY_DYNAMIC_DISPATCH(QuantizeRow)(spec, x, n_groups, records);
}
void dequantize_row(const GroupSpec& spec, const uint8_t* records, size_t n_groups, float* x) {
  if (spec.levels != Levels::kUniform) return scalar::dequantize_row(spec, records, n_groups, x);
  HWY_DYNAMIC_DISPATCH(DequantizeRow)(spec, records, n_groups, x);
}
void quantize_token_block(const GroupSpec& spec, const float* block, size_t dim, uint8_t* records) {
  if (spec.levels != Levels::kUniform) {
    return scalar::quantize_token_block(spec, block, dim, records);
  }
  HWY_DYNAMIC_DISPATCH(QuantizeTokenBlock)(spec, block, dim, records);
}
void dequantize_token_block(const GroupSpec& spec, const uint8_t* records, size_t dim,
                            float* block) {
  if (spec.levels != Levels::kUniform) {
    return scalar::dequantize_token_block(spec, records, dim, block);
  }
  HWY_DYNAMIC_DISPATCH(DequantizeTokenBlock)(spec, records, dim, block);
}
void group_sums(int group, const float* q, size_t n_groups, float* q_sums) {
  HWY_DYNAMIC_DISPATCH(GroupSums)(group, q, n_groups, q_sums);
}
void dot_rows(const GroupSpec& spec, const float* q, const float* q_sums, const uint8_t* rows,
              size_t n_groups, size_t n_rows, float* scores) {
  if (spec.levels != Levels::kUniform) {
    return scalar::dot_rows(spec, q, q_sums, rows, n_groups, n_rows, scores);
  }
  HWY_DYNAMIC_DISPATCH(DotRows)(spec, q, q_sums, rows, n_groups, n_rows, scores);
}
void accumulate_token_blocks(const GroupSpec& spec, const float* p, const uint8_t* blocks,
                             size_t dim, size_t n_blocks, float* out) {
  if (spec.levels != Levels::kUniform) {
    return scalar::accumulate_token_blocks(spec, p, blocks, dim, n_blocks, out);
  }
  HWY_DYNAMIC_DISPATCH(AccumulateTokenBlocks)(spec, p, blocks, dim, n_blocks, out);
}

}  // namespace simd
}  // namespace innerq::kernels
#endif  // HWY_ONCE
