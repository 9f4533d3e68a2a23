// tests/kernels/weight_block_samples.h — random rows of ggml weight blocks
// that the kernels and model tests share: random codes, finite fp16 scales.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "innerq/kernels/weight_blocks.h"

namespace innerq::kernels::testing {

// Offsets of the fp16 fields of one block of f (they must hold finite values).
inline std::vector<size_t> f16_fields(WeightFormat f) {
  switch (f) {
    case WeightFormat::kQ4_0:
    case WeightFormat::kQ5_0:
    case WeightFormat::kQ8_0:
      return {0};
    case WeightFormat::kQ4_1:
    case WeightFormat::kQ5_1:
    case WeightFormat::kQ4_K:
    case WeightFormat::kQ5_K:
      return {0, 2};
    case WeightFormat::kQ2_K:
      return {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)};
    case WeightFormat::kQ3_K:
      return {offsetof(BlockQ3_K, d)};
    case WeightFormat::kQ6_K:
      return {offsetof(BlockQ6_K, d)};
    case WeightFormat::kBF16:
      return {};
  }
  return {};
}

// n_rows rows of n values, each row_bytes long (any padding after the blocks
// is random too): random codes, finite fp16 scales of either sign from 2^-20
// (subnormal) to 2, finite BF16 values of the same range.
inline std::vector<uint8_t> random_rows(WeightFormat f, int64_t n_rows, int64_t n, size_t row_bytes,
                                        std::mt19937_64& rng) {
  const WeightFormatInfo info = weight_format_info(f);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> exponent(-20.0f, 1.0f);
  const auto magnitude = [&] { return std::exp2(exponent(rng)) * (byte(rng) % 2 ? 1.0f : -1.0f); };
  std::vector<uint8_t> data(static_cast<size_t>(n_rows) * row_bytes);
  for (uint8_t& v : data) v = static_cast<uint8_t>(byte(rng));
  for (int64_t r = 0; r < n_rows; ++r) {
    uint8_t* row = data.data() + static_cast<size_t>(r) * row_bytes;
    if (f == WeightFormat::kBF16) {
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = static_cast<uint16_t>(std::bit_cast<uint32_t>(magnitude()) >> 16);
        std::memcpy(row + 2 * i, &h, 2);
      }
      continue;
    }
    for (int64_t b = 0; b < n / info.block_values; ++b) {
      for (const size_t at : f16_fields(f)) {
        const f16_bits h = f32_to_f16(magnitude());
        std::memcpy(row + static_cast<size_t>(b) * info.block_bytes + at, &h, 2);
      }
    }
  }
  return data;
}

}  // namespace innerq::kernels::testing
