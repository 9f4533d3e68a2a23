// The segments of each cache kind (cache_segments.h).
#include "innerq/attn/cache_segments.h"

#include "innerq/base/error.h"
#include "innerq/kernels/llama_blocks.h"
#include "innerq/kv/layer_caches.h"
#include "innerq/kv/window_layer_cache.h"

namespace innerq::attn {
namespace {

Segment rows_f16(const kv::F16Rows& rows, int start) {
  return {
      SegmentForm::kRowsF16, start, rows.size(), 1, rows.size() > 0 ? rows.row(0) : nullptr, {}};
}

}  // namespace

Segment Segment::tail(int offset, int head_dim) const {
  Segment s = *this;
  s.start += offset;
  s.length -= offset;
  const size_t D = static_cast<size_t>(head_dim);
  const size_t off = static_cast<size_t>(offset);
  const auto* bytes = static_cast<const uint8_t*>(data);
  switch (form) {
    case SegmentForm::kTilesF32:
      s.data = static_cast<const float*>(data) + off * D;
      break;
    case SegmentForm::kTilesF16:
      s.data = static_cast<const f16_bits*>(data) + off * D;
      break;
    case SegmentForm::kRowsF32:
      s.data = static_cast<const float*>(data) + off * D;
      break;
    case SegmentForm::kRowsF16:
      s.data = static_cast<const f16_bits*>(data) + off * D;
      break;
    case SegmentForm::kQ8_0:
      s.data = static_cast<const BlockQ8_0*>(data) + off * (D / kLlamaBlock);
      break;
    case SegmentForm::kQ4_0:
      s.data = static_cast<const BlockQ4_0*>(data) + off * (D / kLlamaBlock);
      break;
    case SegmentForm::kInnerQK:
      s.data = bytes + off / kTileRows * tile.bytes();
      break;
    case SegmentForm::kInnerQV:
      s.data = bytes + off / static_cast<size_t>(tile.group) * (D / kTileRows) * tile.bytes();
      break;
    case SegmentForm::kKiviK:
      s.data = bytes + off / static_cast<size_t>(group) * D *
                           group_record_bytes(bits, group, QuantMode::kAsymmetric);
      break;
    case SegmentForm::kKiviV:
      s.data = bytes + off * (D / static_cast<size_t>(group)) *
                           group_record_bytes(bits, group, QuantMode::kAsymmetric);
      break;
  }
  return s;
}

HeadSegments segments_of(const kv::LayerCache& cache, int head) {
  // A ring holds positions in slot order and fewer than n_tokens() of them.
  if (dynamic_cast<const kv::WindowLayerCache*>(&cache) != nullptr) {
    throw Error("decode attention: a sliding-window layer is read by attn::window_attention");
  }
  HeadSegments out;
  const int n = cache.n_tokens();
  switch (cache.kind()) {
    case kv::CacheKind::kF32: {
      const auto& c = static_cast<const kv::F32LayerCache&>(cache);
      out.k.push_back({SegmentForm::kTilesF32, 0, n, kTileRows, c.k_tiles(head), {}});
      out.v.push_back({SegmentForm::kRowsF32, 0, n, 1, c.v_rows(head), {}});
      break;
    }
    case kv::CacheKind::kF16: {
      const auto& c = static_cast<const kv::F16LayerCache&>(cache);
      out.k.push_back({SegmentForm::kTilesF16, 0, n, kTileRows, c.k_tiles(head), {}});
      out.v.push_back({SegmentForm::kRowsF16, 0, n, 1, c.v_rows(head), {}});
      break;
    }
    case kv::CacheKind::kQ8_0: {
      const auto& c = static_cast<const kv::Q8_0LayerCache&>(cache);
      out.k.push_back({SegmentForm::kQ8_0, 0, n, 1, c.k_blocks(head), {}});
      out.v.push_back({SegmentForm::kQ8_0, 0, n, 1, c.v_blocks(head), {}});
      break;
    }
    case kv::CacheKind::kQ4_0: {
      const auto& c = static_cast<const kv::Q4_0LayerCache&>(cache);
      out.k.push_back({SegmentForm::kQ4_0, 0, n, 1, c.k_blocks(head), {}});
      out.v.push_back({SegmentForm::kQ4_0, 0, n, 1, c.v_blocks(head), {}});
      break;
    }
    case kv::CacheKind::kKivi: {
      const auto& c = static_cast<const kv::KiviLayerCache&>(cache);
      const int G = c.group();
      Segment k{SegmentForm::kKiviK, 0, c.k_quant_tokens(), G, c.k_blocks(head), {}};
      Segment v{SegmentForm::kKiviV, 0, c.v_quant_tokens(), 1, c.v_rows(head), {}};
      k.bits = v.bits = c.bits();
      k.group = v.group = G;
      out.k = {k, rows_f16(c.k_residual(head), c.k_quant_tokens())};
      out.v = {v, rows_f16(c.v_residual(head), c.v_quant_tokens())};
      break;
    }
    case kv::CacheKind::kInnerQ: {
      const auto& c = static_cast<const kv::InnerQLayerCache&>(cache);
      const int S = c.sink_tokens();
      Segment k{SegmentForm::kInnerQK, S,           c.k_middle_tokens(), kTileRows,
                c.k_tiles(head),       c.k_format()};
      Segment v{SegmentForm::kInnerQV, S,           c.v_middle_tokens(), c.config().group,
                c.v_blocks(head),      c.v_format()};
      out.k = {rows_f16(c.k_sink(head), 0), k, rows_f16(c.k_recent(head), S + c.k_middle_tokens())};
      out.v = {rows_f16(c.v_sink(head), 0), v, rows_f16(c.v_recent(head), S + c.v_middle_tokens())};
      out.key_norm = c.key_norm(head);
      out.key_mean = c.key_mean(head);
      out.origin = S;
      break;
    }
  }
  return out;
}

}  // namespace innerq::attn
