// innerq/model/weights.h — weight matrices stored in ggml formats and the
// products that read them in their stored form.
//
// Formats (ggml's byte layouts; value order and exact arithmetic of the block
// formats in kernels/weight_blocks.h, docs/architecture.md "Weight formats"):
//   type  values/block  bytes/block  bits/value  value
//   F32        1            4         32
//   F16        1            2         16
//   BF16       1            2         16         upper half of an f32
//   Q4_0      32           18          4.5       d·(q − 8),  q 4-bit
//   Q4_1      32           20          5.0       d·q + m,    q 4-bit
//   Q5_0      32           22          5.5       d·(q − 16), q 5-bit
//   Q5_1      32           24          6.0       d·q + m,    q 5-bit
//   Q8_0      32           34          8.5       d·q,        q int8
//   Q2_K     256           84          2.625     d·sc·q − dmin·m per 16; sc, m 4-bit, q 2-bit
//   Q3_K     256          110          3.4375    d·sc·q per 16; sc 6-bit signed, q ∈ [−4, 3]
//   Q4_K     256          144          4.5       d·sc·q − dmin·m per 32; sc, m 6-bit, q 4-bit
//   Q5_K     256          176          5.5       as Q4_K with q 5-bit
//   Q6_K     256          210          6.5625    d·sc·(q − 32) per 16; sc int8, q 6-bit
// (d, m, dmin fp16; a row's length must be a multiple of its block.)
//
// matmul() computes y = x·Wᵀ for a few tokens (decode: one token, fused
// dequantize-and-dot, kernels::simd::dot_rows for the block formats) or many
// (prefill: a few rows at a time are expanded into a small f32 tile that every
// token reuses). Whole matrices are never dequantized. Highway picks the SIMD
// target once per call (the block kernels once per 16 rows or per tile); rows
// are split over OpenMP threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "innerq/kernels/weight_blocks.h"
#include "innerq/model/gguf.h"

namespace innerq::model {

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

// The kernels' format of a block-quantized or BF16 type; nullopt for F32,
// F16 and the types matmul cannot read.
std::optional<kernels::WeightFormat> block_format(GgmlType type);

// Wraps a 2-D tensor; throws innerq::Error naming the tensor when its type is
// unsupported, it is not a matrix, its rows are not whole blocks of its type,
// or its byte size does not match its shape.
WeightMatrix weight_matrix(const GgufTensor& tensor);

// out: [cols] — row r in f32 (embedding lookups, tests); bit for bit the
// values of the scalar reference.
void dequantize_row(const WeightMatrix& w, int64_t r, float* out);

// x: [n_tokens, cols], y: [n_tokens, rows]; y[t][r] = Σ_c W[r][c]·x[t][c].
// Several tokens expand kMatmulTileRows weight rows at a time into a
// per-thread f32 tile, from `tiles` (grown to matmul_tile_floats(cols,
// n_threads) when smaller: the model's Workspace keeps it, so a forward pass
// allocates nothing once it has seen its widest matrix).
inline constexpr int kMatmulTileRows = 4;
size_t matmul_tile_floats(int64_t cols, int n_threads);
void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads,
            std::vector<float>& tiles);
// The same with tiles of its own, allocated per call (tests).
void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads);

// Scalar reference of matmul (double accumulation over the dequantized row).
void matmul_reference(const WeightMatrix& w, const float* x, int n_tokens, float* y);

}  // namespace innerq::model
