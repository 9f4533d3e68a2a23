// innerq/kernels/weight_packed.h — weights of the 32-value block formats
// repacked 16 rows at a time for the decode product with int16 activations
// (docs/architecture.md, "Packed weights").
//
// Why. weight_int16.h reads one row at a time: each 32-value block is
// widened to int16 and multiplied by pairwise multiply-add, then the 16 lane
// sums are reduced, about 14 instructions per 32 products. Here the codes of
// 16 rows are interleaved so that one 512-bit vpdpbusd multiplies 4 codes of
// each of the 16 rows with 4 bytes of the activation (broadcast to all
// lanes): each lane is one row, nothing is reduced across lanes, and the
// nibbles are split by one and / shift per 64 codes. The int16 activation q
// is split into two signed bytes, q = 256·h + l (h = (q + 128) >> 8,
// l = q − 256·h, both in [−128, 127] because |q| ≤ kActMax = 32639), so a
// product takes two vpdpbusd (h and l) and stays exact: the result has the
// int16 path's arithmetic, not int8's.
//
// Layout. A matrix of n_rows rows of n values (n a multiple of 32, of 256
// for the K-quants) becomes ⌈n_rows / 16⌉ groups of packed_group_bytes(f, n)
// bytes; the rows past n_rows in the last group are zero (codes 0, scale 0)
// and their outputs are not written. A group of C = n / 32 chunks is, in
// order:
//   codes    C × 256 bytes (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K: the low 4
//            bits of each code) or C × 512 bytes (Q8_0, Q6_K: a byte each);
//   bits     C × 64 bytes, Q5_0, Q5_1 and Q5_K only: the fifth bit of each code;
//   factors  per chunk, for the 16 rows:
//              Q4_0, Q5_0, Q8_0  d as 16 fp16 (the block's own field)
//              Q4_1, Q5_1        d, then m, as 16 fp16 each
//              Q4_K, Q5_K        W, then B, as 16 f32 each
//              Q6_K              W of half 0, then of half 1, 16 f32 each
//            (W and B of weight_int16.h's table: K-quant factors are f32
//            products of the stored fields, so they are stored as f32.)
// The 32 codes of row r (r < 16) in chunk c are split in 8 runs of 4 values,
// v = 0..7 holding values 4v .. 4v + 3, and run v of all 16 rows is one
// 64-byte vector whose byte 4r + j holds value 4v + j of row r:
//   nibble formats: vector k < 4 of the chunk's 256 code bytes holds run 2k
//     in its low nibbles and run 2k + 1 in its high ones;
//   Q5: bit 4r + j of the little-endian 64-bit word v of the chunk's bits is
//     bit 4 of value 4v + j of row r;
//   byte formats: vector v of the chunk's 512 code bytes is run v; Q8_0's
//     codes are stored as q + 128 (unsigned), Q6_K's as they are (0..63).
// The packed codes are weight_int16.h's u_i (Q8_0: u_i + 128), so the packed
// product has the same W, B and J as dot_rows_int16. A group of a 32-value
// format holds exactly as many bytes as its 16 rows did (so it can replace
// them in place); a K-quant group holds more (6 bits per value for Q4_K,
// 10 for Q6_K) and lives beside the rows.
//
// Products. y[t·y_stride + r] = Σ_chunks F·J + O exactly as
// dot_rows_int16 defines them (F = fl(W·d_x), O = fl(B·ds), J = Σ u_i·q_i),
// scalar:: in double and rounded once, term for term as dot_rows_int16.
// simd:: (AVX-512 VNNI only, see packed_dot_available) computes J exactly in
// int32 (Q8_0: Σ(u + 128)·q − 128·Σq; Q6_K per half, with its zero point in
// the integers: Σ(u − 32)·q = J_h − 32·Σ_h q, so no offset), converts it to
// f32 once per chunk or half (exact below 2²⁴: always for the 4-bit
// formats), accumulates F·J with one fused multiply-add per chunk or half
// and the offsets with another, and adds the two sums at the end: at
// most (2·chunks + 2)·2⁻²⁴·(Σ|F|·Σ|u_i·q_i| + Σ|O|) from the scalar result,
// inside dot_rows_int16's bound, which its y_abs gives.
#pragma once

#include <cstddef>
#include <cstdint>

#include "innerq/kernels/weight_int16.h"

namespace innerq::kernels {

inline constexpr int kPackRows = 16;  // rows per group: one per f32 lane of AVX-512

// Whether format f can be packed (the 32-value block formats, Q4_K, Q5_K
// and Q6_K; not Q2_K, Q3_K, BF16).
constexpr bool packed_supported(WeightFormat f) {
  return f == WeightFormat::kQ4_0 || f == WeightFormat::kQ4_1 || f == WeightFormat::kQ5_0 ||
         f == WeightFormat::kQ5_1 || f == WeightFormat::kQ8_0 || f == WeightFormat::kQ4_K ||
         f == WeightFormat::kQ5_K || f == WeightFormat::kQ6_K;
}

// Bytes of one 32-value chunk of a 16-row group, and of the group.
constexpr size_t packed_chunk_bytes(WeightFormat f) {
  const bool bytes = f == WeightFormat::kQ8_0 || f == WeightFormat::kQ6_K;
  const bool fifth =
      f == WeightFormat::kQ5_0 || f == WeightFormat::kQ5_1 || f == WeightFormat::kQ5_K;
  const bool k_quant =
      f == WeightFormat::kQ4_K || f == WeightFormat::kQ5_K || f == WeightFormat::kQ6_K;
  const bool min = f == WeightFormat::kQ4_1 || f == WeightFormat::kQ5_1;
  return (bytes ? 512 : 256) + (fifth ? 64 : 0) + (k_quant ? 128 : min ? 64 : 32);
}
constexpr size_t packed_group_bytes(WeightFormat f, int64_t n) {
  return packed_chunk_bytes(f) * static_cast<size_t>(n / kActChunk);
}
constexpr int64_t packed_groups(int64_t n_rows) {
  return (n_rows + kPackRows - 1) / kPackRows;
}

// An activation chunk split for the packed product: q_i = 256·h_i + l_i,
// the sums of q over each 16-value half (Q8_0's and Q6_K's integer
// corrections; d·sum_half[h] is ActChunk's ds_half[h], bit for bit), and
// the chunk's d and ds.
struct ActBytes {
  int8_t h[kActChunk];
  int8_t l[kActChunk];
  float d;
  float ds;
  int32_t sum_half[2];
};
static_assert(sizeof(ActBytes) == 80, "a split activation chunk is 64 + 16 bytes");

// pack_rows: rows of n values of format f (packed_supported), row_bytes
// apart → out: [packed_groups(n_rows) · packed_group_bytes(f, n)] bytes.
// unpack_code: code u_i of value i of row r of a packed matrix, and its d
// and m (tests; the packed matrix's own reading of the layout).
// split_activations: x: [n_chunks] → out: [n_chunks].
// dot_packed: packed as pack_rows wrote it (n_rows its rows); x: token t's
//   chunks at x + t·x_stride; y as dot_rows_int16 (weight_int16.h).
namespace scalar {

void pack_rows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows, int64_t n,
               uint8_t* out);
void split_activations(const ActChunk* x, int64_t n_chunks, ActBytes* out);
// out: [n] — row r of a packed matrix of a 32-value format in f32, bit for
// bit what dequantize_rows (weight_blocks.h) gives for the unpacked row
// (K-quants are never packed in place: their rows stay).
void dequantize_packed_row(WeightFormat f, const uint8_t* packed, int64_t r, int64_t n, float* out);
void dot_packed(WeightFormat f, const uint8_t* packed, int64_t n_rows, const ActChunk* x,
                size_t x_stride, int n_tokens, int64_t n, float* y, size_t y_stride);
// The same product of split activations (q_i = 256·h_i + l_i).
void dot_packed(WeightFormat f, const uint8_t* packed, int64_t n_rows, const ActBytes* x,
                size_t x_stride, int n_tokens, int64_t n, float* y, size_t y_stride);

}  // namespace scalar

namespace simd {

// Whether the target dispatch picks now runs dot_packed (AVX-512 with VNNI);
// elsewhere the caller keeps the unpacked rows and dot_rows_int16.
bool packed_dot_available();
// Any number of tokens; on targets without VNNI it runs the scalar product.
void dot_packed(WeightFormat f, const uint8_t* packed, int64_t n_rows, const ActBytes* x,
                size_t x_stride, int n_tokens, int64_t n, float* y, size_t y_stride);

}  // namespace simd

}  // namespace innerq::kernels
