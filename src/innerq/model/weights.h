// innerq/model/weights.h — weight matrices stored in ggml formats and the
// products that read them in their stored form.
//
// Formats (one block = 32 consecutive values of a row; ggml's byte layout):
//   F32   4 B/value
//   F16   2 B/value
//   Q8_0  { f16 d; i8 q[32] }          x = d·q                        8.5 bits/value
//   Q4_1  { f16 d; f16 m; u8 q[16] }   x_j = d·(q[j] & 15) + m,
//                                      x_{j+16} = d·(q[j] >> 4) + m    5.0 bits/value
//
// matmul() computes y = x·Wᵀ for a few tokens (decode: one token, fused
// dequantize-and-dot per block, using Σx per block for Q4_1's offset) or many
// (prefill: a few rows at a time are expanded into a small f32 tile that every
// token reuses). Whole matrices are never dequantized. Highway picks the SIMD
// target once per call; rows are split over OpenMP threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "innerq/base/fp16.h"
#include "innerq/model/gguf.h"

namespace innerq::model {

inline constexpr int kQuantBlock = 32;

struct BlockQ8_0 {
  f16_bits d;
  int8_t q[kQuantBlock];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block: 2 + 32 bytes");

struct BlockQ4_1 {
  f16_bits d;
  f16_bits m;
  uint8_t q[kQuantBlock / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block: 2 + 2 + 16 bytes");

// A row-major matrix [rows, cols] (ggml: ne0 = cols, ne1 = rows) in the mapped file.
struct WeightMatrix {
  std::string name;
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;
  const uint8_t* data = nullptr;

  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
};

// Whether matmul() and dequantize_row() support `type`.
bool weight_type_supported(GgmlType type);

// Wraps a 2-D tensor; throws innerq::Error naming the tensor when its type is
// unsupported or it is not a matrix.
WeightMatrix weight_matrix(const GgufTensor& tensor);

// out: [cols] — row r in f32 (embedding lookups, tests).
void dequantize_row(const WeightMatrix& w, int64_t r, float* out);

// x: [n_tokens, cols], y: [n_tokens, rows]; y[t][r] = Σ_c W[r][c]·x[t][c].
void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads);

// Scalar reference of matmul (double accumulation over the dequantized row).
void matmul_reference(const WeightMatrix& w, const float* x, int n_tokens, float* y);

}  // namespace innerq::model
