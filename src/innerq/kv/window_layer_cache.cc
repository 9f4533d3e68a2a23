// The ring of a sliding-window layer (window_layer_cache.h).
#include "innerq/kv/window_layer_cache.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/kernels/f16_convert.h"

namespace innerq::kv {
namespace {

LayerConfig window_config() {
  LayerConfig c;
  c.kind = CacheKind::kF16;
  return c;
}

}  // namespace

WindowLayerCache::WindowLayerCache(int window, int n_kv_heads, int head_dim)
    : LayerCache(window_config(), n_kv_heads, head_dim), window_(window) {
  if (window <= 0) throw Error(fmt::format("window cache: window {} must be positive", window));
  const size_t bytes = window_ring_bytes(window, n_kv_heads, head_dim);
  ring_.reset(static_cast<f16_bits*>(std::calloc(bytes, 1)));
  if (ring_ == nullptr) {
    throw Error(fmt::format("window cache: cannot allocate a ring of {} bytes", bytes));
  }
}

WindowLayerCache::WindowLayerCache(const WindowLayerCache& o)
    : WindowLayerCache(o.window_, o.n_kv_heads_, o.head_dim_) {
  n_tokens_ = o.n_tokens_;
  first_held_ = o.first_held_;
  layer_index_ = o.layer_index_;
  // Slots fill from 0 up: the held positions are in the first
  // min(n_tokens, slots) (the rest stay untouched pages).
  const int used = std::min(n_tokens_, slots());
  const size_t D = static_cast<size_t>(head_dim_);
  for (int h = 0; h < n_kv_heads_; ++h) {
    std::memcpy(
        k_tiles_mut(h), o.k_tiles(h),
        static_cast<size_t>((used + kTileRows - 1) / kTileRows) * kTileRows * D * sizeof(f16_bits));
    std::memcpy(v_rows_mut(h), o.v_rows(h), static_cast<size_t>(used) * D * sizeof(f16_bits));
  }
}

WindowLayerCache::SlotRuns WindowLayerCache::runs(int64_t first, int count) const {
  SlotRuns r;
  if (count <= 0) return r;
  const int s0 = slot(first);
  const int head = std::min(count, slots() - s0);
  r.start[0] = s0;
  r.length[0] = head;
  r.n = 1;
  if (head < count) {
    r.start[1] = 0;
    r.length[1] = count - head;
    r.n = 2;
  }
  return r;
}

void WindowLayerCache::put(int64_t position, int head, const f16_bits* k, const f16_bits* v) {
  const size_t D = static_cast<size_t>(head_dim_);
  const int s = slot(position);
  f16_bits* tile = k_tiles_mut(head) + static_cast<size_t>(s / kTileRows) * D * kTileRows;
  for (size_t c = 0; c < D; ++c) tile[c * kTileRows + s % kTileRows] = k[c];
  std::memcpy(v_rows_mut(head) + static_cast<size_t>(s) * D, v, D * sizeof(f16_bits));
}

void WindowLayerCache::store(const float* k, const float* v, int n_tokens, AppendScratch& scratch,
                             ChunkSteps*) {
  const size_t D = static_cast<size_t>(head_dim_);
  const size_t per_token = static_cast<size_t>(n_kv_heads_) * D;
  auto* rows = reinterpret_cast<f16_bits*>(at_least(scratch.converted, 2 * D * sizeof(f16_bits)));
  // Only the last slots() rows of this call survive it.
  for (int i = std::max(0, n_tokens - slots()); i < n_tokens; ++i) {
    for (int h = 0; h < n_kv_heads_; ++h) {
      const size_t at = static_cast<size_t>(i) * per_token + static_cast<size_t>(h) * D;
      kernels::f32_to_f16(k + at, D, rows);
      kernels::f32_to_f16(v + at, D, rows + D);
      put(int64_t{n_tokens_} + i, h, rows, rows + D);
    }
  }
  n_tokens_ += n_tokens;
  first_held_ = std::max(first_held_, n_tokens_ - slots());
}

MemoryUsage WindowLayerCache::memory() const {
  return plan_window_layer_memory(window_, n_kv_heads_, head_dim_, n_tokens_);
}

size_t WindowLayerCache::reserved_bytes() const {
  return window_ring_bytes(window_, n_kv_heads_, head_dim_);
}

void WindowLayerCache::segments(int, HeadSegments&) const {
  // A ring holds positions in slot order and fewer than n_tokens() of them.
  throw Error("decode attention: a sliding-window layer is read by attn::window_attention");
}

void WindowLayerCache::rows_f32(int head, int64_t first, int count, bool value, float* out) const {
  const int D = head_dim_;
  for (int i = 0; i < count; ++i) {
    const int s = slot(first + i);
    float* row = out + static_cast<size_t>(i) * D;
    if (value) {
      kernels::f16_to_f32(v_rows(head) + static_cast<size_t>(s) * D, static_cast<size_t>(D), row);
    } else {
      const f16_bits* tile = k_tiles(head) + static_cast<size_t>(s / kTileRows) * D * kTileRows;
      for (int c = 0; c < D; ++c) row[c] = f16_to_f32(tile[c * kTileRows + s % kTileRows]);
    }
  }
}

void WindowLayerCache::check_truncate(int n_tokens) const {
  LayerCache::check_truncate(n_tokens);
  const int needed = std::max(0, n_tokens - window_);  // the oldest position n_tokens' window reads
  if (n_tokens < n_tokens_ && needed < first_held_) {
    throw Error(fmt::format(
        "cache: layer {} is a sliding-window layer of {} positions whose ring ({} spare slots) "
        "holds positions {}..{}; dropping positions {}..{} would need position {} back (at most "
        "{} can be dropped now)",
        layer_index_, window_, kWindowSpare, first_held_, n_tokens_ - 1, n_tokens, n_tokens_ - 1,
        needed, std::max(0, n_tokens_ - first_held_ - window_)));
  }
}

void WindowLayerCache::truncate(int n_tokens) {
  // The positions n_tokens' window reads are still in their slots; those of
  // the dropped positions are free to be written again.
  n_tokens_ = n_tokens;
}

void WindowLayerCache::save(ByteWriter& out) const {
  out.put<int32_t>(n_tokens_);
  out.put<int32_t>(first_held_);
  const size_t D = static_cast<size_t>(head_dim_);
  std::vector<f16_bits> krow(D);
  for (int h = 0; h < n_kv_heads_; ++h) {
    for (int64_t p = first_held_; p < n_tokens_; ++p) {  // K and V rows in position order
      const int s = slot(p);
      const f16_bits* tile = k_tiles(h) + static_cast<size_t>(s / kTileRows) * D * kTileRows;
      for (size_t c = 0; c < D; ++c) krow[c] = tile[c * kTileRows + s % kTileRows];
      out.bytes(krow.data(), D * sizeof(f16_bits));
      out.bytes(v_rows(h) + static_cast<size_t>(s) * D, D * sizeof(f16_bits));
    }
  }
}

void WindowLayerCache::load(ByteReader& in) {
  const int n = in.get_int("tokens", 0, kMaxSavedTokens);
  const int first = in.get_int("first held position", std::max(0, n - slots()), n);
  const size_t D = static_cast<size_t>(head_dim_);
  in.require(static_cast<size_t>(n - first) * n_kv_heads_ * 2 * D * sizeof(f16_bits));
  std::vector<f16_bits> krow(D), vrow(D);
  for (int h = 0; h < n_kv_heads_; ++h) {
    for (int64_t p = first; p < n; ++p) {
      in.bytes(krow.data(), D * sizeof(f16_bits));
      in.bytes(vrow.data(), D * sizeof(f16_bits));
      put(p, h, krow.data(), vrow.data());
    }
  }
  n_tokens_ = n;
  first_held_ = first;
}

}  // namespace innerq::kv
