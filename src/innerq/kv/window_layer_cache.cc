// The ring of a sliding-window layer (window_layer_cache.h).
#include "innerq/kv/window_layer_cache.h"

#include <algorithm>
#include <cstdint>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/kernels/f16_convert.h"
#include "innerq/kernels/tile_format.h"

namespace innerq::kv {
namespace {

LayerConfig window_config() {
  LayerConfig c;
  c.kind = CacheKind::kF16;
  return c;
}

}  // namespace

WindowLayerCache::WindowLayerCache(int window, int n_kv_heads, int head_dim)
    : LayerCache(window_config(), n_kv_heads, head_dim),
      window_(window),
      k_(static_cast<size_t>(n_kv_heads)),
      v_(static_cast<size_t>(n_kv_heads)) {
  if (window <= 0) throw Error(fmt::format("window cache: window {} must be positive", window));
}

void WindowLayerCache::append(const float* k, const float* v, int n_tokens) {
  const int D = head_dim_;
  const size_t per_token = static_cast<size_t>(n_kv_heads_) * D;
  std::vector<f16_bits> krow(static_cast<size_t>(D));
  // Only the last `window` rows of this call survive it.
  const int first = std::max(0, n_tokens - window_);
  for (int h = 0; h < n_kv_heads_; ++h) {
    auto& kt = k_[static_cast<size_t>(h)];
    auto& vr = v_[static_cast<size_t>(h)];
    for (int i = first; i < n_tokens; ++i) {
      const int slot = static_cast<int>((static_cast<int64_t>(n_tokens_) + i) % window_);
      // Slots fill in order until the ring is full, so growth is at the end.
      const size_t k_need = static_cast<size_t>(slot / kTileRows + 1) * D * kTileRows;
      if (kt.size() < k_need) kt.resize(k_need, f16_bits{});
      if (vr.size() < static_cast<size_t>(slot + 1) * D)
        vr.resize(static_cast<size_t>(slot + 1) * D);
      const float* ksrc = k + static_cast<size_t>(i) * per_token + static_cast<size_t>(h) * D;
      const float* vsrc = v + static_cast<size_t>(i) * per_token + static_cast<size_t>(h) * D;
      kernels::f32_to_f16(ksrc, static_cast<size_t>(D), krow.data());
      kernels::f32_to_f16(vsrc, static_cast<size_t>(D), vr.data() + static_cast<size_t>(slot) * D);
      f16_bits* tile = kt.data() + static_cast<size_t>(slot / kTileRows) * D * kTileRows;
      for (int c = 0; c < D; ++c)
        tile[c * kTileRows + slot % kTileRows] = krow[static_cast<size_t>(c)];
    }
  }
  n_tokens_ += n_tokens;
}

MemoryUsage WindowLayerCache::memory() const {
  MemoryUsage m;
  for (int h = 0; h < n_kv_heads_; ++h) {
    m.windows +=
        (k_[static_cast<size_t>(h)].size() + v_[static_cast<size_t>(h)].size()) * sizeof(f16_bits);
  }
  return m;
}

void WindowLayerCache::segments(int, HeadSegments&) const {
  // A ring holds positions in slot order and fewer than n_tokens() of them.
  throw Error("decode attention: a sliding-window layer is read by attn::window_attention");
}

void WindowLayerCache::truncate(int n_tokens) {
  if (n_tokens == n_tokens_) return;
  if (n_tokens_ > window_) {
    throw Error(fmt::format(
        "window cache: cannot drop positions {}..{} of a sliding-window layer whose ring of {} "
        "has wrapped (the positions they overwrote are gone)",
        n_tokens, n_tokens_ - 1, window_));
  }
  // Slots follow positions until the ring wraps: the rows past n_tokens are
  // simply no longer held.
  for (int h = 0; h < n_kv_heads_; ++h) {
    auto& kt = k_[static_cast<size_t>(h)];
    auto& vr = v_[static_cast<size_t>(h)];
    kt.resize(static_cast<size_t>((n_tokens + kTileRows - 1) / kTileRows) * head_dim_ * kTileRows);
    vr.resize(static_cast<size_t>(n_tokens) * head_dim_);
  }
  n_tokens_ = n_tokens;
}

void WindowLayerCache::save(ByteWriter& out) const {
  out.put<int32_t>(n_tokens_);
  for (int h = 0; h < n_kv_heads_; ++h) {
    for (const auto* x : {&k_[static_cast<size_t>(h)], &v_[static_cast<size_t>(h)]}) {
      out.put<int64_t>(static_cast<int64_t>(x->size()));
      out.bytes(x->data(), x->size() * sizeof(f16_bits));
    }
  }
}

void WindowLayerCache::load(ByteReader& in) {
  n_tokens_ = in.get_int("tokens", 0, kMaxSavedTokens);
  const int64_t held = std::min(n_tokens_, window_);
  const int64_t k_want = (held + kTileRows - 1) / kTileRows * kTileRows * head_dim_;
  for (int h = 0; h < n_kv_heads_; ++h) {
    for (auto* x : {&k_[static_cast<size_t>(h)], &v_[static_cast<size_t>(h)]}) {
      const int64_t n = in.get<int64_t>();
      if (n != (x == &k_[static_cast<size_t>(h)] ? k_want : held * head_dim_)) {
        throw Error(fmt::format("{}: a sliding-window ring of {} values does not hold {} tokens",
                                in.what(), n, n_tokens_));
      }
      x->resize(static_cast<size_t>(n));
      in.bytes(x->data(), x->size() * sizeof(f16_bits));
    }
  }
}

}  // namespace innerq::kv
