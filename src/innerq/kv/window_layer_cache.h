// innerq/kv/window_layer_cache.h — the cache of a sliding-window attention
// layer: only the last `window` positions, in f16, as a ring.
//
// A sliding-window layer (Gemma 3's local layers) attends to the newest
// `window` positions only, so older ones are never read again and are
// overwritten: the position p lives in slot p mod window. Its memory is
// bounded by the window, not the context, and it is kept in f16 whatever the
// `--kv` spec says (docs/architecture.md, "Sliding-window layers"). The
// layouts are those of the plain f16 cache (K in 16-token tiles transposed
// [tile][D][16], V rows [slot][D]), but in slot order, not position order:
// attention does not depend on the order in which it reads the tokens, and
// RoPE was applied before the keys were stored.
#pragma once

#include <vector>

#include "innerq/base/fp16.h"
#include "innerq/kv/kv_cache.h"

namespace innerq::kv {

class WindowLayerCache final : public LayerCache {
 public:
  // Throws innerq::Error unless window > 0.
  WindowLayerCache(int window, int n_kv_heads, int head_dim);

  // k, v: [n_tokens, n_kv_heads, head_dim] at positions n_tokens()...; rows
  // that a later row of the same call overwrites are skipped.
  void append(const float* k, const float* v, int n_tokens) override;
  MemoryUsage memory() const override;
  size_t reserved_bytes() const override { return memory().total(); }
  // Slots are not in position order: attn::window_attention reads the ring;
  // this throws innerq::Error.
  void segments(int head, HeadSegments& out) const override;
  std::unique_ptr<LayerCache> clone() const override {
    return std::make_unique<WindowLayerCache>(*this);
  }
  // Possible only while the ring has not wrapped (n_tokens() <= window):
  // a wrapped ring overwrote the positions that would have to come back.
  void truncate(int n_tokens) override;
  void save(ByteWriter& out) const override;
  void load(ByteReader& in) override;

  int window() const { return window_; }
  // Positions held: min(n_tokens(), window()), in slots 0..n_held()-1.
  int n_held() const { return n_tokens_ < window_ ? n_tokens_ : window_; }
  const f16_bits* k_tiles(int head) const {  // [ceil(n_held/16)][D][16]
    return k_[static_cast<size_t>(head)].data();
  }
  const f16_bits* v_rows(int head) const {  // [n_held][D]
    return v_[static_cast<size_t>(head)].data();
  }

 private:
  int window_;
  std::vector<std::vector<f16_bits>> k_, v_;  // per KV head, grown up to the window
};

}  // namespace innerq::kv
