// tests/kernels/quant_kernels_test.cc — the Highway kernels against the scalar
// reference (bit-exact quantize/dequantize, toleranced fused products), the
// error bound, the hybrid choice, degenerate and non-finite groups.
#include "innerq/kernels/quant_kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "innerq/base/error.h"
#include "innerq/kernels/quantize_rules.h"
#include "test_groups.h"

namespace innerq::kernels {
namespace {

using testing::all_specs;
using testing::Content;
using testing::describe;
using testing::make_groups;

constexpr size_t kRunLengths[] = {1, 3, 7, 16};
constexpr Content kContents[] = {Content::kGaussian, Content::kOutliers, Content::kAdversarial};

std::vector<uint8_t> quantize_scalar(const GroupSpec& spec, const std::vector<float>& x) {
  std::vector<uint8_t> records(x.size() / spec.group * spec.record_bytes());
  scalar::quantize_row(spec, x.data(), x.size() / spec.group, records.data());
  return records;
}

std::vector<uint8_t> quantize_simd(const GroupSpec& spec, const std::vector<float>& x) {
  std::vector<uint8_t> records(x.size() / spec.group * spec.record_bytes());
  simd::quantize_row(spec, x.data(), x.size() / spec.group, records.data());
  return records;
}

std::vector<float> dequantize_scalar(const GroupSpec& spec, const std::vector<uint8_t>& records) {
  const size_t n_groups = records.size() / spec.record_bytes();
  std::vector<float> x(n_groups * spec.group);
  scalar::dequantize_row(spec, records.data(), n_groups, x.data());
  return x;
}

// Index of the first record whose bytes differ, or -1.
long first_differing_record(const GroupSpec& spec, const std::vector<uint8_t>& a,
                            const std::vector<uint8_t>& b) {
  for (size_t g = 0; g * spec.record_bytes() < a.size(); ++g) {
    if (std::memcmp(a.data() + g * spec.record_bytes(), b.data() + g * spec.record_bytes(),
                    spec.record_bytes()) != 0) {
      return static_cast<long>(g);
    }
  }
  return -1;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs `check` once per Highway target compiled into the kernels and
// supported by this CPU (e.g. SSE4, AVX2, AVX-512), so every vector width is
// compared with the reference, not only the one dispatch would pick.
template <class Check>
void for_each_simd_target(Check&& check) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    SCOPED_TRACE(std::string("target=") + hwy::TargetName(target));
    hwy::SetSupportedTargetsForTest(target);
    check();
  }
  hwy::SetSupportedTargetsForTest(0);
}

// ---------------------------------------------------------------------------
// SIMD vs scalar: identical bytes.
// ---------------------------------------------------------------------------
TEST(QuantKernels, SimdRowQuantizeMatchesScalarBitForBit) {
  for_each_simd_target([&] {
    for (const GroupSpec& spec : all_specs()) {
      for (Content content : kContents) {
        for (size_t n_groups : kRunLengths) {
          const uint32_t seed = static_cast<uint32_t>(n_groups * 7919 + spec.bits);
          SCOPED_TRACE(describe(spec) + " content=" + testing::content_name(content) +
                       " n_groups=" + std::to_string(n_groups) + " seed=" + std::to_string(seed));
          const std::vector<float> x = make_groups(content, spec.group, n_groups, seed);
          const std::vector<uint8_t> reference = quantize_scalar(spec, x);
          const std::vector<uint8_t> fast = quantize_simd(spec, x);
          ASSERT_EQ(first_differing_record(spec, reference, fast), -1);

          std::vector<float> fast_x(x.size());
          simd::dequantize_row(spec, fast.data(), n_groups, fast_x.data());
          ASSERT_TRUE(bitwise_equal(dequantize_scalar(spec, reference), fast_x));
        }
      }
    }
  });
}

TEST(QuantKernels, TokenBlockMatchesScalarAndTransposedRow) {
  for_each_simd_target([&] {
    for (const GroupSpec& spec : all_specs()) {
      for (Content content : kContents) {
        for (size_t dim : {size_t{1}, size_t{3}, size_t{8}, size_t{17}}) {
          SCOPED_TRACE(describe(spec) + " content=" + testing::content_name(content) +
                       " dim=" + std::to_string(dim));
          // channels: [dim][G] groups; block: [G tokens][dim] = its transpose.
          const std::vector<float> channels = make_groups(content, spec.group, dim, 11);
          std::vector<float> block(channels.size());
          for (size_t c = 0; c < dim; ++c) {
            for (int t = 0; t < spec.group; ++t) block[t * dim + c] = channels[c * spec.group + t];
          }
          std::vector<uint8_t> reference(dim * spec.record_bytes()), fast(reference.size());
          scalar::quantize_token_block(spec, block.data(), dim, reference.data());
          simd::quantize_token_block(spec, block.data(), dim, fast.data());
          ASSERT_EQ(first_differing_record(spec, reference, fast), -1);
          ASSERT_EQ(first_differing_record(spec, reference, quantize_scalar(spec, channels)), -1);

          std::vector<float> reference_block(block.size()), fast_block(block.size());
          scalar::dequantize_token_block(spec, reference.data(), dim, reference_block.data());
          simd::dequantize_token_block(spec, fast.data(), dim, fast_block.data());
          ASSERT_TRUE(bitwise_equal(reference_block, fast_block));
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Error bound and the hybrid choice.
// ---------------------------------------------------------------------------

// How far fp16 rounding of a scale can move the extreme level 2^b·s: half an
// fp16 step of s (relative 2^−11 when normal, 2^−25 absolute when subnormal),
// doubled for margin.
double metadata_rounding_slack(int bits, double s) {
  return (1 << bits) * (s * 0x1p-10 + 0x1p-24);
}

// Every element whose code was not clamped lies within s/2 of its original,
// every element within s (a clamped extreme), each plus float slack from the
// magnitudes involved; a zero scale reproduces the fp16 zero exactly.
TEST(QuantKernels, ReconstructionWithinHalfAScale) {
  for (const GroupSpec& spec : all_specs()) {
    for (Content content : kContents) {
      SCOPED_TRACE(describe(spec) + " content=" + testing::content_name(content));
      const size_t n_groups = 24;
      const std::vector<float> x = make_groups(content, spec.group, n_groups, 5);
      const std::vector<uint8_t> records = quantize_simd(spec, x);
      const std::vector<float> x_hat = dequantize_scalar(spec, records);
      for (size_t g = 0; g < n_groups; ++g) {
        const GroupMeta meta = record_meta(spec, records.data() + g * spec.record_bytes());
        for (int i = 0; i < spec.group; ++i) {
          const size_t k = g * spec.group + i;
          const double xi = x[k], err = std::fabs(xi - static_cast<double>(x_hat[k]));
          SCOPED_TRACE("group " + std::to_string(g) + " element " + std::to_string(i) +
                       " x=" + std::to_string(xi) + " x_hat=" + std::to_string(x_hat[k]));
          ASSERT_TRUE(std::isfinite(x_hat[k]));
          if (meta.scale == 0.0f) {
            ASSERT_EQ(x_hat[k], meta.zero);
            continue;
          }
          const double s = meta.scale;
          const double slack =
              8.0 * FLT_EPSILON * (std::fabs(xi) + std::fabs(meta.zero) + s * (1 << spec.bits));
          const double level = meta.symmetric ? xi / s : (xi - meta.zero) / s;
          const double min_level = meta.symmetric ? sym_min_level(spec.bits) : 0;
          const double max_level = meta.symmetric ? sym_max_level(spec.bits) : max_code(spec.bits);
          if (level >= min_level - 0.5 && level <= max_level + 0.5) {
            ASSERT_LE(err, s / 2 + slack);
          }
          ASSERT_LE(err, s + metadata_rounding_slack(spec.bits, s) + slack);
        }
      }
    }
  }
}

double l2_error(const float* x, const float* x_hat, int n) {
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += (double{x[i]} - x_hat[i]) * (double{x[i]} - x_hat[i]);
  return sum;
}

TEST(QuantKernels, HybridNeverWorseThanEitherMode) {
  for (int bits : kSupportedBits) {
    for (int group : kSupportedGroups) {
      for (Content content : kContents) {
        SCOPED_TRACE("bits=" + std::to_string(bits) + " G=" + std::to_string(group) +
                     " content=" + testing::content_name(content));
        const std::vector<float> x = make_groups(content, group, 64, 3);
        const std::vector<float> hybrid = dequantize_scalar(
            {bits, group, QuantMode::kHybrid}, quantize_simd({bits, group, QuantMode::kHybrid}, x));
        const std::vector<float> sym =
            dequantize_scalar({bits, group, QuantMode::kSymmetric},
                              quantize_simd({bits, group, QuantMode::kSymmetric}, x));
        const std::vector<float> asym =
            dequantize_scalar({bits, group, QuantMode::kAsymmetric},
                              quantize_simd({bits, group, QuantMode::kAsymmetric}, x));
        for (size_t g = 0; g < 64; ++g) {
          const size_t at = g * group;
          const double e_hybrid = l2_error(&x[at], &hybrid[at], group);
          const double e_best =
              std::min(l2_error(&x[at], &sym[at], group), l2_error(&x[at], &asym[at], group));
          // The choice sums e² in f32; allow that sum's rounding.
          ASSERT_LE(e_hybrid, e_best * (1 + group * FLT_EPSILON) + 1e-30) << "group " << g;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Fused products.
// ---------------------------------------------------------------------------

// Σ_i q_i·(s·u_i + z) in double, and its magnitude Σ s·|q_i|·u_i + |z|·|q_i|.
struct DoubleDot {
  double value = 0.0;
  double magnitude = 0.0;
};

DoubleDot double_dot(const GroupSpec& spec, const float* q, const uint8_t* record) {
  const GroupMeta meta = record_meta(spec, record);
  DoubleDot dot;
  for (int i = 0; i < spec.group; ++i) {
    const double u = read_code(record, spec.bits, i);
    dot.value += q[i] * (double{meta.scale} * u + meta.zero);
    dot.magnitude += std::fabs(q[i]) * (meta.scale * u + std::fabs(meta.zero));
  }
  return dot;
}

TEST(QuantKernels, FusedDotEqualsDequantizedDoubleDot) {
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const GroupSpec& spec : all_specs()) {
    for (size_t n_groups : {size_t{1}, size_t{3}, size_t{4}}) {
      SCOPED_TRACE(describe(spec) + " n_groups=" + std::to_string(n_groups));
      const size_t n_rows = 5, row_values = n_groups * spec.group;
      const std::vector<float> keys =
          make_groups(Content::kOutliers, spec.group, n_rows * n_groups, 9);
      const std::vector<uint8_t> rows = quantize_simd(spec, keys);
      std::vector<float> q(row_values);
      for (float& v : q) v = normal(rng);
      std::vector<float> sums_scalar(n_groups), sums_simd(n_groups);
      scalar::group_sums(spec.group, q.data(), n_groups, sums_scalar.data());
      simd::group_sums(spec.group, q.data(), n_groups, sums_simd.data());
      std::vector<float> scores_scalar(n_rows), scores_simd(n_rows);
      scalar::dot_rows(spec, q.data(), sums_scalar.data(), rows.data(), n_groups, n_rows,
                       scores_scalar.data());
      simd::dot_rows(spec, q.data(), sums_simd.data(), rows.data(), n_groups, n_rows,
                     scores_simd.data());
      for (size_t r = 0; r < n_rows; ++r) {
        DoubleDot reference;
        for (size_t g = 0; g < n_groups; ++g) {
          const DoubleDot part =
              double_dot(spec, &q[g * spec.group], &rows[(r * n_groups + g) * spec.record_bytes()]);
          reference.value += part.value;
          reference.magnitude += part.magnitude;
        }
        const double tolerance = (spec.group + n_groups + 4) * FLT_EPSILON * reference.magnitude;
        EXPECT_NEAR(scores_scalar[r], reference.value, tolerance) << "row " << r;
        EXPECT_NEAR(scores_simd[r], reference.value, tolerance) << "row " << r;
      }
    }
  }
}

TEST(QuantKernels, FusedAccumulateEqualsDequantizedDoubleSum) {
  std::mt19937 rng(23);
  std::uniform_real_distribution<float> weight(0.0f, 1.0f);
  for (const GroupSpec& spec : all_specs()) {
    for (size_t dim : {size_t{1}, size_t{8}, size_t{19}}) {
      SCOPED_TRACE(describe(spec) + " dim=" + std::to_string(dim));
      const size_t n_blocks = 3;
      // n_blocks token blocks, each [G tokens, dim], quantized along tokens.
      const std::vector<float> values =
          make_groups(Content::kGaussian, spec.group, n_blocks * dim, 13);
      std::vector<uint8_t> blocks(n_blocks * dim * spec.record_bytes());
      for (size_t b = 0; b < n_blocks; ++b) {
        simd::quantize_token_block(spec, &values[b * dim * spec.group], dim,
                                   &blocks[b * dim * spec.record_bytes()]);
      }
      std::vector<float> p(n_blocks * spec.group);
      for (float& v : p) v = weight(rng);
      std::vector<float> out_scalar(dim, 1.0f), out_simd(dim, 1.0f);
      scalar::accumulate_token_blocks(spec, p.data(), blocks.data(), dim, n_blocks,
                                      out_scalar.data());
      simd::accumulate_token_blocks(spec, p.data(), blocks.data(), dim, n_blocks, out_simd.data());
      for (size_t c = 0; c < dim; ++c) {
        DoubleDot reference{1.0, 1.0};  // out starts at 1.0
        for (size_t b = 0; b < n_blocks; ++b) {
          const DoubleDot part =
              double_dot(spec, &p[b * spec.group], &blocks[(b * dim + c) * spec.record_bytes()]);
          reference.value += part.value;
          reference.magnitude += part.magnitude;
        }
        const double tolerance = (spec.group + n_blocks + 4) * FLT_EPSILON * reference.magnitude;
        EXPECT_NEAR(out_scalar[c], reference.value, tolerance) << "channel " << c;
        EXPECT_NEAR(out_simd[c], reference.value, tolerance) << "channel " << c;
      }
    }
  }
}

// Records with random codes, power-of-two scales and integer zeros: with
// integer-valued q and p every product and sum is exact, so both kernels must
// equal the (exact) double reference.
std::vector<uint8_t> exact_records(const GroupSpec& spec, size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> code(0, max_code(spec.bits)), exponent(-1, 2), zero(-16, 16),
      coin(0, 1);
  std::vector<uint8_t> records(n * spec.record_bytes());
  for (size_t g = 0; g < n; ++g) {
    uint8_t* record = &records[g * spec.record_bytes()];
    for (int i = 0; i < spec.group; ++i) write_code(record, spec.bits, i, code(rng));
    const bool sym =
        spec.mode == QuantMode::kSymmetric || (spec.mode == QuantMode::kHybrid && coin(rng) == 1);
    const f16_bits scale = f32_to_f16(std::ldexp(1.0f, exponent(rng)));
    uint8_t* meta = record + group_code_bytes(spec.bits, spec.group);
    store_f16(meta, static_cast<f16_bits>(sym ? scale | kSymFlag : scale));
    if (mode_has_zero(spec.mode)) store_f16(meta + 2, f32_to_f16(static_cast<float>(zero(rng))));
  }
  return records;
}

TEST(QuantKernels, FusedProductsExactOnIntegerInputs) {
  for_each_simd_target([&] {
    std::mt19937 rng(29);
    std::uniform_int_distribution<int> small_int(-4, 4), weight(0, 4);
    for (const GroupSpec& spec : all_specs()) {
      SCOPED_TRACE(describe(spec));
      const size_t n_groups = 4, n_rows = 3, dim = 9, n_blocks = 2;
      std::vector<float> q(n_groups * spec.group);
      for (float& v : q) v = static_cast<float>(small_int(rng));
      const std::vector<uint8_t> rows = exact_records(spec, n_rows * n_groups, rng);
      std::vector<float> sums(n_groups), scores_scalar(n_rows), scores_simd(n_rows);
      simd::group_sums(spec.group, q.data(), n_groups, sums.data());
      scalar::dot_rows(spec, q.data(), sums.data(), rows.data(), n_groups, n_rows,
                       scores_scalar.data());
      simd::dot_rows(spec, q.data(), sums.data(), rows.data(), n_groups, n_rows,
                     scores_simd.data());
      for (size_t r = 0; r < n_rows; ++r) {
        double reference = 0.0;
        for (size_t g = 0; g < n_groups; ++g) {
          reference +=
              double_dot(spec, &q[g * spec.group], &rows[(r * n_groups + g) * spec.record_bytes()])
                  .value;
        }
        EXPECT_EQ(scores_scalar[r], reference) << "row " << r;
        EXPECT_EQ(scores_simd[r], reference) << "row " << r;
      }

      std::vector<float> p(n_blocks * spec.group);
      for (float& v : p) v = static_cast<float>(weight(rng));
      const std::vector<uint8_t> blocks = exact_records(spec, n_blocks * dim, rng);
      std::vector<float> out_scalar(dim, 3.0f), out_simd(dim, 3.0f);
      scalar::accumulate_token_blocks(spec, p.data(), blocks.data(), dim, n_blocks,
                                      out_scalar.data());
      simd::accumulate_token_blocks(spec, p.data(), blocks.data(), dim, n_blocks, out_simd.data());
      for (size_t c = 0; c < dim; ++c) {
        double reference = 3.0;
        for (size_t b = 0; b < n_blocks; ++b) {
          reference +=
              double_dot(spec, &p[b * spec.group], &blocks[(b * dim + c) * spec.record_bytes()])
                  .value;
        }
        EXPECT_EQ(out_scalar[c], reference) << "channel " << c;
        EXPECT_EQ(out_simd[c], reference) << "channel " << c;
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Degenerate and invalid groups.
// ---------------------------------------------------------------------------
TEST(QuantKernels, AllZeroGroupIsExact) {
  for (const GroupSpec& spec : all_specs()) {
    SCOPED_TRACE(describe(spec));
    const std::vector<float> x(spec.group * 2, 0.0f);
    for (const std::vector<uint8_t>& records : {quantize_scalar(spec, x), quantize_simd(spec, x)}) {
      for (float v : dequantize_scalar(spec, records)) ASSERT_EQ(v, 0.0f);
    }
  }
}

// A constant group v: asymmetric and hybrid come at least as close as fp16(v)
// (the zero rounds down to fp16, the levels above it close the gap);
// symmetric stays within its clamp bound of one scale. Both paths agree.
TEST(QuantKernels, ConstantGroupWithinFp16Rounding) {
  for (const GroupSpec& spec : all_specs()) {
    for (float v : {0.0f, 1.0f, -1.0f, 0.1f, -3.7f, 1000.3f, 65504.0f, -65504.0f, 1e-30f, 1e-40f}) {
      SCOPED_TRACE(describe(spec) + " v=" + std::to_string(v));
      const std::vector<float> x(spec.group, v);
      const std::vector<uint8_t> records = quantize_simd(spec, x);
      ASSERT_EQ(first_differing_record(spec, records, quantize_scalar(spec, x)), -1);
      const GroupMeta meta = record_meta(spec, records.data());
      const double fp16_error = std::fabs(double{v} - f16_to_f32(f32_to_f16(v)));
      for (float x_hat : dequantize_scalar(spec, records)) {
        ASSERT_TRUE(std::isfinite(x_hat));
        const double err = std::fabs(double{x_hat} - v);
        if (spec.mode == QuantMode::kSymmetric) {
          ASSERT_LE(err, meta.scale + metadata_rounding_slack(spec.bits, meta.scale));
        } else {
          ASSERT_LE(err, fp16_error + metadata_rounding_slack(spec.bits, meta.scale) +
                             FLT_EPSILON * std::fabs(v));
        }
      }
    }
  }
}

// f32 denormals are far below fp16 resolution: every x̂ is within one fp16
// subnormal step (2^−24) and finite.
TEST(QuantKernels, DenormalGroupIsWithinFp16Resolution) {
  for (const GroupSpec& spec : all_specs()) {
    SCOPED_TRACE(describe(spec));
    std::vector<float> x(spec.group);
    for (int i = 0; i < spec.group; ++i) x[i] = (i % 2 ? -1.0f : 1.0f) * 1e-39f * i;
    for (const std::vector<uint8_t>& records : {quantize_scalar(spec, x), quantize_simd(spec, x)}) {
      const std::vector<float> x_hat = dequantize_scalar(spec, records);
      for (int i = 0; i < spec.group; ++i) ASSERT_LE(std::fabs(x_hat[i] - x[i]), 0x1p-24) << i;
    }
  }
}

// ---------------------------------------------------------------------------
// Codebook levels (group_format.h, "Levels"): symmetric groups whose codes
// index T_b, with the scale searched (quant_kernels.h).
// ---------------------------------------------------------------------------

// The tables are increasing, symmetric about 64 and within [1, 127] (so
// AVX2's maddubs stays exact). Each code is the nearest level of x/s under
// the stored scale, that scale has the lowest error of the 11 candidates,
// dequantize is s·(T[u] − 64), and simd:: writes the same bytes.
TEST(QuantKernels, CodebookLevelsAreNearestUnderTheBestScale) {
  for (int bits : {2, 3, 4}) {
    const uint8_t* T = normal_level_table(bits);
    const int n_levels = 1 << bits;
    for (int u = 0; u < n_levels; ++u) {
      EXPECT_GE(T[u], 1);
      EXPECT_LE(T[u], 127);
      if (u > 0) {
        EXPECT_GT(T[u], T[u - 1]);
      }
      EXPECT_EQ(T[u] - kNormalLevelOffset, kNormalLevelOffset - T[n_levels - 1 - u]);
    }
    for (int group : kSupportedGroups) {
      for (Content content : kContents) {
        const GroupSpec spec{bits, group, QuantMode::kSymmetric, Levels::kNormal};
        SCOPED_TRACE(describe(spec) + " levels=normal content=" + testing::content_name(content));
        const size_t n_groups = 16;
        const std::vector<float> x = make_groups(content, group, n_groups, 9);
        const std::vector<uint8_t> records = quantize_scalar(spec, x);
        ASSERT_EQ(first_differing_record(spec, records, quantize_simd(spec, x)), -1);
        const std::vector<float> x_hat = dequantize_scalar(spec, records);
        for (size_t g = 0; g < n_groups; ++g) {
          const uint8_t* record = records.data() + g * spec.record_bytes();
          const GroupMeta meta = record_meta(spec, record);
          ASSERT_TRUE(meta.symmetric);
          ASSERT_EQ(meta.zero, -64.0f * meta.scale);
          const float* xg = x.data() + g * group;
          const float* hg = x_hat.data() + g * group;
          double absmax = 0.0;
          for (int i = 0; i < group; ++i) absmax = std::max(absmax, std::fabs(double{xg[i]}));
          // The error of every candidate scale, in double.
          const auto error_at = [&](double s) {
            double e = 0.0;
            for (int i = 0; i < group; ++i) {
              double best = 1e300;
              for (int u = 0; u < n_levels; ++u) {
                const double d = xg[i] - s * (T[u] - kNormalLevelOffset);
                best = std::min(best, d * d);
              }
              e += best;
            }
            return e;
          };
          const double chosen = l2_error(xg, hg, group);
          for (int k = 0; k < 11; ++k) {
            const double s = f16_to_f32(f32_to_f16(static_cast<float>(absmax) *
                                                   (1.0f - 0.05f * static_cast<float>(k)) / 63.0f));
            ASSERT_LE(chosen, error_at(s) * (1 + 1e-4) + 1e-12)
                << "group " << g << " rho step " << k;
          }
          const double s = meta.scale;
          for (int i = 0; i < group; ++i) {
            const int u = read_code(record, bits, i);
            const double at = s * (T[u] - kNormalLevelOffset);
            ASSERT_NEAR(hg[i], at, 4 * FLT_EPSILON * 128 * s + 1e-30) << "element " << i;
            for (int j = 0; j < n_levels; ++j) {  // nearest (up to float rounding)
              ASSERT_LE(std::fabs(xg[i] - at),
                        std::fabs(xg[i] - s * (T[j] - kNormalLevelOffset)) + 1e-4 * s)
                  << "element " << i << " level " << j;
            }
          }
        }
      }
    }
  }
}

// What the format is for: on gaussian groups (rotated keys) the codebook's
// squared error is well below the uniform symmetric rule's at the same bytes
// (about 0.66–0.73 of it in a simulation; the bounds leave margin), and the
// fused dot product reads the same levels as dequantize.
TEST(QuantKernels, CodebookLevelsBeatUniformOnGaussianGroups) {
  for (int bits : {2, 3, 4}) {
    const GroupSpec uniform{bits, 64, QuantMode::kSymmetric};
    const GroupSpec normal{bits, 64, QuantMode::kSymmetric, Levels::kNormal};
    const size_t n_groups = 400;
    const std::vector<float> x = make_groups(Content::kGaussian, 64, n_groups, 21);
    const std::vector<float> u_hat = dequantize_scalar(uniform, quantize_scalar(uniform, x));
    const std::vector<uint8_t> records = quantize_scalar(normal, x);
    const std::vector<float> n_hat = dequantize_scalar(normal, records);
    const int n = static_cast<int>(x.size());
    const double ratio = l2_error(x.data(), n_hat.data(), n) / l2_error(x.data(), u_hat.data(), n);
    EXPECT_LT(ratio, 0.85) << bits << " bits";
    std::vector<float> q(64), sums(1), scores(n_groups);
    std::mt19937 rng(5);
    std::normal_distribution<float> normal_q(0.0f, 1.0f);
    for (float& v : q) v = normal_q(rng);
    scalar::group_sums(64, q.data(), 1, sums.data());
    simd::dot_rows(normal, q.data(), sums.data(), records.data(), 1, n_groups, scores.data());
    for (size_t r = 0; r < n_groups; ++r) {
      double want = 0.0, mag = 0.0;
      for (int i = 0; i < 64; ++i) {
        want += double{q[i]} * n_hat[r * 64 + i];
        mag += std::fabs(double{q[i]} * n_hat[r * 64 + i]);
      }
      ASSERT_NEAR(scores[r], want, 256 * FLT_EPSILON * (mag + 1e-30)) << "row " << r;
    }
  }
  const GroupSpec hybrid{3, 32, QuantMode::kHybrid, Levels::kNormal};
  const std::vector<float> x(32, 1.0f);
  std::vector<uint8_t> record(hybrid.record_bytes());
  EXPECT_THROW(scalar::quantize_row(hybrid, x.data(), 1, record.data()), Error);
}

TEST(QuantKernels, InvalidValuesThrowNamingTheGroup) {
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(), 65505.0f, -7e4f};
  for (const GroupSpec& spec : all_specs()) {
    for (float bad : bad_values) {
      SCOPED_TRACE(describe(spec) + " bad=" + std::to_string(bad));
      std::vector<float> x = make_groups(Content::kGaussian, spec.group, 5, 1);
      x[3 * spec.group + 7] = bad;
      std::vector<uint8_t> records(5 * spec.record_bytes());
      for (auto quantize : {&scalar::quantize_row, &simd::quantize_row}) {
        try {
          quantize(spec, x.data(), 5, records.data());
          ADD_FAILURE() << "no error";
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("group 3 "), std::string::npos) << e.what();
        }
      }
      // Read as a token block [G tokens, 5 channels], the value sits in channel (3·G + 7) mod 5.
      const size_t channel = (3 * spec.group + 7) % 5;
      for (auto quantize : {&scalar::quantize_token_block, &simd::quantize_token_block}) {
        try {
          quantize(spec, x.data(), 5, records.data());
          ADD_FAILURE() << "no error";
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("group " + std::to_string(channel) + " "),
                    std::string::npos)
              << e.what();
        }
      }
    }
  }
}

}  // namespace
}  // namespace innerq::kernels
