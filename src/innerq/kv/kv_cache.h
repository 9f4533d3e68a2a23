// innerq/kv/kv_cache.h — one sequence's key/value cache, all layers.
//
// Per layer and KV head the cache keeps, for K and for V, up to three regions
// (DESIGN.md §1.3): a high-precision sink (first `sink` tokens), a quantized
// middle, and a high-precision recent window. Which regions exist and how the
// middle is stored depends on the layer's CacheKind:
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

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "innerq/kv/cache_spec.h"

namespace innerq::kv {

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

// One layer's K/V for all its KV heads. Concrete types live in layer_caches.h.
class LayerCache {
 public:
  LayerCache(const LayerConfig& config, int n_kv_heads, int head_dim)
      : config_(config), n_kv_heads_(n_kv_heads), head_dim_(head_dim) {}
  virtual ~LayerCache() = default;

  // k, v: [n_tokens, n_kv_heads, head_dim]
  virtual void append(const float* k, const float* v, int n_tokens) = 0;
  virtual MemoryUsage memory() const = 0;

  const LayerConfig& config() const { return config_; }
  CacheKind kind() const { return config_.kind; }
  int n_kv_heads() const { return n_kv_heads_; }
  int head_dim() const { return head_dim_; }
  int n_tokens() const { return n_tokens_; }

 protected:
  LayerConfig config_;
  int n_kv_heads_;
  int head_dim_;
  int n_tokens_ = 0;
};

// Bytes one layer with `config` takes holding n_tokens tokens, without
// holding them: every kind's storage repeats with a period of P tokens (the
// least common multiple of its tile and group sizes) once past its windows,
// so two small caches of the same config are filled and the rest follows by
// arithmetic. Equal to filling a real cache (kv_cache_test checks every kind
// at many lengths). Throws innerq::Error for a config the shape cannot hold.
MemoryUsage plan_layer_memory(const LayerConfig& config, int n_kv_heads, int head_dim,
                              int64_t n_tokens);
// The same for a sliding-window layer of `window` positions.
MemoryUsage plan_window_layer_memory(int window, int n_kv_heads, int head_dim, int64_t n_tokens);

class KvCache {
 public:
  // One config per layer (size n_layers), or one config for all layers.
  // Sliding-window layers (shape.window(l) > 0) ignore their config.
  KvCache(const CacheShape& shape, const std::vector<LayerConfig>& layers);
  KvCache(const CacheShape& shape, const LayerConfig& all_layers);

  const CacheShape& shape() const { return shape_; }
  int n_tokens() const { return layers_.empty() ? 0 : layers_[0]->n_tokens(); }

  // k, v: [n_tokens, n_kv_heads, head_dim] of one layer. Layers advance
  // independently; the model appends to every layer once per position.
  // Throws innerq::Error, leaving the cache unchanged, past max_tokens or on
  // a NaN, ±Inf or (for every kind but f32) a value beyond ±65504 (checked
  // after rotation where the layer stores rotated rows), or once failed().
  void append(int layer, const float* k, const float* v, int n_tokens);
  // Everything append() checks, without storing: callers that append inside
  // an OpenMP region validate first, outside it (docs/architecture.md,
  // "Errors and threads").
  void check_append(int layer, const float* k, const float* v, int n_tokens) const;

  // A step that appends one position to every layer and fails part-way
  // leaves the layers at different lengths. The model then marks the cache
  // failed: append() and require_usable() throw, naming the first failure,
  // until clear() empties it (same shape and configs).
  void mark_failed(const std::string& why);
  bool failed() const { return !failure_.empty(); }
  bool layers_agree() const;  // every layer holds n_tokens() tokens
  void require_usable() const;
  void clear();

  const LayerCache& layer(int l) const { return *layers_[static_cast<size_t>(l)]; }
  MemoryUsage memory() const;
  // What the same tokens would take in a plain f16 cache (K and V, all
  // layers; a sliding-window layer counts the positions it keeps).
  size_t bytes_f16_equivalent() const;

 private:
  // What check_append() checks, on any cache.
  void validate(int layer, const float* k, const float* v, int n_tokens) const;

  CacheShape shape_;
  std::vector<LayerConfig> configs_;
  std::vector<std::unique_ptr<LayerCache>> layers_;
  std::string failure_;
};

}  // namespace innerq::kv
