// innerq/kernels/quant_kernels_scalar.cc — the scalar reference of every
// quantization kernel, written code by code from the layout definition
// (read_code / write_code / decode_meta). Slow on purpose; the Highway kernels
// must reproduce it.
#include <algorithm>
#include <cmath>

#include "innerq/base/error.h"
#include "innerq/kernels/quant_kernels.h"
#include "innerq/kernels/quantize_rules.h"

namespace innerq::kernels::scalar {
namespace {

float encode(const ModeParams& p, float x) {
  const float level = std::nearbyint((x - p.shift) * p.inv_scale);
  return std::min(std::max(level, p.min_level), p.max_level) + p.offset;
}

// Codes of one group under one mode; returns the canonical L2 error.
float encode_group(const ModeParams& p, const float* x, int group, uint8_t* codes) {
  float partial[kErrorPartials] = {};
  for (int i = 0; i < group; ++i) {
    const float u = encode(p, x[i]);
    codes[i] = static_cast<uint8_t>(u);
    const float err = x[i] - (p.scale * u + p.zero);
    partial[i % kErrorPartials] += err * err;
  }
  return fold_error_partials(partial);
}

// Codebook levels (quant_kernels.h): the scales ρ·absmax/63 (the outermost
// level at ρ·absmax) for ρ = 1 − 0.05·k.
inline constexpr int kLevelScales = 11;

// x: [G] → one record with codebook levels; `absmax` of x.
void quantize_group_levels(const GroupSpec& spec, const float* x, float absmax, uint8_t* record) {
  if (!levels_fit(spec.levels, spec.bits, spec.mode)) {
    throw Error("quantize: codebook levels need symmetric groups of 2-4 bits, not " +
                std::to_string(spec.bits) + "-bit " +
                (spec.mode == QuantMode::kSymmetric ? "symmetric" : "asymmetric/hybrid") + " ones");
  }
  const uint8_t* table = normal_level_table(spec.bits);
  const int n_levels = 1 << spec.bits;
  // Midpoints between neighbouring levels (exact: half-integers): the
  // nearest level of y is the number of midpoints below it, the lower on a
  // tie.
  float mid[15];
  for (int j = 0; j + 1 < n_levels; ++j) {
    mid[j] = 0.5f * static_cast<float>(table[j] + table[j + 1]) - kNormalLevelOffset;
  }
  uint8_t codes[kMaxGroup], best_codes[kMaxGroup];
  float best_error = 0.0f;
  f16_bits best_scale = 0;
  for (int k = 0; k < kLevelScales; ++k) {
    const float rho = 1.0f - 0.05f * static_cast<float>(k);
    const f16_bits scale_bits = f32_to_f16(absmax * rho / 63.0f);
    const float s = f16_to_f32(scale_bits);
    const float inv = inverse_or_zero(s);
    float partial[kErrorPartials] = {};
    for (int i = 0; i < spec.group; ++i) {
      // The nearest level of x/s, the lower on a tie.
      const float y = x[i] * inv;
      int u = 0;
      for (int j = 0; j + 1 < n_levels; ++j) u += y > mid[j];
      codes[i] = static_cast<uint8_t>(u);
      const float err = x[i] - s * static_cast<float>(table[u] - kNormalLevelOffset);
      partial[i % kErrorPartials] += err * err;
    }
    const float error = fold_error_partials(partial);
    if (k == 0 || error < best_error) {
      best_error = error;
      best_scale = scale_bits;
      std::copy(codes, codes + spec.group, best_codes);
    }
  }
  for (int i = 0; i < spec.group; ++i) write_code(record, spec.bits, i, best_codes[i]);
  store_f16(record + group_code_bytes(spec.bits, spec.group),
            static_cast<f16_bits>(best_scale | kSymFlag));
}

// x: [G] → one record.
void quantize_group(const GroupSpec& spec, const float* x, size_t group_index, uint8_t* record) {
  float lo = x[0], hi = x[0];
  for (int i = 0; i < spec.group; ++i) {
    if (!std::isfinite(x[i]) || std::fabs(x[i]) > kF16Max) {
      throw_invalid_group(group_index, x, static_cast<size_t>(spec.group), 1);
    }
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (spec.levels != Levels::kUniform) {
    return quantize_group_levels(spec, x, canonical_range(lo, hi).absmax, record);
  }
  const Candidates candidates = candidates_for(spec.mode, canonical_range(lo, hi), spec.bits);

  uint8_t codes[3][kMaxGroup];
  int best = 0;
  float best_error = encode_group(candidates.params[0], x, spec.group, codes[0]);
  for (int k = 1; k < candidates.n; ++k) {
    const float error = encode_group(candidates.params[k], x, spec.group, codes[k]);
    if (error < best_error) {
      best = k;
      best_error = error;
    }
  }

  const ModeParams& chosen = candidates.params[best];
  for (int i = 0; i < spec.group; ++i) write_code(record, spec.bits, i, codes[best][i]);
  uint8_t* meta = record + group_code_bytes(spec.bits, spec.group);
  store_f16(meta, chosen.scale_bits);
  if (mode_has_zero(spec.mode)) store_f16(meta + 2, chosen.zero_bits);
}

// One record → x̂: [G], x̂_i = s·u_i + z.
void dequantize_group(const GroupSpec& spec, const uint8_t* record, float* x) {
  const GroupMeta meta = record_meta(spec, record);
  for (int i = 0; i < spec.group; ++i) {
    const float product =
        meta.scale *
        static_cast<float>(level_value(spec.levels, spec.bits, read_code(record, spec.bits, i)));
    x[i] = product + meta.zero;
  }
}

}  // namespace

void quantize_row(const GroupSpec& spec, const float* x, size_t n_groups, uint8_t* records) {
  const size_t G = static_cast<size_t>(spec.group);
  for (size_t g = 0; g < n_groups; ++g) {
    quantize_group(spec, x + g * G, g, records + g * spec.record_bytes());
  }
}

void dequantize_row(const GroupSpec& spec, const uint8_t* records, size_t n_groups, float* x) {
  const size_t G = static_cast<size_t>(spec.group);
  for (size_t g = 0; g < n_groups; ++g) {
    dequantize_group(spec, records + g * spec.record_bytes(), x + g * G);
  }
}

void quantize_token_block(const GroupSpec& spec, const float* block, size_t dim, uint8_t* records) {
  float channel[kMaxGroup];
  for (size_t c = 0; c < dim; ++c) {
    for (int t = 0; t < spec.group; ++t) channel[t] = block[static_cast<size_t>(t) * dim + c];
    quantize_group(spec, channel, c, records + c * spec.record_bytes());
  }
}

void dequantize_token_block(const GroupSpec& spec, const uint8_t* records, size_t dim,
                            float* block) {
  float channel[kMaxGroup];
  for (size_t c = 0; c < dim; ++c) {
    dequantize_group(spec, records + c * spec.record_bytes(), channel);
    for (int t = 0; t < spec.group; ++t) block[static_cast<size_t>(t) * dim + c] = channel[t];
  }
}

void group_sums(int group, const float* q, size_t n_groups, float* q_sums) {
  for (size_t g = 0; g < n_groups; ++g) {
    float sum = 0.0f;
    for (int i = 0; i < group; ++i) sum += q[g * static_cast<size_t>(group) + i];
    q_sums[g] = sum;
  }
}

void dot_rows(const GroupSpec& spec, const float* q, const float* q_sums, const uint8_t* rows,
              size_t n_groups, size_t n_rows, float* scores) {
  const size_t G = static_cast<size_t>(spec.group);
  for (size_t r = 0; r < n_rows; ++r) {
    float score = 0.0f;
    for (size_t g = 0; g < n_groups; ++g) {
      const uint8_t* record = rows + (r * n_groups + g) * spec.record_bytes();
      const GroupMeta meta = record_meta(spec, record);
      float code_dot = 0.0f;
      for (size_t i = 0; i < G; ++i) {
        code_dot += q[g * G + i] *
                    static_cast<float>(level_value(
                        spec.levels, spec.bits, read_code(record, spec.bits, static_cast<int>(i))));
      }
      score += meta.scale * code_dot + meta.zero * q_sums[g];
    }
    scores[r] = score;
  }
}

void accumulate_token_blocks(const GroupSpec& spec, const float* p, const uint8_t* blocks,
                             size_t dim, size_t n_blocks, float* out) {
  const size_t G = static_cast<size_t>(spec.group);
  for (size_t b = 0; b < n_blocks; ++b) {
    const float* weights = p + b * G;
    float weight_sum = 0.0f;
    for (size_t t = 0; t < G; ++t) weight_sum += weights[t];
    for (size_t c = 0; c < dim; ++c) {
      const uint8_t* record = blocks + (b * dim + c) * spec.record_bytes();
      const GroupMeta meta = record_meta(spec, record);
      float code_dot = 0.0f;
      for (size_t t = 0; t < G; ++t) {
        code_dot += weights[t] *
                    static_cast<float>(level_value(
                        spec.levels, spec.bits, read_code(record, spec.bits, static_cast<int>(t))));
      }
      out[c] += meta.scale * code_dot + meta.zero * weight_sum;
    }
  }
}

}  // namespace innerq::kernels::scalar
