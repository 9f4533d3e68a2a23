// innerq/kv/kv_cache.h — one sequence's key/value cache, all layers.
//
// Per layer and KV head the cache keeps, for K and for V, up to three regions
// (docs/architecture.md, "Cache structure"): a high-precision sink (first
// `sink` tokens), a quantized middle, and a high-precision recent window.
// Which regions exist and how the middle is stored depends on the layer's
// CacheKind:
//
//   f32, f16      one plain region (no quantization)
//   q8_0, q4_0    llama.cpp blocks of 32 along head_dim, every token, no windows
//   kivi          K: 32-token blocks grouped per channel; V: per-token groups
//                 along head_dim; fp16 residual (K flushes `recent` tokens at
//                 once, V slides by one)
//   innerq        K: per-token groups along head_dim (16-token tiles), with
//                 per-channel key normalization; V: G-token blocks grouped
//                 along tokens (16-channel tiles); fp16 sink and recent windows
//
// Inputs to append() are post-RoPE keys and values in f32, laid out
// [n_tokens, n_kv_heads, head_dim]. The attention layer reads the regions
// through the typed layer caches below.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "innerq/kv/block_pool.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/segments.h"

namespace innerq::kv {

struct ChunkSteps;  // layer_caches.h

struct CacheShape {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int max_tokens = 0;  // appending past this throws innerq::Error
  // Per layer, or empty for none: w > 0 makes layer l a sliding-window layer
  // that keeps only its last w positions, in f16, whatever its config
  // (window_layer_cache.h; docs/architecture.md, "Sliding-window layers").
  std::vector<int> windows = {};

  int window(int layer) const { return windows.empty() ? 0 : windows[static_cast<size_t>(layer)]; }
};

// Bytes actually held for the current contents, by purpose.
struct MemoryUsage {
  size_t codes = 0;     // packed quantized codes
  size_t metadata = 0;  // fp16 scales and zeros
  size_t windows = 0;   // high-precision sink / recent / residual / plain storage
  size_t norm = 0;      // key-normalization factors
  size_t total() const { return codes + metadata + windows + norm; }
  MemoryUsage& operator+=(const MemoryUsage& o) {
    codes += o.codes;
    metadata += o.metadata;
    windows += o.windows;
    norm += o.norm;
    return *this;
  }
};

// Bytes of one block's regions for one KV head: K and V for block_tokens
// middle slots, each rounded up to kRegionAlign (block_pool.h).
struct BlockLayout {
  size_t k_region = 0;
  size_t v_region = 0;
  size_t block_bytes(int n_kv_heads) const {
    return (k_region + v_region) * static_cast<size_t>(n_kv_heads);
  }
};

// The most tokens a saved sequence's layer may claim (a bound checked before
// anything is sized from the file).
inline constexpr int kMaxSavedTokens = 1 << 24;

// Little-endian byte stream of a saved sequence (KvCache::save); the reader
// throws innerq::Error naming `what` when the data ends early.
class ByteWriter {
 public:
  template <typename T>
  void put(const T& x) {
    bytes(&x, sizeof(T));
  }
  void bytes(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string& str() { return out_; }

 private:
  std::string out_;
};

class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size, std::string what)
      : p_(data), end_(data + size), what_(std::move(what)) {}
  template <typename T>
  T get() {
    T x;
    bytes(&x, sizeof(T));
    return x;
  }
  void bytes(void* out, size_t n);
  // Throws (truncated) unless n more bytes are there.
  void require(size_t n) const;
  // An int read from the stream, refused unless lo <= x <= hi.
  int get_int(const char* field, int lo, int hi);
  size_t left() const { return static_cast<size_t>(end_ - p_); }
  const std::string& what() const { return what_; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  std::string what_;
};

// Scratch of appends and flushes: an input row being rotated, a row being
// converted or quantized, one channel of a G-token group and its record,
// and the block ids one append takes. Bounded by the layer's shape — a few
// rows of head_dim and one group, whatever the append's length (LayerCache::
// size_scratch) — and owned by the caller: a KvCache holds one for all its
// layers, which are appended one at a time (docs/architecture.md, "No
// allocation per token").
struct AppendScratch {
  std::vector<float> k_row, v_row;  // [D] an input row, rotated (rot=k|v)
  std::vector<float> row, scaled;   // [D] a row being flushed
  std::vector<float> channel;       // [G] one channel of a G-token group
  std::vector<uint8_t> converted;   // [D] elements: a K row in the storage type
  std::vector<uint8_t> records;     // the group records of one row or one channel
  std::vector<int> block_ids;       // blocks taken by one append
  std::vector<int> copied;          // block numbers it copies (copy-on-write)
  size_t bytes() const;             // heap bytes held
};

// v grown to at least n elements (a no-op once a scratch is sized).
template <class T>
T* at_least(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// One layer's K/V for all its KV heads. Concrete types live in layer_caches.h
// (and window_layer_cache.h); attention reads them only through segments().
class LayerCache {
 public:
  LayerCache(const LayerConfig& config, int n_kv_heads, int head_dim)
      : config_(config), n_kv_heads_(n_kv_heads), head_dim_(head_dim) {}
  virtual ~LayerCache();

  // k, v: [n_tokens, n_kv_heads, head_dim], already validated (KvCache::
  // check_append). All or nothing: every pool block the append writes (new
  // ones, and a private copy of each it shares with a fork) is taken from
  // the pool in one BlockPool::acquire_n before any row or counter changes,
  // so a full pool throws innerq::Error naming it and leaves the layer
  // exactly as it was (docs/architecture.md, "The block pool").
  // With `steps`, the append also fills it with what each new token would
  // have seen had the tokens come one at a time (ChunkSteps, layer_caches.h),
  // and stores exactly what those appends would have stored: InnerQ's first
  // flush, which fixes the key factors and mean, happens at the same token
  // (a prompt's append without steps flushes after all its tokens, so that
  // those statistics cover the whole prompt).
  void append(const float* k, const float* v, int n_tokens, AppendScratch& scratch,
              ChunkSteps* steps = nullptr);
  // The same with a scratch of its own, allocated per call (tests).
  void append(const float* k, const float* v, int n_tokens, ChunkSteps* steps = nullptr);
  // Pool blocks an append of n_tokens would take now: new ones, and a copy
  // of each shared block it writes (callers that append several sequences
  // at once check their sum against the pool before any of them stores).
  int blocks_needed(int n_tokens) const;
  // Grows `scratch` to what this layer's appends and flushes use, so that
  // they allocate nothing.
  virtual void size_scratch(AppendScratch& scratch) const;
  // Bytes of the stored contents, by purpose (quantized codes and metadata of
  // the tokens held, live window rows, factors): what "bits per value" uses.
  virtual MemoryUsage memory() const = 0;
  // Bytes this sequence holds for the layer: whole pool blocks, window
  // buffers at their capacity, factors. What memory planning predicts.
  virtual size_t reserved_bytes() const;
  // The head's tokens as segments in token order (segments.h); clears and
  // refills `out`.
  virtual void segments(int head, HeadSegments& out) const = 0;
  // A copy that shares this one's pool blocks (copy-on-write).
  virtual std::unique_ptr<LayerCache> clone() const = 0;
  // Throws innerq::Error unless truncate(n_tokens) is possible: 0 <=
  // n_tokens <= n_tokens(), and for a sliding-window ring the positions the
  // shorter sequence attends to are still held.
  virtual void check_truncate(int n_tokens) const;
  // Keeps the first n_tokens tokens (check_truncate passed); see
  // KvCache::truncate for what happens to quantized groups and windows.
  virtual void truncate(int n_tokens) = 0;
  // The state of the sequence (not the config) as bytes, and back into an
  // empty cache of the same config; load() throws innerq::Error on data that
  // is not a state of this config.
  virtual void save(ByteWriter& out) const = 0;
  virtual void load(ByteReader& in) = 0;

  const LayerConfig& config() const { return config_; }
  CacheKind kind() const { return config_.kind; }
  int n_kv_heads() const { return n_kv_heads_; }
  int head_dim() const { return head_dim_; }
  int n_tokens() const { return n_tokens_; }
  int block_tokens() const { return block_tokens_; }
  int n_blocks_held() const { return static_cast<int>(blocks_.size()); }
  const BlockLayout& block_layout() const { return layout_; }
  // Region bytes of block j for a KV head (K, or V when v), block_layout()
  // long: what two sequences sharing a prefix can compare.
  const uint8_t* block_region(int j, int head, bool v) const {
    return region(blocks_[static_cast<size_t>(j)], head, v);
  }
  // The pool block id of block j (0 <= j < n_blocks_held()).
  int block_id(int j) const { return blocks_[static_cast<size_t>(j)]; }
  // The layer's index in its model (calibrated key factors are per layer).
  int layer_index() const { return layer_index_; }
  void set_layer_index(int l) { layer_index_ = l; }
  // Tokens the reserved block table can address (a bound on the middle's
  // length, which decode attention sizes its scratch for once).
  int64_t capacity_tokens() const {
    return static_cast<int64_t>(blocks_.capacity()) * block_tokens_;
  }
  // Room in the block table for n blocks, so appends never reallocate it.
  void reserve_blocks(int n) { blocks_.reserve(static_cast<size_t>(n)); }

 protected:
  // Middle slots [first, end) one region (K or V) of an append writes.
  struct SlotRange {
    int64_t first = 0, end = 0;
  };
  LayerCache(const LayerCache& other);  // shares the blocks (clone)
  LayerCache& operator=(const LayerCache&) = delete;

  // What an append of n_tokens writes into blocks: K middle slots and V
  // middle slots (the same range for kinds that store every token).
  virtual std::array<SlotRange, 2> slots_written(int n_tokens) const = 0;
  // Gives the f16 windows room for n_tokens more rows, so that store()
  // does not reallocate them (InnerQ's windows flush after each token and
  // need one; an append that may hold its first flush also takes a buffer
  // for one head's keys of the append). Default: nothing to grow.
  virtual void reserve_rows(int n_tokens);
  // For an append of n_tokens with steps: what the kind adds to the default
  // steps (every token sees every position up to its own as stored), before
  // anything is stored — the windowed kinds copy their windows' rows and
  // give the rows room for the new tokens (may throw std::bad_alloc).
  virtual void prepare_steps(int n_tokens, ChunkSteps& steps) const;
  // Stores the rows once every block slots_written() names is writable:
  // allocates nothing and does not throw. With steps (prepared), also
  // records in it what each token saw (the windowed kinds).
  virtual void store(const float* k, const float* v, int n_tokens, AppendScratch& scratch,
                     ChunkSteps* steps) = 0;
  // Row i, head h of the input k (or v, when `value`): the row itself, or
  // its rotation in `buffer` when the layer stores rotated rows
  // (docs/architecture.md, "Rotation").
  const float* input_row(const float* x, int i, int h, bool value,
                         std::vector<float>& buffer) const;

  // Blocks of `layout` from `pool`, or from a private growable pool when
  // pool is null (a standalone cache).
  void use_blocks(const BlockLayout& layout, BlockPool* pool, int block_tokens);
  // Region of head h in block j for writing. Only for blocks an append's
  // slots_written() names (held, unshared: prepared by append()).
  uint8_t* k_write(int j, int head) { return region(blocks_[static_cast<size_t>(j)], head, false); }
  uint8_t* v_write(int j, int head) { return region(blocks_[static_cast<size_t>(j)], head, true); }
  const uint8_t* k_read(int j, int head) const {
    return region(blocks_[static_cast<size_t>(j)], head, false);
  }
  const uint8_t* v_read(int j, int head) const {
    return region(blocks_[static_cast<size_t>(j)], head, true);
  }
  // Appends a block's segment to `list`, or lengthens the last one when the
  // previous blocks were full and this region follows theirs in memory
  // (consecutive block ids of one slab: see region()), so a sequence that
  // grew alone is read as a few long segments. exact_bytes: the region's
  // bytes without padding; a padded region is never merged.
  void push_block_segment(std::vector<Segment>& list, const Segment& s, size_t region_bytes,
                          size_t exact_bytes) const;
  // Gives back blocks [n_keep, n_blocks_held()).
  void keep_blocks(int n_keep);
  size_t blocks_bytes() const { return blocks_.size() * layout_.block_bytes(n_kv_heads_); }
  // Clears a head's segment lists and gives them room for every block the
  // table can hold plus the windows, so a reused HeadSegments never grows
  // during decode.
  void reset_segments(HeadSegments& out) const;
  void save_blocks(ByteWriter& out) const;
  void load_blocks(ByteReader& in, int expected);
  // truncate/save/load of the kinds that keep every token in blocks, slot =
  // position (f32, f16, q8_0, q4_0): no windows to restore.
  void truncate_stored_tokens(int n_tokens);
  void save_stored_tokens(ByteWriter& out) const;
  void load_stored_tokens(ByteReader& in);

  LayerConfig config_;
  int n_kv_heads_;
  int head_dim_;
  int n_tokens_ = 0;
  int layer_index_ = 0;

 private:
  // Makes every block the ranges touch held and unshared: the blocks past
  // the table's end and a private copy of each shared one, taken in one
  // acquire_n (which throws, changing nothing, when the pool is full).
  void prepare_write(const std::array<SlotRange, 2>& ranges, AppendScratch& scratch);
  // What prepare_write takes for `ranges`: the blocks past the table's end
  // (the count returned) and, into `copied`, the held blocks it writes that
  // a fork shares.
  int blocks_to_take(const std::array<SlotRange, 2>& ranges, std::vector<int>& copied) const;
  // Region (head, K or V) of block `id`. A slab holds slab_blocks blocks
  // region-major: region r of every block side by side, so the region r of
  // blocks id and id+1 of one slab are adjacent.
  uint8_t* region(int id, int head, bool v) const {
    const size_t before = static_cast<size_t>(head) * (layout_.k_region + layout_.v_region) +
                          (v ? layout_.k_region : 0);
    const size_t per_slab = static_cast<size_t>(pool_->slab_blocks());
    return pool_->slab_base(id) + before * per_slab +
           static_cast<size_t>(id) % per_slab * (v ? layout_.v_region : layout_.k_region);
  }

  std::shared_ptr<BlockPool> own_pool_;  // standalone caches only
  BlockPool* pool_ = nullptr;
  int block_tokens_ = 0;
  BlockLayout layout_;
  std::vector<int> blocks_;  // the block table
};

// ---------------------------------------------------------------------------
// Memory planning: arithmetic only, no cache is built (docs/architecture.md,
// "Memory planning").
// ---------------------------------------------------------------------------

// What one layer of `config` holds for a sequence of n_tokens tokens.
struct LayerPlan {
  int64_t k_middle = 0, v_middle = 0;  // tokens in quantized (or plain) block storage
  int64_t blocks = 0;                  // pool blocks: ceil(max(k, v middle) / B)
  size_t block_bytes = 0;              // bytes of one block (all KV heads)
  size_t window_bytes = 0;             // per-sequence window buffers at capacity
  size_t norm_bytes = 0;               // key factors / means once computed
  MemoryUsage content;                 // == LayerCache::memory() of a filled cache
  size_t reserved() const {
    return static_cast<size_t>(blocks) * block_bytes + window_bytes + norm_bytes;
  }
};
// Throws innerq::Error for a config the shape cannot hold, or n_tokens < 0.
LayerPlan plan_layer(const LayerConfig& config, int n_kv_heads, int head_dim, int64_t n_tokens,
                     int block_tokens = kDefaultBlockTokens);
// Content bytes only (plan_layer(...).content).
MemoryUsage plan_layer_memory(const LayerConfig& config, int n_kv_heads, int head_dim,
                              int64_t n_tokens);
// The same for a sliding-window layer of `window` positions: the positions
// it attends to, min(n_tokens, window) (window_layer_cache.h).
MemoryUsage plan_window_layer_memory(int window, int n_kv_heads, int head_dim, int64_t n_tokens);
// Bytes of a sliding-window layer's ring, allocated once per sequence:
// window + kWindowSpare slots of K tiles and V rows (window_layer_cache.h).
size_t window_ring_bytes(int window, int n_kv_heads, int head_dim);

// A whole cache shape: per-layer blocks and windows, and the budgets.
struct MemoryPlan {
  CacheShape shape;
  std::vector<LayerConfig> configs;
  int block_tokens = kDefaultBlockTokens;

  LayerPlan layer(int l, int64_t n_tokens) const;
  // Bytes one sequence of n tokens holds (blocks + windows + factors + rings).
  size_t sequence_bytes(int64_t n_tokens) const;
  // Pool blocks per layer so that n_seqs sequences of n tokens each fit.
  int64_t pool_blocks(int n_seqs, int64_t n_tokens) const;
  // Bytes of such a pool (all layers) plus the sequences' windows: what
  // KvPool + KvCache allocate for them.
  size_t bytes(int n_seqs, int64_t n_tokens) const;
  // The most tokens per sequence that n_seqs sequences can hold in `bytes`
  // (0 if not even one token fits).
  int64_t tokens_for_budget(size_t bytes, int n_seqs) const;
};
MemoryPlan plan_memory(const CacheShape& shape, const std::vector<LayerConfig>& configs,
                       int block_tokens = kDefaultBlockTokens);

// The block pools of every global layer of one cache shape, shared by the
// sequences (KvCache) built on it. One BlockPool per layer, each with the
// same number of blocks; sliding-window layers take none.
class KvPool {
 public:
  // n_blocks per layer, fixed. prefault: write every page now (benchmarks
  // that compare resident memory with the plan); otherwise pages become
  // resident as blocks are first written.
  // growable: blocks come in slabs of n_blocks as needed (a single
  // sequence's private pool) instead of a fixed count.
  KvPool(const CacheShape& shape, const std::vector<LayerConfig>& configs, int64_t n_blocks,
         int block_tokens = kDefaultBlockTokens, bool prefault = false, bool growable = false);
  // Sized by the plan for n_seqs sequences of n_tokens each.
  static std::shared_ptr<KvPool> for_sequences(const CacheShape& shape,
                                               const std::vector<LayerConfig>& configs, int n_seqs,
                                               int64_t n_tokens, bool prefault = false);

  const CacheShape& shape() const { return shape_; }
  const std::vector<LayerConfig>& configs() const { return configs_; }
  int block_tokens() const { return block_tokens_; }
  BlockPool* layer(int l) const { return pools_[static_cast<size_t>(l)].get(); }
  size_t bytes() const;
  int64_t n_blocks() const { return n_blocks_; }

 private:
  CacheShape shape_;
  std::vector<LayerConfig> configs_;
  int block_tokens_;
  int64_t n_blocks_;
  std::vector<std::unique_ptr<BlockPool>> pools_;
};

class KvCache {
 public:
  // One config per layer (size n_layers), or one config for all layers.
  // Sliding-window layers (shape.window(l) > 0) ignore their config. The
  // cache has a private growable pool (a single sequence).
  KvCache(const CacheShape& shape, const std::vector<LayerConfig>& layers);
  KvCache(const CacheShape& shape, const LayerConfig& all_layers);
  // A sequence in a shared pool, of at most max_tokens tokens (0: the pool's
  // shape.max_tokens).
  explicit KvCache(std::shared_ptr<KvPool> pool, int max_tokens = 0);
  KvCache(KvCache&& other) noexcept = default;
  // Gives this cache's blocks back to its own pool first (which may be held
  // by this cache alone and go with it), then takes the other's layers and
  // pool.
  KvCache& operator=(KvCache&& other) noexcept;
  ~KvCache() = default;

  const CacheShape& shape() const { return shape_; }
  int n_tokens() const { return layers_.empty() ? 0 : layers_[0]->n_tokens(); }

  // k, v: [n_tokens, n_kv_heads, head_dim] of one layer. Layers advance
  // independently; the model appends to every layer once per position.
  // Throws innerq::Error, leaving the cache unchanged, past max_tokens or on
  // a NaN, ±Inf or (for every kind but f32) a value beyond ±65504 (checked
  // after rotation where the layer stores rotated rows), once failed(), or
  // when a fixed pool has not the blocks the append needs (LayerCache::
  // append: all or nothing).
  // With `steps`: LayerCache::append with steps (what each token saw).
  void append(int layer, const float* k, const float* v, int n_tokens, ChunkSteps* steps = nullptr);
  // Everything append() checks, without storing: callers that append inside
  // an OpenMP region validate first, outside it (docs/architecture.md,
  // "Errors and threads").
  void check_append(int layer, const float* k, const float* v, int n_tokens) const;

  // A step that appends one position to every layer and fails part-way
  // leaves the layers at different lengths. The model truncates them back
  // to the shortest (truncate(0)); only where that is impossible (a chunk
  // longer than a wrapped sliding-window ring's spare) it marks the cache
  // failed: append() and require_usable() throw, naming the first failure,
  // until clear() empties it (same shape and configs) or truncate() brings
  // every layer back to one length.
  void mark_failed(const std::string& why);
  bool failed() const { return !failure_.empty(); }
  bool layers_agree() const;  // every layer holds n_tokens() tokens
  void require_usable() const;
  void clear();

  // ---- sequence operations (docs/architecture.md, "Sequence operations") ----
  // A new sequence with the same tokens, sharing this one's blocks: a block
  // is copied when either writes to it (copy-on-write). Windows and factors
  // are copied.
  std::unique_ptr<KvCache> fork() const;
  // Drops the last n_drop tokens of every layer (0 <= n_drop <= the shortest
  // layer). Tokens still in f16 windows go exactly; quantized tokens are
  // removed per token where the format stores tokens separately (InnerQ K,
  // KIVI V, q8_0, q4_0, f16) and per group where a group spans tokens (InnerQ
  // V, KIVI K): the kept tokens of a cut group are dequantized back into the
  // f16 window. Tokens that moved from a window into quantized storage stay
  // quantized, and key factors/means stay as computed. Sliding-window layers
  // keep kWindowSpare positions beyond their window, so up to that many can
  // be dropped even after the ring wrapped (a failed step, a rejected
  // speculative token); more are refused before any layer changes.
  // Clears failed(): a failed step is undone by truncating to the shortest
  // layer (truncate_to(n)).
  void truncate(int n_drop);
  void truncate_to(int n_tokens);  // every layer to n_tokens
  // Writes the sequence to `path` (versioned binary, checksummed), and reads
  // one back into this (empty) cache of the same shape and configs. A file
  // that is truncated, corrupted, of another version or of another config is
  // refused with innerq::Error naming it and what is wrong.
  void save(const std::string& path) const;
  void load(const std::string& path);

  const LayerCache& layer(int l) const { return *layers_[static_cast<size_t>(l)]; }
  MemoryUsage memory() const;
  // Bytes this sequence holds: its blocks, windows, factors, rings
  // (MemoryPlan::sequence_bytes predicts it).
  size_t reserved_bytes() const;
  // What the same tokens would take in a plain f16 cache (K and V, all
  // layers; a sliding-window layer counts the positions it keeps).
  size_t bytes_f16_equivalent() const;
  const std::shared_ptr<KvPool>& pool() const { return pool_; }

 private:
  // What check_append() checks, on any cache.
  void validate(int layer, const float* k, const float* v, int n_tokens) const;
  void check_shape_and_configs() const;

  CacheShape shape_;
  std::vector<LayerConfig> configs_;
  std::shared_ptr<KvPool> pool_;                     // declared before layers_: outlives them
  std::vector<std::unique_ptr<LayerCache>> layers_;  // hold blocks of pool_
  AppendScratch scratch_;                            // every layer's appends, sized once
  std::string failure_;
};

// The layer cache of `config` (the kind registry, layer_caches.cc): pool
// null for a private one.
std::unique_ptr<LayerCache> make_layer_cache(const LayerConfig& config, int n_kv_heads,
                                             int head_dim, BlockPool* pool, int block_tokens);

}  // namespace innerq::kv
