// innerq/quant/group_quant.h — the user-facing group formats: a validated
// (bits, group, mode) spec, buffer sizing, and whole-array quantize /
// dequantize on top of the kernels (SIMD path). Layout and rules:
// innerq/kernels/group_format.h and innerq/kernels/quant_kernels.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "innerq/kernels/group_format.h"
#include "innerq/kernels/quant_kernels.h"

namespace innerq::quant {

// One group format. Construct with make(), which validates; the fields are
// plain so callers can read them.
struct GroupFormat {
  int bits = 3;
  int group = 32;
  QuantMode mode = QuantMode::kSymmetric;

  // Throws innerq::Error: "bits must be one of 2, 3, 4, 8 (got 5)",
  // "group size must be 32, 64 or 128 (got 48)".
  static GroupFormat make(int bits, int group, QuantMode mode);

  size_t record_bytes() const { return group_record_bytes(bits, group, mode); }
  double bits_per_value() const { return innerq::bits_per_value(bits, group, mode); }
  kernels::GroupSpec spec() const { return {bits, group, mode}; }

  // Groups in n_values values; throws innerq::Error unless G divides n_values.
  size_t groups_in(size_t n_values) const;
};

// "sym" | "asym" | "hybrid"; anything else throws innerq::Error.
QuantMode parse_quant_mode(std::string_view name);
std::string_view quant_mode_name(QuantMode mode);

// x: [n·G] → n records back to back. Throws innerq::Error on a length that is
// not a multiple of G, and on a non-finite or out-of-fp16-range group.
std::vector<uint8_t> quantize(const GroupFormat& format, std::span<const float> x);
void quantize(const GroupFormat& format, std::span<const float> x, std::span<uint8_t> records);

// n records → x̂: [n·G].
std::vector<float> dequantize(const GroupFormat& format, std::span<const uint8_t> records);
void dequantize(const GroupFormat& format, std::span<const uint8_t> records, std::span<float> x);

// Share of the records that chose (or are) symmetric, in [0, 1].
double symmetric_fraction(const GroupFormat& format, std::span<const uint8_t> records);

}  // namespace innerq::quant
