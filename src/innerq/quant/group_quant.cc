// innerq/quant/group_quant.cc — validation and buffer sizing around the kernels.
#include "innerq/quant/group_quant.h"

#include "innerq/base/error.h"

namespace innerq::quant {
namespace {

size_t records_in(const GroupFormat& format, size_t n_bytes) {
  if (n_bytes % format.record_bytes() != 0) {
    throw Error("record buffer of " + std::to_string(n_bytes) + " bytes is not a whole number of " +
                std::to_string(format.record_bytes()) + "-byte group records");
  }
  return n_bytes / format.record_bytes();
}

}  // namespace

GroupFormat GroupFormat::make(int bits, int group, QuantMode mode) {
  if (!is_supported_bits(bits)) {
    throw Error("bits must be one of 2, 3, 4, 8 (got " + std::to_string(bits) + ")");
  }
  if (!is_supported_group(group)) {
    throw Error("group size must be 32, 64 or 128 (got " + std::to_string(group) + ")");
  }
  return {bits, group, mode};
}

size_t GroupFormat::groups_in(size_t n_values) const {
  if (n_values % static_cast<size_t>(group) != 0) {
    throw Error(std::to_string(n_values) + " values are not a multiple of the group size " +
                std::to_string(group));
  }
  return n_values / static_cast<size_t>(group);
}

QuantMode parse_quant_mode(std::string_view name) {
  if (name == "sym") return QuantMode::kSymmetric;
  if (name == "asym") return QuantMode::kAsymmetric;
  if (name == "hybrid") return QuantMode::kHybrid;
  throw Error("mode must be sym, asym or hybrid (got '" + std::string(name) + "')");
}

std::string_view quant_mode_name(QuantMode mode) {
  switch (mode) {
    case QuantMode::kSymmetric:
      return "sym";
    case QuantMode::kAsymmetric:
      return "asym";
    case QuantMode::kHybrid:
      return "hybrid";
  }
  return "?";
}

void quantize(const GroupFormat& format, std::span<const float> x, std::span<uint8_t> records) {
  const size_t n_groups = format.groups_in(x.size());
  if (records.size() != n_groups * format.record_bytes()) {
    throw Error("record buffer holds " + std::to_string(records.size()) + " bytes, " +
                std::to_string(n_groups * format.record_bytes()) + " needed");
  }
  kernels::simd::quantize_row(format.spec(), x.data(), n_groups, records.data());
}

std::vector<uint8_t> quantize(const GroupFormat& format, std::span<const float> x) {
  std::vector<uint8_t> records(format.groups_in(x.size()) * format.record_bytes());
  quantize(format, x, records);
  return records;
}

void dequantize(const GroupFormat& format, std::span<const uint8_t> records, std::span<float> x) {
  const size_t n_groups = records_in(format, records.size());
  if (x.size() != n_groups * static_cast<size_t>(format.group)) {
    throw Error("output holds " + std::to_string(x.size()) + " values, " +
                std::to_string(n_groups * static_cast<size_t>(format.group)) + " needed");
  }
  kernels::simd::dequantize_row(format.spec(), records.data(), n_groups, x.data());
}

std::vector<float> dequantize(const GroupFormat& format, std::span<const uint8_t> records) {
  std::vector<float> x(records_in(format, records.size()) * static_cast<size_t>(format.group));
  dequantize(format, records, x);
  return x;
}

double symmetric_fraction(const GroupFormat& format, std::span<const uint8_t> records) {
  const size_t n_groups = records_in(format, records.size());
  if (n_groups == 0) return 0.0;
  size_t n_symmetric = 0;
  for (size_t g = 0; g < n_groups; ++g) {
    n_symmetric +=
        kernels::record_meta(format.spec(), records.data() + g * format.record_bytes()).symmetric;
  }
  return static_cast<double>(n_symmetric) / static_cast<double>(n_groups);
}

}  // namespace innerq::quant
