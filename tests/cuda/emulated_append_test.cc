// The quantize-on-append kernels run on the CPU (block_emulator.h: every
// thread of the grid in turn; they share nothing) write the same bytes as the
// CPU cache — the device-free twin of append_cuda_test.
#include "block_emulator.h"

#include <gtest/gtest.h>

#include <climits>
#include <ostream>
#include <vector>

#include "innerq/base/fp16.h"
#include "innerq/kernels/cuda/append_device.cuh"
#include "innerq/kv/layer_caches.h"
#include "append_cases.h"
#include "cuda_test_util.h"

namespace innerq::cuda {
namespace {

template <typename Params, typename Kernel>
void run_grid(const Params& p, long long n_threads, Kernel kernel) {
  for (long long i = 0; i < n_threads; ++i) {
    blockIdx = {static_cast<unsigned>(i / kAppendThreads), 0, 0};
    threadIdx = {static_cast<unsigned>(i % kAppendThreads), 0, 0};
    kernel(p);
  }
}

// Tokens [begin, begin + n) of every head as the f16 windows held them:
// [heads][n][D].
std::vector<uint16_t> f16_rows(const std::vector<float>& x, int heads, int head_dim, int begin,
                               int n) {
  std::vector<uint16_t> rows(static_cast<size_t>(heads) * n * head_dim);
  for (int h = 0; h < heads; ++h) {
    for (int t = 0; t < n; ++t) {
      for (int c = 0; c < head_dim; ++c) {
        rows[(static_cast<size_t>(h) * n + t) * head_dim + c] =
            f32_to_f16(x[(static_cast<size_t>(begin + t) * heads + h) * head_dim + c]);
      }
    }
  }
  return rows;
}

using Case = ::innerq::test::AppendCase;

class EmulatedAppend : public ::testing::TestWithParam<Case> {};

TEST_P(EmulatedAppend, SameBytesAsCpuCache) {
  const Case& c = GetParam();
  const kv::CacheSpec spec = kv::parse_cache_spec(c.spec);
  const kv::LayerConfig& cfg = spec.layer;
  kv::KvCache cache(kv::CacheShape{1, c.n_kv_heads, c.head_dim, c.n_tokens}, cfg);
  std::vector<float> k, v;
  test::synthetic_kv(c.n_tokens, c.n_kv_heads, c.head_dim, 42u, k, v);
  cache.append(0, k.data(), v.data(), c.n_tokens);
  const auto& layer = static_cast<const kv::InnerQLayerCache&>(cache.layer(0));
  const int S = layer.sink_tokens(), D = c.head_dim, H = c.n_kv_heads, G = cfg.group;
  int bad = INT_MAX;

  const int k_mid = layer.k_middle_tokens();
  ASSERT_GT(k_mid, 0);
  const std::vector<uint16_t> k_rows = f16_rows(k, H, D, S, k_mid);
  std::vector<float> key_norm;
  for (int h = 0; h < H; ++h)
    key_norm.insert(key_norm.end(), layer.key_norm(h), layer.key_norm(h) + D);
  const size_t k_bytes =
      static_cast<size_t>(k_mid + kTileRows - 1) / kTileRows * layer.k_format().bytes();
  std::vector<uint8_t> k_tiles(k_bytes * H);
  const AppendKeysParams kp{k_rows.data(),
                            key_norm.data(),
                            k_tiles.data(),
                            &bad,
                            static_cast<size_t>(k_mid) * D,
                            k_bytes,
                            H,
                            k_mid,
                            D,
                            0,
                            cfg.k_bits,
                            cfg.key_group(),
                            cfg.k_mode};
  run_grid(kp, static_cast<long long>(H) * k_mid * (D / cfg.key_group()), append_keys_kernel);
  ASSERT_EQ(bad, INT_MAX);
  for (int h = 0; h < H; ++h) {
    for (size_t i = 0; i < k_bytes; ++i) {
      ASSERT_EQ(k_tiles[h * k_bytes + i], layer.k_tiles(h)[i]) << "K head " << h << " byte " << i;
    }
  }

  const int v_mid = layer.v_middle_tokens();
  ASSERT_GT(v_mid, 0);
  const std::vector<uint16_t> v_rows = f16_rows(v, H, D, S, v_mid);
  const size_t v_bytes =
      static_cast<size_t>(v_mid / G) * (D / kTileRows) * layer.v_format().bytes();
  std::vector<uint8_t> v_blocks(v_bytes * H);
  const AppendValuesParams vp{v_rows.data(),
                              v_blocks.data(),
                              &bad,
                              static_cast<size_t>(v_mid) * D,
                              v_bytes,
                              H,
                              v_mid / G,
                              D,
                              0,
                              cfg.v_bits,
                              G,
                              cfg.v_mode};
  run_grid(vp, static_cast<long long>(H) * (v_mid / G) * D, append_values_kernel);
  ASSERT_EQ(bad, INT_MAX);
  for (int h = 0; h < H; ++h) {
    for (size_t i = 0; i < v_bytes; ++i) {
      ASSERT_EQ(v_blocks[h * v_bytes + i], layer.v_blocks(h)[i]) << "V head " << h << " byte " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, EmulatedAppend,
                         ::testing::ValuesIn(::innerq::test::kAppendCases));

}  // namespace
}  // namespace innerq::cuda
