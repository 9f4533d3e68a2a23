// Cutting a segment (segments.h).
#include "innerq/kv/segments.h"

#include "innerq/kernels/llama_blocks.h"

namespace innerq::kv {

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

}  // namespace innerq::kv
