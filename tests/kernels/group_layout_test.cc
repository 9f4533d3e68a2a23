// tests/kernels/group_layout_test.cc — the canonical record layout: code
// access roundtrips, hand-computed byte patterns, whole-word packing against
// the per-code definition, and the fast fp16 decode.
#include "innerq/kernels/group_format.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "innerq/kernels/quant_kernels.h"
#include "innerq/kernels/quantize_rules.h"

namespace innerq::kernels {
namespace {

std::vector<uint8_t> codes_of(int bits, int group, int (*code_at)(int i)) {
  std::vector<uint8_t> bytes(group_code_bytes(bits, group));
  for (int i = 0; i < group; ++i) write_code(bytes.data(), bits, i, code_at(i) & max_code(bits));
  return bytes;
}

TEST(GroupLayout, WriteReadRoundtrip) {
  std::mt19937 rng(1);
  for (int bits : kSupportedBits) {
    for (int group : kSupportedGroups) {
      SCOPED_TRACE("bits=" + std::to_string(bits) + " G=" + std::to_string(group));
      std::uniform_int_distribution<int> code(0, max_code(bits));
      std::vector<int> expected(group);
      std::vector<uint8_t> bytes(group_code_bytes(bits, group), 0xA5);
      for (int i = 0; i < group; ++i) write_code(bytes.data(), bits, i, expected[i] = code(rng));
      for (int i = 0; i < group; ++i) ASSERT_EQ(read_code(bytes.data(), bits, i), expected[i]) << i;
    }
  }
}

// Code i = i mod 2^b in one chunk. b = 2: code i sits in byte i mod 8 at bits
// 2·⌊i/8⌋, and codes i, i+8, i+16, i+24 share a value, so byte j = (j mod 4)·0x55.
// b = 3 adds a 1-bit plane of bit 2 = ⌊i/4⌋ mod 2 at bit ⌊i/4⌋ of byte i mod 4: 0xAA.
// b = 4: byte j holds codes j and j+16, both j: 0x11·j. b = 8: byte i = i.
TEST(GroupLayout, HandComputedBytePatterns) {
  const std::vector<uint8_t> b2 = {0x00, 0x55, 0xAA, 0xFF, 0x00, 0x55, 0xAA, 0xFF};
  EXPECT_EQ(codes_of(2, 32, [](int i) { return i; }), b2);
  std::vector<uint8_t> b3 = b2;
  b3.insert(b3.end(), {0xAA, 0xAA, 0xAA, 0xAA});
  EXPECT_EQ(codes_of(3, 32, [](int i) { return i; }), b3);
  std::vector<uint8_t> b4(16), b8(32);
  for (int j = 0; j < 16; ++j) b4[j] = static_cast<uint8_t>(0x11 * j);
  for (int i = 0; i < 32; ++i) b8[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(codes_of(4, 32, [](int i) { return i; }), b4);
  EXPECT_EQ(codes_of(8, 32, [](int i) { return i; }), b8);
  // A second chunk follows the first: b = 2, G = 64, chunk 1 all code 3.
  std::vector<uint8_t> b2_64 = b2;
  b2_64.insert(b2_64.end(), 8, 0xFF);
  EXPECT_EQ(codes_of(2, 64, [](int i) { return i < 32 ? i : 3; }), b2_64);
}

// x_i = i mod 4 at b = 2, asymmetric: lo = 0, hi = 3 → s = 1, z = 0, codes
// i mod 4; record = codes, fp16(1.0) = 0x3C00, fp16(0) = 0x0000 (little-endian).
TEST(GroupLayout, HandComputedAsymmetricRecord) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i % 4);
  const GroupSpec spec{2, 32, QuantMode::kAsymmetric};
  const std::vector<uint8_t> expected = {0x00, 0x55, 0xAA, 0xFF, 0x00, 0x55,
                                         0xAA, 0xFF, 0x00, 0x3C, 0x00, 0x00};
  std::vector<uint8_t> record(spec.record_bytes());
  scalar::quantize_row(spec, x.data(), 1, record.data());
  EXPECT_EQ(record, expected);
  simd::quantize_row(spec, x.data(), 1, record.data());
  EXPECT_EQ(record, expected);
}

// x_i = (i mod 4) − 2 at b = 2, symmetric, rule s = absmax/2^(b−1): absmax 2
// → s = 1, u = x + 2 = i mod 4; scale 0x3C00 with the sym flag = 0xBC00.
TEST(GroupLayout, HandComputedSymmetricRecord) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i % 4) - 2.0f;
  const GroupSpec spec{2, 32, QuantMode::kSymmetric};
  const std::vector<uint8_t> expected = {0x00, 0x55, 0xAA, 0xFF, 0x00,
                                         0x55, 0xAA, 0xFF, 0x00, 0xBC};
  std::vector<uint8_t> record(spec.record_bytes());
  scalar::quantize_row(spec, x.data(), 1, record.data());
  EXPECT_EQ(record, expected);
  simd::quantize_row(spec, x.data(), 1, record.data());
  EXPECT_EQ(record, expected);
}

TEST(GroupLayout, WholeWordPackingMatchesPerCodeDefinition) {
  std::mt19937 rng(2);
  for (int bits : kSupportedBits) {
    SCOPED_TRACE("bits=" + std::to_string(bits));
    std::uniform_int_distribution<int> code(0, max_code(bits));
    for (int trial = 0; trial < 50; ++trial) {
      uint8_t codes[kChunk], packed[32], by_definition[32] = {}, unpacked[kChunk];
      for (int i = 0; i < kChunk; ++i) {
        codes[i] = static_cast<uint8_t>(code(rng));
        write_code(by_definition, bits, i, codes[i]);
      }
      pack_chunk(codes, bits, packed);
      ASSERT_EQ(std::memcmp(packed, by_definition, group_code_bytes(bits, kChunk)), 0);
      unpack_chunk(packed, bits, unpacked);
      for (int i = 0; i < kChunk; ++i) ASSERT_EQ(unpacked[i], read_code(packed, bits, i)) << i;
    }
  }
}

TEST(GroupLayout, FastFp16DecodeMatchesOnEveryFinitePattern) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    if ((h & 0x7C00) == 0x7C00) continue;  // Inf / NaN are never stored
    const float fast = f16_to_f32_finite(static_cast<f16_bits>(h));
    const float reference = f16_to_f32(static_cast<f16_bits>(h));
    ASSERT_EQ(std::bit_cast<uint32_t>(fast), std::bit_cast<uint32_t>(reference)) << h;
  }
}

TEST(GroupLayout, DirectedFp16Rounding) {
  for (float x : {0.1f, -0.1f, 1000.3f, -1000.3f, 1e-7f, -1e-7f, 0.0f, 1.0f, 65504.0f, -65504.0f}) {
    SCOPED_TRACE(x);
    const f16_bits down = f16_round_down(x), up = f16_round_up(x);
    EXPECT_LE(f16_to_f32(down), x);
    EXPECT_GE(f16_to_f32(up), x);
    const bool exact = f16_to_f32(f32_to_f16(x)) == x;
    EXPECT_EQ(exact ? f16_to_f32(down) : f16_to_f32(f16_next_up(down)), f16_to_f32(up));
  }
}

}  // namespace
}  // namespace innerq::kernels
