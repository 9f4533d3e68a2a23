// Window and flush invariants of the caches over many random appends, token
// order, key normalization computed once, and exact memory accounting.
#include "innerq/kv/kv_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/kernels/hadamard.h"
#include "innerq/kernels/quant_kernels.h"
#include "innerq/kv/layer_caches.h"

namespace innerq::kv {
namespace {

constexpr int kHeads = 2;
constexpr int kDim = 64;

// A distinctive value for (token, head, channel), with an outlier channel.
float key_value(int t, int h, int c) {
  const float x = std::sin(0.37f * static_cast<float>(t) + 1.3f * static_cast<float>(c) + h);
  return c == 5 ? 20.0f * x : x;
}
float value_value(int t, int h, int c) {
  return std::cos(0.11f * static_cast<float>(t) * (1 + c % 3) + 0.7f * static_cast<float>(h + c));
}

void make_rows(int first, int n, std::vector<float>& k, std::vector<float>& v) {
  k.resize(static_cast<size_t>(n) * kHeads * kDim);
  v.resize(k.size());
  for (int i = 0; i < n; ++i) {
    for (int h = 0; h < kHeads; ++h) {
      for (int c = 0; c < kDim; ++c) {
        const size_t at = (static_cast<size_t>(i) * kHeads + h) * kDim + c;
        k[at] = key_value(first + i, h, c);
        v[at] = value_value(first + i, h, c);
      }
    }
  }
}

float f16_round(float x) {
  return f16_to_f32(f32_to_f16(x));
}

// Rows of an F16Rows window equal the f16-rounded appended tokens.
void expect_window(const F16Rows& rows, int first_token, int head, bool keys) {
  for (int i = 0; i < rows.size(); ++i) {
    for (int c = 0; c < kDim; c += 7) {
      const float want =
          keys ? key_value(first_token + i, head, c) : value_value(first_token + i, head, c);
      ASSERT_EQ(f16_to_f32(rows.row(i)[c]), f16_round(want))
          << "token " << first_token + i << " channel " << c;
    }
  }
}

// Row `row` of a tile decoded by the scalar quant reference.
std::vector<float> decode_tile_row(const TileFormat& f, QuantMode mode, const uint8_t* tile,
                                   int row, std::vector<float>* scales) {
  const kernels::GroupSpec spec{f.bits, f.group, mode};
  std::vector<uint8_t> records(f.n_groups * spec.record_bytes());
  tile_load_row(f, tile, row, records.data());
  std::vector<float> x(static_cast<size_t>(f.n_groups) * f.group);
  kernels::scalar::dequantize_row(spec, records.data(), f.n_groups, x.data());
  scales->clear();
  for (int g = 0; g < f.n_groups; ++g) {
    scales->push_back(kernels::record_meta(spec, records.data() + g * spec.record_bytes()).scale);
  }
  return x;
}

TEST(InnerQCache, WindowsFlushAndOrderOverRandomAppends) {
  LayerConfig config;  // the reference configuration
  config.sink = 32;
  config.recent = 96;
  const int S = config.sink, R = config.recent, G = config.group;
  InnerQLayerCache cache(config, kHeads, kDim);
  std::mt19937 rng(7);
  std::vector<float> k, v, first_norm;
  int n = 0;
  for (int append = 0; append < 10000; ++append) {
    // Mostly decode steps, sometimes a prefill-sized burst.
    const int count =
        rng() % 50 == 0 ? 1 + static_cast<int>(rng() % 300) : 1 + static_cast<int>(rng() % 3);
    make_rows(n, count, k, v);
    cache.append(k.data(), v.data(), count);
    n += count;
    SCOPED_TRACE(::testing::Message() << "after append " << append << ", " << n << " tokens");

    ASSERT_EQ(cache.n_tokens(), n);
    ASSERT_EQ(cache.sink_tokens(), std::min(n, S));
    const int after_sink = n - cache.sink_tokens();
    ASSERT_EQ(cache.k_recent_tokens(), std::min(after_sink, R));  // K window exactly R
    ASSERT_EQ(cache.v_middle_tokens() % G, 0);
    if (after_sink >= R) {  // V window slides between R and R+G−1, never below R
      ASSERT_GE(cache.v_recent_tokens(), R);
      ASSERT_LE(cache.v_recent_tokens(), R + G - 1);
    } else {
      ASSERT_EQ(cache.v_recent_tokens(), after_sink);
    }
    for (int h = 0; h < kHeads; ++h) {
      ASSERT_EQ(cache.k_recent(h).size(), cache.k_recent_tokens());
      ASSERT_EQ(cache.v_recent(h).size(), cache.v_recent_tokens());
    }
    // Normalization: computed at the first flush, never again.
    if (cache.k_middle_tokens() > 0) {
      ASSERT_TRUE(cache.has_key_norm());
      const float* f = cache.key_norm(0);
      if (first_norm.empty()) first_norm.assign(f, f + kDim);
      for (int c = 0; c < kDim; ++c) ASSERT_EQ(f[c], first_norm[static_cast<size_t>(c)]);
    } else {
      ASSERT_FALSE(cache.has_key_norm());
    }
  }
  // Token order in every region of both heads.
  for (int h = 0; h < kHeads; ++h) {
    expect_window(cache.k_sink(h), 0, h, true);
    expect_window(cache.v_sink(h), 0, h, false);
    expect_window(cache.k_recent(h), S + cache.k_middle_tokens(), h, true);
    expect_window(cache.v_recent(h), S + cache.v_middle_tokens(), h, false);
    // K middle: decoded · f within a scale of the f16-rounded key, token by token.
    const float* f = cache.key_norm(h);
    std::vector<float> scales;
    for (int i = 0; i < cache.k_middle_tokens(); i += 97) {
      const std::vector<float> x =
          decode_tile_row(cache.k_format(), config.k_mode,
                          cache.k_tiles(h).data() + (i / kTileRows) * cache.k_format().bytes(),
                          i % kTileRows, &scales);
      for (int c = 0; c < kDim; ++c) {
        // Within s/2, or s for a clipped positive extreme (sym rule), plus rounding.
        const float bound = scales[static_cast<size_t>(c / G)] * f[c] * 1.01f;
        ASSERT_NEAR(x[static_cast<size_t>(c)] * f[c], f16_round(key_value(S + i, h, c)), bound)
            << "middle token " << S + i << " channel " << c;
      }
    }
  }
}

TEST(InnerQCache, PrefillNormalizesOverEveryPromptKey) {
  LayerConfig config;
  InnerQLayerCache cache(config, kHeads, kDim);
  std::vector<float> k, v;
  const int n = 500;
  make_rows(0, n, k, v);
  cache.append(k.data(), v.data(), n);
  for (int h = 0; h < kHeads; ++h) {
    for (int c = 0; c < kDim; ++c) {
      float max = 0.0f;
      for (int t = config.sink; t < n; ++t)
        max = std::max(max, std::fabs(f16_round(key_value(t, h, c))));
      EXPECT_FLOAT_EQ(cache.key_norm(h)[c], std::sqrt(max)) << "head " << h << " channel " << c;
    }
  }
}

TEST(KiviCache, ResidualRulesOverRandomAppends) {
  const LayerConfig config = parse_cache_spec("kivi").layer;
  KiviLayerCache cache(config, kHeads, kDim);
  std::mt19937 rng(11);
  std::vector<float> k, v;
  int n = 0;
  for (int append = 0; append < 2000; ++append) {
    const int count = 1 + static_cast<int>(rng() % (append % 40 == 0 ? 400 : 3));
    make_rows(n, count, k, v);
    cache.append(k.data(), v.data(), count);
    n += count;
    SCOPED_TRACE(::testing::Message() << n << " tokens");
    ASSERT_EQ(cache.k_quant_tokens() % config.group, 0);
    ASSERT_LT(n - cache.k_quant_tokens(), config.recent);  // K residual flushes whole at R
    ASSERT_EQ(n - cache.v_quant_tokens(), std::min(n, config.recent));  // V slides by one
    ASSERT_EQ(cache.k_residual(0).size(), n - cache.k_quant_tokens());
  }
  expect_window(cache.k_residual(1), cache.k_quant_tokens(), 1, true);
  expect_window(cache.v_residual(1), cache.v_quant_tokens(), 1, false);
}

// Memory accounting equals the sum of the parts, computed here from the
// region sizes and the formats.
TEST(KvCache, MemoryIsTheSumOfTheParts) {
  const CacheShape shape{3, kHeads, kDim, 100000};
  for (const char* text :
       {"f32", "f16", "q8_0", "q4_0", "kivi", "kivi4", "innerq",
        "innerq-paper:k=4,v=4,kmode=hybrid,vmode=asym", "innerq-paper:sink=0,recent=0",
        "innerq-paper:kg=64,g=32,kcenter=on,knorm=rms"}) {
    SCOPED_TRACE(text);
    const CacheSpec spec = parse_cache_spec(text);
    KvCache cache(shape, spec.layer);
    std::vector<float> k, v;
    for (int n : {1, 31, 300, 1000}) {
      make_rows(0, n, k, v);
      for (int l = 0; l < shape.n_layers; ++l) cache.append(l, k.data(), v.data(), n);
    }
    const int n = cache.n_tokens();
    ASSERT_EQ(n, 1332);
    const size_t heads = static_cast<size_t>(shape.n_layers) * kHeads;
    const size_t f16_row = kDim * 2;
    MemoryUsage want;
    const LayerConfig& c = spec.layer;
    switch (c.kind) {
      case CacheKind::kF32:
        want.windows = heads * ((n + 15) / 16 * 16 + n) * kDim * 4;
        break;
      case CacheKind::kF16:
        want.windows = heads * ((n + 15) / 16 * 16 + n) * f16_row;
        break;
      case CacheKind::kQ8_0:
        want.codes = heads * 2 * n * kDim;
        want.metadata = heads * 2 * n * (kDim / 32) * 2;
        break;
      case CacheKind::kQ4_0:
        want.codes = heads * 2 * n * kDim / 2;
        want.metadata = heads * 2 * n * (kDim / 32) * 2;
        break;
      case CacheKind::kKivi: {
        const int kq = n / c.recent * c.recent, vq = n - c.recent;
        // (The kernels' 16-byte tail pad is part of each block's region,
        // counted by reserved_bytes(), not by the contents.)
        want.codes = heads * (static_cast<size_t>(kq + vq) * kDim * c.k_bits / 8);
        want.metadata = heads * static_cast<size_t>(kq + vq) * (kDim / c.group) * 4;
        want.windows = heads * static_cast<size_t>(n - kq + n - vq) * f16_row;
        break;
      }
      case CacheKind::kInnerQ: {
        const int S = std::min(n, c.sink), after = n - S;
        const int k_recent = std::min(after, c.recent), k_mid = after - k_recent;
        const int v_mid = std::max(0, (after - c.recent) / c.group) * c.group;
        const TileFormat kf{c.k_bits, c.key_group(), kDim / c.key_group(), mode_has_zero(c.k_mode)};
        const TileFormat vf{c.v_bits, c.group, 1, mode_has_zero(c.v_mode)};
        const size_t k_tiles = (k_mid + 15) / 16, v_tiles = v_mid / c.group * (kDim / 16);
        want.codes = heads * (k_tiles * kf.code_bytes() + v_tiles * vf.code_bytes());
        want.metadata = heads * (k_tiles * kf.meta_bytes() + v_tiles * vf.meta_bytes());
        want.windows = heads * static_cast<size_t>(2 * S + k_recent + (after - v_mid)) * f16_row;
        want.norm = (k_mid > 0 && c.knorm != KeyNorm::kOff ? heads * kDim * 4 : 0) +
                    (k_mid > 0 && c.kcenter ? heads * kDim * 4 : 0);
        break;
      }
    }
    const MemoryUsage got = cache.memory();
    EXPECT_EQ(got.codes, want.codes);
    EXPECT_EQ(got.metadata, want.metadata);
    EXPECT_EQ(got.windows, want.windows);
    EXPECT_EQ(got.norm, want.norm);
    EXPECT_EQ(cache.bytes_f16_equivalent(), heads * 2 * n * f16_row);
  }
}

// Each layer may have its own kind, bits and modes; memory adds up per layer.
TEST(KvCache, PerLayerConfigurations) {
  const std::vector<LayerConfig> layers = {
      parse_cache_spec("f16").layer, parse_cache_spec("innerq-paper:k=4,v=4").layer,
      parse_cache_spec("innerq-paper:k=2,v=2,vmode=sym").layer, parse_cache_spec("kivi").layer};
  const CacheShape shape{4, kHeads, kDim, 1000};
  KvCache mixed(shape, layers);
  std::vector<float> k, v;
  make_rows(0, 700, k, v);
  for (int l = 0; l < 4; ++l) mixed.append(l, k.data(), v.data(), 700);
  MemoryUsage sum;
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(mixed.layer(l).kind(), layers[static_cast<size_t>(l)].kind);
    KvCache alone(CacheShape{1, kHeads, kDim, 1000}, layers[static_cast<size_t>(l)]);
    alone.append(0, k.data(), v.data(), 700);
    sum += alone.memory();
  }
  EXPECT_EQ(mixed.layer(1).config().k_bits, 4);
  EXPECT_EQ(mixed.layer(2).config().v_mode, QuantMode::kSymmetric);
  EXPECT_EQ(mixed.memory().total(), sum.total());
  EXPECT_THROW(KvCache(shape, std::vector<LayerConfig>(3)), Error);  // one config per layer
}

// A config whose fields `innerq` still chooses by head_dim is resolved by
// the cache (and its plan) for the shape's head_dim, as CacheSpec::layers()
// resolves it: the same cache either way.
TEST(KvCache, ResolvesHeadDimChoicesOfTheConfig) {
  const LayerConfig innerq = parse_cache_spec("innerq").layer;
  ASSERT_NE(innerq.by_head_dim, 0u);
  for (const int head_dim : {64, 256}) {
    SCOPED_TRACE(head_dim);
    const CacheShape shape{2, 1, head_dim, 512};
    const KvCache cache(shape, innerq);
    const LayerConfig want = parse_cache_spec("innerq").layers(2, head_dim)[0];
    const LayerConfig& got = cache.layer(1).config();
    EXPECT_EQ(got.by_head_dim, 0u);
    EXPECT_EQ(describe(got), describe(want));
    EXPECT_EQ(got.k_bits, head_dim >= 256 ? 4 : 3);
    EXPECT_EQ(got.rot_k, head_dim < 256);
    EXPECT_EQ(plan_memory(shape, {innerq, innerq}).layer(0, 512).block_bytes,
              plan_memory(shape, {want, want}).layer(0, 512).block_bytes);
  }
}

TEST(KvCache, RejectsBadShapesAndOverflow) {
  const LayerConfig innerq;
  EXPECT_THROW(KvCache(CacheShape{0, 2, 64, 10}, innerq), Error);
  EXPECT_THROW(KvCache(CacheShape{1, 2, 48, 10}, innerq), Error);  // 48 % 32
  EXPECT_THROW(KvCache(CacheShape{1, 2, 8, 10}, parse_cache_spec("q8_0").layer), Error);
  KvCache cache(CacheShape{1, 1, 64, 4}, parse_cache_spec("f16").layer);
  std::vector<float> row(64 * 5, 1.0f);
  cache.append(0, row.data(), row.data(), 4);
  EXPECT_THROW(cache.append(0, row.data(), row.data(), 1), Error);
  EXPECT_THROW(cache.append(1, row.data(), row.data(), 1), Error);
}

TEST(KvCache, NonFiniteKeysAreRejectedWhenQuantized) {
  KvCache cache(CacheShape{1, 1, 64, 1000}, parse_cache_spec("innerq-paper:sink=0,recent=0").layer);
  std::vector<float> k(64, 1.0f), v(64, 1.0f);
  k[3] = NAN;
  EXPECT_THROW(cache.append(0, k.data(), v.data(), 1), Error);
}

// A step that fails part-way through the layers leaves them at different
// lengths; a cache marked failed refuses every use until clear().
TEST(KvCache, FailedCacheRefusesUseUntilCleared) {
  const CacheShape shape{3, 2, 64, 8};
  KvCache cache(shape, parse_cache_spec("innerq").layer);
  std::vector<float> k(128, 0.5f), v(128, -0.25f);
  for (int l = 0; l < 3; ++l) cache.append(l, k.data(), v.data(), 1);
  EXPECT_TRUE(cache.layers_agree());
  cache.append(0, k.data(), v.data(), 1);  // layer 0 one token ahead
  EXPECT_FALSE(cache.layers_agree());
  cache.mark_failed("layer 1: test failure");
  ASSERT_TRUE(cache.failed());
  try {
    cache.append(1, k.data(), v.data(), 1);
    FAIL() << "append on a failed cache must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1: test failure"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cache.require_usable(), Error);
  EXPECT_THROW(cache.check_append(1, k.data(), v.data(), 1), Error);
  cache.clear();
  EXPECT_FALSE(cache.failed());
  EXPECT_EQ(cache.n_tokens(), 0);
  EXPECT_TRUE(cache.layers_agree());
  cache.append(0, k.data(), v.data(), 1);
  EXPECT_EQ(cache.layer(0).n_tokens(), 1);
}

// check_append() refuses what append() refuses, and stores nothing.
TEST(KvCache, CheckAppendRefusesWhatAppendRefusesAndStoresNothing) {
  const CacheShape shape{2, 2, 64, 2};
  for (const char* spec : {"f16", "q4_0:rot=kv", "kivi", "innerq"}) {
    SCOPED_TRACE(spec);
    KvCache cache(shape, parse_cache_spec(spec).layer);
    std::vector<float> k(128, 0.5f), v(128, 0.5f);
    cache.check_append(0, k.data(), v.data(), 1);
    EXPECT_EQ(cache.layer(0).n_tokens(), 0);
    k[5] = std::nanf("");
    EXPECT_THROW(cache.check_append(0, k.data(), v.data(), 1), Error);
    EXPECT_THROW(cache.append(0, k.data(), v.data(), 1), Error);
    k[5] = 0.5f;
    v[127] = 1e6f;  // beyond f16
    EXPECT_THROW(cache.check_append(1, k.data(), v.data(), 1), Error);
    v[127] = 0.5f;
    EXPECT_THROW(cache.check_append(0, k.data(), v.data(), 3), Error);  // past max_tokens
    EXPECT_EQ(cache.layer(0).n_tokens(), 0);
    EXPECT_EQ(cache.layer(1).n_tokens(), 0);
  }
}

// The planned bytes equal a filled cache's, for every kind, at lengths
// around every window and period boundary (and far past them).
TEST(KvCache, PlannedMemoryEqualsAFilledCache) {
  const int n_kv_heads = 2, head_dim = 64;
  std::mt19937 rng(7);
  for (const char* spec :
       {"f32", "f16", "q8_0", "q4_0:rot=kv", "kivi", "kivi4", "innerq", "innerq-paper",
        "innerq:k=4,v=4,g=32", "innerq:g=128,kg=32,sink=0,recent=16", "innerq:sink=5,recent=3",
        "kivi:g=64,recent=128", "innerq-paper:ksort=on,kcenter=on"}) {
    SCOPED_TRACE(spec);
    const LayerConfig c = parse_cache_spec(spec).layer;
    std::vector<int> lengths = {0, 1, 15, 16, 17, 31, 32, 33, 127, 128, 129, 255, 256, 257};
    for (int i = 0; i < 6; ++i) lengths.push_back(300 + static_cast<int>(rng() % 2500));
    lengths.push_back(4096 + 77);
    for (int n : lengths) {
      KvCache real(CacheShape{1, n_kv_heads, head_dim, std::max(n, 1)}, c);
      std::vector<float> rows(static_cast<size_t>(n) * n_kv_heads * head_dim);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (float& x : rows) x = normal(rng);
      if (n > 0) real.append(0, rows.data(), rows.data(), n);
      const MemoryUsage want = real.memory();
      const MemoryUsage got = plan_layer_memory(c, n_kv_heads, head_dim, n);
      EXPECT_EQ(got.codes, want.codes) << n;
      EXPECT_EQ(got.metadata, want.metadata) << n;
      EXPECT_EQ(got.windows, want.windows) << n;
      EXPECT_EQ(got.norm, want.norm) << n;
    }
  }
  // Far past what could be filled here: no allocation, just arithmetic.
  const LayerConfig c = parse_cache_spec("innerq").layer;
  const MemoryUsage big = plan_layer_memory(c, 8, 128, int64_t{1} << 24);
  EXPECT_GT(big.total(), size_t{1} << 30);
  EXPECT_THROW(plan_layer_memory(c, 8, 128, -1), Error);
}

// Rotation keeps a row's norm, not its maximum: a key whose rotation puts
// 100000 in one element has elements of only ±12500 (100000/√64), so it fits
// f16 element by element; a rotated cache must refuse it, an unrotated one
// takes it.
TEST(KvCache, RotatedRowsAreCheckedAfterRotation) {
  const CacheShape shape{1, 1, 64, 4};
  std::vector<float> k(64, 0.0f), v(64, 0.5f);
  k[5] = 100000.0f;
  kernels::simd::hadamard_rotate(k.data(), 1, 64, /*inverse=*/true);
  for (float x : k) ASSERT_LE(std::fabs(x), 12501.0f);
  KvCache plain(shape, parse_cache_spec("f16").layer);
  plain.check_append(0, k.data(), v.data(), 1);
  plain.append(0, k.data(), v.data(), 1);
  const std::vector<float> small(64, 1000.0f);  // norm 8000: accepted without rotating
  for (const char* spec : {"f16:rot=k", "q4_0:rot=kv", "innerq"}) {
    SCOPED_TRACE(spec);
    KvCache rotated(shape, parse_cache_spec(spec).layer);
    EXPECT_THROW(rotated.check_append(0, k.data(), v.data(), 1), Error);
    EXPECT_THROW(rotated.append(0, k.data(), v.data(), 1), Error);
    EXPECT_EQ(rotated.layer(0).n_tokens(), 0);
    rotated.check_append(0, small.data(), v.data(), 1);
    rotated.append(0, small.data(), v.data(), 1);
    EXPECT_EQ(rotated.layer(0).n_tokens(), 1);
  }
}

// Moving a cache onto another gives the old one's blocks back to the old
// pool before that pool goes with it (the cache may be its last owner:
// a defaulted move assignment would free the pool first and then release
// blocks into freed memory, which the sanitizer build reports), and the
// moved-in sequence carries on in its own pool.
TEST(KvCache, MoveAssignmentReturnsBlocksBeforeItsPoolGoes) {
  const CacheShape shape{2, kHeads, kDim, 2048};
  std::vector<float> k(static_cast<size_t>(700) * kHeads * kDim), v(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = std::sin(0.01f * static_cast<float>(i));
    v[i] = std::cos(0.013f * static_cast<float>(i));
  }
  for (const char* spec : {"f16", "kivi", "innerq"}) {
    SCOPED_TRACE(spec);
    const LayerConfig config = parse_cache_spec(spec).layer;
    KvCache a(shape, config);  // a private pool, held by `a` alone
    for (int l = 0; l < 2; ++l) a.append(l, k.data(), v.data(), 700);
    const std::weak_ptr<KvPool> private_pool = a.pool();
    auto shared = std::make_shared<KvPool>(shape, std::vector<LayerConfig>{config, config}, 8);
    {
      KvCache b(shared);
      for (int l = 0; l < 2; ++l) b.append(l, k.data(), v.data(), 300);
      a = std::move(b);
    }
    EXPECT_TRUE(private_pool.expired());
    EXPECT_EQ(a.pool(), shared);
    EXPECT_EQ(a.n_tokens(), 300);
    for (int l = 0; l < 2; ++l) a.append(l, k.data() + 300 * kHeads * kDim, v.data(), 100);
    EXPECT_EQ(a.n_tokens(), 400);
    KvCache c(std::move(a));  // and a move construction keeps the blocks where they are
    EXPECT_EQ(c.n_tokens(), 400);
    a = KvCache(shape, config);  // a moved-from cache takes a new one
    EXPECT_EQ(a.n_tokens(), 0);
    c = KvCache(shape, config);  // the shared pool gets every block back
    EXPECT_EQ(shared->layer(0)->n_free(), 8);
    EXPECT_EQ(shared->layer(1)->n_free(), 8);
  }
}

}  // namespace
}  // namespace innerq::kv
