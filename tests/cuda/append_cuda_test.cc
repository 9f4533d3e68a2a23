// GPU quantize-on-append writes the same bytes as the CPU cache: the K
// middle tiles (keys divided by the key-normalization factors) and the V
// G-token blocks of channel tiles, for every bit width and mode.
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "innerq/attn/cuda/device_attention.h"
#include "innerq/base/error.h"
#include "innerq/base/fp16.h"
#include "innerq/kv/layer_caches.h"
#include "append_cases.h"
#include "cuda_test_util.h"

namespace innerq::attn::cuda {
namespace {

using Case = ::innerq::test::AppendCase;

class AppendMatchesCpu : public ::testing::TestWithParam<Case> {};

// The rows that a region of the CPU cache quantized, as its f16 windows held
// them: tokens [begin, begin + n) of every head → [heads][n][D].
std::vector<f16_bits> f16_rows(const std::vector<float>& x, int n_kv_heads, int head_dim, int begin,
                               int n) {
  std::vector<f16_bits> rows(static_cast<size_t>(n_kv_heads) * n * head_dim);
  for (int h = 0; h < n_kv_heads; ++h) {
    for (int t = 0; t < n; ++t) {
      for (int c = 0; c < head_dim; ++c) {
        rows[(static_cast<size_t>(h) * n + t) * head_dim + c] =
            f32_to_f16(x[(static_cast<size_t>(begin + t) * n_kv_heads + h) * head_dim + c]);
      }
    }
  }
  return rows;
}

TEST_P(AppendMatchesCpu, SameBytesAsCpuCache) {
  INNERQ_REQUIRE_CUDA_DEVICE();
  const Case& c = GetParam();
  const kv::CacheSpec spec = kv::parse_cache_spec(c.spec);
  kv::KvCache cache(kv::CacheShape{1, c.n_kv_heads, c.head_dim, c.n_tokens}, spec.layer);
  std::vector<float> k, v;
  test::synthetic_kv(c.n_tokens, c.n_kv_heads, c.head_dim, 42u, k, v);
  cache.append(0, k.data(), v.data(), c.n_tokens);
  const auto& layer = static_cast<const kv::InnerQLayerCache&>(cache.layer(0));
  const int S = layer.sink_tokens(), D = c.head_dim, H = c.n_kv_heads;

  // K middle.
  const int k_mid = layer.k_middle_tokens();
  ASSERT_GT(k_mid, 0) << c.spec;
  std::vector<float> key_norm;
  for (int h = 0; h < H; ++h)
    key_norm.insert(key_norm.end(), layer.key_norm(h), layer.key_norm(h) + D);
  const std::vector<uint8_t> k_gpu =
      append_keys_on_device(f16_rows(k, H, D, S, k_mid), key_norm, H, k_mid, D, spec.layer);
  const size_t k_bytes =
      static_cast<size_t>(k_mid + kTileRows - 1) / kTileRows * layer.k_format().bytes();
  ASSERT_EQ(k_gpu.size(), k_bytes * H);
  for (int h = 0; h < H; ++h) {
    const std::vector<uint8_t> want_bytes = layer.k_tiles(h);
    const uint8_t* want = want_bytes.data();
    for (size_t i = 0; i < k_bytes; ++i) {
      ASSERT_EQ(k_gpu[h * k_bytes + i], want[i]) << c.spec << ": K head " << h << " byte " << i
                                                 << " of tile " << i / layer.k_format().bytes();
    }
  }

  // V middle.
  const int v_mid = layer.v_middle_tokens(), G = spec.layer.group;
  ASSERT_GT(v_mid, 0) << c.spec;
  const std::vector<uint8_t> v_gpu =
      append_values_on_device(f16_rows(v, H, D, S, v_mid), H, v_mid / G, D, spec.layer);
  const size_t v_bytes =
      static_cast<size_t>(v_mid / G) * (D / kTileRows) * layer.v_format().bytes();
  ASSERT_EQ(v_gpu.size(), v_bytes * H);
  for (int h = 0; h < H; ++h) {
    const std::vector<uint8_t> want_bytes = layer.v_blocks(h);
    const uint8_t* want = want_bytes.data();
    for (size_t i = 0; i < v_bytes; ++i) {
      ASSERT_EQ(v_gpu[h * v_bytes + i], want[i]) << c.spec << ": V head " << h << " byte " << i
                                                 << " of tile " << i / layer.v_format().bytes();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, AppendMatchesCpu,
                         ::testing::ValuesIn(::innerq::test::kAppendCases));

TEST(AppendOnDevice, RejectsNonFiniteValues) {
  INNERQ_REQUIRE_CUDA_DEVICE();
  const kv::CacheSpec spec = kv::parse_cache_spec("innerq-paper");
  std::vector<f16_bits> rows(static_cast<size_t>(16) * 128, f32_to_f16(1.0f));
  rows[5] = 0x7c00;  // +inf
  const std::vector<float> key_norm(128, 1.0f);
  EXPECT_THROW(append_keys_on_device(rows, key_norm, 1, 16, 128, spec.layer), Error);
}

}  // namespace
}  // namespace innerq::attn::cuda
