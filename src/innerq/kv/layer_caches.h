// innerq/kv/layer_caches.h — the concrete per-layer caches behind KvCache.
//
// All storage is per KV head. Token order is preserved in every region:
// token t of the sequence lives in exactly one region of K and one of V, and
// each region's accessors count tokens from that region's first token.
#pragma once

#include <cstdint>
#include <vector>

#include "innerq/base/fp16.h"
#include "innerq/kernels/llama_blocks.h"
#include "innerq/kernels/tile_format.h"
#include "innerq/kv/kv_cache.h"

namespace innerq::kv {

// ---------------------------------------------------------------------------
// Growable f16 rows [n][head_dim] — sink windows, recent windows, residuals.
// ---------------------------------------------------------------------------
class F16Rows {
 public:
  explicit F16Rows(int head_dim = 0) : head_dim_(head_dim) {}
  void push(const float* row);  // [head_dim]
  // Rows [first, first + n) in f32: out [n][head_dim].
  void to_f32(int first, int n, float* out) const;
  void pop_front(int n);  // drops the oldest n rows
  // Every live row r becomes f16(r − mu) (mu: [head_dim]), clamped to ±65504.
  void subtract(const float* mu);
  int size() const { return static_cast<int>(data_.size() / head_dim_) - front_; }
  const f16_bits* row(int i) const {
    return data_.data() + (front_ + i) * static_cast<size_t>(head_dim_);
  }
  // Bytes held by live rows.
  size_t bytes() const { return static_cast<size_t>(size()) * head_dim_ * sizeof(f16_bits); }

 private:
  int head_dim_;
  int front_ = 0;  // rows before front_ are dead; compacted lazily
  std::vector<f16_bits> data_;
};

// ---------------------------------------------------------------------------
// f32 / f16: one plain region. K is kept in 16-token tiles transposed to
// [tile][head_dim][16] so the score kernel puts lanes over tokens; V is
// row-major [token][head_dim] so p·V puts lanes over channels.
// ---------------------------------------------------------------------------
template <typename T>
class PlainLayerCache final : public LayerCache {
 public:
  PlainLayerCache(const LayerConfig& config, int n_kv_heads, int head_dim);
  void append(const float* k, const float* v, int n_tokens) override;
  MemoryUsage memory() const override;

  const T* k_tiles(int head) const {
    return k_[static_cast<size_t>(head)].data();
  }  // [tiles][D][16]
  const T* v_rows(int head) const { return v_[static_cast<size_t>(head)].data(); }  // [n][D]

 private:
  std::vector<std::vector<T>> k_, v_;
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
  LlamaBlockLayerCache(const LayerConfig& config, int n_kv_heads, int head_dim);
  void append(const float* k, const float* v, int n_tokens) override;
  MemoryUsage memory() const override;

  // [n_tokens][head_dim / 32] blocks
  const Block* k_blocks(int head) const { return k_[static_cast<size_t>(head)].data(); }
  const Block* v_blocks(int head) const { return v_[static_cast<size_t>(head)].data(); }

 private:
  std::vector<std::vector<Block>> k_, v_;
};

using Q8_0LayerCache = LlamaBlockLayerCache<BlockQ8_0>;
using Q4_0LayerCache = LlamaBlockLayerCache<BlockQ4_0>;

// ---------------------------------------------------------------------------
// KIVI (outer grouping), asymmetric, G = `group` (32), b = k_bits = v_bits.
//   K: blocks of G tokens; per channel one group along the tokens. A block is
//      head_dim group records, channel-major (record c = channel c).
//   V: per token head_dim/G group records along channels (a quantized row).
//   Residual: the newest tokens in f16. K's residual holds up to `recent`
//   tokens and flushes all of them (whole G-token blocks) when it reaches
//   `recent`; V's residual keeps exactly `recent` and flushes one token at a
//   time (KIVI's released behaviour).
// ---------------------------------------------------------------------------
class KiviLayerCache final : public LayerCache {
 public:
  KiviLayerCache(const LayerConfig& config, int n_kv_heads, int head_dim);
  void append(const float* k, const float* v, int n_tokens) override;
  MemoryUsage memory() const override;

  int bits() const { return config_.k_bits; }
  int group() const { return config_.group; }
  size_t k_block_bytes() const;  // head_dim records of G tokens
  size_t v_row_bytes() const;    // head_dim/G records of one token
  int k_quant_tokens() const { return k_quant_tokens_; }
  int v_quant_tokens() const { return v_quant_tokens_; }
  const uint8_t* k_blocks(int head) const { return k_codes_[static_cast<size_t>(head)].data(); }
  const uint8_t* v_rows(int head) const { return v_codes_[static_cast<size_t>(head)].data(); }
  const F16Rows& k_residual(int head) const { return k_res_[static_cast<size_t>(head)]; }
  const F16Rows& v_residual(int head) const { return v_res_[static_cast<size_t>(head)]; }

 private:
  void flush_k(int head, int n_tokens);
  void flush_v(int head, int n_tokens);

  int k_quant_tokens_ = 0, v_quant_tokens_ = 0;
  std::vector<std::vector<uint8_t>> k_codes_, v_codes_;
  std::vector<F16Rows> k_res_, v_res_;
};

// ---------------------------------------------------------------------------
// InnerQ (DESIGN.md §1): groups along the inner dimension of each product.
//   K: sink (f16) | middle: per-token groups along head_dim, 16-token tiles
//      (tile_format.h), keys divided by the per-channel factor f | recent
//      (f16, exactly `recent` tokens once full; flushes one token at a time).
//   V: sink (f16) | middle: G-token blocks, each D/16 tiles of 16 channels,
//      one group per channel along the G tokens | recent (f16, between
//      `recent` and recent+G−1 tokens once full; flushes G tokens at a time).
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
// ---------------------------------------------------------------------------
class InnerQLayerCache final : public LayerCache {
 public:
  InnerQLayerCache(const LayerConfig& config, int n_kv_heads, int head_dim);
  void append(const float* k, const float* v, int n_tokens) override;
  MemoryUsage memory() const override;

  const TileFormat& k_format() const { return k_fmt_; }
  const TileFormat& v_format() const { return v_fmt_; }
  int sink_tokens() const { return k_sink_.empty() ? 0 : k_sink_[0].size(); }
  int k_middle_tokens() const { return k_mid_tokens_; }
  int v_middle_tokens() const { return v_mid_tokens_; }  // multiple of G
  int k_recent_tokens() const { return n_tokens_ - sink_tokens() - k_mid_tokens_; }
  int v_recent_tokens() const { return n_tokens_ - sink_tokens() - v_mid_tokens_; }
  bool has_key_norm() const { return !key_norm_.empty(); }

  const F16Rows& k_sink(int head) const { return k_sink_[static_cast<size_t>(head)]; }
  const F16Rows& v_sink(int head) const { return v_sink_[static_cast<size_t>(head)]; }
  const F16Rows& k_recent(int head) const { return k_recent_[static_cast<size_t>(head)]; }
  const F16Rows& v_recent(int head) const { return v_recent_[static_cast<size_t>(head)]; }
  // K middle: ceil(k_middle_tokens / 16) tiles of k_format().bytes().
  const uint8_t* k_tiles(int head) const { return k_mid_[static_cast<size_t>(head)].data(); }
  // V middle: v_middle_tokens / G blocks, each head_dim/16 tiles of v_format().bytes().
  const uint8_t* v_blocks(int head) const { return v_mid_[static_cast<size_t>(head)].data(); }
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

 private:
  void flush_k(int head, int n_tokens);
  void flush_v(int head);
  void compute_key_norm(int head, const float* rows, int n_rows);  // rows: [n_rows][D]

  TileFormat k_fmt_, v_fmt_;
  int k_mid_tokens_ = 0, v_mid_tokens_ = 0;
  std::vector<F16Rows> k_sink_, v_sink_, k_recent_, v_recent_;
  std::vector<std::vector<uint8_t>> k_mid_, v_mid_;
  std::vector<std::vector<float>> key_norm_;  // [heads][D], empty until computed
  std::vector<std::vector<float>> key_mean_;  // [heads][D], empty until computed
  std::vector<float> ones_;                   // [D] of 1.0
};

}  // namespace innerq::kv
