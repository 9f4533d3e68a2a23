// KvCache: one LayerCache per layer, built from the layer's configuration.
#include "innerq/kv/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <limits>
#include <vector>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/kernels/hadamard.h"
#include "innerq/kv/layer_caches.h"
#include "innerq/kv/window_layer_cache.h"

namespace innerq::kv {
namespace {

std::unique_ptr<LayerCache> make_layer_cache(const LayerConfig& c, int n_kv_heads, int head_dim) {
  switch (c.kind) {
    case CacheKind::kF32:
      return std::make_unique<F32LayerCache>(c, n_kv_heads, head_dim);
    case CacheKind::kF16:
      return std::make_unique<F16LayerCache>(c, n_kv_heads, head_dim);
    case CacheKind::kQ8_0:
      return std::make_unique<Q8_0LayerCache>(c, n_kv_heads, head_dim);
    case CacheKind::kQ4_0:
      return std::make_unique<Q4_0LayerCache>(c, n_kv_heads, head_dim);
    case CacheKind::kKivi:
      return std::make_unique<KiviLayerCache>(c, n_kv_heads, head_dim);
    case CacheKind::kInnerQ:
      return std::make_unique<InnerQLayerCache>(c, n_kv_heads, head_dim);
  }
  throw Error("unknown cache kind");
}

}  // namespace

KvCache::KvCache(const CacheShape& shape, const std::vector<LayerConfig>& layers) : shape_(shape) {
  if (shape.n_layers <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0 ||
      shape.max_tokens <= 0) {
    throw Error(
        fmt::format("cache shape: layers {}, kv heads {}, head_dim {}, max tokens {} must "
                    "all be positive",
                    shape.n_layers, shape.n_kv_heads, shape.head_dim, shape.max_tokens));
  }
  if (layers.size() != static_cast<size_t>(shape.n_layers)) {
    throw Error(
        fmt::format("cache: {} layer configs for {} layers", layers.size(), shape.n_layers));
  }
  if (!shape.windows.empty()) {
    if (shape.windows.size() != static_cast<size_t>(shape.n_layers)) {
      throw Error(fmt::format("cache shape: {} layer windows for {} layers", shape.windows.size(),
                              shape.n_layers));
    }
    for (size_t l = 0; l < shape.windows.size(); ++l) {
      if (shape.windows[l] < 0)
        throw Error(
            fmt::format("cache shape: layer {} window {} is negative", l, shape.windows[l]));
    }
  }
  configs_ = layers;
  clear();
}

void KvCache::clear() {
  layers_.clear();
  for (int l = 0; l < shape_.n_layers; ++l) {
    const int window = shape_.window(l);
    if (window > 0) {
      layers_.push_back(
          std::make_unique<WindowLayerCache>(window, shape_.n_kv_heads, shape_.head_dim));
    } else {
      layers_.push_back(
          make_layer_cache(configs_[static_cast<size_t>(l)], shape_.n_kv_heads, shape_.head_dim));
    }
  }
  failure_.clear();
}

void KvCache::mark_failed(const std::string& why) {
  if (failure_.empty()) failure_ = why.empty() ? std::string("unknown error") : why;
}

bool KvCache::layers_agree() const {
  for (const auto& l : layers_) {
    if (l->n_tokens() != n_tokens()) return false;
  }
  return true;
}

void KvCache::require_usable() const {
  if (!failure_.empty()) {
    throw Error(
        fmt::format("cache: unusable since a step failed part-way through the layers ({}); "
                    "clear it or start a new sequence",
                    failure_));
  }
}

KvCache::KvCache(const CacheShape& shape, const LayerConfig& all_layers)
    : KvCache(shape, std::vector<LayerConfig>(static_cast<size_t>(std::max(shape.n_layers, 0)),
                                              all_layers)) {}

void KvCache::validate(int layer, const float* k, const float* v, int n_tokens) const {
  if (layer < 0 || layer >= shape_.n_layers) {
    throw Error(fmt::format("cache: layer {} out of range (0..{})", layer, shape_.n_layers - 1));
  }
  const LayerCache& lc = *layers_[static_cast<size_t>(layer)];
  if (n_tokens < 0 || lc.n_tokens() + n_tokens > shape_.max_tokens) {
    throw Error(fmt::format("cache: appending {} tokens to {} exceeds the context of {} tokens",
                            n_tokens, lc.n_tokens(), shape_.max_tokens));
  }
  // One behaviour for non-finite input, whatever the kind: reject it before
  // anything is stored, so no NaN reaches attention and the cache is unchanged.
  const float limit = lc.kind() == CacheKind::kF32 ? std::numeric_limits<float>::max() : kF16Max;
  const size_t per_token = static_cast<size_t>(shape_.n_kv_heads) * shape_.head_dim;
  for (const float* x : {k, v}) {
    for (size_t i = 0; i < per_token * static_cast<size_t>(n_tokens); ++i) {
      if (!(std::fabs(x[i]) <= limit)) {
        throw Error(
            fmt::format("cache: layer {} {} {} at token {}, element {} is not finite or "
                        "exceeds ±{}",
                        layer, x == k ? "key" : "value", x[i],
                        static_cast<size_t>(lc.n_tokens()) + i / per_token, i % per_token, limit));
      }
    }
  }
  // Rotated storage (kernels/hadamard.h) keeps a row's norm, not its maximum:
  // a rotated element is at most the row's L2 norm, so only a row whose norm
  // could exceed the limit is rotated here to check it exactly.
  const LayerConfig& c = lc.config();
  const size_t D = static_cast<size_t>(shape_.head_dim);
  const size_t n_rows = static_cast<size_t>(n_tokens) * shape_.n_kv_heads;
  for (const float* x : {c.rot_k ? k : nullptr, c.rot_v ? v : nullptr}) {
    if (x == nullptr) continue;
    for (size_t r = 0; r < n_rows; ++r) {
      double norm2 = 0.0;
      for (size_t i = 0; i < D; ++i) norm2 += static_cast<double>(x[r * D + i]) * x[r * D + i];
      if (std::sqrt(norm2) <= 0.999 * limit) continue;
      std::vector<float> row(x + r * D, x + (r + 1) * D);
      kernels::simd::hadamard_rotate(row.data(), 1, D, false);
      for (size_t i = 0; i < D; ++i) {
        if (!(std::fabs(row[i]) <= limit)) {
          throw Error(fmt::format("cache: layer {} rotated {} {} at token {} exceeds ±{}", layer,
                                  x == k ? "key" : "value", row[i],
                                  static_cast<size_t>(lc.n_tokens()) + r / shape_.n_kv_heads,
                                  limit));
        }
      }
    }
  }
}

void KvCache::check_append(int layer, const float* k, const float* v, int n_tokens) const {
  require_usable();
  validate(layer, k, v, n_tokens);
}

void KvCache::append(int layer, const float* k, const float* v, int n_tokens) {
  require_usable();
  validate(layer, k, v, n_tokens);
  LayerCache& lc = *layers_[static_cast<size_t>(layer)];
  const LayerConfig& c = lc.config();
  if (!c.rot_k && !c.rot_v) {
    lc.append(k, v, n_tokens);
    return;
  }
  // Rotated storage: the rows go in rotated (decode rotates the query and
  // rotates the output back).
  const size_t n = static_cast<size_t>(n_tokens) * shape_.n_kv_heads * shape_.head_dim;
  thread_local std::vector<float> rk, rv;
  const auto rotated = [&](const float* x, std::vector<float>& buffer) {
    buffer.assign(x, x + n);
    kernels::simd::hadamard_rotate(buffer.data(), n / shape_.head_dim, shape_.head_dim, false);
    return buffer.data();
  };
  lc.append(c.rot_k ? rotated(k, rk) : k, c.rot_v ? rotated(v, rv) : v, n_tokens);
}

MemoryUsage KvCache::memory() const {
  MemoryUsage m;
  for (const auto& l : layers_) m += l->memory();
  return m;
}

namespace {

MemoryUsage filled_layer_memory(const LayerConfig& config, int n_kv_heads, int head_dim,
                                int n_tokens) {
  KvCache one(CacheShape{1, n_kv_heads, head_dim, std::max(n_tokens, 1)}, config);
  if (n_tokens > 0) {
    // Values do not change the storage; small distinct ones keep every
    // kind's checks (range, rotation) satisfied.
    std::vector<float> rows(static_cast<size_t>(n_tokens) * n_kv_heads * head_dim);
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<float>(i % 7) * 0.125f;
    one.append(0, rows.data(), rows.data(), n_tokens);
  }
  return one.memory();
}

MemoryUsage scaled(const MemoryUsage& m, size_t times) {
  return {m.codes * times, m.metadata * times, m.windows * times, m.norm * times};
}

MemoryUsage difference(const MemoryUsage& a, const MemoryUsage& b) {
  return {a.codes - b.codes, a.metadata - b.metadata, a.windows - b.windows, a.norm - b.norm};
}

}  // namespace

MemoryUsage plan_layer_memory(const LayerConfig& config, int n_kv_heads, int head_dim,
                              int64_t n_tokens) {
  if (n_tokens < 0) throw Error(fmt::format("cache plan: {} tokens is negative", n_tokens));
  // Period: 16-token tiles, 32-value blocks, K and V groups, and the recent
  // window (KIVI's key residual flushes whole groups when it reaches it).
  int64_t period = 32;
  for (const int n : {config.group, config.key_group(), config.recent}) {
    if (n > 0) period = std::lcm(period, int64_t{n});
  }
  // Past the windows plus one whole period, storage grows by the same bytes
  // every period.
  const int64_t settled = int64_t{config.sink} + config.recent + 2 * period;
  if (n_tokens <= settled + period) {
    return filled_layer_memory(config, n_kv_heads, head_dim, static_cast<int>(n_tokens));
  }
  const int64_t periods = (n_tokens - settled) / period;
  const int64_t start = n_tokens - periods * period;  // in [settled, settled + period)
  const MemoryUsage a = filled_layer_memory(config, n_kv_heads, head_dim, static_cast<int>(start));
  const MemoryUsage b =
      filled_layer_memory(config, n_kv_heads, head_dim, static_cast<int>(start + period));
  MemoryUsage out = a;
  out += scaled(difference(b, a), static_cast<size_t>(periods));
  return out;
}

MemoryUsage plan_window_layer_memory(int window, int n_kv_heads, int head_dim, int64_t n_tokens) {
  if (n_tokens < 0) throw Error(fmt::format("cache plan: {} tokens is negative", n_tokens));
  if (window <= 0) throw Error(fmt::format("cache plan: window {} must be positive", window));
  // The ring's storage (window_layer_cache.h): K in whole 16-token tiles, V
  // in rows, for the positions it holds.
  const int64_t held = std::min<int64_t>(n_tokens, window);
  const int64_t k_slots = (held + kTileRows - 1) / kTileRows * kTileRows;
  MemoryUsage m;
  m.windows = static_cast<size_t>((k_slots + held) * n_kv_heads * head_dim) * sizeof(f16_bits);
  return m;
}

size_t KvCache::bytes_f16_equivalent() const {
  size_t tokens = 0;
  for (int l = 0; l < shape_.n_layers; ++l) {
    const int n = layers_[static_cast<size_t>(l)]->n_tokens();
    const int window = shape_.window(l);
    tokens += static_cast<size_t>(window > 0 ? std::min(n, window) : n);
  }
  return tokens * 2 /* K and V */ * static_cast<size_t>(shape_.n_kv_heads) * shape_.head_dim *
         sizeof(f16_bits);
}

}  // namespace innerq::kv
