// Weight kernels: the Highway matmul (decode matvec and prefill tiles) against
// the scalar reference, for every supported format and awkward shapes.
#include "innerq/model/weights.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <hwy/targets.h>

#include "../kernels/weight_block_samples.h"
#include "innerq/base/error.h"
#include "innerq/base/fp16.h"
#include "innerq/kernels/weight_blocks.h"
#include "innerq/kernels/weight_int16.h"

namespace innerq::model {
namespace {

// Random rows in `type`'s byte layout.
std::vector<uint8_t> random_matrix(GgmlType type, int64_t rows, int64_t cols, size_t* row_bytes,
                                   std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  if (type != GgmlType::kF32 && type != GgmlType::kF16) {
    const kernels::WeightFormat f = *block_format(type);
    const kernels::WeightFormatInfo info = kernels::weight_format_info(f);
    *row_bytes = static_cast<size_t>(cols / info.block_values) * info.block_bytes;
    return kernels::testing::random_rows(f, rows, cols, *row_bytes, rng);
  }
  const size_t value_bytes = type == GgmlType::kF32 ? 4 : 2;
  *row_bytes = static_cast<size_t>(cols) * value_bytes;
  std::vector<uint8_t> data(*row_bytes * static_cast<size_t>(rows));
  for (size_t i = 0; i < data.size() / value_bytes; ++i) {
    const float v = normal(rng);
    if (type == GgmlType::kF32) {
      std::memcpy(data.data() + 4 * i, &v, 4);
    } else {
      const f16_bits h = f32_to_f16(v);
      std::memcpy(data.data() + 2 * i, &h, 2);
    }
  }
  return data;
}

struct Case {
  GgmlType type;
  int64_t rows, cols;
  int n_tokens;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << ggml_type_name(c.type) << " " << c.rows << "x" << c.cols << " tokens=" << c.n_tokens;
}

class MatmulVsReference : public ::testing::TestWithParam<Case> {};

// A random matrix of c's shape and type and c.n_tokens random input rows.
struct Problem {
  std::vector<uint8_t> data;
  WeightMatrix w;
  std::vector<float> x;

  Problem(const Case& c, uint64_t seed) {
    std::mt19937_64 rng(seed);
    w.name = "test";
    w.type = c.type;
    w.rows = c.rows;
    w.cols = c.cols;
    data = random_matrix(c.type, c.rows, c.cols, &w.row_bytes, rng);
    w.data = data.data();
    std::normal_distribution<float> normal(0.0f, 1.0f);
    x.resize(static_cast<size_t>(c.n_tokens * c.cols));
    for (float& v : x) v = normal(rng);
  }
};

TEST_P(MatmulVsReference, MatchesWithinRoundingBound) {
  const Case c = GetParam();
  const Problem p(c, static_cast<uint64_t>(c.rows * 131 + c.cols * 7 + c.n_tokens));
  const WeightMatrix& w = p.w;
  const std::vector<float>& x = p.x;
  std::vector<float> ref(static_cast<size_t>(c.n_tokens * c.rows));
  matmul_reference(w, x.data(), c.n_tokens, ref.data());

  // f32 accumulation in any order: |error| ≤ cols·ε·Σ|w·x| (γ_n bound; the
  // block-wise scale and offset add two more roundings per block).
  std::vector<double> tol(ref.size());
  std::vector<float> row(static_cast<size_t>(c.cols));
  const double eps = std::ldexp(1.0, -24);
  for (int64_t r = 0; r < c.rows; ++r) {
    dequantize_row(w, r, row.data());
    for (int t = 0; t < c.n_tokens; ++t) {
      double abs_sum = 0.0;
      for (int64_t i = 0; i < c.cols; ++i) abs_sum += std::fabs(row[i] * x[t * c.cols + i]);
      tol[static_cast<size_t>(t * c.rows + r)] = static_cast<double>(c.cols + 2) * eps * abs_sum;
    }
  }

  // Every SIMD target compiled in and supported here (AVX-512, AVX2, SSE4,
  // emulated 128-bit, ...), not only the one dispatch would pick.
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    std::vector<float> y(ref.size());
    matmul(w, x.data(), c.n_tokens, y.data(), 2);
    for (size_t at = 0; at < y.size(); ++at) {
      ASSERT_NEAR(y[at], ref[at], tol[at])
          << hwy::TargetName(target) << " " << ggml_type_name(c.type) << " rows=" << c.rows
          << " cols=" << c.cols << " tokens=" << c.n_tokens << " at row "
          << static_cast<int64_t>(at) % c.rows << " token " << static_cast<int64_t>(at) / c.rows;
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

// Int16 activations (Activations::kInt16): on every target, every row of a
// product of up to kInt16MaxTokens tokens has the bits of the one-token
// product of that token (wider ones are kF32's, bit for bit),
// and equals the scalar int16 reference within its summation bound
// (kernels/weight_int16.h). (F32, F16 and BF16 have no int16 kernel: kInt16
// multiplies them in f32, as MatchesWithinRoundingBound tests.) The cases
// are all_cases()' block formats.
class Int16Matmul : public ::testing::TestWithParam<Case> {};

TEST_P(Int16Matmul, TokensEqualOneTokenCallsAndTheScalarReference) {
  const Case c = GetParam();
  const Problem p(c, static_cast<uint64_t>(c.rows * 37 + c.cols * 3 + c.n_tokens));
  const WeightMatrix& w = p.w;
  const std::vector<float>& x = p.x;

  const kernels::WeightFormat f = *block_format(c.type);
  std::vector<float> ref(static_cast<size_t>(c.n_tokens * c.rows));
  std::vector<double> ref_abs(ref.size());
  const size_t chunks = static_cast<size_t>(c.cols / kernels::kActChunk);
  std::vector<kernels::ActChunk> act(c.n_tokens * chunks);
  kernels::scalar::quantize_activations(x.data(), c.n_tokens * c.cols, act.data());
  kernels::scalar::dot_rows_int16(f, w.data, w.row_bytes, w.rows, act.data(), chunks, c.n_tokens,
                                  c.cols, ref.data(), static_cast<size_t>(w.rows), ref_abs.data());
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const double lanes = static_cast<double>(kernels::simd::int16_dot_lanes());
    const double roundings = static_cast<double>(chunks) + std::log2(lanes) + 3;
    MatmulScratch s;
    std::vector<float> y(ref.size()), one(static_cast<size_t>(c.rows));
    matmul(w, x.data(), c.n_tokens, y.data(), 2, s, Activations::kInt16);
    if (c.n_tokens > kInt16MaxTokens) {  // wide: kF32's tiles, the same bits
      std::vector<float> f32(ref.size());
      matmul(w, x.data(), c.n_tokens, f32.data(), 2, s, Activations::kF32);
      ASSERT_EQ(y, f32) << hwy::TargetName(target);
      continue;
    }
    for (int t = 0; t < c.n_tokens; ++t) {
      MatmulScratch s1;
      matmul(w, x.data() + t * c.cols, 1, one.data(), 2, s1, Activations::kInt16);
      for (int64_t r = 0; r < c.rows; ++r) {
        const size_t at = static_cast<size_t>(t * c.rows + r);
        ASSERT_EQ(std::bit_cast<uint32_t>(one[r]), std::bit_cast<uint32_t>(y[at]))
            << hwy::TargetName(target) << " row " << r << " token " << t;
        const double tol =
            roundings * 0x1p-24 * ref_abs[at] * (1 + 1e-6) + 0x1p-24 * std::fabs(ref[at]);
        ASSERT_NEAR(y[at], ref[at], tol)
            << hwy::TargetName(target) << " row " << r << " token " << t;
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

// matmul_group gives each matrix the bits matmul gives it, whether the
// group takes one int16 region (Q4_1, Q5_0 and Q8_0 of one input) or falls
// back to one matmul per matrix (an F32 matrix among them, or more tokens
// than the int16 path takes).
TEST(Matmul, GroupEqualsOneMatmulPerMatrix) {
  std::mt19937_64 rng(5);
  const GgmlType types[] = {GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ8_0, GgmlType::kF32};
  const int64_t rows[] = {40, 17, 96, 8};
  std::vector<std::vector<uint8_t>> data;
  WeightMatrix ws[4];
  for (int i = 0; i < 4; ++i) {
    ws[i].name = "test";
    ws[i].type = types[i];
    ws[i].rows = rows[i];
    ws[i].cols = 96;
    data.push_back(random_matrix(types[i], rows[i], 96, &ws[i].row_bytes, rng));
    ws[i].data = data.back().data();
  }
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(7 * 96);
  for (float& v : x) v = normal(rng);
  for (const int n_tokens : {1, 3, 7}) {
    for (const int n : {3, 4}) {  // without and with the F32 matrix
      for (const Activations a : {Activations::kInt16, Activations::kF32}) {
        std::vector<std::vector<float>> each(4), group(4);
        const WeightMatrix* group_ws[4];
        float* group_ys[4];
        MatmulScratch s;
        for (int i = 0; i < n; ++i) {
          each[i].resize(static_cast<size_t>(n_tokens * rows[i]));
          group[i].resize(each[i].size(), -1.0f);
          matmul(ws[i], x.data(), n_tokens, each[i].data(), 2, s, a);
          group_ws[i] = &ws[i];
          group_ys[i] = group[i].data();
        }
        matmul_group(std::span(group_ws, n), x.data(), n_tokens, std::span(group_ys, n), 2, s, a);
        for (int i = 0; i < n; ++i) {
          EXPECT_EQ(group[i], each[i]) << "matrix " << i << " tokens " << n_tokens << " of " << n
                                       << (a == Activations::kInt16 ? " int16" : " f32");
        }
      }
    }
  }
}

// Every type: decode (one token) and prefill (5 and 70 tokens: a partial
// register tile and more than one 64-token block), row counts that leave
// partial tiles and partial 16-row kernel calls.
std::vector<Case> all_cases() {
  std::vector<Case> cases = {
      {GgmlType::kF32, 13, 172, 1}, {GgmlType::kF32, 13, 172, 5},  {GgmlType::kF32, 64, 8, 3},
      {GgmlType::kF16, 37, 96, 1},  {GgmlType::kF16, 37, 100, 70}, {GgmlType::kQ8_0, 7, 64, 131},
      {GgmlType::kQ4_1, 6, 64, 67}, {GgmlType::kBF16, 37, 100, 1}, {GgmlType::kBF16, 21, 100, 5},
      {GgmlType::kBF16, 6, 36, 70},
  };
  for (const GgmlType type :
       {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0}) {
    cases.push_back({type, 45, 576, 1});
    cases.push_back({type, 21, 96, 5});
    cases.push_back({type, 6, 160, 70});
  }
  for (const GgmlType type :
       {GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    cases.push_back({type, 37, 768, 1});
    cases.push_back({type, 21, 512, 5});
    cases.push_back({type, 6, 256, 70});
  }
  return cases;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  std::ostringstream name;
  name << ggml_type_name(c.type) << "_" << c.rows << "x" << c.cols << "_t" << c.n_tokens;
  return name.str();
}

INSTANTIATE_TEST_SUITE_P(Formats, MatmulVsReference, ::testing::ValuesIn(all_cases()), case_name);

std::vector<Case> block_cases() {
  std::vector<Case> cases;
  for (const Case& c : all_cases()) {
    const std::optional<kernels::WeightFormat> f = block_format(c.type);
    if (f && kernels::int16_dot_supported(*f)) cases.push_back(c);
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Formats, Int16Matmul, ::testing::ValuesIn(block_cases()), case_name);

TEST(DequantizeRow, Q4_1NibbleOrder) {
  kernels::BlockQ4_1 b{};
  b.d = f32_to_f16(2.0f);
  b.m = f32_to_f16(-1.0f);
  for (int i = 0; i < 16; ++i) b.qs[i] = static_cast<uint8_t>(i | ((15 - i) << 4));
  WeightMatrix w;
  w.type = GgmlType::kQ4_1;
  w.rows = 1;
  w.cols = 32;
  w.row_bytes = sizeof(b);
  w.data = reinterpret_cast<const uint8_t*>(&b);
  float out[32];
  dequantize_row(w, 0, out);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(out[i], 2.0f * i - 1.0f);
    EXPECT_EQ(out[16 + i], 2.0f * (15 - i) - 1.0f);
  }
}

// The message of the innerq::Error that weight_matrix(t) throws ("" if none).
std::string weight_matrix_error(const GgufTensor& t) {
  try {
    weight_matrix(t);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

GgufTensor tensor_of(GgmlType type, int64_t cols, int64_t rows, size_t n_bytes) {
  GgufTensor t;
  t.name = "blk.3.ffn_down.weight";
  t.type = type;
  t.ne = {cols, rows};
  t.n_elements = cols * rows;
  t.n_bytes = n_bytes;
  return t;
}

TEST(WeightMatrix, AcceptsEveryGgufWeightFormat) {
  for (const GgmlType type :
       {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0, GgmlType::kQ4_1,
        GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0, GgmlType::kQ2_K, GgmlType::kQ3_K,
        GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    EXPECT_TRUE(weight_type_supported(type)) << ggml_type_name(type);
  }
  const WeightMatrix w = weight_matrix(tensor_of(GgmlType::kQ6_K, 512, 3, 3 * 2 * 210));
  EXPECT_EQ(w.row_bytes, 2u * 210u);
  EXPECT_EQ(w.rows, 3);
  EXPECT_EQ(w.cols, 512);
}

TEST(WeightMatrix, RefusesTypesWithoutKernels) {
  for (const GgmlType type : {GgmlType::kQ8_1, GgmlType::kQ8_K, GgmlType::kI8, GgmlType::kF64}) {
    EXPECT_FALSE(weight_type_supported(type)) << ggml_type_name(type);
    const std::string what = weight_matrix_error(tensor_of(type, 256, 2, 4096));
    EXPECT_NE(what.find("blk.3.ffn_down.weight"), std::string::npos) << what;
    EXPECT_NE(what.find(ggml_type_name(type)), std::string::npos) << what;
  }
}

TEST(WeightMatrix, RefusesRowsThatAreNotWholeBlocks) {
  // 288 = 9 blocks of 32 but not whole 256-value super-blocks.
  const std::string what = weight_matrix_error(tensor_of(GgmlType::kQ4_K, 288, 2, 288));
  EXPECT_NE(what.find("blk.3.ffn_down.weight"), std::string::npos) << what;
  EXPECT_NE(what.find("Q4_K"), std::string::npos) << what;
  EXPECT_NE(what.find("256"), std::string::npos) << what;
  const std::string what32 = weight_matrix_error(tensor_of(GgmlType::kQ5_0, 48, 2, 44));
  EXPECT_NE(what32.find("Q5_0"), std::string::npos) << what32;
  EXPECT_NE(what32.find("32"), std::string::npos) << what32;
}

TEST(WeightMatrix, RefusesAByteSizeThatDoesNotMatchTheShape) {
  const std::string what = weight_matrix_error(tensor_of(GgmlType::kQ2_K, 256, 4, 3 * 84));
  EXPECT_NE(what.find("blk.3.ffn_down.weight"), std::string::npos) << what;
  EXPECT_NE(what.find("252 bytes"), std::string::npos) << what;
}

}  // namespace
}  // namespace innerq::model

namespace innerq::model {
namespace {

// Packed weights (PackedWeights, kernels/weight_packed.h): a matrix of a
// 32-value format in whole 16-row groups is packed in place and loses its
// rows, any other (a partial group, a K-quant) goes to the object's buffer; either way its products
// are within the packed kernel's summation bound of the scalar int16 reference for decode and
// prefill widths, a token's result does not depend on the tokens read with it, its rows dequantize
// to the same bits, matrices that share data share the packing, a group that mixes packed and
// unpacked matrices gives each its own result, and INNERQ_PACK=0 packs nothing.
TEST(PackedWeights, ProductsRowsAndSharingFollowTheUnpackedMatrix) {
  if (!packing_enabled()) GTEST_SKIP() << "no AVX-512 VNNI here (or INNERQ_PACK=0): nothing packs";
  std::mt19937_64 rng(41);
  const GgmlType types[] = {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1,
                            GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};
  for (const GgmlType type : types) {
    const kernels::WeightFormat f = *block_format(type);
    const bool k_quant = kernels::weight_format_info(f).block_values == kernels::kSuperBlock;
    for (const int64_t rows : {48, 37}) {
      const int64_t cols = k_quant ? 512 : 160;
      WeightMatrix w;
      w.name = "test";
      w.type = type;
      w.rows = rows;
      w.cols = cols;
      const std::vector<uint8_t> original = random_matrix(type, rows, cols, &w.row_bytes, rng);
      std::vector<uint8_t> data = original;
      w.data = data.data();
      WeightMatrix tied = w;
      const size_t chunks = static_cast<size_t>(cols / kernels::kActChunk);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      const int n_tokens = 70;
      std::vector<float> x(static_cast<size_t>(n_tokens * cols));
      for (float& v : x) v = normal(rng);
      std::vector<kernels::ActChunk> act(n_tokens * chunks);
      kernels::scalar::quantize_activations(x.data(), n_tokens * cols, act.data());
      std::vector<float> ref(static_cast<size_t>(n_tokens * rows));
      std::vector<double> ref_abs(ref.size());
      kernels::scalar::dot_rows_int16(f, original.data(), w.row_bytes, rows, act.data(), chunks,
                                      n_tokens, cols, ref.data(), static_cast<size_t>(rows),
                                      ref_abs.data());

      PackedWeights packed;
      WeightMatrix* ws[] = {&w, &tied};
      packed.pack(ws, /*in_place=*/true, 2);
      const std::string what = std::string(ggml_type_name(type)) + " rows " + std::to_string(rows);
      ASSERT_NE(w.packed, nullptr) << what;
      EXPECT_EQ(tied.packed, w.packed) << what << ": tied matrices share one packing";
      if (rows % kernels::kPackRows == 0 && !k_quant) {  // a K-quant group outgrows its rows
        EXPECT_EQ(w.data, nullptr) << what;
        EXPECT_EQ(w.packed, data.data()) << what << ": packed in place";
        EXPECT_EQ(packed.bytes_in_place(), original.size()) << what;
        EXPECT_EQ(packed.bytes(), 0u) << what;
      } else {
        EXPECT_EQ(w.data, data.data()) << what;
        EXPECT_EQ(data, original) << what << ": rows packed beside are left alone";
        EXPECT_GE(packed.bytes(), original.size()) << what;
      }
      EXPECT_THROW(packed.pack(ws, true, 2), Error);

      for (const int nt : {1, 3, n_tokens}) {
        MatmulScratch s;
        std::vector<float> y(static_cast<size_t>(nt * rows));
        matmul(w, x.data(), nt, y.data(), 2, s, Activations::kInt16);
        for (int t = 0; t < nt; ++t) {
          std::vector<float> one(static_cast<size_t>(rows));
          matmul(w, x.data() + t * cols, 1, one.data(), 2, s, Activations::kInt16);
          for (int64_t r = 0; r < rows; ++r) {
            const size_t at = static_cast<size_t>(t * rows + r);
            ASSERT_EQ(std::bit_cast<uint32_t>(one[r]), std::bit_cast<uint32_t>(y[at]))
                << what << " row " << r << " token " << t << " of " << nt;
            const double tol =
                (2.0 * static_cast<double>(chunks) + 2) * 0x1p-24 * ref_abs[at] * (1 + 1e-6) +
                0x1p-24 * std::fabs(ref[at]);
            ASSERT_NEAR(y[at], ref[at], tol) << what << " row " << r << " token " << t;
          }
        }
        if (w.data == nullptr) {  // kF32 has no rows to read: the packed product runs
          std::vector<float> f32(y.size());
          matmul(w, x.data(), nt, f32.data(), 2, s, Activations::kF32);
          EXPECT_EQ(f32, y) << what;
        }
      }
      std::vector<float> got(static_cast<size_t>(cols)), want(got.size());
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(w, r, got.data());
        kernels::scalar::dequantize_rows(f, original.data() + r * w.row_bytes, w.row_bytes, 1, cols,
                                         want.data(), want.size());
        for (int64_t i = 0; i < cols; ++i) {
          ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
              << what << " row " << r << " value " << i;
        }
      }
    }
  }
}

TEST(PackedWeights, GroupOfPackedAndUnpackedMatricesEqualsEachAlone) {
  if (!packing_enabled()) GTEST_SKIP() << "no AVX-512 VNNI here (or INNERQ_PACK=0): nothing packs";
  std::mt19937_64 rng(43);
  const GgmlType types[] = {GgmlType::kQ4_1, GgmlType::kQ2_K, GgmlType::kQ8_0};
  std::vector<uint8_t> data[3];
  WeightMatrix ws[3];
  for (int i = 0; i < 3; ++i) {
    ws[i].name = "test";
    ws[i].type = types[i];
    ws[i].rows = 32;
    ws[i].cols = 256;
    data[i] = random_matrix(types[i], 32, 256, &ws[i].row_bytes, rng);
    ws[i].data = data[i].data();
  }
  PackedWeights packed;
  WeightMatrix* to_pack[] = {&ws[0], &ws[1], &ws[2]};
  packed.pack(to_pack, true, 2);
  EXPECT_NE(ws[0].packed, nullptr);
  EXPECT_EQ(ws[1].packed, nullptr) << "Q2_K is not a packed format";
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(5 * 256);
  for (float& v : x) v = normal(rng);
  for (const int n_tokens : {1, 5}) {
    MatmulScratch s;
    std::vector<float> each[3], group[3];
    const WeightMatrix* gws[3];
    float* gys[3];
    for (int i = 0; i < 3; ++i) {
      each[i].resize(static_cast<size_t>(n_tokens * 32));
      group[i].resize(each[i].size(), -1.0f);
      matmul(ws[i], x.data(), n_tokens, each[i].data(), 2, s, Activations::kInt16);
      gws[i] = &ws[i];
      gys[i] = group[i].data();
    }
    matmul_group(gws, x.data(), n_tokens, gys, 2, s, Activations::kInt16);
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(group[i], each[i]) << "matrix " << i << " tokens " << n_tokens;
  }
}

TEST(PackedWeights, Pack0PacksNothing) {
  std::mt19937_64 rng(47);
  WeightMatrix w;
  w.name = "test";
  w.type = GgmlType::kQ4_1;
  w.rows = 16;
  w.cols = 64;
  std::vector<uint8_t> data = random_matrix(w.type, 16, 64, &w.row_bytes, rng);
  const std::vector<uint8_t> original = data;
  w.data = data.data();
  ::setenv("INNERQ_PACK", "0", 1);
  EXPECT_FALSE(packing_enabled());
  PackedWeights packed;
  WeightMatrix* ws[] = {&w};
  packed.pack(ws, true, 2);
  ::unsetenv("INNERQ_PACK");
  EXPECT_EQ(w.packed, nullptr);
  EXPECT_EQ(w.data, data.data());
  EXPECT_EQ(data, original);
}

}  // namespace
}  // namespace innerq::model
