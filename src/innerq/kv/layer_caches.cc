// Storage and flush rules of the per-layer caches (layer_caches.h).
#include "innerq/kv/layer_caches.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <numeric>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/kernels/attn_kernels.h"
#include "innerq/kernels/f16_convert.h"
#include "innerq/kernels/quant_kernels.h"
#include "innerq/kv/key_factors.h"
#include "innerq/quant/group_quant.h"

namespace innerq::kv {

// ---------------------------------------------------------------------------
// F16Rows
// ---------------------------------------------------------------------------
F16Rows::F16Rows(int head_dim, int capacity)
    : head_dim_(head_dim),
      bound_(capacity),
      data_(static_cast<size_t>(std::max(capacity, 0)) * static_cast<size_t>(head_dim)) {}

f16_bits* F16Rows::slot_for_push() {
  const size_t D = static_cast<size_t>(head_dim_);
  if (static_cast<size_t>(front_ + count_ + 1) * D > data_.size()) {
    if (front_ > 0) {  // move the live rows to the start (bounded by the window)
      std::memmove(data_.data(), data_.data() + static_cast<size_t>(front_) * D,
                   static_cast<size_t>(count_) * D * sizeof(f16_bits));
      front_ = 0;
    } else {  // only an append longer than the window gets here
      data_.resize(std::max<size_t>(2 * data_.size(), static_cast<size_t>(count_ + 1) * D));
    }
  }
  return data_.data() + static_cast<size_t>(front_ + count_++) * D;
}

void F16Rows::push(const float* row) {
  kernels::f32_to_f16(row, static_cast<size_t>(head_dim_), slot_for_push());
}

void F16Rows::push_f16(const f16_bits* row) {
  std::memcpy(slot_for_push(), row, static_cast<size_t>(head_dim_) * sizeof(f16_bits));
}

void F16Rows::to_f32(int first, int n, float* out) const {
  kernels::f16_to_f32(row(first), static_cast<size_t>(n) * head_dim_, out);
}

void F16Rows::subtract(const float* mu, float* row) {
  for (int i = 0; i < size(); ++i) {
    f16_bits* r = data_.data() + (front_ + i) * static_cast<size_t>(head_dim_);
    kernels::f16_to_f32(r, static_cast<size_t>(head_dim_), row);
    for (int c = 0; c < head_dim_; ++c) row[c] = std::clamp(row[c] - mu[c], -kF16Max, kF16Max);
    kernels::f32_to_f16(row, static_cast<size_t>(head_dim_), r);
  }
}

void F16Rows::pop_front(int n) {
  front_ += n;
  count_ -= n;
  if (count_ == 0) front_ = 0;
}

void F16Rows::pop_back(int n) {
  count_ -= n;
  if (count_ == 0) front_ = 0;
}

void F16Rows::make_room(int n) {
  const size_t D = static_cast<size_t>(head_dim_);
  const size_t need = static_cast<size_t>(count_ + n) * D;
  if (static_cast<size_t>(front_) * D + need <= data_.size()) return;
  if (need > data_.size()) {  // allocated first: a failure changes nothing
    std::vector<f16_bits> larger(need);
    std::copy(row(0), row(0) + static_cast<size_t>(count_) * D, larger.begin());
    data_.swap(larger);
  } else {
    std::memmove(data_.data(), row(0), static_cast<size_t>(count_) * D * sizeof(f16_bits));
  }
  front_ = 0;
}

void F16Rows::trim() {
  const size_t D = static_cast<size_t>(head_dim_);
  if (data_.size() <= static_cast<size_t>(bound_) * D || count_ > bound_) return;
  try {
    std::vector<f16_bits> fresh(static_cast<size_t>(bound_) * D);
    std::copy(row(0), row(0) + static_cast<size_t>(count_) * D, fresh.begin());
    data_.swap(fresh);
    front_ = 0;
  } catch (const std::bad_alloc&) {
    // Keeps the larger buffer (the rows are whole); the next trim tries again.
  }
}

void F16Rows::save(ByteWriter& out) const {
  out.put<int32_t>(count_);
  if (count_ > 0) out.bytes(row(0), bytes());
}

void F16Rows::load(ByteReader& in, int max_rows) {
  const int n = in.get_int("window rows", 0, max_rows);
  pop_back(count_);
  std::vector<f16_bits> r(static_cast<size_t>(head_dim_));
  for (int i = 0; i < n; ++i) {
    in.bytes(r.data(), r.size() * sizeof(f16_bits));
    push_f16(r.data());
  }
  trim();
}

size_t ChunkSteps::bytes() const {
  size_t b = (k_end.capacity() + v_end.capacity()) * sizeof(int) +
             (k_rows.capacity() + v_rows.capacity()) * sizeof(F16Rows);
  for (const auto* rows : {&k_rows, &v_rows}) {
    for (const F16Rows& r : *rows) b += r.reserved_bytes();
  }
  return b;
}

namespace {

// `to` becomes a copy of the live rows of `from` (per head) with room for
// n_new more rows, reusing its buffers (ChunkSteps: the window rows a
// chunk's first token sees).
void copy_window_rows(const std::vector<F16Rows>& from, int head_dim, int n_new,
                      std::vector<F16Rows>& to) {
  if (to.size() != from.size() || (!to.empty() && to[0].head_dim() != head_dim)) {
    to.assign(from.size(), F16Rows(head_dim, 0));
  }
  for (size_t h = 0; h < from.size(); ++h) {
    to[h].pop_back(to[h].size());
    to[h].make_room(from[h].size() + n_new);
    for (int t = 0; t < from[h].size(); ++t) to[h].push_f16(from[h].row(t));
  }
}

size_t round_region(size_t bytes) {
  return (bytes + kRegionAlign - 1) / kRegionAlign * kRegionAlign;
}

int div_up(int64_t a, int64_t b) {
  return static_cast<int>((a + b - 1) / b);
}

void check_block_tokens(const LayerConfig& c, int block_tokens, int token_group) {
  if (block_tokens <= 0 || block_tokens % kTileRows != 0 ||
      (token_group > 0 && block_tokens % token_group != 0)) {
    throw Error(fmt::format("{} cache: block of {} tokens is not a positive multiple of {}{}",
                            cache_kind_name(c.kind), block_tokens, kTileRows,
                            token_group > 0 ? fmt::format(" and of g={}", token_group) : ""));
  }
}

// Middle slots [first, end): nothing when the append flushes nothing there.
template <class Range>
Range slots(int64_t first, int64_t end) {
  return end > first ? Range{first, end} : Range{};
}

Segment rows_f16(const F16Rows& rows, int start) {
  return {
      SegmentForm::kRowsF16, start, rows.size(), 1, rows.size() > 0 ? rows.row(0) : nullptr, {}};
}

}  // namespace

// ---------------------------------------------------------------------------
// f32 / f16
// ---------------------------------------------------------------------------
template <typename T>
BlockLayout PlainLayerCache<T>::layout(const LayerConfig&, int head_dim, int block_tokens) {
  const size_t bytes = static_cast<size_t>(block_tokens) * head_dim * sizeof(T);
  return {round_region(bytes), round_region(bytes)};
}

template <typename T>
PlainLayerCache<T>::PlainLayerCache(const LayerConfig& config, int n_kv_heads, int head_dim,
                                    BlockPool* pool, int block_tokens)
    : LayerCache(config, n_kv_heads, head_dim) {
  check_block_tokens(config, block_tokens, 0);
  use_blocks(layout(config, head_dim, block_tokens), pool, block_tokens);
}

template <typename T>
std::array<LayerCache::SlotRange, 2> PlainLayerCache<T>::slots_written(int n_tokens) const {
  return {slots<SlotRange>(n_tokens_, int64_t{n_tokens_} + n_tokens), SlotRange{}};
}

template <typename T>
void PlainLayerCache<T>::store(const float* k, const float* v, int n_tokens, AppendScratch& s,
                               ChunkSteps*) {
  const int D = head_dim_, B = block_tokens();
  // A K row, converted once, then spread over its tile.
  T* krow = reinterpret_cast<T*>(at_least(s.converted, static_cast<size_t>(D) * sizeof(T)));
  for (int h = 0; h < n_kv_heads_; ++h) {
    for (int i = 0; i < n_tokens; ++i) {
      const int t = n_tokens_ + i, j = t / B, r = t % B;
      T* tile =
          reinterpret_cast<T*>(k_write(j, h)) + static_cast<size_t>(r / kTileRows) * D * kTileRows;
      T* vrow = reinterpret_cast<T*>(v_write(j, h)) + static_cast<size_t>(r) * D;
      const float* ksrc = input_row(k, i, h, false, s.k_row);
      const float* vsrc = input_row(v, i, h, true, s.v_row);
      if constexpr (std::is_same_v<T, float>) {
        std::copy(ksrc, ksrc + D, krow);
        std::copy(vsrc, vsrc + D, vrow);
      } else {
        kernels::f32_to_f16(ksrc, static_cast<size_t>(D), krow);
        kernels::f32_to_f16(vsrc, static_cast<size_t>(D), vrow);
      }
      for (int c = 0; c < D; ++c) tile[c * kTileRows + r % kTileRows] = krow[c];
    }
  }
  n_tokens_ += n_tokens;
}

template <typename T>
MemoryUsage PlainLayerCache<T>::memory() const {
  MemoryUsage m;
  const size_t k_slots = static_cast<size_t>(div_up(n_tokens_, kTileRows)) * kTileRows;
  m.windows = (k_slots + static_cast<size_t>(n_tokens_)) * head_dim_ * n_kv_heads_ * sizeof(T);
  return m;
}

template <typename T>
void PlainLayerCache<T>::segments(int head, HeadSegments& out) const {
  reset_segments(out);
  const int B = block_tokens();
  const SegmentForm kf = std::is_same_v<T, float> ? SegmentForm::kTilesF32 : SegmentForm::kTilesF16;
  const SegmentForm vf = std::is_same_v<T, float> ? SegmentForm::kRowsF32 : SegmentForm::kRowsF16;
  for (int j = 0; j * B < n_tokens_; ++j) {
    const int len = std::min(B, n_tokens_ - j * B);
    const size_t exact = static_cast<size_t>(B) * head_dim_ * sizeof(T);
    push_block_segment(out.k, {kf, j * B, len, kTileRows, k_read(j, head), {}},
                       block_layout().k_region, exact);
    push_block_segment(out.v, {vf, j * B, len, 1, v_read(j, head), {}}, block_layout().v_region,
                       exact);
  }
}

template <typename T>
std::vector<T> PlainLayerCache<T>::k_tiles(int head) const {
  const size_t tile = static_cast<size_t>(head_dim_) * kTileRows;
  std::vector<T> out;
  for (int t = 0; t < n_tokens_; t += kTileRows) {
    const T* p = k_tiles(t / block_tokens(), head) +
                 static_cast<size_t>(t % block_tokens() / kTileRows) * tile;
    out.insert(out.end(), p, p + tile);
  }
  return out;
}

template <typename T>
std::vector<T> PlainLayerCache<T>::v_rows(int head) const {
  std::vector<T> out;
  for (int j = 0; j * block_tokens() < n_tokens_; ++j) {
    const size_t n = static_cast<size_t>(std::min(block_tokens(), n_tokens_ - j * block_tokens()));
    out.insert(out.end(), v_rows(j, head), v_rows(j, head) + n * head_dim_);
  }
  return out;
}

template <typename T>
void PlainLayerCache<T>::truncate(int n_tokens) {
  truncate_stored_tokens(n_tokens);
}

template <typename T>
void PlainLayerCache<T>::save(ByteWriter& out) const {
  save_stored_tokens(out);
}

template <typename T>
void PlainLayerCache<T>::load(ByteReader& in) {
  load_stored_tokens(in);
}

template class PlainLayerCache<float>;
template class PlainLayerCache<f16_bits>;

// ---------------------------------------------------------------------------
// q8_0 / q4_0
// ---------------------------------------------------------------------------
template <typename Block>
BlockLayout LlamaBlockLayerCache<Block>::layout(const LayerConfig&, int head_dim,
                                                int block_tokens) {
  const size_t bytes = static_cast<size_t>(block_tokens) *
                       static_cast<size_t>(head_dim / kLlamaBlock) * sizeof(Block);
  return {round_region(bytes), round_region(bytes)};
}

template <typename Block>
LlamaBlockLayerCache<Block>::LlamaBlockLayerCache(const LayerConfig& config, int n_kv_heads,
                                                  int head_dim, BlockPool* pool, int block_tokens)
    : LayerCache(config, n_kv_heads, head_dim) {
  if (head_dim % kLlamaBlock != 0) {
    throw Error(fmt::format("{} cache: head_dim {} is not a multiple of {}",
                            cache_kind_name(config.kind), head_dim, kLlamaBlock));
  }
  check_block_tokens(config, block_tokens, 0);
  use_blocks(layout(config, head_dim, block_tokens), pool, block_tokens);
}

template <typename Block>
std::array<LayerCache::SlotRange, 2> LlamaBlockLayerCache<Block>::slots_written(
    int n_tokens) const {
  return {slots<SlotRange>(n_tokens_, int64_t{n_tokens_} + n_tokens), SlotRange{}};
}

template <typename Block>
void LlamaBlockLayerCache<Block>::store(const float* k, const float* v, int n_tokens,
                                        AppendScratch& s, ChunkSteps*) {
  const int nb = head_dim_ / kLlamaBlock, B = block_tokens();
  for (int h = 0; h < n_kv_heads_; ++h) {
    for (int i = 0; i < n_tokens; ++i) {
      const int t = n_tokens_ + i, j = t / B;
      const size_t off = static_cast<size_t>(t % B) * nb;
      Block* kd = reinterpret_cast<Block*>(k_write(j, h)) + off;
      Block* vd = reinterpret_cast<Block*>(v_write(j, h)) + off;
      const float* krow = input_row(k, i, h, false, s.k_row);
      const float* vrow = input_row(v, i, h, true, s.v_row);
      for (int b = 0; b < nb; ++b) {
        quantize_block(krow + b * kLlamaBlock, kd + b);
        quantize_block(vrow + b * kLlamaBlock, vd + b);
      }
    }
  }
  n_tokens_ += n_tokens;
}

template <typename Block>
MemoryUsage LlamaBlockLayerCache<Block>::memory() const {
  const size_t blocks =
      2 * static_cast<size_t>(n_tokens_) * (head_dim_ / kLlamaBlock) * n_kv_heads_;
  MemoryUsage m;
  m.codes = blocks * sizeof(Block::qs);
  m.metadata = blocks * sizeof(f16_bits);
  return m;
}

template <typename Block>
void LlamaBlockLayerCache<Block>::segments(int head, HeadSegments& out) const {
  reset_segments(out);
  const int B = block_tokens();
  const SegmentForm f = std::is_same_v<Block, BlockQ8_0> ? SegmentForm::kQ8_0 : SegmentForm::kQ4_0;
  for (int j = 0; j * B < n_tokens_; ++j) {
    const int len = std::min(B, n_tokens_ - j * B);
    const size_t exact = static_cast<size_t>(B) * (head_dim_ / kLlamaBlock) * sizeof(Block);
    push_block_segment(out.k, {f, j * B, len, 1, k_read(j, head), {}}, block_layout().k_region,
                       exact);
    push_block_segment(out.v, {f, j * B, len, 1, v_read(j, head), {}}, block_layout().v_region,
                       exact);
  }
}

template <typename Block>
void LlamaBlockLayerCache<Block>::truncate(int n_tokens) {
  truncate_stored_tokens(n_tokens);
}

template <typename Block>
void LlamaBlockLayerCache<Block>::save(ByteWriter& out) const {
  save_stored_tokens(out);
}

template <typename Block>
void LlamaBlockLayerCache<Block>::load(ByteReader& in) {
  load_stored_tokens(in);
}

template class LlamaBlockLayerCache<BlockQ8_0>;
template class LlamaBlockLayerCache<BlockQ4_0>;

// ---------------------------------------------------------------------------
// KIVI
// ---------------------------------------------------------------------------
static kernels::GroupSpec kivi_spec(const LayerConfig& c) {
  return {c.k_bits, c.group, QuantMode::kAsymmetric};
}

BlockLayout KiviLayerCache::layout(const LayerConfig& c, int head_dim, int block_tokens) {
  const size_t rec = kivi_spec(c).record_bytes();
  return {round_region(static_cast<size_t>(block_tokens / c.group) * head_dim * rec +
                       kernels::kRecordTailPad),
          round_region(static_cast<size_t>(block_tokens) * (head_dim / c.group) * rec +
                       kernels::kRecordTailPad)};
}

KiviLayerCache::KiviLayerCache(const LayerConfig& config, int n_kv_heads, int head_dim,
                               BlockPool* pool, int block_tokens)
    : LayerCache(config, n_kv_heads, head_dim),
      k_res_(static_cast<size_t>(n_kv_heads),
             F16Rows(head_dim, std::max(config.recent, config.group))),
      v_res_(static_cast<size_t>(n_kv_heads), F16Rows(head_dim, config.recent + 1)) {
  if (head_dim % config.group != 0) {
    throw Error(
        fmt::format("kivi cache: head_dim {} is not a multiple of g={}", head_dim, config.group));
  }
  check_block_tokens(config, block_tokens, config.group);
  use_blocks(layout(config, head_dim, block_tokens), pool, block_tokens);
}

size_t KiviLayerCache::k_block_bytes() const {
  return static_cast<size_t>(head_dim_) * kivi_spec(config_).record_bytes();
}

size_t KiviLayerCache::v_row_bytes() const {
  return static_cast<size_t>(head_dim_ / config_.group) * kivi_spec(config_).record_bytes();
}

// K's residual flushes its whole G-groups once it holds max(R, G) tokens;
// V's keeps R and flushes the rest. The tokens each flushes after a push
// (one rule for store() and for slots_written()).
static int kivi_k_flush(int residual, const LayerConfig& c) {
  return residual >= std::max(c.recent, c.group) ? residual / c.group * c.group : 0;
}
static int kivi_v_flush(int residual, const LayerConfig& c) {
  return std::max(0, residual - c.recent);
}

std::array<LayerCache::SlotRange, 2> KiviLayerCache::slots_written(int n_tokens) const {
  int k_res = k_res_[0].size(), v_res = v_res_[0].size();
  int64_t k_q = k_quant_tokens_, v_q = v_quant_tokens_;
  for (int i = 0; i < n_tokens; ++i) {
    const int k_flush = kivi_k_flush(++k_res, config_), v_flush = kivi_v_flush(++v_res, config_);
    k_q += k_flush;
    k_res -= k_flush;
    v_q += v_flush;
    v_res -= v_flush;
  }
  return {slots<SlotRange>(k_quant_tokens_, k_q), slots<SlotRange>(v_quant_tokens_, v_q)};
}

void KiviLayerCache::size_scratch(AppendScratch& s) const {
  LayerCache::size_scratch(s);
  at_least(s.row, static_cast<size_t>(head_dim_));
  at_least(s.channel, static_cast<size_t>(config_.group));
}

void KiviLayerCache::prepare_steps(int n_tokens, ChunkSteps& steps) const {
  steps.k_rows_from = k_quant_tokens_;
  steps.v_rows_from = v_quant_tokens_;
  copy_window_rows(k_res_, head_dim_, n_tokens, steps.k_rows);
  copy_window_rows(v_res_, head_dim_, n_tokens, steps.v_rows);
  steps.has_rows = true;
}

void KiviLayerCache::store(const float* k, const float* v, int n_tokens, AppendScratch& s,
                           ChunkSteps* steps) {
  for (int h = 0; h < n_kv_heads_; ++h) {
    auto& kr = k_res_[static_cast<size_t>(h)];
    auto& vr = v_res_[static_cast<size_t>(h)];
    for (int i = 0; i < n_tokens; ++i) {
      const int held = n_tokens_ + i + 1;  // tokens of this head after the push
      const float* krow = input_row(k, i, h, false, s.k_row);
      const float* vrow = input_row(v, i, h, true, s.v_row);
      kr.push(krow);
      vr.push(vrow);
      if (const int n = kivi_k_flush(kr.size(), config_)) flush_k(h, n, held - kr.size(), s);
      if (const int n = kivi_v_flush(vr.size(), config_)) flush_v(h, n, held - vr.size(), s);
      if (steps != nullptr) {  // every head flushes the same tokens: head 0 records
        steps->k_rows[static_cast<size_t>(h)].push(krow);
        steps->v_rows[static_cast<size_t>(h)].push(vrow);
        if (h == 0) {
          steps->k_end[static_cast<size_t>(i)] = held - kr.size();
          steps->v_end[static_cast<size_t>(i)] = held - vr.size();
        }
      }
    }
  }
  n_tokens_ += n_tokens;
  k_quant_tokens_ = n_tokens_ - k_res_[0].size();
  v_quant_tokens_ = n_tokens_ - v_res_[0].size();
}

void KiviLayerCache::flush_k(int head, int n_tokens, int mid, AppendScratch& s) {
  const kernels::GroupSpec spec = kivi_spec(config_);
  const int G = config_.group, D = head_dim_, B = block_tokens();
  auto& res = k_res_[static_cast<size_t>(head)];
  float* channel = at_least(s.channel, static_cast<size_t>(G));
  for (int b = 0; b < n_tokens / G; ++b) {
    const int m = mid + b * G;
    uint8_t* records = k_write(m / B, head) + static_cast<size_t>(m % B / G) * k_block_bytes();
    // Record c is channel c over the group's G tokens, quantized one at a
    // time from the f16 rows.
    for (int c = 0; c < D; ++c) {
      for (int t = 0; t < G; ++t) channel[t] = f16_to_f32(res.row(b * G + t)[c]);
      kernels::simd::quantize_token_block(spec, channel, 1, records + c * spec.record_bytes());
    }
  }
  res.pop_front(n_tokens);
}

void KiviLayerCache::flush_v(int head, int n_tokens, int mid, AppendScratch& s) {
  const kernels::GroupSpec spec = kivi_spec(config_);
  const int B = block_tokens();
  auto& res = v_res_[static_cast<size_t>(head)];
  float* row = at_least(s.row, static_cast<size_t>(head_dim_));
  for (int t = 0; t < n_tokens; ++t) {
    const int m = mid + t;
    res.to_f32(t, 1, row);
    kernels::simd::quantize_row(spec, row, static_cast<size_t>(head_dim_ / config_.group),
                                v_write(m / B, head) + static_cast<size_t>(m % B) * v_row_bytes());
  }
  res.pop_front(n_tokens);
}

MemoryUsage KiviLayerCache::memory() const {
  MemoryUsage m;
  const kernels::GroupSpec spec = kivi_spec(config_);
  const size_t records = static_cast<size_t>(k_quant_tokens_ / config_.group) * head_dim_ +
                         static_cast<size_t>(v_quant_tokens_) * (head_dim_ / config_.group);
  const size_t meta = group_meta_bytes(spec.mode);
  for (int h = 0; h < n_kv_heads_; ++h) {
    const size_t hs = static_cast<size_t>(h);
    m.metadata += records * meta;
    m.codes += records * (spec.record_bytes() - meta);
    m.windows += k_res_[hs].bytes() + v_res_[hs].bytes();
  }
  return m;
}

size_t KiviLayerCache::reserved_bytes() const {
  size_t bytes = blocks_bytes();
  for (int h = 0; h < n_kv_heads_; ++h) {
    bytes += k_res_[static_cast<size_t>(h)].reserved_bytes() +
             v_res_[static_cast<size_t>(h)].reserved_bytes();
  }
  return bytes;
}

void KiviLayerCache::segments(int head, HeadSegments& out) const {
  reset_segments(out);
  const int B = block_tokens(), G = config_.group;
  for (int j = 0; j * B < std::max(k_quant_tokens_, v_quant_tokens_); ++j) {
    const int k_len = std::min(B, k_quant_tokens_ - j * B);
    const int v_len = std::min(B, v_quant_tokens_ - j * B);
    if (k_len > 0) {
      Segment s{SegmentForm::kKiviK, j * B, k_len, G, k_read(j, head), {}};
      s.bits = bits();
      s.group = G;
      out.k.push_back(s);
    }
    if (v_len > 0) {
      Segment s{SegmentForm::kKiviV, j * B, v_len, 1, v_read(j, head), {}};
      s.bits = bits();
      s.group = G;
      out.v.push_back(s);
    }
  }
  out.k.push_back(rows_f16(k_residual(head), k_quant_tokens_));
  out.v.push_back(rows_f16(v_residual(head), v_quant_tokens_));
}

std::vector<uint8_t> KiviLayerCache::k_blocks(int head) const {
  std::vector<uint8_t> out;
  const int B = block_tokens(), G = config_.group;
  for (int m = 0; m < k_quant_tokens_; m += G) {
    const uint8_t* p = k_read(m / B, head) + static_cast<size_t>(m % B / G) * k_block_bytes();
    out.insert(out.end(), p, p + k_block_bytes());
  }
  return out;
}

std::vector<uint8_t> KiviLayerCache::v_rows(int head) const {
  std::vector<uint8_t> out;
  const int B = block_tokens();
  for (int m = 0; m < v_quant_tokens_; ++m) {
    const uint8_t* p = v_read(m / B, head) + static_cast<size_t>(m % B) * v_row_bytes();
    out.insert(out.end(), p, p + v_row_bytes());
  }
  return out;
}

void KiviLayerCache::truncate(int n) {
  const int G = config_.group, B = block_tokens(), D = head_dim_;
  const int k_q = n >= k_quant_tokens_ ? k_quant_tokens_ : n / G * G;
  const int v_q = std::min(n, v_quant_tokens_);
  std::vector<float> block;  // a cut K group, dequantized (truncate is not per token)
  for (int h = 0; h < n_kv_heads_; ++h) {
    auto& kr = k_res_[static_cast<size_t>(h)];
    auto& vr = v_res_[static_cast<size_t>(h)];
    // Each residual keeps what it holds of tokens [its first, n): counted
    // from its own rows, so the result is exact whatever they hold.
    if (n >= k_quant_tokens_) {
      kr.pop_back(kr.size() - (n - k_quant_tokens_));
    } else {  // the kept tokens of a cut K group go back to f16, dequantized
      kr.pop_back(kr.size());
      if (n > k_q) {
        block.resize(static_cast<size_t>(G) * D);
        kernels::simd::dequantize_token_block(
            kivi_spec(config_),
            k_read(k_q / B, h) + static_cast<size_t>(k_q % B / G) * k_block_bytes(),
            static_cast<size_t>(D), block.data());
        for (int t = 0; t < n - k_q; ++t) kr.push(block.data() + static_cast<size_t>(t) * D);
      }
    }
    vr.pop_back(n >= v_quant_tokens_ ? vr.size() - (n - v_quant_tokens_) : vr.size());
  }
  n_tokens_ = n;
  k_quant_tokens_ = k_q;
  v_quant_tokens_ = v_q;
  keep_blocks(div_up(std::max(k_q, v_q), B));
}

void KiviLayerCache::save(ByteWriter& out) const {
  out.put<int32_t>(n_tokens_);
  out.put<int32_t>(k_quant_tokens_);
  out.put<int32_t>(v_quant_tokens_);
  for (int h = 0; h < n_kv_heads_; ++h) {
    k_res_[static_cast<size_t>(h)].save(out);
    v_res_[static_cast<size_t>(h)].save(out);
  }
  save_blocks(out);
}

void KiviLayerCache::load(ByteReader& in) {
  n_tokens_ = in.get_int("tokens", 0, kMaxSavedTokens);
  k_quant_tokens_ = in.get_int("quantized K tokens", 0, n_tokens_);
  v_quant_tokens_ = in.get_int("quantized V tokens", 0, n_tokens_);
  if (k_quant_tokens_ % config_.group != 0) {
    throw Error(fmt::format("{}: quantized K tokens {} is not a multiple of g={}", in.what(),
                            k_quant_tokens_, config_.group));
  }
  for (int h = 0; h < n_kv_heads_; ++h) {
    auto& kr = k_res_[static_cast<size_t>(h)];
    auto& vr = v_res_[static_cast<size_t>(h)];
    kr.load(in, n_tokens_);
    vr.load(in, n_tokens_);
    if (kr.size() != n_tokens_ - k_quant_tokens_ || vr.size() != n_tokens_ - v_quant_tokens_) {
      throw Error(
          fmt::format("{}: KIVI residual rows do not add up to {} tokens", in.what(), n_tokens_));
    }
  }
  load_blocks(in, div_up(std::max(k_quant_tokens_, v_quant_tokens_), block_tokens()));
}

// ---------------------------------------------------------------------------
// InnerQ
// ---------------------------------------------------------------------------
namespace {

TileFormat innerq_k_format(const LayerConfig& c, int head_dim) {
  return {c.k_bits, c.key_group(), head_dim / c.key_group(), mode_has_zero(c.k_mode), c.k_levels};
}

TileFormat innerq_v_format(const LayerConfig& c) {
  return {c.v_bits, c.group, 1, mode_has_zero(c.v_mode)};
}

}  // namespace

BlockLayout InnerQLayerCache::layout(const LayerConfig& c, int head_dim, int block_tokens) {
  return {round_region(static_cast<size_t>(block_tokens / kTileRows) *
                       innerq_k_format(c, head_dim).bytes()),
          round_region(static_cast<size_t>(block_tokens / c.group) * (head_dim / kTileRows) *
                       innerq_v_format(c).bytes())};
}

InnerQLayerCache::InnerQLayerCache(const LayerConfig& config, int n_kv_heads, int head_dim,
                                   BlockPool* pool, int block_tokens)
    : LayerCache(config, n_kv_heads, head_dim),
      k_fmt_(innerq_k_format(config, head_dim)),
      v_fmt_(innerq_v_format(config)),
      k_sink_(static_cast<size_t>(n_kv_heads), F16Rows(head_dim, config.sink)),
      v_sink_(static_cast<size_t>(n_kv_heads), F16Rows(head_dim, config.sink)),
      k_recent_(static_cast<size_t>(n_kv_heads), F16Rows(head_dim, config.recent + 1)),
      v_recent_(static_cast<size_t>(n_kv_heads), F16Rows(head_dim, config.recent + config.group)),
      ones_(static_cast<size_t>(head_dim), 1.0f) {
  if (head_dim % config.key_group() != 0) {
    throw Error(fmt::format("innerq cache: head_dim {} is not a multiple of the key group {}",
                            head_dim, config.key_group()));
  }
  if (head_dim % kTileRows != 0) {
    throw Error(
        fmt::format("innerq cache: head_dim {} is not a multiple of {}", head_dim, kTileRows));
  }
  if (!levels_fit(config.k_levels, config.k_bits, config.k_mode)) {
    throw Error(
        fmt::format("innerq cache: klevels=normal needs symmetric 2-4 bit keys, not k={} kmode={}",
                    config.k_bits, quant::quant_mode_name(config.k_mode)));
  }
  check_block_tokens(config, block_tokens, config.group);
  use_blocks(layout(config, head_dim, block_tokens), pool, block_tokens);
}

size_t InnerQLayerCache::records_bytes() const {
  const kernels::GroupSpec k{config_.k_bits, config_.key_group(), config_.k_mode};
  const kernels::GroupSpec v{config_.v_bits, config_.group, config_.v_mode};
  return std::max(k_fmt_.n_groups * k.record_bytes(), v.record_bytes());
}

void InnerQLayerCache::size_scratch(AppendScratch& s) const {
  LayerCache::size_scratch(s);
  at_least(s.row, static_cast<size_t>(head_dim_));
  at_least(s.scaled, static_cast<size_t>(head_dim_));
  at_least(s.channel, static_cast<size_t>(config_.group));
  at_least(s.records, records_bytes());
}

const float* InnerQLayerCache::key_norm(int head) const {
  return key_norm_.empty() ? ones_.data() : key_norm_[static_cast<size_t>(head)].data();
}

std::array<LayerCache::SlotRange, 2> InnerQLayerCache::slots_written(int n_tokens) const {
  const int R = config_.recent, G = config_.group;
  // Tokens at positions below `sink` go to the sink, the rest to the recent
  // windows, which flush after the whole append.
  const int to_recent = n_tokens - std::min(n_tokens, std::max(0, config_.sink - n_tokens_));
  const int k_recent = k_recent_tokens() + to_recent, v_recent = v_recent_tokens() + to_recent;
  const int64_t k_mid = int64_t{k_mid_tokens_} + std::max(0, k_recent - R);
  const int64_t v_mid = int64_t{v_mid_tokens_} + std::max(0, v_recent - R) / G * G;
  return {slots<SlotRange>(k_mid_tokens_, k_mid), slots<SlotRange>(v_mid_tokens_, v_mid)};
}

void InnerQLayerCache::reserve_rows(int n_tokens) {
  if (config_.key_factors != nullptr && n_tokens_ == 0 && key_norm_.empty() && key_mean_.empty()) {
    // Calibrated statistics hold from the first key: every key is stored
    // f16(K − μ) and quantized as (K − μ)/f whenever it is flushed, so equal
    // prefixes store equal bytes however they were appended. Built aside and
    // moved in, so that a failed allocation changes nothing.
    const KeyFactors& kf = *config_.key_factors;
    std::vector<std::vector<float>> norm, mean;
    for (int h = 0; h < n_kv_heads_; ++h) {
      if (config_.knorm != KeyNorm::kOff) {
        const float* f = kf.head_factors(layer_index(), h);
        norm.emplace_back(f, f + head_dim_);
      }
      if (config_.kcenter) {
        const float* mu = kf.head_means(layer_index(), h);
        mean.emplace_back(mu, mu + head_dim_);
      }
    }
    key_norm_.swap(norm);
    key_mean_.swap(mean);
  }
  // The windows flush after each token, so one more row is all they need
  // (within their bound). Only an append that may hold the first flush keeps
  // its keys until its end (store()): one head at a time, in first_rows_.
  const int to_recent = n_tokens - std::min(n_tokens, std::max(0, config_.sink - n_tokens_));
  if (!statistics_fixed()) first_rows_ = F16Rows(head_dim_, k_recent_[0].size() + to_recent);
  for (auto* windows : {&k_recent_, &v_recent_}) {
    for (F16Rows& w : *windows) w.make_room(std::min(to_recent, 1));
  }
}

bool InnerQLayerCache::statistics_fixed() const {
  const bool none = config_.knorm == KeyNorm::kOff && !config_.kcenter && !config_.ksort;
  return none || !key_norm_.empty() || !key_mean_.empty() || !key_perm_.empty();
}

void InnerQLayerCache::prepare_steps(int n_tokens, ChunkSteps& steps) const {
  steps.k_rows_from = sink_tokens() + k_mid_tokens_;
  steps.v_rows_from = sink_tokens() + v_mid_tokens_;
  copy_window_rows(k_recent_, head_dim_, n_tokens, steps.k_rows);
  copy_window_rows(v_recent_, head_dim_, n_tokens, steps.v_rows);
  steps.has_rows = true;
}

void InnerQLayerCache::store(const float* k, const float* v, int n_tokens, AppendScratch& s,
                             ChunkSteps* steps) {
  const int S = config_.sink, R = config_.recent, G = config_.group;
  // With steps, or once the statistics are fixed, the windows flush after
  // each token, as decode does: the same bytes, and windows that never grow.
  // Otherwise this append holds the first flush, which comes after the whole
  // append so that the key statistics cover every prompt key
  // (docs/architecture.md, "Key normalization").
  const bool per_token = steps != nullptr || statistics_fixed();
  for (int h = 0; h < n_kv_heads_; ++h) {
    const size_t hs = static_cast<size_t>(h);
    // Otherwise this head's recent keys gather in first_rows_ (the window's,
    // then the append's), and the window takes back what stays f16 at the
    // end: the same bytes, and a window that never outgrows its bound.
    F16Rows& k_recent = per_token ? k_recent_[hs] : first_rows_;
    if (!per_token) {
      first_rows_.pop_front(first_rows_.size());
      const F16Rows& window = k_recent_[hs];
      for (int t = 0; t < window.size(); ++t) first_rows_.push_f16(window.row(t));
    }
    F16Rows& v_recent = v_recent_[hs];
    // Every head flushes the same tokens, so the members stay this head's
    // counts until the end, which updates them after all heads.
    int k_mid = k_mid_tokens_, v_mid = v_mid_tokens_;
    const auto flush_keys = [&] {
      const int k_excess = k_recent.size() - R;
      if (k_excess > 0) {
        flush_k(h, k_excess, k_mid, s, steps, k_recent);
        k_mid += k_excess;
      }
    };
    for (int i = 0; i < n_tokens; ++i) {
      const float* krow = input_row(k, i, h, false, s.k_row);
      if (const float* mu = key_mean(h)) {  // keys after the first flush are stored centered
        float* centered = at_least(s.row, static_cast<size_t>(head_dim_));
        for (int c = 0; c < head_dim_; ++c) {
          centered[c] = std::clamp(krow[c] - mu[c], -kF16Max, kF16Max);
        }
        krow = centered;
      }
      const float* vrow = input_row(v, i, h, true, s.v_row);
      if (n_tokens_ + i < S) {
        k_sink_[hs].push(krow);
        v_sink_[hs].push(vrow);
      } else {
        k_recent.push(krow);
        v_recent.push(vrow);
      }
      if (steps != nullptr) {
        // What the token saw, recorded (docs/architecture.md, "Chunked
        // extend").
        steps->k_rows[hs].push(krow);
        steps->v_rows[hs].push(vrow);
      }
      if (per_token) flush_keys();
      // Values fix no statistics: they flush after each token either way.
      for (; v_recent.size() >= R + G; v_mid += G) flush_v(h, v_mid, s);
      if (steps != nullptr && h == 0) {
        const int sink = std::min(S, n_tokens_ + i + 1);
        steps->k_end[static_cast<size_t>(i)] = sink + k_mid;
        steps->v_end[static_cast<size_t>(i)] = sink + v_mid;
      }
    }
    if (!per_token) {
      flush_keys();
      F16Rows& window = k_recent_[hs];
      window.pop_front(window.size());
      for (int t = 0; t < k_recent.size(); ++t) window.push_f16(k_recent.row(t));
    }
    k_recent_[hs].trim();
    v_recent.trim();
  }
  first_rows_ = F16Rows();  // the append's keys are flushed or in the windows
  n_tokens_ += n_tokens;
  k_mid_tokens_ = n_tokens_ - sink_tokens() - k_recent_[0].size();
  v_mid_tokens_ = n_tokens_ - sink_tokens() - v_recent_[0].size();
}

void InnerQLayerCache::flush_k(int head, int n_tokens, int mid, AppendScratch& s, ChunkSteps* steps,
                               F16Rows& recent) {
  const int D = head_dim_, B = block_tokens();
  float* const row = at_least(s.row, static_cast<size_t>(D));
  float* const scaled = at_least(s.scaled, static_cast<size_t>(D));
  uint8_t* const records = at_least(s.records, records_bytes());
  if (config_.knorm != KeyNorm::kOff && key_norm_.empty()) {
    key_norm_.resize(static_cast<size_t>(n_kv_heads_));
  }
  if (config_.kcenter && key_mean_.empty()) key_mean_.resize(static_cast<size_t>(n_kv_heads_));
  // The first flush centers and normalizes over the whole window, later ones
  // read only the rows they quantize; either way a row at a time, f32 from
  // the f16 window (centered as read, at the first flush).
  const bool first_center = config_.kcenter && key_mean_[static_cast<size_t>(head)].empty();
  const bool first_norm =
      config_.knorm != KeyNorm::kOff && key_norm_[static_cast<size_t>(head)].empty();
  if (first_center) {
    std::vector<float>& mu = key_mean_[static_cast<size_t>(head)];
    mu.resize(static_cast<size_t>(D));
    KeyMeanAccumulator mean(D);
    for (int t = 0; t < recent.size(); ++t) {
      recent.to_f32(t, 1, row);
      mean.add(row);
    }
    mean.mean(mu.data());
  }
  const float* const mu = first_center ? key_mean_[static_cast<size_t>(head)].data() : nullptr;
  const auto read_row = [&](int t) {
    recent.to_f32(t, 1, row);
    if (mu != nullptr) {
      for (int c = 0; c < D; ++c) row[c] = std::clamp(row[c] - mu[c], -kF16Max, kF16Max);
    }
  };
  if (first_norm) {
    std::vector<float>& f = key_norm_[static_cast<size_t>(head)];
    f.resize(static_cast<size_t>(D));
    KeyFactorAccumulator factors(config_.knorm, D);
    for (int t = 0; t < recent.size(); ++t) {
      read_row(t);
      factors.add(row);
    }
    factors.factors(f.data());
  }
  const float* f = key_norm(head);
  if (config_.ksort && key_perm_.empty()) key_perm_.resize(static_cast<size_t>(n_kv_heads_));
  if (config_.ksort && key_perm_[static_cast<size_t>(head)].empty()) {
    // Channels by decreasing max |K/f| over the keys of the first flush.
    std::vector<float> peak(static_cast<size_t>(D), 0.0f);
    for (int t = 0; t < recent.size(); ++t) {
      read_row(t);
      for (int c = 0; c < D; ++c) peak[c] = std::max(peak[c], std::abs(row[c] / f[c]));
    }
    std::vector<uint16_t>& perm = key_perm_[static_cast<size_t>(head)];
    perm.resize(static_cast<size_t>(D));
    std::iota(perm.begin(), perm.end(), uint16_t{0});
    std::stable_sort(perm.begin(), perm.end(),
                     [&](uint16_t a, uint16_t b) { return peak[a] > peak[b]; });
  }
  const uint16_t* const perm = key_perm(head);
  const kernels::GroupSpec spec{config_.k_bits, config_.key_group(), config_.k_mode,
                                config_.k_levels};
  for (int t = 0; t < n_tokens; ++t) {
    read_row(t);
    // Clamped: a key far beyond the factors of the first flush stays within
    // the f16 metadata's range instead of failing the append half-way.
    for (int j = 0; j < D; ++j) {
      const int c = perm != nullptr ? perm[j] : j;
      scaled[j] = std::clamp(row[c] / f[c], -kF16Max, kF16Max);
    }
    kernels::simd::quantize_row(spec, scaled, static_cast<size_t>(k_fmt_.n_groups), records);
    const int slot = mid + t;  // index of this token in the middle region
    tile_store_row(
        k_fmt_, records,
        k_write(slot / B, head) + static_cast<size_t>(slot % B / kTileRows) * k_fmt_.bytes(),
        slot % kTileRows);
  }
  recent.pop_front(n_tokens);
  if (mu != nullptr) {  // what stays in f16 is centered too, so every region holds K − μ
    k_sink_[static_cast<size_t>(head)].subtract(mu, row);
    recent.subtract(mu, row);
    if (steps != nullptr) steps->k_rows[static_cast<size_t>(head)].subtract(mu, row);
  }
}

size_t InnerQLayerCache::v_group_offset(int mid) const {
  return static_cast<size_t>(mid % block_tokens() / config_.group) * (head_dim_ / kTileRows) *
         v_fmt_.bytes();
}

uint8_t* InnerQLayerCache::v_group_for_write(int head, int mid) {
  return v_write(mid / block_tokens(), head) + v_group_offset(mid);
}

const uint8_t* InnerQLayerCache::v_group(int head, int mid) const {
  return v_read(mid / block_tokens(), head) + v_group_offset(mid);
}

void InnerQLayerCache::flush_v(int head, int mid, AppendScratch& s) {
  auto& recent = v_recent_[static_cast<size_t>(head)];
  const int D = head_dim_, G = config_.group;
  const kernels::GroupSpec spec{config_.v_bits, G, config_.v_mode};
  float* const channel = at_least(s.channel, static_cast<size_t>(G));
  uint8_t* const record = at_least(s.records, records_bytes());
  uint8_t* group = v_group_for_write(head, mid);
  // Channel c of the G oldest rows is one group: quantized one channel at a
  // time into row c % 16 of its channel tile.
  for (int c = 0; c < D; ++c) {
    for (int t = 0; t < G; ++t) channel[t] = f16_to_f32(recent.row(t)[c]);
    kernels::simd::quantize_token_block(spec, channel, 1, record);
    tile_store_row(v_fmt_, record, group + (c / kTileRows) * v_fmt_.bytes(), c % kTileRows);
  }
  recent.pop_front(G);
}

MemoryUsage InnerQLayerCache::memory() const {
  MemoryUsage m;
  const size_t k_tiles = static_cast<size_t>(div_up(k_mid_tokens_, kTileRows));
  const size_t v_tiles =
      static_cast<size_t>(v_mid_tokens_ / config_.group) * (head_dim_ / kTileRows);
  for (int h = 0; h < n_kv_heads_; ++h) {
    const size_t hs = static_cast<size_t>(h);
    m.codes += k_tiles * k_fmt_.code_bytes() + v_tiles * v_fmt_.code_bytes();
    m.metadata += k_tiles * k_fmt_.meta_bytes() + v_tiles * v_fmt_.meta_bytes();
    m.windows +=
        k_sink_[hs].bytes() + v_sink_[hs].bytes() + k_recent_[hs].bytes() + v_recent_[hs].bytes();
  }
  if (!key_norm_.empty()) m.norm = static_cast<size_t>(n_kv_heads_) * head_dim_ * sizeof(float);
  if (!key_mean_.empty()) m.norm += static_cast<size_t>(n_kv_heads_) * head_dim_ * sizeof(float);
  if (!key_perm_.empty()) {
    m.norm += static_cast<size_t>(n_kv_heads_) * head_dim_ * sizeof(uint16_t);
  }
  return m;
}

size_t InnerQLayerCache::reserved_bytes() const {
  size_t bytes = blocks_bytes() + memory().norm;
  for (int h = 0; h < n_kv_heads_; ++h) {
    const size_t hs = static_cast<size_t>(h);
    bytes += k_sink_[hs].reserved_bytes() + v_sink_[hs].reserved_bytes() +
             k_recent_[hs].reserved_bytes() + v_recent_[hs].reserved_bytes();
  }
  return bytes;
}

void InnerQLayerCache::segments(int head, HeadSegments& out) const {
  reset_segments(out);
  const int S = sink_tokens(), B = block_tokens();
  out.k.push_back(rows_f16(k_sink(head), 0));
  out.v.push_back(rows_f16(v_sink(head), 0));
  for (int j = 0; j * B < std::max(k_mid_tokens_, v_mid_tokens_); ++j) {
    const int k_len = std::min(B, k_mid_tokens_ - j * B);
    const int v_len = std::min(B, v_mid_tokens_ - j * B);
    if (k_len > 0) {
      push_block_segment(
          out.k, {SegmentForm::kInnerQK, S + j * B, k_len, kTileRows, k_read(j, head), k_fmt_},
          block_layout().k_region, static_cast<size_t>(B / kTileRows) * k_fmt_.bytes());
    }
    if (v_len > 0) {
      push_block_segment(
          out.v, {SegmentForm::kInnerQV, S + j * B, v_len, config_.group, v_read(j, head), v_fmt_},
          block_layout().v_region,
          static_cast<size_t>(B / config_.group) * (head_dim_ / kTileRows) * v_fmt_.bytes());
    }
  }
  out.k.push_back(rows_f16(k_recent(head), S + k_mid_tokens_));
  out.v.push_back(rows_f16(v_recent(head), S + v_mid_tokens_));
  out.key_norm = key_norm(head);
  out.key_mean = key_mean(head);
  out.key_perm = key_perm(head);
  out.origin = S;
}

std::vector<uint8_t> InnerQLayerCache::k_tiles(int head) const {
  std::vector<uint8_t> out;
  const int B = block_tokens();
  for (int m = 0; m < k_mid_tokens_; m += kTileRows) {
    const uint8_t* p =
        k_read(m / B, head) + static_cast<size_t>(m % B / kTileRows) * k_fmt_.bytes();
    out.insert(out.end(), p, p + k_fmt_.bytes());
  }
  return out;
}

std::vector<uint8_t> InnerQLayerCache::v_blocks(int head) const {
  std::vector<uint8_t> out;
  const size_t group_bytes = static_cast<size_t>(head_dim_ / kTileRows) * v_fmt_.bytes();
  for (int m = 0; m < v_mid_tokens_; m += config_.group) {
    const uint8_t* p = v_group(head, m);
    out.insert(out.end(), p, p + group_bytes);
  }
  return out;
}

void InnerQLayerCache::truncate(int n) {
  // A cut V group, dequantized (truncate is not per token).
  std::vector<uint8_t> records;
  std::vector<float> rows;
  const int S = sink_tokens(), G = config_.group, D = head_dim_;
  const int after = std::max(0, n - S);  // tokens kept past the sink
  const int k_mid = std::min(after, k_mid_tokens_);
  const int v_mid = after >= v_mid_tokens_ ? v_mid_tokens_ : after / G * G;
  const kernels::GroupSpec spec{config_.v_bits, G, config_.v_mode};
  for (int h = 0; h < n_kv_heads_; ++h) {
    const size_t hs = static_cast<size_t>(h);
    if (n < S) {
      k_sink_[hs].pop_back(S - n);
      v_sink_[hs].pop_back(S - n);
    }
    if (after >= k_mid_tokens_) {
      k_recent_[hs].pop_back(k_recent_[hs].size() - (after - k_mid_tokens_));
    } else {
      k_recent_[hs].pop_back(k_recent_[hs].size());
    }
    if (after >= v_mid_tokens_) {
      v_recent_[hs].pop_back(v_recent_[hs].size() - (after - v_mid_tokens_));
    } else {  // the kept tokens of a cut V group go back to f16, dequantized
      v_recent_[hs].pop_back(v_recent_[hs].size());
      if (after > v_mid) {
        records.resize(static_cast<size_t>(D) * spec.record_bytes());
        const uint8_t* group = v_group(h, v_mid);
        for (int c = 0; c < D; ++c) {
          tile_load_row(v_fmt_, group + (c / kTileRows) * v_fmt_.bytes(), c % kTileRows,
                        records.data() + c * spec.record_bytes());
        }
        rows.resize(static_cast<size_t>(G) * D);
        kernels::simd::dequantize_token_block(spec, records.data(), static_cast<size_t>(D),
                                              rows.data());
        for (int t = 0; t < after - v_mid; ++t) {
          v_recent_[hs].push(rows.data() + static_cast<size_t>(t) * D);
        }
      }
    }
  }
  n_tokens_ = n;
  k_mid_tokens_ = k_mid;
  v_mid_tokens_ = v_mid;
  keep_blocks(div_up(std::max(k_mid, v_mid), block_tokens()));
}

void InnerQLayerCache::save(ByteWriter& out) const {
  out.put<int32_t>(n_tokens_);
  out.put<int32_t>(k_mid_tokens_);
  out.put<int32_t>(v_mid_tokens_);
  for (const auto* rows : {&k_sink_, &v_sink_, &k_recent_, &v_recent_}) {
    for (const F16Rows& r : *rows) r.save(out);
  }
  for (const auto* factors : {&key_norm_, &key_mean_}) {
    out.put<uint8_t>(factors->empty() ? 0 : 1);
    for (const auto& f : *factors) {
      out.put<int32_t>(static_cast<int32_t>(f.size()));
      out.bytes(f.data(), f.size() * sizeof(float));
    }
  }
  if (config_.ksort) {  // only then: other configs keep the format they had
    out.put<uint8_t>(key_perm_.empty() ? 0 : 1);
    for (const std::vector<uint16_t>& p : key_perm_) {
      out.put<int32_t>(static_cast<int32_t>(p.size()));
      out.bytes(p.data(), p.size() * sizeof(uint16_t));
    }
  }
  save_blocks(out);
}

void InnerQLayerCache::load(ByteReader& in) {
  n_tokens_ = in.get_int("tokens", 0, kMaxSavedTokens);
  k_mid_tokens_ = in.get_int("K middle tokens", 0, n_tokens_);
  v_mid_tokens_ = in.get_int("V middle tokens", 0, n_tokens_);
  if (v_mid_tokens_ % config_.group != 0) {
    throw Error(fmt::format("{}: V middle tokens {} is not a multiple of g={}", in.what(),
                            v_mid_tokens_, config_.group));
  }
  for (auto* rows : {&k_sink_, &v_sink_, &k_recent_, &v_recent_}) {
    for (F16Rows& r : *rows) r.load(in, n_tokens_);
  }
  for (int h = 0; h < n_kv_heads_; ++h) {
    const size_t hs = static_cast<size_t>(h);
    const int s = k_sink_[hs].size();
    if (s != sink_tokens() || v_sink_[hs].size() != s || s > config_.sink ||
        k_recent_[hs].size() != n_tokens_ - s - k_mid_tokens_ ||
        v_recent_[hs].size() != n_tokens_ - s - v_mid_tokens_) {
      throw Error(
          fmt::format("{}: InnerQ windows do not add up to {} tokens", in.what(), n_tokens_));
    }
  }
  for (auto* factors : {&key_norm_, &key_mean_}) {
    factors->clear();
    if (in.get<uint8_t>() == 0) continue;
    factors->resize(static_cast<size_t>(n_kv_heads_));
    for (auto& f : *factors) {
      f.resize(static_cast<size_t>(in.get_int("factor count", head_dim_, head_dim_)));
      in.bytes(f.data(), f.size() * sizeof(float));
      for (float x : f) {
        if (!std::isfinite(x))
          throw Error(fmt::format("{}: a key factor is not finite", in.what()));
      }
    }
  }
  key_perm_.clear();
  if (config_.ksort && in.get<uint8_t>() != 0) {
    key_perm_.resize(static_cast<size_t>(n_kv_heads_));
    for (std::vector<uint16_t>& p : key_perm_) {
      p.resize(static_cast<size_t>(in.get_int("channel order length", head_dim_, head_dim_)));
      in.bytes(p.data(), p.size() * sizeof(uint16_t));
      // A permutation: every channel exactly once.
      std::vector<bool> seen(p.size(), false);
      for (uint16_t c : p) {
        if (c >= p.size() || seen[c]) {
          throw Error(fmt::format("{}: the channel order is not a permutation of 0..{}", in.what(),
                                  p.size() - 1));
        }
        seen[c] = true;
      }
    }
  }
  load_blocks(in, div_up(std::max(k_mid_tokens_, v_mid_tokens_), block_tokens()));
}

// ---------------------------------------------------------------------------
// The kind registry: the one place that maps a CacheKind to its class.
// ---------------------------------------------------------------------------
std::unique_ptr<LayerCache> make_layer_cache(const LayerConfig& c, int n_kv_heads, int head_dim,
                                             BlockPool* pool, int block_tokens) {
  if (c.kperm != kernels::ChannelOrder::kAsIs && head_dim % 2 != 0) {
    throw Error(fmt::format("{} cache: kperm={} needs an even head_dim, not {}",
                            cache_kind_name(c.kind), channel_order_name(c.kperm), head_dim));
  }
  switch (c.kind) {
    case CacheKind::kF32:
      return std::make_unique<F32LayerCache>(c, n_kv_heads, head_dim, pool, block_tokens);
    case CacheKind::kF16:
      return std::make_unique<F16LayerCache>(c, n_kv_heads, head_dim, pool, block_tokens);
    case CacheKind::kQ8_0:
      return std::make_unique<Q8_0LayerCache>(c, n_kv_heads, head_dim, pool, block_tokens);
    case CacheKind::kQ4_0:
      return std::make_unique<Q4_0LayerCache>(c, n_kv_heads, head_dim, pool, block_tokens);
    case CacheKind::kKivi:
      return std::make_unique<KiviLayerCache>(c, n_kv_heads, head_dim, pool, block_tokens);
    case CacheKind::kInnerQ:
      return std::make_unique<InnerQLayerCache>(c, n_kv_heads, head_dim, pool, block_tokens);
  }
  throw Error("unknown cache kind");
}

BlockLayout layer_block_layout(const LayerConfig& c, int head_dim, int block_tokens) {
  switch (c.kind) {
    case CacheKind::kF32:
      return F32LayerCache::layout(c, head_dim, block_tokens);
    case CacheKind::kF16:
      return F16LayerCache::layout(c, head_dim, block_tokens);
    case CacheKind::kQ8_0:
      return Q8_0LayerCache::layout(c, head_dim, block_tokens);
    case CacheKind::kQ4_0:
      return Q4_0LayerCache::layout(c, head_dim, block_tokens);
    case CacheKind::kKivi:
      return KiviLayerCache::layout(c, head_dim, block_tokens);
    case CacheKind::kInnerQ:
      return InnerQLayerCache::layout(c, head_dim, block_tokens);
  }
  throw Error("unknown cache kind");
}

}  // namespace innerq::kv
