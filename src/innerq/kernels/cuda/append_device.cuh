// innerq/kernels/cuda/append_device.cuh — the quantize-on-append kernels,
// one thread per group (quantize_group.cuh). A header so that
// tests/cuda/emulated_append_test can run them on the CPU.
#pragma once

#include <cstddef>
#include <cstdint>

#include "innerq/kernels/cuda/append_kernels.h"
#include "innerq/kernels/cuda/device_format.cuh"
#include "innerq/kernels/cuda/quantize_group.cuh"
#include "innerq/kernels/tile_format.h"

namespace innerq::cuda {

inline constexpr int kAppendThreads = 128;

// Thread (head, row r, group g).
__global__ void __launch_bounds__(kAppendThreads) append_keys_kernel(const AppendKeysParams p) {
  const int groups_per_row = p.head_dim / p.group;
  const long long index = static_cast<long long>(blockIdx.x) * kAppendThreads + threadIdx.x;
  if (index >= static_cast<long long>(p.n_kv_heads) * p.n_rows * groups_per_row) return;
  const int g = static_cast<int>(index % groups_per_row);
  const int r = static_cast<int>(index / groups_per_row % p.n_rows);
  const int h = static_cast<int>(index / groups_per_row / p.n_rows);

  const uint16_t* row = p.rows + h * p.rows_stride + static_cast<size_t>(r) * p.head_dim;
  const float* f = p.key_norm + static_cast<size_t>(h) * p.head_dim;
  float x[kMaxGroupSize];
  for (int i = 0; i < p.group; ++i) {
    const int c = g * p.group + i;
    x[i] = div_rn(half_bits_to_float(row[c]), f[c]);
  }
  QuantizedGroup q;
  if (!quantize_group(x, p.group, p.bits, p.mode, q)) {
    atomicMin(p.bad_group, static_cast<int>(index));
    return;
  }
  const TileFormat fmt{p.bits, p.group, groups_per_row, mode_has_zero(p.mode)};
  const int slot = p.first_slot + r;
  uint8_t* tile =
      p.tiles + h * p.tiles_stride + static_cast<size_t>(slot / kTileRows) * fmt.bytes();
  store_group_in_tile(q, fmt, tile, g, slot % kTileRows);
}

// Thread (head, block b, channel c).
__global__ void __launch_bounds__(kAppendThreads) append_values_kernel(const AppendValuesParams p) {
  const long long index = static_cast<long long>(blockIdx.x) * kAppendThreads + threadIdx.x;
  if (index >= static_cast<long long>(p.n_kv_heads) * p.n_blocks * p.head_dim) return;
  const int c = static_cast<int>(index % p.head_dim);
  const int b = static_cast<int>(index / p.head_dim % p.n_blocks);
  const int h = static_cast<int>(index / p.head_dim / p.n_blocks);

  const uint16_t* rows = p.rows + h * p.rows_stride + static_cast<size_t>(b) * p.group * p.head_dim;
  float x[kMaxGroupSize];
  for (int t = 0; t < p.group; ++t) x[t] = half_bits_to_float(rows[t * p.head_dim + c]);
  QuantizedGroup q;
  if (!quantize_group(x, p.group, p.bits, p.mode, q)) {
    atomicMin(p.bad_group, static_cast<int>(index));
    return;
  }
  const TileFormat fmt{p.bits, p.group, 1, mode_has_zero(p.mode)};
  const size_t block = static_cast<size_t>(p.first_block + b);
  uint8_t* tile = p.blocks + h * p.blocks_stride +
                  (block * (p.head_dim / kTileRows) + c / kTileRows) * fmt.bytes();
  store_group_in_tile(q, fmt, tile, 0, c % kTileRows);
}

}  // namespace innerq::cuda
