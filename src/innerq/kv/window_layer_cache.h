// innerq/kv/window_layer_cache.h — the cache of a sliding-window attention
// layer: its last `window` positions, in f16, in a ring of fixed size.
//
// A sliding-window layer (Gemma 3's local layers) attends to the newest
// `window` positions only, so older ones are never read again and are
// overwritten. The ring has window + kWindowSpare slots and position p lives
// in slot p mod slots(): the spare slots still hold the kWindowSpare
// positions just before the window, so that many newest positions can be
// dropped (truncate) even after the ring wrapped — the step a failed or
// rejected decode takes back — and the window before them is whole again.
// The ring is allocated once, with the sequence (calloc: pages become
// resident as they are written), so an append never allocates; its bytes are
// what MemoryPlan plans for the layer (window_ring_bytes). It is kept in f16
// whatever the `--kv` spec says (docs/architecture.md, "Sliding-window
// layers"). The layouts are those of the plain f16 cache (K in 16-token tiles
// transposed [tile][D][16], V rows [slot][D]), in slot order, not position
// order: attention does not depend on the order in which it reads the
// tokens, and RoPE was applied before the keys were stored.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>

#include "innerq/base/fp16.h"
#include "innerq/kernels/tile_format.h"
#include "innerq/kv/kv_cache.h"

namespace innerq::kv {

// Slots a ring keeps beyond its window: one 16-token tile. Up to this many
// newest positions can be dropped after the ring wrapped.
inline constexpr int kWindowSpare = kTileRows;

class WindowLayerCache final : public LayerCache {
 public:
  // Throws innerq::Error unless window > 0, or when the ring cannot be
  // allocated.
  WindowLayerCache(int window, int n_kv_heads, int head_dim);
  WindowLayerCache(const WindowLayerCache& other);  // a copy of the ring (fork)

  MemoryUsage memory() const override;  // the positions attention reads
  size_t reserved_bytes() const override;
  // Slots are not in position order: attn::window_attention reads the ring;
  // this throws innerq::Error.
  void segments(int head, HeadSegments& out) const override;
  std::unique_ptr<LayerCache> clone() const override {
    return std::make_unique<WindowLayerCache>(*this);
  }
  // Possible while the ring still holds every position the shorter
  // sequence's window covers: always before it wrapped, and for up to
  // kWindowSpare dropped positions after.
  void check_truncate(int n_tokens) const override;
  void truncate(int n_tokens) override;
  void save(ByteWriter& out) const override;
  void load(ByteReader& in) override;

  int window() const { return window_; }
  int slots() const { return window_ + kWindowSpare; }
  // Positions attention reads: the last n_held() = min(n_tokens(), window()).
  int n_held() const { return n_tokens_ < window_ ? n_tokens_ : window_; }
  // The oldest position the ring still holds (at least n_tokens() − slots()).
  int first_held() const { return first_held_; }
  int slot(int64_t position) const { return static_cast<int>(position % slots()); }
  // Slots of positions [first, first + count) (count <= slots()), in
  // position order: one run, or two where the ring wraps. Returns the number
  // of runs; run r is slots [start[r], start[r] + length[r]).
  struct SlotRuns {
    int n = 0;
    int start[2] = {0, 0}, length[2] = {0, 0};
  };
  SlotRuns runs(int64_t first, int count) const;
  // The rows of positions [first, first + count) (held ones) of a KV head
  // in position order, as f32: out [count][head_dim]; K (or V when value).
  void rows_f32(int head, int64_t first, int count, bool value, float* out) const;
  const f16_bits* k_tiles(int head) const {  // [ceil(slots/16)][D][16]
    return ring_.get() + static_cast<size_t>(head) * k_head_elems();
  }
  const f16_bits* v_rows(int head) const {  // [slots][D]
    return ring_.get() + static_cast<size_t>(n_kv_heads_) * k_head_elems() +
           static_cast<size_t>(head) * v_head_elems();
  }

 private:
  struct Free {
    void operator()(f16_bits* p) const { std::free(p); }
  };

  std::array<SlotRange, 2> slots_written(int) const override { return {}; }
  // Sliding-window layers are read in chunks through attn::WindowChunk, not
  // steps: `steps` keeps its defaults.
  void store(const float* k, const float* v, int n_tokens, AppendScratch& scratch,
             ChunkSteps* steps) override;
  size_t k_head_elems() const {
    return static_cast<size_t>((slots() + kTileRows - 1) / kTileRows) * kTileRows * head_dim_;
  }
  size_t v_head_elems() const { return static_cast<size_t>(slots()) * head_dim_; }
  f16_bits* k_tiles_mut(int head) { return const_cast<f16_bits*>(k_tiles(head)); }
  f16_bits* v_rows_mut(int head) { return const_cast<f16_bits*>(v_rows(head)); }
  // K and V of `position` (held) into its slot, from f16 rows [D].
  void put(int64_t position, int head, const f16_bits* k, const f16_bits* v);

  int window_;
  int first_held_ = 0;
  std::unique_ptr<f16_bits[], Free> ring_;  // K tiles of every head, then V rows of every head
};

}  // namespace innerq::kv
