// The device readers of device_format.cuh and the group quantizer of
// quantize_group.cuh, run on the host against the CPU definitions: pack_chunk
// (quantize_rules.h), read_code, tile_store_row, decode_meta and the scalar
// quantize_row. Needs no GPU, so it runs in the default suite of every CUDA
// build.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "innerq/kernels/cuda/device_format.cuh"
#include "innerq/kernels/cuda/quantize_group.cuh"
#include "innerq/kernels/quant_kernels.h"
#include "innerq/kernels/quantize_rules.h"
#include "innerq/kernels/tile_format.h"

namespace innerq::cuda {
namespace {

// Random records of `n` groups of (bits, group, has_zero), finite metadata.
std::vector<uint8_t> random_records(int bits, int group, bool has_zero, int n, unsigned seed) {
  std::mt19937 rng(seed);
  const size_t record =
      group_record_bytes(bits, group, has_zero ? QuantMode::kHybrid : QuantMode::kSymmetric);
  std::vector<uint8_t> out(record * n);
  for (int g = 0; g < n; ++g) {
    uint8_t* r = out.data() + record * g;
    for (int i = 0; i < group; ++i) write_code(r, bits, i, static_cast<int>(rng() % (1u << bits)));
    const f16_bits scale = static_cast<f16_bits>(rng() % 0x7c00u) | (rng() % 2 ? kSymFlag : 0);
    kernels::store_f16(r + group_code_bytes(bits, group), scale);
    if (has_zero) {
      kernels::store_f16(r + group_code_bytes(bits, group) + 2,
                         static_cast<f16_bits>(rng() % 0x7c00u | (rng() % 2 ? 0x8000u : 0u)));
    }
  }
  return out;
}

template <int B>
void expect_chunk_unpacks(unsigned seed) {
  std::mt19937 rng(seed);
  uint8_t codes[kChunk], chunk[4 * B];
  for (uint8_t& c : codes) c = static_cast<uint8_t>(rng() % (1u << B));
  kernels::pack_chunk(codes, B, chunk);
  uint32_t words[B];
  for (int w = 0; w < B; ++w) words[w] = kernels::load_u32(chunk + 4 * w);
  uint32_t quads[8];
  unpack_chunk<B>(words, quads);
  for (int m = 0; m < 8; ++m) {
    EXPECT_EQ(chunk_quad<B>(words, m), quads[m]) << "bits " << B << " quad " << m;
    for (int e = 0; e < 4; ++e) {
      ASSERT_EQ((quads[m] >> (8 * e)) & 0xffu, codes[4 * m + e])
          << "bits " << B << " code " << 4 * m + e << " seed " << seed;
    }
  }
}

TEST(DeviceFormat, UnpackChunkInvertsPackChunk) {
  for (unsigned seed = 0; seed < 50; ++seed) {
    expect_chunk_unpacks<2>(seed);
    expect_chunk_unpacks<3>(seed);
    expect_chunk_unpacks<4>(seed);
    expect_chunk_unpacks<8>(seed);
  }
}

TEST(DeviceFormat, ScalarReadersMatchReadCode) {
  for (const int bits : kSupportedBits) {
    for (const int group : kSupportedGroups) {
      const std::vector<uint8_t> rec = random_records(bits, group, true, 1, bits * 1000u + group);
      for (int i = 0; i < group; ++i) {
        ASSERT_EQ(device_read_code(rec.data(), bits, i), read_code(rec.data(), bits, i))
            << "bits " << bits << " group " << group << " code " << i;
      }
    }
  }
}

// Tiles built by tile_store_row, read back code by code: K-style (D/G groups
// per row) and V-style (one group per row) formats.
TEST(DeviceFormat, TileReaderMatchesTileStoreRow) {
  for (const int bits : kSupportedBits) {
    for (const int group : kSupportedGroups) {
      for (const int n_groups : {1, 128 / group}) {
        for (const bool has_zero : {false, true}) {
          const TileFormat f{bits, group, n_groups, has_zero};
          const size_t record = group_code_bytes(bits, group) + (has_zero ? 4 : 2);
          std::vector<uint8_t> tile(f.bytes());
          std::vector<std::vector<uint8_t>> rows;
          for (int r = 0; r < kTileRows; ++r) {
            rows.push_back(random_records(bits, group, has_zero, n_groups, 7u * r + bits + group));
            tile_store_row(f, rows.back().data(), tile.data(), r);
          }
          const auto* words = reinterpret_cast<const uint32_t*>(tile.data());
          const auto* scales = reinterpret_cast<const f16_bits*>(tile.data() + f.scales_offset());
          const auto* zeros = reinterpret_cast<const f16_bits*>(tile.data() + f.zeros_offset());
          for (int r = 0; r < kTileRows; ++r) {
            for (int g = 0; g < n_groups; ++g) {
              const uint8_t* rec = rows[r].data() + record * g;
              const uint32_t* group_words =
                  words + static_cast<size_t>(g) * f.words_per_group() * kTileRows;
              for (int i = 0; i < group; ++i) {
                ASSERT_EQ(tile_read_code(group_words, bits, r, i), read_code(rec, bits, i))
                    << "bits " << bits << " group " << group << " groups/row " << n_groups
                    << " row " << r << " g " << g << " code " << i;
              }
              const f16_bits zero_bits = has_zero ? zeros[g * kTileRows + r] : f16_bits{0};
              const DeviceMeta got =
                  decode_meta_device(scales[g * kTileRows + r], zero_bits, has_zero, bits);
              const GroupMeta want =
                  kernels::read_meta_finite(rec, group_code_bytes(bits, group), has_zero, bits);
              EXPECT_EQ(got.scale, want.scale);
              EXPECT_EQ(got.zero, want.zero);
              const DeviceMeta from_record = record_meta_device(rec, bits, group, has_zero);
              EXPECT_EQ(from_record.scale, want.scale);
              EXPECT_EQ(from_record.zero, want.zero);
            }
          }
        }
      }
    }
  }
}

// Rows of n_groups groups: gaussian, outliers, and the degenerate groups the
// quantization rules name (kernels/quant_kernels.h: all equal, all zero,
// signed zeros, fp16 extremes).
std::vector<float> test_row(int group, int n_groups, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(group) * n_groups);
  for (float& v : x) v = normal(rng) * (rng() % 17 == 0 ? 20.0f : 1.0f);
  const int kind = static_cast<int>(seed % 6);
  float* g0 = x.data();
  for (int i = 0; i < group; ++i) {
    if (kind == 1) g0[i] = 3.25f;                         // all equal
    if (kind == 2) g0[i] = 0.0f;                          // all zero
    if (kind == 3) g0[i] = i % 2 ? -0.0f : 0.0f;          // signed zeros
    if (kind == 4) g0[i] = i % 3 ? 65504.0f : -65504.0f;  // fp16 extremes
    if (kind == 5) g0[i] = std::ldexp(normal(rng), -20);  // fp16 subnormal scales
  }
  return x;
}

TEST(DeviceQuantize, TileBytesEqualCpuQuantizer) {
  for (const int bits : kSupportedBits) {
    for (const int group : kSupportedGroups) {
      for (const QuantMode mode :
           {QuantMode::kSymmetric, QuantMode::kAsymmetric, QuantMode::kHybrid}) {
        const kernels::GroupSpec spec{bits, group, mode};
        const int n_groups = 128 / group;
        const TileFormat f{bits, group, n_groups, mode_has_zero(mode)};
        std::vector<uint8_t> want(f.bytes()), got(f.bytes());
        std::vector<uint8_t> records(spec.record_bytes() * n_groups);
        for (int row = 0; row < kTileRows; ++row) {
          const std::vector<float> x =
              test_row(group, n_groups, static_cast<unsigned>(row * 131 + bits * 7 + group));
          kernels::scalar::quantize_row(spec, x.data(), static_cast<size_t>(n_groups),
                                        records.data());
          tile_store_row(f, records.data(), want.data(), row);
          for (int g = 0; g < n_groups; ++g) {
            QuantizedGroup q;
            ASSERT_TRUE(quantize_group(x.data() + g * group, group, bits, mode, q));
            store_group_in_tile(q, f, got.data(), g, row);
          }
        }
        for (size_t i = 0; i < want.size(); ++i) {
          ASSERT_EQ(got[i], want[i]) << "bits " << bits << " group " << group << " mode "
                                     << static_cast<int>(mode) << " tile byte " << i;
        }
      }
    }
  }
}

TEST(DeviceQuantize, RejectsNonFiniteAndOutOfRange) {
  std::vector<float> x(32, 1.0f);
  QuantizedGroup q;
  x[3] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(quantize_group(x.data(), 32, 3, QuantMode::kHybrid, q));
  x[3] = std::nanf("");
  EXPECT_FALSE(quantize_group(x.data(), 32, 3, QuantMode::kHybrid, q));
  x[3] = 70000.0f;
  EXPECT_FALSE(quantize_group(x.data(), 32, 3, QuantMode::kHybrid, q));
}

}  // namespace
}  // namespace innerq::cuda
