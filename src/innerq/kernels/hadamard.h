// innerq/kernels/hadamard.h — the randomized Hadamard rotation of cache rows
// (docs/architecture.md, "Rotation").
//
// A row of length `dim` is split into blocks of B = hadamard_block(dim)
// values (the largest power of two dividing dim: the whole row for head_dim
// 64/128/256). Each block is rotated by the orthogonal matrix
//
//     R = (1/√B) · H_B · diag(s)        forward   y = R x
//     R⁻¹ = Rᵀ = diag(s) · H_B · (1/√B) inverse   x = Rᵀ y
//
// where H_B is the Sylvester Hadamard matrix (H_ij = (−1)^popcount(i & j))
// and s a fixed ±1 pattern over the row (hadamard_sign). Because R is
// orthogonal, (R q)·(R k) = q·k: the cache stores R k, the query is rotated
// once per decode step, and outliers of one channel are spread over every
// channel of the block before per-token groups are formed.
//
// H_B x is the fast Walsh–Hadamard transform: log2(B) stages of butterflies
// (a, b) → (a + b, a − b) at strides 1, 2, 4, ... The SIMD version runs the
// same butterflies in the same order (in-register stages by a lane
// permutation, the rest across vectors), so it equals the scalar reference
// bit for bit on every target.
#pragma once

#include <cstddef>

namespace innerq::kernels {

// Largest power of two that divides dim (dim > 0).
int hadamard_block(int dim);

// The fixed random sign of channel i of a row: +1 or −1.
float hadamard_sign(int i);

// hadamard_sign(0 .. kHadamardSignTable − 1), computed once: rows up to this
// length read their signs here instead of hashing per call.
inline constexpr int kHadamardSignTable = 4096;
const float* hadamard_signs();

namespace scalar {
// x: [n_rows][dim], rotated in place (forward R, or inverse Rᵀ).
void hadamard_rotate(float* x, size_t n_rows, int dim, bool inverse);
// Double-precision version for references.
void hadamard_rotate(double* x, size_t n_rows, int dim, bool inverse);
}  // namespace scalar

namespace simd {
void hadamard_rotate(float* x, size_t n_rows, int dim, bool inverse);
}  // namespace simd

}  // namespace innerq::kernels
