// KvCache: one LayerCache per layer, built from the layer's configuration.
#include "innerq/kv/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <limits>
#include <vector>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/kernels/channel_order.h"
#include "innerq/kernels/hadamard.h"
#include "innerq/kernels/llama_blocks.h"
#include "innerq/kernels/tile_format.h"
#include "innerq/kv/key_factors.h"
#include "innerq/kv/layer_caches.h"
#include "innerq/kv/window_layer_cache.h"

namespace innerq::kv {
// ---------------------------------------------------------------------------
// Byte streams
// ---------------------------------------------------------------------------
void ByteReader::require(size_t n) const {
  if (left() < n) {
    throw Error(fmt::format("{}: the data ends early (truncated: {} more bytes expected, {} left)",
                            what_, n, left()));
  }
}

void ByteReader::bytes(void* out, size_t n) {
  require(n);
  std::memcpy(out, p_, n);
  p_ += n;
}

int ByteReader::get_int(const char* field, int lo, int hi) {
  const int32_t x = get<int32_t>();
  if (x < lo || x > hi) {
    throw Error(fmt::format("{}: {} {} is outside {}..{}", what_, field, x, lo, hi));
  }
  return x;
}

// ---------------------------------------------------------------------------
// LayerCache: the block table
// ---------------------------------------------------------------------------
LayerCache::~LayerCache() {
  for (int id : blocks_) pool_->release(id);
}

LayerCache::LayerCache(const LayerCache& o)
    : config_(o.config_),
      n_kv_heads_(o.n_kv_heads_),
      head_dim_(o.head_dim_),
      n_tokens_(o.n_tokens_),
      layer_index_(o.layer_index_),
      own_pool_(o.own_pool_),
      pool_(o.pool_),
      block_tokens_(o.block_tokens_),
      layout_(o.layout_) {
  blocks_.reserve(o.blocks_.capacity());
  for (int id : o.blocks_) {
    pool_->retain(id);
    blocks_.push_back(id);
  }
}

size_t AppendScratch::bytes() const {
  return (k_row.capacity() + v_row.capacity() + row.capacity() + scaled.capacity() +
          channel.capacity()) *
             sizeof(float) +
         converted.capacity() + records.capacity() +
         (block_ids.capacity() + copied.capacity()) * sizeof(int);
}

size_t LayerCache::reserved_bytes() const {
  return blocks_bytes();
}

void LayerCache::use_blocks(const BlockLayout& layout, BlockPool* pool, int block_tokens) {
  layout_ = layout;
  block_tokens_ = block_tokens;
  if (pool == nullptr) {
    own_pool_ =
        std::make_shared<BlockPool>(fmt::format("{} layer cache", cache_kind_name(config_.kind)),
                                    layout.block_bytes(n_kv_heads_), 4, /*growable=*/true);
    pool = own_pool_.get();
  } else if (pool->block_bytes() != layout.block_bytes(n_kv_heads_)) {
    throw Error(fmt::format("{} layer cache: pool blocks of {} bytes, the layer needs {}",
                            cache_kind_name(config_.kind), pool->block_bytes(),
                            layout.block_bytes(n_kv_heads_)));
  }
  pool_ = pool;
  blocks_.reserve(64);
}

void LayerCache::size_scratch(AppendScratch& s) const {
  const size_t D = static_cast<size_t>(head_dim_);
  if (config_.rot_k || config_.kperm != kernels::ChannelOrder::kAsIs) at_least(s.k_row, D);
  if (config_.rot_v) at_least(s.v_row, D);
  at_least(s.converted, D * sizeof(float));
  // An append takes at most the blocks of a whole table plus the copies of
  // the two it may share with a fork at its end (K and V middles).
  at_least(s.block_ids, blocks_.capacity() + 2);
  at_least(s.copied, blocks_.capacity() + 2);
}

void LayerCache::reserve_rows(int) {}

void LayerCache::check_truncate(int n_tokens) const {
  if (n_tokens < 0 || n_tokens > n_tokens_) {
    throw Error(
        fmt::format("cache: cannot truncate to {} tokens: a layer holds {}", n_tokens, n_tokens_));
  }
}

const float* LayerCache::input_row(const float* x, int i, int h, bool value,
                                   std::vector<float>& buffer) const {
  const size_t D = static_cast<size_t>(head_dim_);
  const float* row = x + (static_cast<size_t>(i) * n_kv_heads_ + static_cast<size_t>(h)) * D;
  // Keys: channel order first, then the rotation (kernels/channel_order.h).
  const bool permute = !value && config_.kperm != kernels::ChannelOrder::kAsIs;
  const bool rotate = value ? config_.rot_v : config_.rot_k;
  if (!permute && !rotate) return row;
  float* out = at_least(buffer, D);
  if (permute)
    kernels::permute_channels(row, out, head_dim_, config_.kperm);
  else
    std::copy(row, row + D, out);
  if (rotate) kernels::simd::hadamard_rotate(out, 1, head_dim_, false);
  return out;
}

void LayerCache::append(const float* k, const float* v, int n_tokens, ChunkSteps* steps) {
  AppendScratch scratch;
  append(k, v, n_tokens, scratch, steps);
}

void LayerCache::append(const float* k, const float* v, int n_tokens, AppendScratch& scratch,
                        ChunkSteps* steps) {
  if (n_tokens <= 0) return;
  const int held = n_blocks_held();
  prepare_write(slots_written(n_tokens), scratch);
  try {
    // An append with steps flushes after each token, so its windows never
    // hold more than one new row beyond what they keep: no room to grow.
    reserve_rows(steps != nullptr ? 1 : n_tokens);
    if (steps != nullptr) {
      steps->first = n_tokens_;
      steps->n = n_tokens;
      steps->k_end.resize(static_cast<size_t>(n_tokens));
      steps->v_end.resize(static_cast<size_t>(n_tokens));
      for (int i = 0; i < n_tokens; ++i) {
        steps->k_end[static_cast<size_t>(i)] = steps->v_end[static_cast<size_t>(i)] =
            n_tokens_ + i + 1;
      }
      steps->has_rows = false;
      prepare_steps(n_tokens, *steps);
    }
  } catch (...) {  // memory: the blocks just taken go back (copies stay: same bytes)
    keep_blocks(held);
    throw;
  }
  store(k, v, n_tokens, scratch, steps);
}

void LayerCache::prepare_steps(int, ChunkSteps&) const {}

int LayerCache::blocks_to_take(const std::array<SlotRange, 2>& ranges,
                               std::vector<int>& copied) const {
  const int held = n_blocks_held(), B = block_tokens_;
  int end = held, first = held;
  for (const SlotRange& r : ranges) {
    if (r.end <= r.first) continue;
    first = std::min(first, static_cast<int>(r.first / B));
    end = std::max(end, static_cast<int>((r.end + B - 1) / B));
  }
  // Held blocks the append writes that a fork shares: decided once here
  // (a count read again later could have dropped meanwhile).
  copied.clear();
  for (int j = first; j < held; ++j) {
    bool written = false;
    for (const SlotRange& r : ranges) {
      written = written || (r.end > r.first && j >= r.first / B && j < (r.end + B - 1) / B);
    }
    if (written && pool_->refs(blocks_[static_cast<size_t>(j)]) > 1) copied.push_back(j);
  }
  return end - held;
}

int LayerCache::blocks_needed(int n_tokens) const {
  if (n_tokens <= 0) return 0;
  std::vector<int> copied;
  return blocks_to_take(slots_written(n_tokens), copied) + static_cast<int>(copied.size());
}

void LayerCache::prepare_write(const std::array<SlotRange, 2>& ranges, AppendScratch& s) {
  const size_t n_new = static_cast<size_t>(blocks_to_take(ranges, s.copied));
  if (n_new + s.copied.size() == 0) return;  // every block held alone: no lock taken
  // Only a standalone cache's table can grow.
  blocks_.reserve(static_cast<size_t>(n_blocks_held()) + n_new);
  s.block_ids.resize(n_new + s.copied.size());
  pool_->acquire_n(s.block_ids);  // all or none; throws when the pool is full
  size_t next = 0;
  for (const int j : s.copied) {
    int& id = blocks_[static_cast<size_t>(j)];
    const int mine = s.block_ids[next++];
    for (int h = 0; h < n_kv_heads_; ++h) {
      std::memcpy(region(mine, h, false), region(id, h, false), layout_.k_region);
      std::memcpy(region(mine, h, true), region(id, h, true), layout_.v_region);
    }
    pool_->release(id);
    id = mine;
  }
  while (next < s.block_ids.size()) {
    const int id = s.block_ids[next++];
    for (int h = 0; h < n_kv_heads_; ++h) {  // a block from the pool holds old bytes
      std::memset(region(id, h, false), 0, layout_.k_region);
      std::memset(region(id, h, true), 0, layout_.v_region);
    }
    blocks_.push_back(id);
  }
}

void LayerCache::push_block_segment(std::vector<Segment>& list, const Segment& s,
                                    size_t region_bytes, size_t exact_bytes) const {
  if (!list.empty() && exact_bytes == region_bytes) {
    Segment& last = list.back();
    const int B = block_tokens_;
    if (last.form == s.form && last.length % B == 0 && last.start + last.length == s.start &&
        static_cast<const uint8_t*>(last.data) +
                static_cast<size_t>(last.length / B) * region_bytes ==
            s.data) {
      last.length += s.length;
      return;
    }
  }
  list.push_back(s);
}

void LayerCache::reset_segments(HeadSegments& out) const {
  out.k.clear();
  out.v.clear();
  out.k.reserve(blocks_.capacity() + 3);
  out.v.reserve(blocks_.capacity() + 3);
  out.key_norm = out.key_mean = nullptr;
  out.key_perm = nullptr;
  out.origin = 0;
}

void LayerCache::keep_blocks(int n_keep) {
  while (static_cast<int>(blocks_.size()) > n_keep) {
    pool_->release(blocks_.back());
    blocks_.pop_back();
  }
}

void LayerCache::save_blocks(ByteWriter& out) const {
  out.put<int32_t>(static_cast<int32_t>(blocks_.size()));
  for (int id : blocks_) {
    for (int h = 0; h < n_kv_heads_; ++h) {
      out.bytes(region(id, h, false), layout_.k_region);
      out.bytes(region(id, h, true), layout_.v_region);
    }
  }
}

void LayerCache::load_blocks(ByteReader& in, int expected) {
  const int n = in.get_int("blocks", expected, expected);
  keep_blocks(0);
  in.require(static_cast<size_t>(n) * pool_->block_bytes());
  AppendScratch scratch;
  prepare_write({SlotRange{0, int64_t{n} * block_tokens_}, SlotRange{}}, scratch);
  for (int j = 0; j < n; ++j) {
    const int id = blocks_[static_cast<size_t>(j)];
    for (int h = 0; h < n_kv_heads_; ++h) {
      in.bytes(region(id, h, false), layout_.k_region);
      in.bytes(region(id, h, true), layout_.v_region);
    }
  }
}

void LayerCache::truncate_stored_tokens(int n_tokens) {
  n_tokens_ = n_tokens;
  keep_blocks((n_tokens + block_tokens_ - 1) / block_tokens_);
}

void LayerCache::save_stored_tokens(ByteWriter& out) const {
  out.put<int32_t>(n_tokens_);
  save_blocks(out);
}

void LayerCache::load_stored_tokens(ByteReader& in) {
  n_tokens_ = in.get_int("tokens", 0, kMaxSavedTokens);
  load_blocks(in, (n_tokens_ + block_tokens_ - 1) / block_tokens_);
}

// Configs as the shape's head_dim resolves them: a config of `innerq` whose
// fields are still chosen by head_dim (cache_spec.h) gets them here, so a
// cache built from parse_cache_spec("innerq").layer is the same cache as one
// built from CacheSpec::layers().
static std::vector<LayerConfig> resolved(std::vector<LayerConfig> configs, int head_dim) {
  for (LayerConfig& c : configs) {
    if (c.by_head_dim != 0) c = resolve_head_dim(c, head_dim);
  }
  return configs;
}

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
  configs_ = resolved(layers, shape.head_dim);
  // A private pool that grows in slabs of up to 16 blocks: a single sequence
  // never holds more than its plan, and pages become resident as written.
  const MemoryPlan plan = plan_memory(shape_, configs_);
  const int64_t slab = std::clamp<int64_t>(plan.pool_blocks(1, shape_.max_tokens), 1, 16);
  pool_ = std::make_shared<KvPool>(shape_, configs_, slab, kDefaultBlockTokens, false, true);
  clear();
}

KvCache::KvCache(std::shared_ptr<KvPool> pool, int max_tokens)
    : shape_(pool->shape()), configs_(pool->configs()), pool_(std::move(pool)) {
  if (max_tokens < 0) throw Error(fmt::format("cache: max tokens {} is negative", max_tokens));
  if (max_tokens > 0) shape_.max_tokens = max_tokens;
  clear();
}

void KvCache::clear() {
  layers_.clear();
  const int64_t max_blocks =
      (int64_t{shape_.max_tokens} + pool_->block_tokens() - 1) / pool_->block_tokens();
  for (int l = 0; l < shape_.n_layers; ++l) {
    const int window = shape_.window(l);
    if (window > 0) {
      layers_.push_back(
          std::make_unique<WindowLayerCache>(window, shape_.n_kv_heads, shape_.head_dim));
    } else {
      layers_.push_back(make_layer_cache(configs_[static_cast<size_t>(l)], shape_.n_kv_heads,
                                         shape_.head_dim, pool_->layer(l), pool_->block_tokens()));
      const LayerConfig& c = configs_[static_cast<size_t>(l)];
      if (c.key_factors != nullptr) {
        check_key_factors(*c.key_factors, l, shape_.n_kv_heads, shape_.head_dim);
      }
      // The block table never grows during decode.
      layers_.back()->reserve_blocks(static_cast<int>(std::min<int64_t>(max_blocks, 1 << 20)));
    }
    layers_.back()->set_layer_index(l);
    layers_.back()->size_scratch(scratch_);
  }
  failure_.clear();
}

KvCache& KvCache::operator=(KvCache&& other) noexcept {
  if (this != &other) {
    layers_.clear();  // back to pool_ while it is alive: this may be its last owner
    shape_ = std::move(other.shape_);
    configs_ = std::move(other.configs_);
    pool_ = std::move(other.pool_);
    layers_ = std::move(other.layers_);
    scratch_ = std::move(other.scratch_);
    failure_ = std::move(other.failure_);
  }
  return *this;
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

void KvCache::append(int layer, const float* k, const float* v, int n_tokens, ChunkSteps* steps) {
  require_usable();
  validate(layer, k, v, n_tokens);
  // Rotated layers rotate each row as they store it (LayerCache::input_row).
  layers_[static_cast<size_t>(layer)]->append(k, v, n_tokens, scratch_, steps);
}

size_t KvCache::reserved_bytes() const {
  size_t bytes = 0;
  for (const auto& l : layers_) bytes += l->reserved_bytes();
  return bytes;
}

// ---------------------------------------------------------------------------
// Sequence operations
// ---------------------------------------------------------------------------
std::unique_ptr<KvCache> KvCache::fork() const {
  require_usable();
  auto child = std::make_unique<KvCache>(pool_, shape_.max_tokens);
  for (size_t l = 0; l < layers_.size(); ++l) {
    child->layers_[l] = layers_[l]->clone();
    child->layers_[l]->size_scratch(child->scratch_);
  }
  return child;
}

void KvCache::truncate(int n_drop) {
  int shortest = n_tokens();
  for (const auto& l : layers_) shortest = std::min(shortest, l->n_tokens());
  if (n_drop < 0 || n_drop > shortest) {
    throw Error(fmt::format("cache: cannot drop {} tokens of a sequence of {}", n_drop, shortest));
  }
  truncate_to(shortest - n_drop);
}

void KvCache::truncate_to(int n) {
  // Every layer checks first (a sliding-window ring may be unable to give
  // the positions back): a refusal changes nothing.
  for (const auto& l : layers_) l->check_truncate(n);
  for (const auto& l : layers_) l->truncate(n);
  failure_.clear();
}

namespace {

constexpr char kSeqMagic[8] = {'I', 'N', 'N', 'E', 'R', 'Q', 'K', 'V'};
constexpr uint32_t kSeqVersion = 2;  // 2: sliding-window rings with spare slots

uint64_t fnv1a64(const uint8_t* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

void put_string(ByteWriter& w, const std::string& s) {
  w.put<uint32_t>(static_cast<uint32_t>(s.size()));
  w.bytes(s.data(), s.size());
}

std::string get_string(ByteReader& r) {
  const uint32_t n = r.get<uint32_t>();
  if (n > r.left() || n > 4096)
    throw Error(fmt::format("{}: a config string of {} bytes", r.what(), n));
  std::string s(n, '\0');
  r.bytes(s.data(), n);
  return s;
}

}  // namespace

void KvCache::save(const std::string& path) const {
  require_usable();
  if (!layers_agree()) throw Error("cache save: the layers hold different numbers of tokens");
  ByteWriter w;
  w.bytes(kSeqMagic, sizeof kSeqMagic);
  w.put<uint32_t>(kSeqVersion);
  for (const int x :
       {shape_.n_layers, shape_.n_kv_heads, shape_.head_dim, pool_->block_tokens(), n_tokens()}) {
    w.put<int32_t>(x);
  }
  for (int l = 0; l < shape_.n_layers; ++l) {
    w.put<int32_t>(shape_.window(l));
    put_string(w, spec_string(configs_[static_cast<size_t>(l)]));
  }
  for (const auto& l : layers_) l->save(w);
  std::string& bytes = w.str();
  const uint64_t sum = fnv1a64(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  bytes.append(reinterpret_cast<const char*>(&sum), sizeof sum);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f.good()) throw Error(fmt::format("cache save: cannot write {}", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error(fmt::format("cache save: cannot rename {} to {}", tmp, path));
  }
}

void KvCache::load(const std::string& path) {
  if (n_tokens() != 0 || failed()) {
    throw Error(fmt::format("cache load: {}: the cache must be empty", path));
  }
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error(fmt::format("cache load: cannot open {}", path));
  const std::streamoff size = f.tellg();
  const size_t header = sizeof kSeqMagic + 4;
  if (size < static_cast<std::streamoff>(header + 8)) {
    throw Error(fmt::format("cache load: {}: {} bytes is too short for a sequence file", path,
                            static_cast<long long>(size)));
  }
  std::vector<uint8_t> data(static_cast<size_t>(size));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(data.data()), size);
  if (!f) throw Error(fmt::format("cache load: cannot read {}", path));
  if (std::memcmp(data.data(), kSeqMagic, sizeof kSeqMagic) != 0) {
    throw Error(fmt::format("cache load: {} is not an innerq sequence file (bad magic)", path));
  }
  uint32_t version = 0;
  std::memcpy(&version, data.data() + sizeof kSeqMagic, 4);
  if (version != kSeqVersion) {
    throw Error(fmt::format("cache load: {}: version {}, this build reads version {}", path,
                            version, kSeqVersion));
  }
  uint64_t sum = 0;
  std::memcpy(&sum, data.data() + data.size() - 8, 8);
  if (fnv1a64(data.data(), data.size() - 8) != sum) {
    throw Error(
        fmt::format("cache load: {}: checksum mismatch (the file is corrupted or "
                    "truncated)",
                    path));
  }
  ByteReader r(data.data() + header, data.size() - header - 8, "cache load: " + path);
  const auto expect = [&](const char* field, int want) {
    const int32_t got = r.get<int32_t>();
    if (got != want) {
      throw Error(fmt::format("cache load: {}: {} {}, this cache has {}", path, field, got, want));
    }
  };
  expect("layers", shape_.n_layers);
  expect("KV heads", shape_.n_kv_heads);
  expect("head_dim", shape_.head_dim);
  expect("block tokens", pool_->block_tokens());
  const int n = r.get_int("tokens", 0, shape_.max_tokens);
  for (int l = 0; l < shape_.n_layers; ++l) {
    expect("window", shape_.window(l));
    const std::string spec = get_string(r);
    const std::string mine = spec_string(configs_[static_cast<size_t>(l)]);
    if (spec != mine) {
      throw Error(fmt::format("cache load: {}: layer {} was saved as '{}', this cache is '{}'",
                              path, l, spec, mine));
    }
  }
  try {
    for (const auto& l : layers_) {
      l->load(r);
      if (l->n_tokens() != n) {
        throw Error(fmt::format("cache load: {}: a layer holds {} tokens, the header says {}", path,
                                l->n_tokens(), n));
      }
    }
    if (r.left() != 0) {
      throw Error(fmt::format("cache load: {}: {} bytes after the last layer", path, r.left()));
    }
  } catch (...) {
    clear();
    throw;
  }
}

MemoryUsage KvCache::memory() const {
  MemoryUsage m;
  for (const auto& l : layers_) m += l->memory();
  return m;
}

// ---------------------------------------------------------------------------
// Memory planning
// ---------------------------------------------------------------------------
namespace {

int64_t div_up64(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Checks that a cache of `config` can be built for this shape (the same
// checks the constructors make), without building one.
void check_plannable(const LayerConfig& c, int n_kv_heads, int head_dim, int block_tokens) {
  if (n_kv_heads <= 0 || head_dim <= 0) {
    throw Error(fmt::format("cache plan: {} KV heads of head_dim {}", n_kv_heads, head_dim));
  }
  const auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw Error(fmt::format("{} cache: {}", cache_kind_name(c.kind), what));
  };
  need(c.kperm == kernels::ChannelOrder::kAsIs || head_dim % 2 == 0,
       fmt::format("kperm={} needs an even head_dim, not {}", channel_order_name(c.kperm),
                   head_dim));
  need(block_tokens > 0 && block_tokens % kTileRows == 0,
       fmt::format("block of {} tokens is not a positive multiple of {}", block_tokens, kTileRows));
  switch (c.kind) {
    case CacheKind::kQ8_0:
    case CacheKind::kQ4_0:
      need(head_dim % kLlamaBlock == 0,
           fmt::format("head_dim {} is not a multiple of {}", head_dim, kLlamaBlock));
      break;
    case CacheKind::kKivi:
      need(head_dim % c.group == 0,
           fmt::format("head_dim {} is not a multiple of g={}", head_dim, c.group));
      need(block_tokens % c.group == 0,
           fmt::format("block of {} tokens is not a multiple of g={}", block_tokens, c.group));
      break;
    case CacheKind::kInnerQ:
      need(head_dim % c.key_group() == 0 && head_dim % kTileRows == 0,
           fmt::format("head_dim {} is not a multiple of the key group {} and of {}", head_dim,
                       c.key_group(), kTileRows));
      need(block_tokens % c.group == 0,
           fmt::format("block of {} tokens is not a multiple of g={}", block_tokens, c.group));
      break;
    default:
      break;
  }
}

}  // namespace

LayerPlan plan_layer(const LayerConfig& c, int n_kv_heads, int head_dim, int64_t n,
                     int block_tokens) {
  if (n < 0) throw Error(fmt::format("cache plan: {} tokens is negative", n));
  check_plannable(c, n_kv_heads, head_dim, block_tokens);
  const size_t H = static_cast<size_t>(n_kv_heads), D = static_cast<size_t>(head_dim);
  const size_t row = D * sizeof(f16_bits);  // one f16 window row
  LayerPlan p;
  int64_t window_rows = 0;  // live f16 rows per head (K and V together)
  switch (c.kind) {
    case CacheKind::kF32:
    case CacheKind::kF16: {
      p.k_middle = p.v_middle = n;
      const size_t elem = c.kind == CacheKind::kF32 ? sizeof(float) : sizeof(f16_bits);
      p.content.windows =
          static_cast<size_t>(div_up64(n, kTileRows) * kTileRows + n) * D * H * elem;
      break;
    }
    case CacheKind::kQ8_0:
    case CacheKind::kQ4_0: {
      p.k_middle = p.v_middle = n;
      const size_t blocks = 2 * static_cast<size_t>(n) * (D / kLlamaBlock) * H;
      p.content.codes = blocks * (c.kind == CacheKind::kQ8_0 ? 32 : 16);
      p.content.metadata = blocks * sizeof(f16_bits);
      break;
    }
    case CacheKind::kKivi: {
      const int64_t G = c.group, M = std::max(c.recent, c.group), P = M / G * G;
      p.k_middle = n >= M ? (1 + (n - M) / P) * P : 0;  // K flushes P tokens on reaching M
      p.v_middle = std::max<int64_t>(0, n - c.recent);  // V keeps `recent`
      const size_t records =
          static_cast<size_t>(p.k_middle / G) * D + static_cast<size_t>(p.v_middle) * (D / G);
      const size_t meta = group_meta_bytes(QuantMode::kAsymmetric);
      const size_t rec = group_record_bytes(c.k_bits, c.group, QuantMode::kAsymmetric);
      p.content.metadata = records * meta * H;
      p.content.codes = records * (rec - meta) * H;
      window_rows = (n - p.k_middle) + (n - p.v_middle);
      p.window_bytes = static_cast<size_t>(M + c.recent + 1) * row * H;
      break;
    }
    case CacheKind::kInnerQ: {
      const int64_t s = std::min<int64_t>(n, c.sink), after = n - s, R = c.recent, G = c.group;
      p.k_middle = std::max<int64_t>(0, after - R);
      p.v_middle = after >= R ? (after - R) / G * G : 0;
      const TileFormat kf{c.k_bits, c.key_group(), head_dim / c.key_group(),
                          mode_has_zero(c.k_mode)};
      const TileFormat vf{c.v_bits, c.group, 1, mode_has_zero(c.v_mode)};
      const size_t k_tiles = static_cast<size_t>(div_up64(p.k_middle, kTileRows));
      const size_t v_tiles = static_cast<size_t>(p.v_middle / G) * (D / kTileRows);
      p.content.codes = (k_tiles * kf.code_bytes() + v_tiles * vf.code_bytes()) * H;
      p.content.metadata = (k_tiles * kf.meta_bytes() + v_tiles * vf.meta_bytes()) * H;
      window_rows = 2 * s + (after - p.k_middle) + (after - p.v_middle);
      if (p.k_middle > 0 ||
          (c.key_factors != nullptr && n > 0)) {  // calibrated: from the first token
        p.norm_bytes = (c.knorm != KeyNorm::kOff ? 1 : 0) * H * D * sizeof(float) +
                       (c.kcenter ? 1 : 0) * H * D * sizeof(float) +
                       (c.ksort ? 1 : 0) * H * D * sizeof(uint16_t);
      }
      p.content.norm = p.norm_bytes;
      p.window_bytes = static_cast<size_t>(2 * c.sink + (R + 1) + (R + G)) * row * H;
      break;
    }
  }
  p.content.windows += static_cast<size_t>(window_rows) * row * H;
  p.block_bytes = layer_block_layout(c, head_dim, block_tokens).block_bytes(n_kv_heads);
  p.blocks = div_up64(std::max(p.k_middle, p.v_middle), block_tokens);
  return p;
}

MemoryUsage plan_layer_memory(const LayerConfig& config, int n_kv_heads, int head_dim,
                              int64_t n_tokens) {
  return plan_layer(config, n_kv_heads, head_dim, n_tokens).content;
}

MemoryPlan plan_memory(const CacheShape& shape, const std::vector<LayerConfig>& configs,
                       int block_tokens) {
  if (configs.size() != static_cast<size_t>(shape.n_layers)) {
    throw Error(
        fmt::format("cache plan: {} layer configs for {} layers", configs.size(), shape.n_layers));
  }
  MemoryPlan plan{shape, resolved(configs, shape.head_dim), block_tokens};
  for (int l = 0; l < shape.n_layers; ++l) {
    if (shape.window(l) == 0) plan.layer(l, 0);  // refuses configs the shape cannot hold
  }
  return plan;
}

LayerPlan MemoryPlan::layer(int l, int64_t n_tokens) const {
  const int window = shape.window(l);
  if (window > 0) {  // the ring: allocated whole with the sequence, not pooled
    LayerPlan p;
    p.content = plan_window_layer_memory(window, shape.n_kv_heads, shape.head_dim, n_tokens);
    p.window_bytes = window_ring_bytes(window, shape.n_kv_heads, shape.head_dim);
    return p;
  }
  return plan_layer(configs[static_cast<size_t>(l)], shape.n_kv_heads, shape.head_dim, n_tokens,
                    block_tokens);
}

size_t MemoryPlan::sequence_bytes(int64_t n_tokens) const {
  size_t bytes = 0;
  for (int l = 0; l < shape.n_layers; ++l) bytes += layer(l, n_tokens).reserved();
  return bytes;
}

int64_t MemoryPlan::pool_blocks(int n_seqs, int64_t n_tokens) const {
  int64_t blocks = 0;
  for (int l = 0; l < shape.n_layers; ++l) blocks = std::max(blocks, layer(l, n_tokens).blocks);
  return blocks * n_seqs;
}

size_t MemoryPlan::bytes(int n_seqs, int64_t n_tokens) const {
  const int64_t blocks = pool_blocks(n_seqs, n_tokens);
  size_t bytes = 0;
  for (int l = 0; l < shape.n_layers; ++l) {
    const LayerPlan p = layer(l, n_tokens);
    bytes += static_cast<size_t>(blocks) * p.block_bytes +
             static_cast<size_t>(n_seqs) * (p.window_bytes + p.norm_bytes);
  }
  return bytes;
}

int64_t MemoryPlan::tokens_for_budget(size_t budget, int n_seqs) const {
  if (n_seqs <= 0) throw Error(fmt::format("cache plan: {} sequences", n_seqs));
  int64_t lo = 0, hi = int64_t{1} << 24;  // bytes() grows with the tokens
  if (bytes(n_seqs, 1) > budget) return 0;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (bytes(n_seqs, mid) <= budget)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// ---------------------------------------------------------------------------
// KvPool
// ---------------------------------------------------------------------------
KvPool::KvPool(const CacheShape& shape, const std::vector<LayerConfig>& configs, int64_t n_blocks,
               int block_tokens, bool prefault, bool growable)
    : shape_(shape),
      configs_(resolved(configs, shape.head_dim)),
      block_tokens_(block_tokens),
      n_blocks_(n_blocks) {
  const MemoryPlan plan = plan_memory(shape, configs_, block_tokens);
  if (n_blocks <= 0 || n_blocks > (1 << 30)) {
    throw Error(fmt::format("KV pool: {} blocks per layer is not in 1..2^30", n_blocks));
  }
  for (int l = 0; l < shape.n_layers; ++l) {
    if (shape.window(l) > 0) {
      pools_.push_back(nullptr);
      continue;
    }
    const size_t block_bytes = plan.layer(l, 0).block_bytes;
    pools_.push_back(std::make_unique<BlockPool>(fmt::format("KV pool (layer {})", l), block_bytes,
                                                 static_cast<int>(n_blocks), growable));
    if (prefault) pools_.back()->prefault();
  }
}

std::shared_ptr<KvPool> KvPool::for_sequences(const CacheShape& shape,
                                              const std::vector<LayerConfig>& configs, int n_seqs,
                                              int64_t n_tokens, bool prefault) {
  const MemoryPlan plan = plan_memory(shape, configs);
  return std::make_shared<KvPool>(shape, configs,
                                  std::max<int64_t>(1, plan.pool_blocks(n_seqs, n_tokens)),
                                  kDefaultBlockTokens, prefault);
}

size_t KvPool::bytes() const {
  size_t bytes = 0;
  for (const auto& p : pools_) bytes += p ? p->bytes() : 0;
  return bytes;
}

MemoryUsage plan_window_layer_memory(int window, int n_kv_heads, int head_dim, int64_t n_tokens) {
  if (n_tokens < 0) throw Error(fmt::format("cache plan: {} tokens is negative", n_tokens));
  if (window <= 0) throw Error(fmt::format("cache plan: window {} must be positive", window));
  // The positions attention reads (window_layer_cache.h), K in whole
  // 16-token tiles, V in rows.
  const int64_t held = std::min<int64_t>(n_tokens, window);
  const int64_t k_slots = (held + kTileRows - 1) / kTileRows * kTileRows;
  MemoryUsage m;
  m.windows = static_cast<size_t>((k_slots + held) * n_kv_heads * head_dim) * sizeof(f16_bits);
  return m;
}

size_t window_ring_bytes(int window, int n_kv_heads, int head_dim) {
  if (window <= 0) throw Error(fmt::format("cache plan: window {} must be positive", window));
  const int64_t slots = int64_t{window} + kWindowSpare;
  const int64_t k_slots = (slots + kTileRows - 1) / kTileRows * kTileRows;
  return static_cast<size_t>((k_slots + slots) * n_kv_heads * head_dim) * sizeof(f16_bits);
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
