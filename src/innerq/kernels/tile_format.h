// innerq/kernels/tile_format.h — how the KV cache arranges group records so
// that decode kernels put SIMD lanes (or CUDA threads) across *rows*.
//
// A tile holds kTileRows = 16 rows of the same group format (group_format.h).
// Each row has n_groups groups along the inner dimension; the codes of the
// 16 rows are interleaved at 32-bit-word granularity, followed by the metadata
// as structure-of-arrays:
//
//   codes  : u32 [n_groups][W][16]   W = G·b/32 words per group (row r's word w
//                                    of group g is the same word a single group
//                                    record holds at byte offset 4w)
//   scales : f16 [n_groups][16]      sign bit = symmetric group (group_format.h)
//   zeros  : f16 [n_groups][16]      only if the mode stores a zero
//
// One vector load of 16 words therefore yields the same 4 consecutive codes
// (after a shift and a byte mask) for 16 rows: lane r's four bytes are four
// codes of row r that a u8×i8 dot-accumulate multiplies by four query values.
//
// Uses in the InnerQ cache (InnerQLayerCache, kv/layer_caches.h):
//   K middle: rows = 16 consecutive tokens, groups along head_dim (n_groups = D/G)
//   V middle: one G-token block = D/16 tiles, rows = 16 channels, a single
//             group per row along the G tokens (n_groups = 1)
// The tile size is part of the format, not of any SIMD width: an 8-lane
// target processes a tile in two halves, a CUDA warp reads two tiles.
#pragma once

#include <cstddef>
#include <cstdint>

#include "innerq/kernels/group_format.h"

namespace innerq {

inline constexpr int kTileRows = 16;

struct TileFormat {
  int bits;                          // 2, 3, 4, 8
  int group;                         // G: 32, 64, 128
  int n_groups;                      // groups per row
  bool has_zero;                     // asymmetric or hybrid
  Levels levels = Levels::kUniform;  // kNormal: codebook levels (group_format.h)

  constexpr int words_per_group() const { return group * bits / 32; }
  constexpr size_t code_bytes() const {
    return static_cast<size_t>(n_groups) * words_per_group() * kTileRows * 4;
  }
  constexpr size_t meta_bytes() const {
    return static_cast<size_t>(n_groups) * kTileRows * 2 * (has_zero ? 2 : 1);
  }
  constexpr size_t bytes() const { return code_bytes() + meta_bytes(); }

  // Offsets inside one tile.
  constexpr size_t word_index(int g, int w, int row) const {
    return (static_cast<size_t>(g) * words_per_group() + w) * kTileRows + row;
  }
  constexpr size_t scales_offset() const { return code_bytes(); }
  constexpr size_t zeros_offset() const { return code_bytes() + n_groups * kTileRows * 2; }
};

static_assert(TileFormat{3, 32, 4, false}.bytes() == 16 * (128 * 3 / 8) + 4 * 16 * 2);
static_assert(TileFormat{2, 32, 1, true}.words_per_group() == 2);
static_assert(TileFormat{2, 32, 1, true}.bytes() == 16 * 8 + 16 * 4);  // 3 bits/value

// Copies one row's group records (contiguous, group_format.h layout) into
// row `row` of a tile, and back. These define the tile layout for tests and
// for the scalar reference.
inline void tile_store_row(const TileFormat& f, const uint8_t* records, uint8_t* tile, int row) {
  const size_t code_bytes = group_code_bytes(f.bits, f.group);
  const size_t record_bytes = code_bytes + (f.has_zero ? 4 : 2);
  auto* words = reinterpret_cast<uint32_t*>(tile);
  auto* scales = reinterpret_cast<f16_bits*>(tile + f.scales_offset());
  auto* zeros = reinterpret_cast<f16_bits*>(tile + f.zeros_offset());
  for (int g = 0; g < f.n_groups; ++g) {
    const uint8_t* rec = records + g * record_bytes;
    for (int w = 0; w < f.words_per_group(); ++w) {
      uint32_t word;
      __builtin_memcpy(&word, rec + 4 * w, 4);
      words[f.word_index(g, w, row)] = word;
    }
    __builtin_memcpy(&scales[g * kTileRows + row], rec + code_bytes, 2);
    if (f.has_zero) __builtin_memcpy(&zeros[g * kTileRows + row], rec + code_bytes + 2, 2);
  }
}

inline void tile_load_row(const TileFormat& f, const uint8_t* tile, int row, uint8_t* records) {
  const size_t code_bytes = group_code_bytes(f.bits, f.group);
  const size_t record_bytes = code_bytes + (f.has_zero ? 4 : 2);
  const auto* words = reinterpret_cast<const uint32_t*>(tile);
  const auto* scales = reinterpret_cast<const f16_bits*>(tile + f.scales_offset());
  const auto* zeros = reinterpret_cast<const f16_bits*>(tile + f.zeros_offset());
  for (int g = 0; g < f.n_groups; ++g) {
    uint8_t* rec = records + g * record_bytes;
    for (int w = 0; w < f.words_per_group(); ++w) {
      __builtin_memcpy(rec + 4 * w, &words[f.word_index(g, w, row)], 4);
    }
    __builtin_memcpy(rec + code_bytes, &scales[g * kTileRows + row], 2);
    if (f.has_zero) __builtin_memcpy(rec + code_bytes + 2, &zeros[g * kTileRows + row], 2);
  }
}

}  // namespace innerq
