// tests/quant/group_quant_test.cc — the user-facing format API: validation
// messages, buffer sizing, roundtrip through quantize/dequantize.
#include "innerq/quant/group_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "innerq/base/error.h"

namespace innerq::quant {
namespace {

std::string error_of(auto&& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(GroupFormat, RejectsUnsupportedBitsAndGroups) {
  EXPECT_EQ(error_of([] { GroupFormat::make(5, 32, QuantMode::kHybrid); }),
            "bits must be one of 2, 3, 4, 8 (got 5)");
  EXPECT_EQ(error_of([] { GroupFormat::make(3, 48, QuantMode::kHybrid); }),
            "group size must be 32, 64 or 128 (got 48)");
  EXPECT_EQ(error_of([] { parse_quant_mode("both"); }),
            "mode must be sym, asym or hybrid (got 'both')");
  for (int bits : kSupportedBits) {
    for (int group : kSupportedGroups)
      EXPECT_NO_THROW(GroupFormat::make(bits, group, QuantMode::kSymmetric));
  }
}

TEST(GroupFormat, ModeNamesRoundtrip) {
  for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric, QuantMode::kHybrid}) {
    EXPECT_EQ(parse_quant_mode(quant_mode_name(mode)), mode);
  }
}

TEST(GroupFormat, SizesFollowTheLayout) {
  const GroupFormat k3 = GroupFormat::make(3, 32, QuantMode::kSymmetric);
  EXPECT_EQ(k3.record_bytes(), 14u);
  EXPECT_DOUBLE_EQ(k3.bits_per_value(), 3.5);
  EXPECT_DOUBLE_EQ(GroupFormat::make(2, 32, QuantMode::kHybrid).bits_per_value(), 3.0);
  EXPECT_EQ(k3.groups_in(96), 3u);
  EXPECT_EQ(error_of([&] { k3.groups_in(100); }),
            "100 values are not a multiple of the group size 32");
}

TEST(GroupQuant, RoundtripAndSymmetricFraction) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(64 * 32);
  for (float& v : x) v = normal(rng);
  for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric, QuantMode::kHybrid}) {
    const GroupFormat format = GroupFormat::make(4, 32, mode);
    const std::vector<uint8_t> records = quantize(format, x);
    ASSERT_EQ(records.size(), 64 * format.record_bytes());
    const std::vector<float> x_hat = dequantize(format, records);
    double err = 0.0, norm = 0.0;
    for (size_t i = 0; i < x.size(); ++i) {
      err += (x[i] - x_hat[i]) * (x[i] - x_hat[i]);
      norm += x[i] * x[i];
    }
    EXPECT_LT(std::sqrt(err / norm), 0.15) << quant_mode_name(mode);  // 4 bits: ≈ 0.09
    const double sym = symmetric_fraction(format, records);
    const double expected_low = mode == QuantMode::kSymmetric ? 1.0 : 0.0;
    const double expected_high = mode == QuantMode::kAsymmetric ? 0.0 : 1.0;
    EXPECT_GE(sym, expected_low);
    EXPECT_LE(sym, expected_high);
  }
}

TEST(GroupQuant, RejectsMismatchedBuffers) {
  const GroupFormat format = GroupFormat::make(2, 32, QuantMode::kAsymmetric);
  const std::vector<float> x(40);
  EXPECT_EQ(error_of([&] { quantize(format, x); }),
            "40 values are not a multiple of the group size 32");
  const std::vector<uint8_t> records(13);
  EXPECT_EQ(error_of([&] { dequantize(format, records); }),
            "record buffer of 13 bytes is not a whole number of 12-byte group records");
}

}  // namespace
}  // namespace innerq::quant
