// innerq/kv/layer_caches.h — the concrete per-layer caches behind KvCache.
//
// All storage is per KV head. Token order is preserved in every region:
// token t of the sequence lives in exactly one region of K and one of V, and
// each region's accessors count tokens from that region's first token.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "innerq/base/fp16.h"
#include "innerq/kernels/llama_blocks.h"
#include "innerq/kernels/tile_format.h"
#include "innerq/kv/block_pool.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/kv/segments.h"

namespace innerq::kv {

// ---------------------------------------------------------------------------
// f16 rows [n][head_dim] — sink windows, recent windows, residuals. A
// per-sequence buffer of fixed capacity (the window's bound, allocated and
// zeroed at construction, so decode never allocates); only an append larger
// than the window (a prefill into InnerQ's recent windows) grows it, by
// make_room() before anything is stored, and trim() gives the excess back.
// ---------------------------------------------------------------------------
class F16Rows {
 public:
  F16Rows(int head_dim = 0, int capacity = 0);
  void push(const float* row);  // [head_dim]
  void push_f16(const f16_bits* row);
  // Rows [first, first + n) in f32: out [n][head_dim].
  void to_f32(int first, int n, float* out) const;
  void pop_front(int n);  // drops the oldest n rows
  void pop_back(int n);   // drops the newest n rows
  // Every live row r becomes f16(r − mu) (mu: [head_dim]), clamped to ±65504;
  // row: [head_dim] scratch.
  void subtract(const float* mu, float* row);
  // Room for n more rows, so the next n pushes never reallocate; throws
  // (std::bad_alloc) with the rows unchanged.
  void make_room(int n);
  // Back to `capacity` rows of storage when an append grew it beyond and the
  // live rows fit again (best effort: without memory for the smaller buffer
  // it keeps the larger one).
  void trim();
  int size() const { return count_; }
  int head_dim() const { return head_dim_; }
  int capacity() const { return static_cast<int>(data_.size() / std::max(head_dim_, 1)); }
  const f16_bits* row(int i) const {
    return data_.data() + (front_ + i) * static_cast<size_t>(head_dim_);
  }
  // Bytes held by live rows.
  size_t bytes() const { return static_cast<size_t>(size()) * head_dim_ * sizeof(f16_bits); }
  // Bytes reserved (what the sequence holds in memory for this window).
  size_t reserved_bytes() const { return data_.size() * sizeof(f16_bits); }
  // Live rows as a count and raw f16, and back (at most max_rows rows).
  void save(ByteWriter& out) const;
  void load(ByteReader& in, int max_rows);

 private:
  f16_bits* slot_for_push();

  int head_dim_;
  int bound_;      // rows reserved at construction
  int front_ = 0;  // rows before front_ are dead; compacted when the end is reached
  int count_ = 0;
  std::vector<f16_bits> data_;
};

// ---------------------------------------------------------------------------
// What each token of an append would have seen, had the tokens been appended
// one at a time (LayerCache::append with steps; docs/architecture.md,
// "Chunked extend"). New token i (position first + i) sees the positions
// below k_end[i] (v_end[i]) as they are stored after the append — sink and
// quantized middle, whose bytes do not depend on how the tokens came — and
// the positions from there to its own as the f16 window held them then:
// rows k_end[i] − k_rows_from ... of k_rows (v_rows), per KV head. Kinds
// without windows store every token the same way whenever it comes: for
// them k_end[i] = v_end[i] = first + i + 1 and the rows stay empty.
// Reused from call to call and layer to layer (its buffers only grow).
// ---------------------------------------------------------------------------
struct ChunkSteps {
  int first = 0;                         // position of the append's first token
  int n = 0;                             // tokens appended
  std::vector<int> k_end, v_end;         // [n]
  int k_rows_from = 0, v_rows_from = 0;  // position of row 0 of k_rows / v_rows
  std::vector<F16Rows> k_rows, v_rows;   // [n_kv_heads], read when has_rows
  bool has_rows = false;                 // the kind has windows
  // Heap bytes held.
  size_t bytes() const;
};

// The members every pooled kind declares (docs/architecture.md, "The block
// pool"): a constructor taking an optional pool, and the LayerCache virtuals.
#define INNERQ_LAYER_CACHE_MEMBERS(Class)                                                   \
  Class(const LayerConfig& config, int n_kv_heads, int head_dim, BlockPool* pool = nullptr, \
        int block_tokens = kDefaultBlockTokens);                                            \
  static BlockLayout layout(const LayerConfig& config, int head_dim, int block_tokens);     \
  MemoryUsage memory() const override;                                                      \
  void segments(int head, HeadSegments& out) const override;                                \
  std::unique_ptr<LayerCache> clone() const override {                                      \
    return std::make_unique<Class>(*this);                                                  \
  }                                                                                         \
  void truncate(int n_tokens) override;                                                     \
  void save(ByteWriter& out) const override;                                                \
  void load(ByteReader& in) override;

// What each kind's append does (private: LayerCache::append calls them).
#define INNERQ_LAYER_CACHE_STORE                                                   \
  std::array<SlotRange, 2> slots_written(int n_tokens) const override;             \
  void store(const float* k, const float* v, int n_tokens, AppendScratch& scratch, \
             ChunkSteps* steps) override;

// ---------------------------------------------------------------------------
// f32 / f16: one plain region, all in blocks. K is kept in 16-token tiles
// transposed to [tile][head_dim][16] so the score kernel puts lanes over
// tokens; V is row-major [token][head_dim] so p·V puts lanes over channels.
// ---------------------------------------------------------------------------
template <typename T>
class PlainLayerCache final : public LayerCache {
 public:
  INNERQ_LAYER_CACHE_MEMBERS(PlainLayerCache)

  // Block j of head h: K [B/16][D][16], V [B][D].
  const T* k_tiles(int block, int head) const {
    return reinterpret_cast<const T*>(k_read(block, head));
  }
  const T* v_rows(int block, int head) const {
    return reinterpret_cast<const T*>(v_read(block, head));
  }
  // All of a head's K tiles (ceil(n/16) of them) and V rows, contiguous.
  std::vector<T> k_tiles(int head) const;
  std::vector<T> v_rows(int head) const;

 private:
  INNERQ_LAYER_CACHE_STORE
};

using F32LayerCache = PlainLayerCache<float>;
using F16LayerCache = PlainLayerCache<f16_bits>;

// ---------------------------------------------------------------------------
// q8_0 / q4_0 (llama.cpp, kernels/llama_blocks.h): blocks of 32 along
// head_dim for K and V, every token quantized, no windows.
// ---------------------------------------------------------------------------
template <typename Block>
class LlamaBlockLayerCache final : public LayerCache {
 public:
  INNERQ_LAYER_CACHE_MEMBERS(LlamaBlockLayerCache)

 private:
  INNERQ_LAYER_CACHE_STORE
};

using Q8_0LayerCache = LlamaBlockLayerCache<BlockQ8_0>;
using Q4_0LayerCache = LlamaBlockLayerCache<BlockQ4_0>;

// ---------------------------------------------------------------------------
// KIVI (outer grouping), asymmetric, G = `group` (32), b = k_bits = v_bits.
//   K: G-token groups; per channel one group along the tokens. A group block
//      is head_dim records, channel-major (record c = channel c).
//   V: per token head_dim/G group records along channels (a quantized row).
//   Residual: the newest tokens in f16. K's residual holds up to `recent`
//   tokens and flushes all of them (whole G-token groups) when it reaches
//   `recent`; V's residual keeps exactly `recent` and flushes one token at a
//   time (KIVI's released behaviour).
// Middle slot m of K (of V) is the m-th quantized token of K (of V); block j
// holds slots [jB, (j+1)B) of both.
// ---------------------------------------------------------------------------
class KiviLayerCache final : public LayerCache {
 public:
  INNERQ_LAYER_CACHE_MEMBERS(KiviLayerCache)

  int bits() const { return config_.k_bits; }
  int group() const { return config_.group; }
  size_t k_block_bytes() const;  // head_dim records of G tokens
  size_t v_row_bytes() const;    // head_dim/G records of one token
  int k_quant_tokens() const { return k_quant_tokens_; }
  int v_quant_tokens() const { return v_quant_tokens_; }
  const F16Rows& k_residual(int head) const { return k_res_[static_cast<size_t>(head)]; }
  const F16Rows& v_residual(int head) const { return v_res_[static_cast<size_t>(head)]; }
  size_t reserved_bytes() const override;
  // The quantized K groups (V rows) of a head, contiguous, in token order.
  std::vector<uint8_t> k_blocks(int head) const;
  std::vector<uint8_t> v_rows(int head) const;
  void size_scratch(AppendScratch& scratch) const override;

 private:
  INNERQ_LAYER_CACHE_STORE
  void prepare_steps(int n_tokens, ChunkSteps& steps) const override;
  void flush_k(int head, int n_tokens, int mid, AppendScratch& scratch);
  void flush_v(int head, int n_tokens, int mid, AppendScratch& scratch);

  int k_quant_tokens_ = 0, v_quant_tokens_ = 0;
  std::vector<F16Rows> k_res_, v_res_;
};

// ---------------------------------------------------------------------------
// InnerQ (docs/architecture.md, "Cache structure"): groups along the inner
// dimension of each product.
//   K: sink (f16) | middle: per-token groups along head_dim, 16-token tiles
//      (tile_format.h), keys divided by the per-channel factor f | recent
//      (f16, exactly `recent` tokens once full; flushes one token at a time).
//   V: sink (f16) | middle: G-token blocks, each D/16 tiles of 16 channels,
//      one group per channel along the G tokens | recent (f16, between
//      `recent` and recent+G−1 tokens once full; flushes G tokens at a time).
// The middles live in pool blocks (block j: K middle slots [jB, (j+1)B) as
// B/16 tiles, V middle slots of the same range as B/G G-token blocks); sink
// and recent windows are per-sequence f16 buffers (F16Rows).
// Key normalization f[c] (per KV head) is computed once, when the first key
// is quantized, over every non-sink key present at that moment (the keys
// being quantized and the recent window): sqrtmax: f = sqrt(max|K|); rms:
// f = sqrt(rms(K)); off: f = 1. A channel that is all zero gets f = 1.
// Key centering (kcenter=on), computed at the same moment and before f: the
// per-channel mean μ of the same keys is subtracted from every key the cache
// holds then (sink, recent, the keys being quantized) and from every later
// key, so all regions store K − μ. Scores then shift by the same q·μ for
// every token, which softmax cancels exactly: attention needs no correction
// (docs/architecture.md, "Key centering").
// Channel sorting (ksort=on), fixed at the same first flush after f: the
// channels of K/f in order of decreasing max |K/f| over the same keys;
// quantized rows store them in that order, so each group holds channels of
// one size (docs/architecture.md, "Channel order"). The windows keep the
// model's order.
// ---------------------------------------------------------------------------
class InnerQLayerCache final : public LayerCache {
 public:
  INNERQ_LAYER_CACHE_MEMBERS(InnerQLayerCache)

  const TileFormat& k_format() const { return k_fmt_; }
  const TileFormat& v_format() const { return v_fmt_; }
  int sink_tokens() const { return k_sink_.empty() ? 0 : k_sink_[0].size(); }
  int k_middle_tokens() const { return k_mid_tokens_; }
  int v_middle_tokens() const { return v_mid_tokens_; }  // multiple of G
  int k_recent_tokens() const { return n_tokens_ - sink_tokens() - k_mid_tokens_; }
  int v_recent_tokens() const { return n_tokens_ - sink_tokens() - v_mid_tokens_; }
  bool has_key_norm() const { return !key_norm_.empty(); }
  size_t reserved_bytes() const override;

  const F16Rows& k_sink(int head) const { return k_sink_[static_cast<size_t>(head)]; }
  const F16Rows& v_sink(int head) const { return v_sink_[static_cast<size_t>(head)]; }
  const F16Rows& k_recent(int head) const { return k_recent_[static_cast<size_t>(head)]; }
  const F16Rows& v_recent(int head) const { return v_recent_[static_cast<size_t>(head)]; }
  // K middle of a head, contiguous: ceil(k_middle_tokens / 16) tiles of
  // k_format().bytes().
  std::vector<uint8_t> k_tiles(int head) const;
  // V middle of a head, contiguous: v_middle_tokens / G blocks, each
  // head_dim/16 tiles of v_format().bytes().
  std::vector<uint8_t> v_blocks(int head) const;
  // Per-channel key factors f [head_dim] (all ones when knorm=off or before
  // the first key is quantized).
  const float* key_norm(int head) const;
  // Per-channel key mean μ [head_dim] subtracted from every stored key, or
  // nullptr (kcenter=off, or before the first key is quantized).
  const float* key_mean(int head) const {
    return key_mean_.empty() || key_mean_[static_cast<size_t>(head)].empty()
               ? nullptr
               : key_mean_[static_cast<size_t>(head)].data();
  }
  // The order of the quantized keys' channels [head_dim] (ksort=on, after
  // the first flush), or nullptr: position j holds channel key_perm[j].
  const uint16_t* key_perm(int head) const {
    return key_perm_.empty() || key_perm_[static_cast<size_t>(head)].empty()
               ? nullptr
               : key_perm_[static_cast<size_t>(head)].data();
  }
  void size_scratch(AppendScratch& scratch) const override;

 private:
  INNERQ_LAYER_CACHE_STORE
  void reserve_rows(int n_tokens) override;
  void prepare_steps(int n_tokens, ChunkSteps& steps) const override;
  // Whether flushing after each token stores exactly what flushing after the
  // whole append would: the config fixes no statistics at the first flush, or
  // they are fixed already.
  bool statistics_fixed() const;
  // Quantizes the n_tokens oldest keys of `recent` (a head's recent window,
  // or first_rows_) into middle slots mid...; the first flush of a head also
  // fixes its factors and mean and centers what stays in f16 (and the rows
  // of `steps`, when recording).
  void flush_k(int head, int n_tokens, int mid, AppendScratch& scratch, ChunkSteps* steps,
               F16Rows& recent);
  void flush_v(int head, int mid, AppendScratch& scratch);
  // The G-token V group at middle slot `mid` (a multiple of G), and its
  // offset in its block's V region.
  size_t v_group_offset(int mid) const;
  uint8_t* v_group_for_write(int head, int mid);
  const uint8_t* v_group(int head, int mid) const;
  // Bytes of one K row's records (or one V channel's record, the larger).
  size_t records_bytes() const;

  TileFormat k_fmt_, v_fmt_;
  int k_mid_tokens_ = 0, v_mid_tokens_ = 0;
  std::vector<F16Rows> k_sink_, v_sink_, k_recent_, v_recent_;
  std::vector<std::vector<float>> key_norm_;     // [heads][D], empty until computed
  std::vector<std::vector<float>> key_mean_;     // [heads][D], empty until computed
  std::vector<std::vector<uint16_t>> key_perm_;  // [heads][D], empty until computed (ksort)
  std::vector<float> ones_;                      // [D] of 1.0
  // One head's recent keys during an append that may hold the first flush
  // (store()): they wait here, not in the window, so the window keeps its
  // bound. Allocated by reserve_rows, released when the append ends.
  F16Rows first_rows_;
};

#undef INNERQ_LAYER_CACHE_MEMBERS
#undef INNERQ_LAYER_CACHE_STORE

// Block regions of a layer of `config` (the kind registry, layer_caches.cc).
BlockLayout layer_block_layout(const LayerConfig& config, int head_dim, int block_tokens);

}  // namespace innerq::kv
