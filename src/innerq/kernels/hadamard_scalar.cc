// Scalar reference of the randomized Hadamard rotation (hadamard.h).
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>

#include "innerq/kernels/hadamard.h"

namespace innerq::kernels {

int hadamard_block(int dim) {
  return dim & -dim;
}

float hadamard_sign(int i) {
  // splitmix64 of the channel index: a fixed pattern, the same on every
  // machine, that is not periodic in the block size.
  uint64_t z = static_cast<uint64_t>(i) + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (z & 1) ? -1.0f : 1.0f;
}

const float* hadamard_signs() {
  static const std::array<float, kHadamardSignTable> table = [] {
    std::array<float, kHadamardSignTable> t{};
    for (int i = 0; i < kHadamardSignTable; ++i) t[static_cast<size_t>(i)] = hadamard_sign(i);
    return t;
  }();
  return table.data();
}

namespace scalar {
namespace {

template <typename T>
void rotate(T* x, size_t n_rows, int dim, bool inverse) {
  const int B = hadamard_block(dim);
  const T norm = static_cast<T>(1.0 / std::sqrt(static_cast<double>(B)));
  const float* table = dim <= kHadamardSignTable ? hadamard_signs() : nullptr;
  const auto sign = [table](int i) { return static_cast<T>(table ? table[i] : hadamard_sign(i)); };
  for (size_t r = 0; r < n_rows; ++r) {
    T* row = x + r * static_cast<size_t>(dim);
    if (!inverse)
      for (int i = 0; i < dim; ++i) row[i] *= sign(i);
    for (int b0 = 0; b0 < dim; b0 += B) {
      T* blk = row + b0;
      for (int h = 1; h < B; h *= 2) {
        for (int i = 0; i < B; i += 2 * h) {
          for (int j = i; j < i + h; ++j) {
            const T a = blk[j], b = blk[j + h];
            blk[j] = a + b;
            blk[j + h] = a - b;
          }
        }
      }
      for (int i = 0; i < B; ++i) blk[i] *= norm;
    }
    if (inverse)
      for (int i = 0; i < dim; ++i) row[i] *= sign(i);
  }
}

}  // namespace

void hadamard_rotate(float* x, size_t n_rows, int dim, bool inverse) {
  rotate(x, n_rows, dim, inverse);
}
void hadamard_rotate(double* x, size_t n_rows, int dim, bool inverse) {
  rotate(x, n_rows, dim, inverse);
}

}  // namespace scalar
}  // namespace innerq::kernels
