// innerq/kernels/cuda/append_kernels.h — quantize-on-append on the GPU: the
// same codes and metadata as the CPU quantizer (quantize_rules.h,
// quant_kernels.h) written straight into the InnerQ cache's tile layout.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "innerq/kernels/group_format.h"

namespace innerq::cuda {

// K middle: rows [n_rows] of each KV head (f16, as the recent window holds
// them) → x = row / f (per-channel key normalization, IEEE division) → one
// record per G channels → row (first_slot + r) of the head's 16-token tiles
// (TileFormat{bits, group, D/G, has_zero}; tile (slot/16), row slot mod 16).
struct AppendKeysParams {
  const uint16_t* rows;   // f16 [n_kv_heads][rows_stride]: [n_rows][D]
  const float* key_norm;  // [n_kv_heads][D]
  uint8_t* tiles;         // [n_kv_heads][tiles_stride bytes]
  int* bad_group;         // device int: lowest invalid group index, untouched if none
  size_t rows_stride, tiles_stride;
  int n_kv_heads, n_rows, head_dim, first_slot;
  int bits, group;
  QuantMode mode;
};

// V middle: n_blocks blocks of G tokens per KV head → for block b, channel c
// the group of G token values → row c mod 16 of tile c/16 of V block
// (first_block + b) (TileFormat{bits, group, 1, has_zero}).
struct AppendValuesParams {
  const uint16_t* rows;  // f16 [n_kv_heads][rows_stride]: [n_blocks·G][D]
  uint8_t* blocks;       // [n_kv_heads][blocks_stride bytes]
  int* bad_group;
  size_t rows_stride, blocks_stride;
  int n_kv_heads, n_blocks, head_dim, first_block;
  int bits, group;
  QuantMode mode;
};

// A group holding a non-finite value or |x| > 65504 is not written and its
// index (head-major, then row or block, then group or channel) lowers
// *bad_group. Throw innerq::Error on unsupported bits, group or head_dim.
cudaError_t launch_append_keys(const AppendKeysParams& params, cudaStream_t stream);
cudaError_t launch_append_values(const AppendValuesParams& params, cudaStream_t stream);

}  // namespace innerq::cuda
