// Storage and flush rules of the per-layer caches (layer_caches.h).
#include "innerq/kv/layer_caches.h"

#include <algorithm>
#include <cmath>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/kernels/attn_kernels.h"
#include "innerq/kernels/f16_convert.h"
#include "innerq/kernels/quant_kernels.h"

namespace innerq::kv {
namespace {

size_t at(int head, int head_dim, int n_kv_heads, int token) {
  return (static_cast<size_t>(token) * n_kv_heads + head) * head_dim;
}

}  // namespace

// ---------------------------------------------------------------------------
// F16Rows
// ---------------------------------------------------------------------------
void F16Rows::push(const float* row) {
  const size_t end = data_.size();
  data_.resize(end + static_cast<size_t>(head_dim_));
  kernels::f32_to_f16(row, static_cast<size_t>(head_dim_), data_.data() + end);
}

void F16Rows::to_f32(int first, int n, float* out) const {
  kernels::f16_to_f32(row(first), static_cast<size_t>(n) * head_dim_, out);
}

void F16Rows::subtract(const float* mu) {
  std::vector<float> row(static_cast<size_t>(head_dim_));
  for (int i = 0; i < size(); ++i) {
    f16_bits* r = data_.data() + (front_ + i) * static_cast<size_t>(head_dim_);
    kernels::f16_to_f32(r, static_cast<size_t>(head_dim_), row.data());
    for (int c = 0; c < head_dim_; ++c) {
      row[static_cast<size_t>(c)] =
          std::clamp(row[static_cast<size_t>(c)] - mu[c], -kF16Max, kF16Max);
    }
    kernels::f32_to_f16(row.data(), static_cast<size_t>(head_dim_), r);
  }
}

void F16Rows::pop_front(int n) {
  front_ += n;
  // Compact once the dead prefix outgrows the live rows: amortized O(1).
  if (front_ > size() && front_ > 64) {
    data_.erase(data_.begin(), data_.begin() + static_cast<ptrdiff_t>(front_) * head_dim_);
    front_ = 0;
  }
}

// ---------------------------------------------------------------------------
// f32 / f16
// ---------------------------------------------------------------------------
template <typename T>
PlainLayerCache<T>::PlainLayerCache(const LayerConfig& config, int n_kv_heads, int head_dim)
    : LayerCache(config, n_kv_heads, head_dim),
      k_(static_cast<size_t>(n_kv_heads)),
      v_(static_cast<size_t>(n_kv_heads)) {}

template <typename T>
void PlainLayerCache<T>::append(const float* k, const float* v, int n_tokens) {
  const int D = head_dim_;
  std::vector<T> krow(static_cast<size_t>(D));
  for (int h = 0; h < n_kv_heads_; ++h) {
    auto& kt = k_[static_cast<size_t>(h)];
    auto& vr = v_[static_cast<size_t>(h)];
    for (int i = 0; i < n_tokens; ++i) {
      const int t = n_tokens_ + i;
      if (t % kTileRows == 0) kt.resize(kt.size() + static_cast<size_t>(D) * kTileRows, T{});
      T* tile = kt.data() + static_cast<size_t>(t / kTileRows) * D * kTileRows;
      const float* ksrc = k + at(h, D, n_kv_heads_, i);
      const float* vsrc = v + at(h, D, n_kv_heads_, i);
      const size_t end = vr.size();
      vr.resize(end + static_cast<size_t>(D));
      if constexpr (std::is_same_v<T, float>) {
        std::copy(ksrc, ksrc + D, krow.begin());
        std::copy(vsrc, vsrc + D, vr.begin() + static_cast<ptrdiff_t>(end));
      } else {
        kernels::f32_to_f16(ksrc, static_cast<size_t>(D), krow.data());
        kernels::f32_to_f16(vsrc, static_cast<size_t>(D), vr.data() + end);
      }
      for (int c = 0; c < D; ++c)
        tile[c * kTileRows + t % kTileRows] = krow[static_cast<size_t>(c)];
    }
  }
  n_tokens_ += n_tokens;
}

template <typename T>
MemoryUsage PlainLayerCache<T>::memory() const {
  MemoryUsage m;
  for (int h = 0; h < n_kv_heads_; ++h) {
    m.windows +=
        (k_[static_cast<size_t>(h)].size() + v_[static_cast<size_t>(h)].size()) * sizeof(T);
  }
  return m;
}

template class PlainLayerCache<float>;
template class PlainLayerCache<f16_bits>;

// ---------------------------------------------------------------------------
// q8_0 / q4_0
// ---------------------------------------------------------------------------
template <typename Block>
LlamaBlockLayerCache<Block>::LlamaBlockLayerCache(const LayerConfig& config, int n_kv_heads,
                                                  int head_dim)
    : LayerCache(config, n_kv_heads, head_dim),
      k_(static_cast<size_t>(n_kv_heads)),
      v_(static_cast<size_t>(n_kv_heads)) {
  if (head_dim % kLlamaBlock != 0) {
    throw Error(fmt::format("{} cache: head_dim {} is not a multiple of {}",
                            cache_kind_name(config.kind), head_dim, kLlamaBlock));
  }
}

template <typename Block>
void LlamaBlockLayerCache<Block>::append(const float* k, const float* v, int n_tokens) {
  const int nb = head_dim_ / kLlamaBlock;
  for (int h = 0; h < n_kv_heads_; ++h) {
    for (int i = 0; i < n_tokens; ++i) {
      for (auto [src, dst] :
           {std::pair{k, &k_[static_cast<size_t>(h)]}, std::pair{v, &v_[static_cast<size_t>(h)]}}) {
        const float* row = src + at(h, head_dim_, n_kv_heads_, i);
        for (int b = 0; b < nb; ++b) {
          Block blk;
          quantize_block(row + b * kLlamaBlock, &blk);
          dst->push_back(blk);
        }
      }
    }
  }
  n_tokens_ += n_tokens;
}

template <typename Block>
MemoryUsage LlamaBlockLayerCache<Block>::memory() const {
  MemoryUsage m;
  for (int h = 0; h < n_kv_heads_; ++h) {
    const size_t blocks = k_[static_cast<size_t>(h)].size() + v_[static_cast<size_t>(h)].size();
    m.codes += blocks * sizeof(Block::qs);
    m.metadata += blocks * sizeof(f16_bits);
  }
  return m;
}

template class LlamaBlockLayerCache<BlockQ8_0>;
template class LlamaBlockLayerCache<BlockQ4_0>;

// ---------------------------------------------------------------------------
// KIVI
// ---------------------------------------------------------------------------
// Grows a record buffer by `bytes`, keeping kRecordTailPad zero bytes after
// the last record; returns where the new records go.
static uint8_t* grow_records(std::vector<uint8_t>& buffer, size_t bytes) {
  const size_t used = buffer.empty() ? 0 : buffer.size() - kernels::kRecordTailPad;
  buffer.resize(used + bytes + kernels::kRecordTailPad, 0);
  return buffer.data() + used;
}

static kernels::GroupSpec kivi_spec(const LayerConfig& c) {
  return {c.k_bits, c.group, QuantMode::kAsymmetric};
}

KiviLayerCache::KiviLayerCache(const LayerConfig& config, int n_kv_heads, int head_dim)
    : LayerCache(config, n_kv_heads, head_dim),
      k_codes_(static_cast<size_t>(n_kv_heads)),
      v_codes_(static_cast<size_t>(n_kv_heads)),
      k_res_(static_cast<size_t>(n_kv_heads), F16Rows(head_dim)),
      v_res_(static_cast<size_t>(n_kv_heads), F16Rows(head_dim)) {
  if (head_dim % config.group != 0) {
    throw Error(
        fmt::format("kivi cache: head_dim {} is not a multiple of g={}", head_dim, config.group));
  }
}

size_t KiviLayerCache::k_block_bytes() const {
  return static_cast<size_t>(head_dim_) * kivi_spec(config_).record_bytes();
}

size_t KiviLayerCache::v_row_bytes() const {
  return static_cast<size_t>(head_dim_ / config_.group) * kivi_spec(config_).record_bytes();
}

void KiviLayerCache::append(const float* k, const float* v, int n_tokens) {
  const int R = config_.recent, G = config_.group;
  for (int h = 0; h < n_kv_heads_; ++h) {
    auto& kr = k_res_[static_cast<size_t>(h)];
    auto& vr = v_res_[static_cast<size_t>(h)];
    for (int i = 0; i < n_tokens; ++i) {
      kr.push(k + at(h, head_dim_, n_kv_heads_, i));
      vr.push(v + at(h, head_dim_, n_kv_heads_, i));
      // K: the residual flushes whole once it holds R tokens (R = 0: every G).
      if (kr.size() >= std::max(R, G)) flush_k(h, kr.size() / G * G);
      if (vr.size() > R) flush_v(h, vr.size() - R);
    }
  }
  n_tokens_ += n_tokens;
  k_quant_tokens_ = n_tokens_ - k_res_[0].size();
  v_quant_tokens_ = n_tokens_ - v_res_[0].size();
}

void KiviLayerCache::flush_k(int head, int n_tokens) {
  const kernels::GroupSpec spec = kivi_spec(config_);
  const int G = config_.group, D = head_dim_;
  auto& res = k_res_[static_cast<size_t>(head)];
  auto& codes = k_codes_[static_cast<size_t>(head)];
  std::vector<float> block(static_cast<size_t>(G) * D);
  for (int b = 0; b < n_tokens / G; ++b) {
    res.to_f32(b * G, G, block.data());
    kernels::simd::quantize_token_block(spec, block.data(), static_cast<size_t>(D),
                                        grow_records(codes, k_block_bytes()));
  }
  res.pop_front(n_tokens);
}

void KiviLayerCache::flush_v(int head, int n_tokens) {
  const kernels::GroupSpec spec = kivi_spec(config_);
  auto& res = v_res_[static_cast<size_t>(head)];
  auto& codes = v_codes_[static_cast<size_t>(head)];
  std::vector<float> row(static_cast<size_t>(head_dim_));
  for (int t = 0; t < n_tokens; ++t) {
    res.to_f32(t, 1, row.data());
    kernels::simd::quantize_row(spec, row.data(), static_cast<size_t>(head_dim_ / config_.group),
                                grow_records(codes, v_row_bytes()));
  }
  res.pop_front(n_tokens);
}

MemoryUsage KiviLayerCache::memory() const {
  MemoryUsage m;
  const kernels::GroupSpec spec = kivi_spec(config_);
  const size_t records = static_cast<size_t>(k_quant_tokens_ / config_.group) * head_dim_ +
                         static_cast<size_t>(v_quant_tokens_) * (head_dim_ / config_.group);
  for (int h = 0; h < n_kv_heads_; ++h) {
    const size_t hs = static_cast<size_t>(h);
    const size_t held = k_codes_[hs].size() + v_codes_[hs].size();  // records + tail pads
    m.metadata += records * group_meta_bytes(spec.mode);
    m.codes += held - records * group_meta_bytes(spec.mode);
    m.windows += k_res_[hs].bytes() + v_res_[hs].bytes();
  }
  return m;
}

// ---------------------------------------------------------------------------
// InnerQ
// ---------------------------------------------------------------------------
InnerQLayerCache::InnerQLayerCache(const LayerConfig& config, int n_kv_heads, int head_dim)
    : LayerCache(config, n_kv_heads, head_dim),
      k_fmt_{config.k_bits, config.key_group(), head_dim / config.key_group(),
             mode_has_zero(config.k_mode)},
      v_fmt_{config.v_bits, config.group, 1, mode_has_zero(config.v_mode)},
      k_sink_(static_cast<size_t>(n_kv_heads), F16Rows(head_dim)),
      v_sink_(static_cast<size_t>(n_kv_heads), F16Rows(head_dim)),
      k_recent_(static_cast<size_t>(n_kv_heads), F16Rows(head_dim)),
      v_recent_(static_cast<size_t>(n_kv_heads), F16Rows(head_dim)),
      k_mid_(static_cast<size_t>(n_kv_heads)),
      v_mid_(static_cast<size_t>(n_kv_heads)),
      ones_(static_cast<size_t>(head_dim), 1.0f) {
  if (head_dim % config.key_group() != 0) {
    throw Error(fmt::format("innerq cache: head_dim {} is not a multiple of the key group {}",
                            head_dim, config.key_group()));
  }
  if (head_dim % kTileRows != 0) {
    throw Error(
        fmt::format("innerq cache: head_dim {} is not a multiple of {}", head_dim, kTileRows));
  }
}

const float* InnerQLayerCache::key_norm(int head) const {
  return key_norm_.empty() ? ones_.data() : key_norm_[static_cast<size_t>(head)].data();
}

void InnerQLayerCache::append(const float* k, const float* v, int n_tokens) {
  const int S = config_.sink, R = config_.recent, G = config_.group;
  std::vector<float> centered(config_.kcenter ? static_cast<size_t>(head_dim_) : 0);
  for (int h = 0; h < n_kv_heads_; ++h) {
    for (int i = 0; i < n_tokens; ++i) {
      const float* krow = k + at(h, head_dim_, n_kv_heads_, i);
      if (const float* mu = key_mean(h)) {  // keys after the first flush are stored centered
        for (int c = 0; c < head_dim_; ++c) {
          centered[static_cast<size_t>(c)] = std::clamp(krow[c] - mu[c], -kF16Max, kF16Max);
        }
        krow = centered.data();
      }
      const float* vrow = v + at(h, head_dim_, n_kv_heads_, i);
      if (n_tokens_ + i < S) {
        k_sink_[static_cast<size_t>(h)].push(krow);
        v_sink_[static_cast<size_t>(h)].push(vrow);
      } else {
        k_recent_[static_cast<size_t>(h)].push(krow);
        v_recent_[static_cast<size_t>(h)].push(vrow);
      }
    }
    // Flush after the whole append so that a prefill computes the key
    // normalization over every prompt key (DESIGN.md §1.4); token by token
    // the result is the same as flushing after each token.
    const int k_excess = k_recent_[static_cast<size_t>(h)].size() - R;
    if (k_excess > 0) flush_k(h, k_excess);
    while (v_recent_[static_cast<size_t>(h)].size() >= R + G) flush_v(h);
  }
  n_tokens_ += n_tokens;
  k_mid_tokens_ = n_tokens_ - sink_tokens() - k_recent_[0].size();
  v_mid_tokens_ = n_tokens_ - sink_tokens() - v_recent_[0].size();
}

void InnerQLayerCache::compute_key_norm(int head, const float* rows, int n_rows) {
  std::vector<float>& f = key_norm_[static_cast<size_t>(head)];
  f.assign(static_cast<size_t>(head_dim_), 0.0f);
  for (int t = 0; t < n_rows; ++t) {
    const float* row = rows + static_cast<size_t>(t) * head_dim_;
    for (int c = 0; c < head_dim_; ++c) {
      f[static_cast<size_t>(c)] = config_.knorm == KeyNorm::kRms
                                      ? f[static_cast<size_t>(c)] + row[c] * row[c]
                                      : std::max(f[static_cast<size_t>(c)], std::fabs(row[c]));
    }
  }
  for (float& x : f) {
    if (config_.knorm == KeyNorm::kRms) x = std::sqrt(x / static_cast<float>(n_rows));
    x = x > 0.0f && std::isfinite(x) ? std::sqrt(x) : 1.0f;
  }
}

void InnerQLayerCache::flush_k(int head, int n_tokens) {
  auto& recent = k_recent_[static_cast<size_t>(head)];
  const int D = head_dim_;
  if (config_.knorm != KeyNorm::kOff && key_norm_.empty()) {
    key_norm_.resize(static_cast<size_t>(n_kv_heads_));
  }
  if (config_.kcenter && key_mean_.empty()) key_mean_.resize(static_cast<size_t>(n_kv_heads_));
  // The first flush centers and normalizes over the whole window, later ones
  // read only the rows they quantize. rows: [n][D] f32, oldest first.
  const bool first_center = config_.kcenter && key_mean_[static_cast<size_t>(head)].empty();
  const bool first_norm =
      config_.knorm != KeyNorm::kOff && key_norm_[static_cast<size_t>(head)].empty();
  std::vector<float> rows(
      static_cast<size_t>(first_norm || first_center ? recent.size() : n_tokens) * D);
  recent.to_f32(0, static_cast<int>(rows.size() / D), rows.data());
  if (first_center) {
    const int n_rows = static_cast<int>(rows.size() / D);
    std::vector<double> sum(static_cast<size_t>(D), 0.0);
    for (int t = 0; t < n_rows; ++t)
      for (int c = 0; c < D; ++c)
        sum[static_cast<size_t>(c)] += rows[static_cast<size_t>(t) * D + c];
    std::vector<float>& mu = key_mean_[static_cast<size_t>(head)];
    mu.resize(static_cast<size_t>(D));
    for (int c = 0; c < D; ++c)
      mu[static_cast<size_t>(c)] = static_cast<float>(sum[static_cast<size_t>(c)] / n_rows);
    for (int t = 0; t < n_rows; ++t)
      for (int c = 0; c < D; ++c) {
        float& x = rows[static_cast<size_t>(t) * D + c];
        x = std::clamp(x - mu[static_cast<size_t>(c)], -kF16Max, kF16Max);
      }
    // What stays in f16 is centered too, so every region holds K − μ.
    k_sink_[static_cast<size_t>(head)].subtract(mu.data());
    recent.subtract(mu.data());
  }
  if (first_norm) compute_key_norm(head, rows.data(), static_cast<int>(rows.size() / D));
  const float* f = key_norm(head);
  const kernels::GroupSpec spec{config_.k_bits, config_.key_group(), config_.k_mode};
  std::vector<uint8_t> records(k_fmt_.n_groups * spec.record_bytes());
  std::vector<float> scaled(static_cast<size_t>(D));
  auto& tiles = k_mid_[static_cast<size_t>(head)];
  // Every head flushes the same tokens, so the member is this head's count
  // until append() updates it after all heads.
  const int mid = k_mid_tokens_;
  for (int t = 0; t < n_tokens; ++t) {
    for (int c = 0; c < D; ++c)
      scaled[static_cast<size_t>(c)] = rows[static_cast<size_t>(t) * D + c] / f[c];
    kernels::simd::quantize_row(spec, scaled.data(), static_cast<size_t>(k_fmt_.n_groups),
                                records.data());
    const int slot = mid + t;  // index of this token in the middle region
    if (slot % kTileRows == 0) tiles.resize(tiles.size() + k_fmt_.bytes(), 0);
    tile_store_row(k_fmt_, records.data(), tiles.data() + (slot / kTileRows) * k_fmt_.bytes(),
                   slot % kTileRows);
  }
  recent.pop_front(n_tokens);
}

void InnerQLayerCache::flush_v(int head) {
  auto& recent = v_recent_[static_cast<size_t>(head)];
  const int D = head_dim_, G = config_.group;
  std::vector<float> block(static_cast<size_t>(G) * D);
  recent.to_f32(0, G, block.data());
  const kernels::GroupSpec spec{config_.v_bits, G, config_.v_mode};
  std::vector<uint8_t> records(static_cast<size_t>(D) * spec.record_bytes());
  kernels::simd::quantize_token_block(spec, block.data(), static_cast<size_t>(D), records.data());
  auto& blocks = v_mid_[static_cast<size_t>(head)];
  const size_t off = blocks.size();
  blocks.resize(off + static_cast<size_t>(D / kTileRows) * v_fmt_.bytes(), 0);
  for (int c = 0; c < D; ++c) {
    tile_store_row(v_fmt_, records.data() + c * spec.record_bytes(),
                   blocks.data() + off + (c / kTileRows) * v_fmt_.bytes(), c % kTileRows);
  }
  recent.pop_front(G);
}

MemoryUsage InnerQLayerCache::memory() const {
  MemoryUsage m;
  for (int h = 0; h < n_kv_heads_; ++h) {
    const size_t hs = static_cast<size_t>(h);
    const size_t k_tiles = k_mid_[hs].size() / k_fmt_.bytes();
    const size_t v_tiles = v_mid_[hs].size() / v_fmt_.bytes();
    m.codes += k_tiles * k_fmt_.code_bytes() + v_tiles * v_fmt_.code_bytes();
    m.metadata += k_tiles * k_fmt_.meta_bytes() + v_tiles * v_fmt_.meta_bytes();
    m.windows +=
        k_sink_[hs].bytes() + v_sink_[hs].bytes() + k_recent_[hs].bytes() + v_recent_[hs].bytes();
  }
  if (!key_norm_.empty()) m.norm = static_cast<size_t>(n_kv_heads_) * head_dim_ * sizeof(float);
  if (!key_mean_.empty()) m.norm += static_cast<size_t>(n_kv_heads_) * head_dim_ * sizeof(float);
  return m;
}

}  // namespace innerq::kv
