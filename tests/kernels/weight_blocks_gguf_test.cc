// Weight block dequantize against an independent reference: random blocks of
// every format, dequantized by the `gguf` package's numpy code
// (tests/model/scripts/make_weight_blocks.py, run by CTest into the build
// tree; its path arrives in INNERQ_WEIGHT_BLOCKS_FIXTURE). Both compute each
// value with the same f32 operations in the same order (a product for the
// sub-block scale, a product for the code, then the offset), so they must
// agree bit for bit.
#include <gtest/gtest.h>

#include <bit>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "innerq/kernels/weight_blocks.h"

namespace innerq::kernels {
namespace {

constexpr const char* kHowToGenerate =
    "run this test through ctest, which writes the fixture with "
    "tests/model/scripts/make_weight_blocks.py (needs: pip install gguf numpy, or "
    "scripts/install-deps.sh)";

std::vector<uint8_t> from_hex(const std::string& hex) {
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

class WeightBlocksGguf : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* path = std::getenv("INNERQ_WEIGHT_BLOCKS_FIXTURE");
    ASSERT_NE(path, nullptr) << "INNERQ_WEIGHT_BLOCKS_FIXTURE is not set: " << kHowToGenerate;
    std::ifstream in(path);
    ASSERT_TRUE(in) << "cannot read " << path << ": " << kHowToGenerate;
    fixture_ = nlohmann::json::parse(in);
  }

  // The fixture's entry for `name`, or null.
  const nlohmann::json* find(const std::string& name) const {
    for (const auto& f : fixture_.at("formats")) {
      if (f.at("name") == name) return &f;
    }
    return nullptr;
  }

  nlohmann::json fixture_;
};

TEST_F(WeightBlocksGguf, DequantizeMatchesGgufPyBitForBit) {
  for (const WeightFormat format : kAllWeightFormats) {
    const WeightFormatInfo info = weight_format_info(format);
    const nlohmann::json* entry = find(info.name);
    ASSERT_NE(entry, nullptr) << info.name << " is missing from the fixture";
    const int64_t n = entry->at("n").get<int64_t>();
    const std::vector<uint8_t> bytes = from_hex(entry->at("bytes").get<std::string>());
    const auto expected = entry->at("values").get<std::vector<uint32_t>>();
    ASSERT_EQ(bytes.size(), static_cast<size_t>(n / info.block_values) * info.block_bytes)
        << info.name;
    ASSERT_EQ(expected.size(), static_cast<size_t>(n)) << info.name;

    std::vector<float> got(static_cast<size_t>(n));
    scalar::dequantize_rows(format, bytes.data(), bytes.size(), 1, n, got.data(), 0);
    int mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t bits = std::bit_cast<uint32_t>(got[i]);
      if (bits != expected[i] && ++mismatches <= 5) {
        ADD_FAILURE() << info.name << " value " << i << " (block " << i / info.block_values
                      << ", index " << i % info.block_values << "): innerq " << got[i]
                      << ", gguf-py " << std::bit_cast<float>(expected[i]) << " ("
                      << fixture_.at("generator").get<std::string>() << ")";
      }
    }
    EXPECT_EQ(mismatches, 0) << info.name << ": values differing from gguf-py";
  }
}

}  // namespace
}  // namespace innerq::kernels
