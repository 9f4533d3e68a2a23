// innerq/kv/segments.h — a layer cache seen as runs of tokens ("segments")
// in one storage form each, in token order, for K and for V. This is the one
// interface through which attention reads every cache kind
// (LayerCache::segments); a block-pooled cache gives one segment per block
// and region (docs/architecture.md, "The block pool").
//
// Decode attention splits the token axis into chunks and runs, for each chunk,
// the region kernel of every segment it overlaps; the reference dequantizes
// the same segments token by token. Segments of quantized storage can only be
// cut at multiples of their `unit` (16-token tiles, G-token blocks) counted
// from the segment start.
#pragma once

#include <cstdint>
#include <vector>

#include "innerq/kernels/tile_format.h"

namespace innerq::kv {

enum class SegmentForm {
  kTilesF32,  // plain K, [tile][D][16] f32
  kTilesF16,  // plain K, [tile][D][16] f16
  kRowsF32,   // [n][D] f32
  kRowsF16,   // [n][D] f16 (plain V, sinks, recent windows, residuals)
  kQ8_0,      // [n][D/32] llama.cpp blocks
  kQ4_0,
  kInnerQK,  // 16-token tiles of per-token groups, keys divided by f
  kInnerQV,  // G-token blocks of D/16 channel tiles
  kKiviK,    // G-token blocks of D channel records
  kKiviV,    // per-token rows of D/G records
};

struct Segment {
  SegmentForm form;
  int start;   // first token (sequence position)
  int length;  // tokens
  int unit;    // cut granularity in tokens, from `start`
  const void* data;
  TileFormat tile;  // kInnerQK / kInnerQV
  int bits = 0;     // kKiviK / kKiviV
  int group = 0;

  // The same segment without its first `offset` tokens (offset % unit == 0).
  Segment tail(int offset, int head_dim) const;
};

// A KV head's segments. Filled by LayerCache::segments(), which clears and
// refills the vectors so a caller can reuse one HeadSegments per head
// without allocating again.
struct HeadSegments {
  std::vector<Segment> k, v;
  const float* key_norm = nullptr;  // [D] factors of kInnerQK segments
  const float* key_mean = nullptr;  // [D] mean subtracted from every K segment (kcenter)
  // [D] or null (ksort): position j of a kInnerQK row holds channel
  // key_perm[j] of K / f; key_norm and key_mean stay in the model's order.
  const uint16_t* key_perm = nullptr;
  int origin = 0;  // quantized segments start here: chunk cuts align to it
};

}  // namespace innerq::kv
