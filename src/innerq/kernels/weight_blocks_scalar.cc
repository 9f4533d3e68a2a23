// innerq/kernels/weight_blocks_scalar.cc — scalar reference of the weight
// block kernels: each value computed on its own, straight from the layout
// definitions in weight_blocks.h.
#include <bit>
#include <cstring>

#include "innerq/kernels/weight_blocks.h"

namespace innerq::kernels::scalar {
namespace {

float value(const BlockQ4_0& b, int i) {
  return f16_to_f32(b.d) * static_cast<float>(nibble32(b.qs, i) - 8);
}

float value(const BlockQ4_1& b, int i) {
  return f16_to_f32(b.d) * static_cast<float>(nibble32(b.qs, i)) + f16_to_f32(b.m);
}

float value(const BlockQ5_0& b, int i) {
  const int q = nibble32(b.qs, i) | (fifth_bit32(b.qh, i) << 4);
  return f16_to_f32(b.d) * static_cast<float>(q - 16);
}

float value(const BlockQ5_1& b, int i) {
  const int q = nibble32(b.qs, i) | (fifth_bit32(b.qh, i) << 4);
  return f16_to_f32(b.d) * static_cast<float>(q) + f16_to_f32(b.m);
}

float value(const BlockQ8_0& b, int i) {
  return f16_to_f32(b.d) * static_cast<float>(b.qs[i]);
}

float value(const BlockQ2_K& b, int i) {
  const int h = i / 128, j = i % 128 / 32, l = i % 32;
  const int q = (b.qs[32 * h + l] >> (2 * j)) & 3;
  const int sc = b.scales[i / 16];
  const float dl = f16_to_f32(b.d) * static_cast<float>(sc & 15);
  const float ml = f16_to_f32(b.dmin) * static_cast<float>(sc >> 4);
  return dl * static_cast<float>(q) - ml;
}

float value(const BlockQ3_K& b, int i) {
  const int h = i / 128, j = i % 128 / 32, l = i % 32;
  const int low = (b.qs[32 * h + l] >> (2 * j)) & 3;
  const int high = (b.hmask[l] >> (4 * h + j)) & 1;
  const int q = low - (high ? 0 : 4);
  const float dl = f16_to_f32(b.d) * static_cast<float>(q3k_scale(b.scales, i / 16));
  return dl * static_cast<float>(q);
}

template <class Block>  // BlockQ4_K or BlockQ5_K
float k_value(const Block& b, int i, int q) {
  int sc = 0, m = 0;
  k_scale_min(b.scales, i / 32, &sc, &m);
  const float dl = f16_to_f32(b.d) * static_cast<float>(sc);
  const float ml = f16_to_f32(b.dmin) * static_cast<float>(m);
  return dl * static_cast<float>(q) - ml;
}

float value(const BlockQ4_K& b, int i) {
  const int c = i / 64, k = i % 64 / 32, l = i % 32;
  return k_value(b, i, (b.qs[32 * c + l] >> (4 * k)) & 15);
}

float value(const BlockQ5_K& b, int i) {
  const int c = i / 64, k = i % 64 / 32, l = i % 32;
  const int low = (b.qs[32 * c + l] >> (4 * k)) & 15;
  const int high = (b.qh[l] >> (2 * c + k)) & 1;
  return k_value(b, i, low | (high << 4));
}

float value(const BlockQ6_K& b, int i) {
  const int h = i / 128, s = i % 128 / 32, l = i % 32;
  const int low = (b.ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 15;
  const int high = (b.qh[32 * h + l] >> (2 * s)) & 3;
  const float dl = f16_to_f32(b.d) * static_cast<float>(b.scales[i / 16]);
  return dl * static_cast<float>((low | (high << 4)) - 32);
}

// out: [kBlockValues<Block>]
template <class Block>
void dequantize_block(const uint8_t* at, float* out) {
  Block b;
  std::memcpy(&b, at, sizeof(b));  // rows need not be aligned for Block
  for (int i = 0; i < kBlockValues<Block>; ++i) out[i] = value(b, i);
}

template <class Block>
void dequantize_rows_of(const uint8_t* rows, size_t row_bytes, int64_t n_rows, int64_t n,
                        float* out, size_t out_stride) {
  constexpr int V = kBlockValues<Block>;
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* row = rows + static_cast<size_t>(r) * row_bytes;
    float* o = out + static_cast<size_t>(r) * out_stride;
    for (int64_t b = 0; b < n / V; ++b) dequantize_block<Block>(row + b * sizeof(Block), o + b * V);
  }
}

// BF16 value i of a row: the upper 16 bits of an f32.
float bf16_value(const uint8_t* row, int64_t i) {
  uint16_t h = 0;
  std::memcpy(&h, row + 2 * i, 2);
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

template <class Block>
void dot_rows_of(const uint8_t* rows, size_t row_bytes, int64_t n_rows, const float* x, int64_t n,
                 float* y) {
  constexpr int V = kBlockValues<Block>;
  float w[V];
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* row = rows + static_cast<size_t>(r) * row_bytes;
    double sum = 0.0;
    for (int64_t b = 0; b < n / V; ++b) {
      dequantize_block<Block>(row + b * sizeof(Block), w);
      for (int i = 0; i < V; ++i) sum += static_cast<double>(w[i]) * x[b * V + i];
    }
    y[r] = static_cast<float>(sum);
  }
}

}  // namespace

void dequantize_rows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows,
                     int64_t n, float* out, size_t out_stride) {
  with_block_type(
      f,
      [&]<class Block>() {
        dequantize_rows_of<Block>(rows, row_bytes, n_rows, n, out, out_stride);
      },
      [&] {
        for (int64_t r = 0; r < n_rows; ++r) {
          for (int64_t i = 0; i < n; ++i) {
            out[static_cast<size_t>(r) * out_stride + i] =
                bf16_value(rows + static_cast<size_t>(r) * row_bytes, i);
          }
        }
      });
}

void dot_rows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows, const float* x,
              int64_t n, float* y) {
  with_block_type(
      f, [&]<class Block>() { dot_rows_of<Block>(rows, row_bytes, n_rows, x, n, y); },
      [&] {
        for (int64_t r = 0; r < n_rows; ++r) {
          const uint8_t* row = rows + static_cast<size_t>(r) * row_bytes;
          double sum = 0.0;
          for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(bf16_value(row, i)) * x[i];
          y[r] = static_cast<float>(sum);
        }
      });
}

}  // namespace innerq::kernels::scalar
