// innerq/kernels/quantize_rules.cc — the error path of quantization and the
// record metadata reader.
#include "innerq/kernels/quantize_rules.h"

#include <cmath>
#include <string>

#include "innerq/base/error.h"
#include "innerq/kernels/quant_kernels.h"

namespace innerq::kernels {

void throw_invalid_group(size_t group_index, const float* values, size_t count, size_t stride) {
  for (size_t i = 0; i < count; ++i) {
    const float x = values[i * stride];
    if (!std::isfinite(x)) {
      throw Error("quantize: group " + std::to_string(group_index) + " holds a non-finite value (" +
                  std::to_string(x) + ") at position " + std::to_string(i));
    }
    if (std::fabs(x) > kF16Max) {
      throw Error("quantize: group " + std::to_string(group_index) + " holds " + std::to_string(x) +
                  " at position " + std::to_string(i) + ", beyond the fp16 range ±65504");
    }
  }
  throw Error("quantize: group " + std::to_string(group_index) + " was rejected as invalid");
}

GroupMeta record_meta(const GroupSpec& spec, const uint8_t* record) {
  const uint8_t* meta = record + group_code_bytes(spec.bits, spec.group);
  const f16_bits zero_bits = mode_has_zero(spec.mode) ? load_f16(meta + 2) : f16_bits{0};
  GroupMeta m = decode_meta(load_f16(meta), zero_bits, spec.bits);
  if (spec.levels != Levels::kUniform) m.zero = -static_cast<float>(kNormalLevelOffset) * m.scale;
  return m;
}

}  // namespace innerq::kernels
