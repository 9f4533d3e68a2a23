// The ring of a sliding-window layer: after any sequence of appends it holds
// exactly the last `window` positions (f16-rounded, each in slot p mod
// window), its memory equals the plan, and a KvCache builds it for the
// layers its shape marks.
#include "innerq/kv/window_layer_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/base/fp16.h"
#include "innerq/kernels/tile_format.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"

namespace innerq::kv {
namespace {

constexpr int kHeads = 2;
constexpr int kDim = 32;

float key_value(int t, int h, int c) {
  return std::sin(0.37f * static_cast<float>(t) + 1.3f * static_cast<float>(c) + h);
}
float value_value(int t, int h, int c) {
  return std::cos(0.11f * static_cast<float>(t) * (1 + c % 3) + 0.7f * static_cast<float>(h + c));
}

// Rows for positions first..first+n-1: [n, kHeads, kDim].
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

// The ring holds positions max(0, n − window)..n−1 (and the spare slots'
// positions before them), position p in slot p mod (window + spare), for K
// (tiles) and V (rows).
void expect_holds_last_window(const WindowLayerCache& c) {
  const int n = c.n_tokens(), w = c.window();
  ASSERT_EQ(c.n_held(), std::min(n, w));
  ASSERT_EQ(c.slots(), w + kWindowSpare);
  ASSERT_LE(c.first_held(), std::max(0, n - w));
  for (int p = c.first_held(); p < n; ++p) {
    const int slot = p % c.slots();
    ASSERT_EQ(c.slot(p), slot);
    for (int h = 0; h < kHeads; ++h) {
      const f16_bits* tile =
          c.k_tiles(h) + static_cast<size_t>(slot / kTileRows) * kDim * kTileRows;
      for (int ch = 0; ch < kDim; ++ch) {
        ASSERT_EQ(f16_to_f32(tile[ch * kTileRows + slot % kTileRows]),
                  f16_round(key_value(p, h, ch)))
            << "key of position " << p << ", head " << h << ", channel " << ch;
        ASSERT_EQ(f16_to_f32(c.v_rows(h)[static_cast<size_t>(slot) * kDim + ch]),
                  f16_round(value_value(p, h, ch)))
            << "value of position " << p << ", head " << h << ", channel " << ch;
      }
    }
  }
}

TEST(WindowLayerCache, HoldsTheLastWindowAfterAnyAppends) {
  // Appends of 1, of less than a window, of exactly one, and of more than
  // one (a prompt longer than the window: only its tail survives).
  for (const int window : {1, 6, 16, 20, 37}) {
    for (const std::vector<int>& steps :
         {std::vector<int>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
          std::vector<int>{5, 1, 1, 30, 2, 1, 17}, std::vector<int>{100, 1, 1, 1},
          std::vector<int>{window, 1, window, window - 1, 3}}) {
      WindowLayerCache c(window, kHeads, kDim);
      int pos = 0;
      std::vector<float> k, v;
      for (const int n : steps) {
        make_rows(pos, n, k, v);
        c.append(k.data(), v.data(), n);
        pos += n;
        ASSERT_EQ(c.n_tokens(), pos);
        expect_holds_last_window(c);
        EXPECT_EQ(c.memory().total(), plan_window_layer_memory(window, kHeads, kDim, pos).total())
            << "window " << window << " after " << pos << " positions";
      }
    }
  }
}

TEST(WindowLayerCache, MemoryIsBoundedByTheWindow) {
  const MemoryUsage at_window = plan_window_layer_memory(512, 1, 256, 512);
  EXPECT_EQ(at_window.total(), size_t{512} * 256 * 2 * sizeof(f16_bits));
  EXPECT_EQ(plan_window_layer_memory(512, 1, 256, 1 << 20).total(), at_window.total());
  EXPECT_EQ(plan_window_layer_memory(512, 1, 256, 0).total(), 0u);
  EXPECT_THROW(plan_window_layer_memory(0, 1, 256, 8), Error);
  EXPECT_THROW(plan_window_layer_memory(8, 1, 256, -1), Error);
  EXPECT_THROW(WindowLayerCache(0, 1, 32), Error);
}

TEST(WindowLayerCache, KvCacheBuildsWindowLayersFromItsShape) {
  const CacheShape shape{3, kHeads, kDim, 64, {8, 0, 8}};
  KvCache cache(shape, LayerConfig{});  // innerq everywhere but the windowed layers
  EXPECT_NE(dynamic_cast<const WindowLayerCache*>(&cache.layer(0)), nullptr);
  EXPECT_EQ(dynamic_cast<const WindowLayerCache*>(&cache.layer(1)), nullptr);
  EXPECT_EQ(cache.layer(1).kind(), CacheKind::kInnerQ);
  EXPECT_EQ(cache.layer(2).kind(), CacheKind::kF16);
  std::vector<float> k, v;
  make_rows(0, 20, k, v);
  for (int l = 0; l < 3; ++l) cache.append(l, k.data(), v.data(), 20);
  EXPECT_EQ(cache.n_tokens(), 20);
  EXPECT_TRUE(cache.layers_agree());
  // f16 equivalent: the windowed layers count the 8 positions they keep.
  EXPECT_EQ(cache.bytes_f16_equivalent(), size_t{8 + 20 + 8} * 2 * kHeads * kDim * 2);
  cache.clear();
  EXPECT_EQ(cache.n_tokens(), 0);
  EXPECT_NE(dynamic_cast<const WindowLayerCache*>(&cache.layer(2)), nullptr);
}

TEST(WindowLayerCache, BadWindowsAreRefused) {
  EXPECT_THROW(KvCache(CacheShape{3, kHeads, kDim, 64, {8, 0}}, LayerConfig{}), Error);
  EXPECT_THROW(KvCache(CacheShape{2, kHeads, kDim, 64, {8, -1}}, LayerConfig{}), Error);
}

// The ring keeps kWindowSpare positions beyond its window, so after it
// wrapped, dropping up to that many newest positions and appending others
// gives exactly the ring of a sequence that never had them; one more is
// refused by name before anything changes.
TEST(WindowLayerCache, TruncatesUpToItsSpareAfterWrapping) {
  for (const int window : {1, 20, 37}) {
    const int n = 3 * (window + kWindowSpare) + 5;  // wrapped three times
    std::vector<float> k, v;
    WindowLayerCache c(window, kHeads, kDim);
    for (int p = 0; p < n; ++p) {
      make_rows(p, 1, k, v);
      c.append(k.data(), v.data(), 1);
    }
    for (int drop = 1; drop <= kWindowSpare; ++drop) {
      SCOPED_TRACE(::testing::Message() << "window " << window << ", dropping " << drop);
      WindowLayerCache t(c);
      t.check_truncate(n - drop);
      t.truncate(n - drop);
      ASSERT_EQ(t.n_tokens(), n - drop);
      expect_holds_last_window(t);
      // The spare is used up: one position more would need one the ring
      // overwrote.
      EXPECT_THROW(t.check_truncate(n - kWindowSpare - 1), Error);
      // Positions n − drop.. again, with the rows a longer sequence has.
      make_rows(n - drop, drop + 3, k, v);
      t.append(k.data(), v.data(), drop + 3);
      expect_holds_last_window(t);
    }
    WindowLayerCache t(c);
    try {
      t.check_truncate(n - kWindowSpare - 1);
      ADD_FAILURE() << "dropped more positions than the ring keeps";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("sliding-window layer"), std::string::npos) << what;
      EXPECT_NE(what.find(std::to_string(kWindowSpare) + " can be dropped"), std::string::npos)
          << what;
    }
    expect_holds_last_window(t);
  }
}

// The ring is allocated whole with the sequence: reserved_bytes() is the
// ring's, from the first position on, and MemoryPlan plans exactly that
// (window_ring_bytes); memory() counts the positions attention reads.
TEST(WindowLayerCache, ReservedBytesAreTheRingAndEqualThePlan) {
  const CacheShape shape{3, kHeads, kDim, 2048, {20, 0, 512}};
  const std::vector<LayerConfig> configs(3, parse_cache_spec("f16").layer);
  const MemoryPlan plan = plan_memory(shape, configs);
  KvCache cache(shape, configs);
  EXPECT_EQ(cache.layer(0).reserved_bytes(), window_ring_bytes(20, kHeads, kDim));
  EXPECT_EQ(window_ring_bytes(512, 1, 256),
            size_t{512 + kWindowSpare} * 256 * 2 * sizeof(f16_bits));
  std::vector<float> k, v;
  int n = 0;
  for (const int step : {1, 15, 4, 500, 8, 1, 600}) {
    make_rows(n, step, k, v);
    for (int l = 0; l < 3; ++l) cache.append(l, k.data(), v.data(), step);
    n += step;
    SCOPED_TRACE(::testing::Message() << n << " positions");
    EXPECT_EQ(cache.reserved_bytes(), plan.sequence_bytes(n));
    for (int l = 0; l < 3; ++l) {
      EXPECT_EQ(cache.layer(l).memory().total(), plan.layer(l, n).content.total()) << l;
    }
  }
}

}  // namespace
}  // namespace innerq::kv
