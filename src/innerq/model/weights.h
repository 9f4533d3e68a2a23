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
// matmul() computes y = x·Wᵀ for one token (decode) or many (prefill), with
// int16 or f32 activations (Activations below). Whole matrices are never
// dequantized. Highway picks the SIMD
// target once per call (the block kernels once per 16 rows or per tile); rows
// are split over OpenMP threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "innerq/kernels/weight_blocks.h"
#include "innerq/kernels/weight_int16.h"
#include "innerq/kernels/weight_packed.h"
#include "innerq/model/gguf.h"

namespace innerq::model {

// A row-major matrix [rows, cols] (ggml: ne0 = cols, ne1 = rows) in the mapped file.
struct WeightMatrix {
  std::string name;
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;
  // The rows as the file stores them; null when PackedWeights packed them
  // in place (then only `packed` holds them).
  const uint8_t* data = nullptr;
  // The same rows packed 16 at a time (kernels/weight_packed.h), or null.
  // Set by PackedWeights; matmul with int16 activations reads it.
  const uint8_t* packed = nullptr;

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
// values of the scalar reference, whether the rows are packed or not.
void dequantize_row(const WeightMatrix& w, int64_t r, float* out);

// How matmul multiplies block-format weights (F32, F16 and BF16 weights are
// always multiplied in f32).
enum class Activations : uint8_t {
  // The activations are quantized to int16 per 32 values and each weight
  // block's integer codes are multiplied with them in integers
  // (kernels/weight_int16.h, docs/architecture.md "Quantized activations"):
  // llama.cpp's way with int8, but with 256 times finer activations, so the
  // products stay within about 2⁻¹⁶ of the f32 ones. Packed matrices
  // (PackedWeights) take this path for any number of rows, decode and
  // prefill; a token's result is then the same bits whether it is
  // multiplied alone or with others. Unpacked ones take it for up to
  // kInt16MaxTokens rows, where it is faster than kF32; more rows (prefill,
  // wide decode batches) use kF32's tiles, which reuse each expanded weight
  // row across many tokens and are faster there.
  kInt16,
  // The activations as they are: weights dequantized in registers, products
  // within f32 rounding of the exact ones (the reference path of the tests).
  // A matrix packed in place has no rows left to dequantize: it is always
  // multiplied as kInt16.
  kF32,
};

// matmul's buffers: f32 weight tiles per thread (kF32, several tokens) and
// the quantized activations (kInt16). A call that needs more grows them once;
// the model's Workspace keeps one, so a forward pass allocates nothing once
// it has seen its widest matrix.
struct MatmulScratch {
  std::vector<float> tiles;
  std::vector<kernels::ActChunk> act;
  std::vector<kernels::ActBytes> act_bytes;  // act split for packed weights

  size_t bytes() const {
    return tiles.capacity() * sizeof(float) + act.capacity() * sizeof(kernels::ActChunk) +
           act_bytes.capacity() * sizeof(kernels::ActBytes);
  }
};

// Grows s to what matmul(w, ·, n_tokens, ·, n_threads, s, a) (or a
// matmul_group holding w) uses, to exactly that size, so that the product
// allocates nothing: a workspace reserved for every matrix holds the largest.
void reserve_matmul(const WeightMatrix& w, int n_tokens, int n_threads, Activations a,
                    MatmulScratch& s);

// x: [n_tokens, cols], y: [n_tokens, rows]; y[t][r] = Σ_c W[r][c]·x[t][c].
// One token is a fused dequantize-and-dot per row; several tokens (kF32)
// expand kMatmulTileRows weight rows at a time into a per-thread f32 tile,
// or (kInt16) decode each weight block once for up to 4 tokens.
inline constexpr int kMatmulTileRows = 4;
// Measured on SmolLM2 decode (2 threads, AVX-512): int16 1.21× and 1.33× kF32
// at 1 and 4 sequences, 0.97× at 8, 0.96× at 16 (the tiles' side).
inline constexpr int kInt16MaxTokens = 4;
void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads,
            MatmulScratch& s, Activations a);
// kF32 with buffers of its own, allocated per call (tests).
void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads);

// Several matrices of one input (Q, K and V; gate and up): ys[i] = x·ws[i]ᵀ,
// each bit for bit what matmul gives. Where every matrix takes the int16
// path, the input is quantized once and one parallel region covers all
// their rows (one thread team wake-up instead of one per matrix); otherwise
// one matmul per matrix. Every matrix must have x's columns.
void matmul_group(std::span<const WeightMatrix* const> ws, const float* x, int n_tokens,
                  std::span<float* const> ys, int n_threads, MatmulScratch& s, Activations a);

// A model's weight matrices packed 16 rows at a time (kernels/weight_packed.h,
// docs/architecture.md "Packed weights"): the matmuls with int16 activations
// read 16 rows per vector instruction instead of one, 4 to 10 times faster
// per thread on AVX-512 VNNI, for decode and prefill alike. pack() packs
// every matrix whose format packing supports; matrices that share their
// data (a tied output) share the result. With in_place (the caller made
// the weights writable: its own copy of the file, GgufFile::unseal) a
// matrix of a 32-value format in whole 16-row groups is packed in place, in
// the bytes its rows held (a group takes exactly as many), and its `data`
// becomes null; the others (K-quants, partial groups) go to one buffer of
// this object's (2 MiB pages when large), and only when it takes at most
// half of MemAvailable. It packs nothing where the CPU lacks AVX-512 VNNI
// or INNERQ_PACK=0 is set.
class PackedWeights {
 public:
  PackedWeights() = default;
  PackedWeights(const PackedWeights&) = delete;
  PackedWeights& operator=(const PackedWeights&) = delete;
  ~PackedWeights();

  // Throws innerq::Error when called twice.
  void pack(std::span<WeightMatrix* const> ws, bool in_place, int n_threads);
  // Bytes packed in place, and bytes of the buffer of this object's.
  size_t bytes_in_place() const { return in_place_; }
  size_t bytes() const { return bytes_; }
  bool huge_pages() const { return mapped_; }

 private:
  bool packed_ = false;
  uint8_t* data_ = nullptr;
  size_t bytes_ = 0;
  size_t in_place_ = 0;
  bool mapped_ = false;
};

// Whether pack() packs on this machine now (VNNI present, INNERQ_PACK not 0).
bool packing_enabled();

// Scalar reference of matmul (double accumulation over the dequantized row).
void matmul_reference(const WeightMatrix& w, const float* x, int n_tokens, float* y);

}  // namespace innerq::model
