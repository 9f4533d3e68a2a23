// The C ABI (include/innerq/innerq.h): specs, memory plans, pools,
// sequences, append, attention and dequantization.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "innerq/attn/window_attention.h"
#include "innerq/capi/capi_internal.h"
#include "innerq/kv/window_layer_cache.h"

namespace innerq::capi {
namespace {

// Growable pools add slabs of this many blocks per layer.
constexpr int kGrowSlabBlocks = 16;
// The most sequences a plan or a pool counts.
constexpr int kMaxSequences = 1 << 20;

void check_n_seqs(int32_t n_seqs) {
  require(n_seqs >= 1 && n_seqs <= kMaxSequences,
          fmt::format("n_seqs {} is not in 1..{}", n_seqs, kMaxSequences));
}

const kv::CacheSpec& spec_of(const innerq_spec* spec) {
  require_not_null(spec, "spec");
  return spec->spec;
}

// The C shape as a kv::CacheShape, checked.
kv::CacheShape shape_of(const innerq_shape* s) {
  require_not_null(s, "shape");
  require(s->n_layers >= 1 && s->n_layers <= 4096,
          fmt::format("shape.n_layers {} is not in 1..4096", s->n_layers));
  require(s->n_kv_heads >= 1 && s->n_kv_heads <= 4096,
          fmt::format("shape.n_kv_heads {} is not in 1..4096", s->n_kv_heads));
  require(s->head_dim >= 1 && s->head_dim <= 4096,
          fmt::format("shape.head_dim {} is not in 1..4096", s->head_dim));
  require(s->max_tokens >= 1 && s->max_tokens <= kv::kMaxSavedTokens,
          fmt::format("shape.max_tokens {} is not in 1..{}", s->max_tokens, kv::kMaxSavedTokens));
  kv::CacheShape shape{s->n_layers, s->n_kv_heads, s->head_dim, s->max_tokens, {}};
  if (s->window != nullptr) {
    shape.windows.assign(s->window, s->window + s->n_layers);
    for (int l = 0; l < s->n_layers; ++l) {
      require(shape.windows[static_cast<size_t>(l)] >= 0,
              fmt::format("shape.window[{}] = {} is negative", l,
                          shape.windows[static_cast<size_t>(l)]));
    }
  }
  return shape;
}

kv::MemoryPlan plan_of(const innerq_spec* spec, const innerq_shape* shape) {
  const kv::CacheSpec& s = spec_of(spec);
  const kv::CacheShape sh = shape_of(shape);
  return kv::plan_memory(sh, s.layers(sh.n_layers, sh.head_dim));
}

innerq_seq* new_sequence(const std::shared_ptr<PoolState>& state,
                         std::unique_ptr<kv::KvCache> cache) {
  auto* seq = new innerq_seq{state, std::move(cache), {}, -1};
  ++state->n_seqs;
  return seq;
}

void require_room_for_sequence(const PoolState& s) {
  if (s.max_seqs > 0 && s.n_seqs >= s.max_seqs) {
    throw PoolFullError(
        fmt::format("the pool holds its limit of {} sequences (max_seqs)", s.max_seqs));
  }
}

kv::KvCache& cache_of(innerq_seq* seq, const char* name) {
  require_not_null(seq, name);
  return *seq->cache;
}

void check_layer(const PoolState& s, int32_t layer) {
  require(layer >= 0 && layer < s.shape.n_layers,
          fmt::format("layer {} is not in 0..{}", layer, s.shape.n_layers - 1));
}

// Every sequence of a batch: not NULL, all in the same pool, none twice.
const std::shared_ptr<PoolState>& batch_state(innerq_seq* const* seqs, int32_t n_seqs) {
  require_not_null(seqs, "seqs");
  require(n_seqs >= 1, fmt::format("n_seqs {} must be at least 1", n_seqs));
  for (int32_t b = 0; b < n_seqs; ++b) {
    require(seqs[b] != nullptr, fmt::format("seqs[{}] is NULL", b));
    require(seqs[b]->state == seqs[0]->state,
            fmt::format("seqs[{}] is in another pool than seqs[0]", b));
    for (int32_t a = 0; a < b; ++a) {
      require(seqs[a] != seqs[b], fmt::format("seqs[{}] and seqs[{}] are the same sequence", a, b));
    }
  }
  return seqs[0]->state;
}

// The K/V rows of one sequence as packed f32 [n, kv_heads, D]: the caller's
// memory when it already is, else a copy in `staging`.
const float* rows_f32(const innerq_view& v, int64_t n, const kv::CacheShape& shape,
                      std::vector<float>& staging) {
  const int64_t H = shape.n_kv_heads, D = shape.head_dim;
  if (v.dtype == INNERQ_DTYPE_F32 && v.stride[1] == D && v.stride[0] == H * D) {
    return static_cast<const float*>(v.data);
  }
  staging.resize(static_cast<size_t>(n * H * D));
  read_view(v, n, H, D, staging.data());
  return staging.data();
}

// Attention scale: the kernels divide by sqrt(D), so q is multiplied by
// scale·sqrt(D) (1 for the default).
float query_factor(float scale, int head_dim) {
  require(std::isfinite(scale) && scale >= 0.0f,
          fmt::format("scale {} must be finite and non-negative (0 = 1/sqrt(head_dim))", scale));
  return scale == 0.0f ? 1.0f : scale * std::sqrt(static_cast<float>(head_dim));
}

void attend_one(PoolState& s, const kv::LayerCache& layer, const float* q, int n_heads, float* out,
                int n_visible) {
  if (const auto* ring = dynamic_cast<const kv::WindowLayerCache*>(&layer)) {
    if (n_visible != 0) {
      fail(INNERQ_ERROR_UNSUPPORTED,
           "chunked attention over a sliding-window layer is not supported (attend one query "
           "after each append)");
    }
    attn::window_attention(*ring, q, n_heads, out, s.scratch);
    return;
  }
  attn::DecodeOptions o;
  o.n_threads = n_threads();
  o.n_visible = n_visible;
  attn::decode_attention(layer, q, n_heads, out, o, s.scratch);
}

// Queries [n, n_heads, D] from a view into s.q, times `factor`.
void stage_queries(PoolState& s, const innerq_view& q, int64_t n, int n_heads, float factor) {
  const int64_t D = s.shape.head_dim;
  s.q.resize(static_cast<size_t>(n * n_heads * D));
  read_view(q, n, n_heads, D, s.q.data());
  if (factor != 1.0f) {
    for (float& x : s.q) x *= factor;
  }
  s.out.resize(s.q.size());
}

void check_heads(const PoolState& s, int32_t n_heads) {
  const int kv_heads = s.shape.n_kv_heads;
  require(
      n_heads >= 1 && n_heads % kv_heads == 0 && n_heads <= 65536,
      fmt::format("n_heads {} is not a positive multiple of the {} KV heads", n_heads, kv_heads));
}

}  // namespace
}  // namespace innerq::capi

using namespace innerq;
using capi::fail;
using capi::guard;
using capi::require;
using capi::require_not_null;

extern "C" {

// ---------------------------------------------------------------------------
// Specs and plans
// ---------------------------------------------------------------------------
innerq_status innerq_spec_parse(const char* text, innerq_spec** out) {
  return guard("innerq_spec_parse", [&] {
    require_not_null(text, "text");
    require_not_null(out, "out");
    auto spec = std::make_unique<innerq_spec>(innerq_spec{kv::parse_cache_spec(text)});
    *out = spec.release();
  });
}

void innerq_spec_free(innerq_spec* spec) {
  delete spec;
}

innerq_status innerq_spec_describe(const innerq_spec* spec, int layer, int n_layers, char* buf,
                                   size_t cap, size_t* len) {
  return guard("innerq_spec_describe", [&] {
    const kv::CacheSpec& s = capi::spec_of(spec);
    require_not_null(len, "len");
    std::string text = s.text;
    if (layer >= 0) {
      require(n_layers >= 1 && layer < n_layers,
              fmt::format("layer {} is not in 0..n_layers-1 (n_layers {})", layer, n_layers));
      text = kv::describe(s.configured_layers(n_layers)[static_cast<size_t>(layer)]);
    }
    *len = text.size();
    if (buf == nullptr || cap <= text.size()) {
      fail(INNERQ_ERROR_BUFFER_TOO_SMALL,
           fmt::format("the description needs {} bytes and a NUL; buf holds {}", text.size(),
                       buf == nullptr ? 0 : cap));
    }
    std::memcpy(buf, text.c_str(), text.size() + 1);
  });
}

innerq_status innerq_spec_check_head_dim(const innerq_spec* spec, int32_t n_layers,
                                         int32_t head_dim) {
  return guard("innerq_spec_check_head_dim", [&] {
    const kv::CacheSpec& s = capi::spec_of(spec);
    require(n_layers >= 1 && n_layers <= 4096,
            fmt::format("n_layers {} is not in 1..4096", n_layers));
    require(head_dim >= 1 && head_dim <= 4096,
            fmt::format("head_dim {} is not in 1..4096", head_dim));
    for (const kv::LayerConfig& c : s.layers(n_layers, head_dim)) kv::plan_layer(c, 1, head_dim, 0);
  });
}

innerq_status innerq_plan_memory(const innerq_spec* spec, const innerq_shape* shape, int32_t n_seqs,
                                 int64_t n_tokens, innerq_plan* out) {
  return guard("innerq_plan_memory", [&] {
    const kv::MemoryPlan plan = capi::plan_of(spec, shape);
    require_not_null(out, "out");
    capi::check_n_seqs(n_seqs);
    require(n_tokens >= 0 && n_tokens <= plan.shape.max_tokens,
            fmt::format("n_tokens {} is not in 0..shape.max_tokens ({})", n_tokens,
                        plan.shape.max_tokens));
    innerq_plan p{};
    p.bytes = plan.bytes(n_seqs, n_tokens);
    p.sequence_bytes = plan.sequence_bytes(n_tokens);
    for (int l = 0; l < plan.shape.n_layers; ++l) p.block_bytes += plan.layer(l, 0).block_bytes;
    p.blocks = plan.pool_blocks(n_seqs, n_tokens);
    p.block_tokens = plan.block_tokens;
    const kv::CacheShape& sh = plan.shape;
    for (int l = 0; l < sh.n_layers; ++l) {
      const int64_t kept = sh.window(l) > 0 ? std::min<int64_t>(n_tokens, sh.window(l)) : n_tokens;
      p.f16_bytes += static_cast<uint64_t>(n_seqs) * static_cast<uint64_t>(kept) * 2 * 2 *
                     static_cast<uint64_t>(sh.n_kv_heads) * static_cast<uint64_t>(sh.head_dim);
    }
    *out = p;
  });
}

innerq_status innerq_plan_tokens(const innerq_spec* spec, const innerq_shape* shape, int32_t n_seqs,
                                 uint64_t bytes, int64_t* tokens) {
  return guard("innerq_plan_tokens", [&] {
    const kv::MemoryPlan plan = capi::plan_of(spec, shape);
    require_not_null(tokens, "tokens");
    capi::check_n_seqs(n_seqs);
    *tokens = std::min<int64_t>(plan.tokens_for_budget(bytes, n_seqs), plan.shape.max_tokens);
  });
}

// ---------------------------------------------------------------------------
// Pools
// ---------------------------------------------------------------------------
innerq_status innerq_pool_create(const innerq_spec* spec, const innerq_shape* shape,
                                 int32_t max_seqs, uint64_t budget_bytes, innerq_pool** out) {
  return guard("innerq_pool_create", [&] {
    const kv::CacheSpec& s = capi::spec_of(spec);
    auto state = std::make_shared<capi::PoolState>();
    state->shape = capi::shape_of(shape);
    require_not_null(out, "out");
    require(
        max_seqs >= 0 && max_seqs <= capi::kMaxSequences,
        fmt::format("max_seqs {} is not in 0..{} (0 = no limit)", max_seqs, capi::kMaxSequences));
    state->spec = s;
    state->configs = s.layers(state->shape.n_layers, state->shape.head_dim);
    state->window.assign(state->shape.windows.begin(), state->shape.windows.end());
    state->max_seqs = max_seqs;
    const kv::MemoryPlan plan = kv::plan_memory(state->shape, state->configs);
    int64_t n_blocks = capi::kGrowSlabBlocks;
    if (budget_bytes > 0) {
      require(max_seqs > 0,
              "a pool with a byte budget needs max_seqs > 0 (the budget holds their windows)");
      size_t block_bytes = 0;
      for (int l = 0; l < state->shape.n_layers; ++l) block_bytes += plan.layer(l, 0).block_bytes;
      const size_t fixed = plan.bytes(max_seqs, 0);  // windows, factors and rings of max_seqs
      if (block_bytes == 0) {
        n_blocks = 1;  // every layer is a sliding window: no blocks are ever taken
      } else {
        n_blocks =
            budget_bytes > fixed ? static_cast<int64_t>((budget_bytes - fixed) / block_bytes) : 0;
      }
      if (n_blocks < 1) {
        throw PoolFullError(fmt::format(
            "a budget of {} bytes holds neither the windows of {} sequences ({} bytes) and one "
            "block of every layer ({} bytes); innerq_plan_memory gives the bytes needed",
            budget_bytes, max_seqs, fixed, block_bytes));
      }
    }
    state->growable = budget_bytes == 0;
    state->pool = std::make_shared<kv::KvPool>(state->shape, state->configs, n_blocks,
                                               kv::kDefaultBlockTokens, false, state->growable);
    *out = new innerq_pool{std::move(state)};
  });
}

void innerq_pool_free(innerq_pool* pool) {
  delete pool;
}

innerq_status innerq_pool_stats_get(const innerq_pool* pool, innerq_pool_stats* out) {
  return guard("innerq_pool_stats_get", [&] {
    require_not_null(pool, "pool");
    require_not_null(out, "out");
    const capi::PoolState& s = *pool->state;
    innerq_pool_stats st{};
    st.bytes = s.pool->bytes();
    for (int l = 0; l < s.shape.n_layers; ++l) {
      if (const kv::BlockPool* p = s.pool->layer(l)) {
        st.blocks = p->n_blocks();
        st.free_blocks = p->n_free();
        break;
      }
    }
    st.n_seqs = s.n_seqs;
    st.max_seqs = s.max_seqs;
    st.scratch_bytes =
        s.scratch.bytes() +
        (s.k.capacity() + s.v.capacity() + s.q.capacity() + s.out.capacity()) * sizeof(float);
    *out = st;
  });
}

innerq_status innerq_pool_shape(const innerq_pool* pool, innerq_shape* out) {
  return guard("innerq_pool_shape", [&] {
    require_not_null(pool, "pool");
    require_not_null(out, "out");
    const capi::PoolState& s = *pool->state;
    *out = innerq_shape{s.shape.n_layers, s.shape.n_kv_heads, s.shape.head_dim, s.shape.max_tokens,
                        s.window.empty() ? nullptr : s.window.data()};
  });
}

void innerq_pool_release_scratch(innerq_pool* pool) {
  if (pool == nullptr) return;
  capi::PoolState& s = *pool->state;
  s.scratch.release();
  s.k = std::vector<float>();
  s.v = std::vector<float>();
  s.q = std::vector<float>();
  s.out = std::vector<float>();
}

// ---------------------------------------------------------------------------
// Sequences
// ---------------------------------------------------------------------------
innerq_status innerq_seq_create(innerq_pool* pool, innerq_seq** out) {
  return guard("innerq_seq_create", [&] {
    require_not_null(pool, "pool");
    require_not_null(out, "out");
    capi::require_room_for_sequence(*pool->state);
    *out = capi::new_sequence(pool->state, std::make_unique<kv::KvCache>(pool->state->pool));
  });
}

innerq_status innerq_seq_fork(const innerq_seq* seq, innerq_seq** out) {
  return guard("innerq_seq_fork", [&] {
    require_not_null(seq, "seq");
    require_not_null(out, "out");
    capi::require_room_for_sequence(*seq->state);
    *out = capi::new_sequence(seq->state, seq->cache->fork());
  });
}

void innerq_seq_free(innerq_seq* seq) {
  if (seq == nullptr) return;
  --seq->state->n_seqs;
  delete seq;
}

int64_t innerq_seq_n_tokens(const innerq_seq* seq) {
  return seq == nullptr ? 0 : seq->cache->n_tokens();
}

innerq_status innerq_seq_truncate(innerq_seq* seq, int64_t n_tokens) {
  return guard("innerq_seq_truncate", [&] {
    kv::KvCache& c = capi::cache_of(seq, "seq");
    require(n_tokens >= 0 && n_tokens <= c.n_tokens(),
            fmt::format("n_tokens {} is not in 0..{} (the tokens the sequence holds)", n_tokens,
                        c.n_tokens()));
    seq->steps_layer = -1;
    c.truncate_to(static_cast<int>(n_tokens));
  });
}

innerq_status innerq_seq_save(const innerq_seq* seq, const char* path) {
  return guard(
      "innerq_seq_save",
      [&] {
        require_not_null(seq, "seq");
        require_not_null(path, "path");
        seq->cache->save(path);
      },
      INNERQ_ERROR_IO);
}

innerq_status innerq_seq_load(innerq_seq* seq, const char* path) {
  return guard(
      "innerq_seq_load",
      [&] {
        kv::KvCache& c = capi::cache_of(seq, "seq");
        require_not_null(path, "path");
        require(c.n_tokens() == 0,
                fmt::format("the sequence holds {} tokens; load needs an empty one", c.n_tokens()));
        seq->steps_layer = -1;
        c.load(path);
      },
      INNERQ_ERROR_IO);
}

innerq_status innerq_seq_clear(innerq_seq* seq) {
  return guard("innerq_seq_clear", [&] {
    capi::cache_of(seq, "seq").clear();
    seq->steps_layer = -1;
  });
}

innerq_status innerq_seq_memory(const innerq_seq* seq, innerq_memory* out) {
  return guard("innerq_seq_memory", [&] {
    require_not_null(seq, "seq");
    require_not_null(out, "out");
    const kv::MemoryUsage m = seq->cache->memory();
    *out = innerq_memory{m.codes,
                         m.metadata,
                         m.windows,
                         m.norm,
                         m.total(),
                         seq->cache->reserved_bytes(),
                         seq->cache->bytes_f16_equivalent()};
  });
}

// ---------------------------------------------------------------------------
// Append, attention, dequantization
// ---------------------------------------------------------------------------
innerq_status innerq_append(innerq_seq* const* seqs, int32_t n_seqs, int32_t layer,
                            const innerq_view* k, const innerq_view* v, int32_t n_tokens) {
  return guard("innerq_append", [&] {
    capi::PoolState& s = *capi::batch_state(seqs, n_seqs);
    capi::check_layer(s, layer);
    require_not_null(k, "k");
    require_not_null(v, "v");
    require(n_tokens >= 1, fmt::format("n_tokens {} must be at least 1", n_tokens));
    for (int32_t b = 0; b < n_seqs; ++b) {
      capi::check_view(&k[b], fmt::format("k[{}]", b));
      capi::check_view(&v[b], fmt::format("v[{}]", b));
    }
    // A single sequence's append is all or nothing by itself (KvCache::append
    // checks its rows and takes its blocks before storing); a batch checks
    // every sequence's rows first, then the blocks they need together.
    std::vector<const float*> kf(static_cast<size_t>(n_seqs)), vf(kf.size());
    std::vector<std::vector<float>> staged;
    if (n_seqs > 1) staged.resize(2 * static_cast<size_t>(n_seqs));
    for (int32_t b = 0; b < n_seqs; ++b) {
      std::vector<float>& ks = n_seqs > 1 ? staged[2 * static_cast<size_t>(b)] : s.k;
      std::vector<float>& vs = n_seqs > 1 ? staged[2 * static_cast<size_t>(b) + 1] : s.v;
      kf[static_cast<size_t>(b)] = capi::rows_f32(k[b], n_tokens, s.shape, ks);
      vf[static_cast<size_t>(b)] = capi::rows_f32(v[b], n_tokens, s.shape, vs);
      if (n_seqs == 1) break;
      try {
        seqs[b]->cache->check_append(layer, kf[static_cast<size_t>(b)], vf[static_cast<size_t>(b)],
                                     n_tokens);
      } catch (const Error& e) {
        fail(INNERQ_ERROR_INVALID_ARGUMENT, fmt::format("seqs[{}]: {}", b, e.what()));
      }
    }
    const kv::BlockPool* blocks = s.pool->layer(layer);
    if (n_seqs > 1 && blocks != nullptr && !s.growable) {
      int64_t need = 0;
      for (int32_t b = 0; b < n_seqs; ++b)
        need += seqs[b]->cache->layer(layer).blocks_needed(n_tokens);
      if (need > blocks->n_free()) {
        throw PoolFullError(fmt::format(
            "layer {}: the batch needs up to {} more blocks of the pool's {} and {} are free; "
            "nothing was stored",
            layer, need, blocks->n_blocks(), blocks->n_free()));
      }
    }
    for (int32_t b = 0; b < n_seqs; ++b) {
      // Several rows appended to a sequence that holds tokens (not a prompt)
      // are stored as if they came one at a time, and what each saw is
      // recorded for innerq_attend_chunk (kv::ChunkSteps).
      innerq_seq& seq = *seqs[b];
      const kv::LayerCache& L = seq.cache->layer(layer);
      const bool record = n_tokens > 1 && L.n_tokens() > 0 &&
                          dynamic_cast<const kv::WindowLayerCache*>(&L) == nullptr;
      if (seq.steps_layer == layer) seq.steps_layer = -1;
      seq.cache->append(layer, kf[static_cast<size_t>(b)], vf[static_cast<size_t>(b)], n_tokens,
                        record ? &seq.steps : nullptr);
      if (record) seq.steps_layer = layer;
    }
  });
}

innerq_status innerq_attend(innerq_seq* const* seqs, int32_t n_seqs, int32_t layer,
                            const innerq_view* q, int32_t n_heads, float scale,
                            const innerq_view* out) {
  return guard("innerq_attend", [&] {
    capi::PoolState& s = *capi::batch_state(seqs, n_seqs);
    capi::check_layer(s, layer);
    capi::check_heads(s, n_heads);
    capi::check_view(q, "q");
    capi::check_view(out, "out");
    const float factor = capi::query_factor(scale, s.shape.head_dim);
    for (int32_t b = 0; b < n_seqs; ++b) {
      require(
          seqs[b]->cache->layer(layer).n_tokens() > 0,
          fmt::format("seqs[{}] holds no tokens in layer {}: append before attending", b, layer));
    }
    const int64_t D = s.shape.head_dim;
    capi::stage_queries(s, *q, n_seqs, n_heads, factor);
    const size_t per_seq = static_cast<size_t>(n_heads * D);
    for (int32_t b = 0; b < n_seqs; ++b) {
      capi::attend_one(s, seqs[b]->cache->layer(layer), s.q.data() + b * per_seq, n_heads,
                       s.out.data() + b * per_seq, 0);
    }
    capi::write_view(*out, n_seqs, n_heads, D, s.out.data());
  });
}

innerq_status innerq_attend_chunk(const innerq_seq* seq, int32_t layer, const innerq_view* q,
                                  int32_t n_q, int32_t n_heads, int64_t n_visible, float scale,
                                  const innerq_view* out) {
  return guard("innerq_attend_chunk", [&] {
    require_not_null(seq, "seq");
    capi::PoolState& s = *seq->state;
    capi::check_layer(s, layer);
    capi::check_heads(s, n_heads);
    capi::check_view(q, "q");
    capi::check_view(out, "out");
    const kv::LayerCache& L = seq->cache->layer(layer);
    require(n_q >= 1, fmt::format("n_q {} must be at least 1", n_q));
    require(n_visible >= 1 && n_visible + n_q - 1 <= L.n_tokens(),
            fmt::format("queries see positions up to n_visible + n_q - 1 = {}, but n_visible must "
                        "be at least 1 and layer {} holds {} tokens",
                        n_visible + n_q - 1, layer, L.n_tokens()));
    const float factor = capi::query_factor(scale, s.shape.head_dim);
    const int64_t D = s.shape.head_dim;
    capi::stage_queries(s, *q, n_q, n_heads, factor);
    const kv::ChunkSteps& steps = seq->steps;
    if (seq->steps_layer == layer && steps.first == n_visible - 1 && steps.n == n_q &&
        steps.first + steps.n == L.n_tokens()) {
      // The rows of the last append: each query as token-by-token decode
      // saw it, the stored cache read once for all of them.
      attn::DecodeOptions o;
      o.n_threads = capi::n_threads();
      attn::chunk_attention(L, steps, s.q.data(), n_heads, s.out.data(), o, s.chunk);
    } else {
      const size_t per_q = static_cast<size_t>(n_heads * D);
      for (int32_t i = 0; i < n_q; ++i) {
        capi::attend_one(s, L, s.q.data() + i * per_q, n_heads, s.out.data() + i * per_q,
                         static_cast<int>(n_visible + i));
      }
    }
    capi::write_view(*out, n_q, n_heads, D, s.out.data());
  });
}

innerq_status innerq_seq_dequantize(const innerq_seq* seq, int32_t layer, const innerq_view* k,
                                    const innerq_view* v, int64_t* n_tokens, int64_t* first) {
  return guard("innerq_seq_dequantize", [&] {
    require_not_null(seq, "seq");
    const capi::PoolState& s = *seq->state;
    capi::check_layer(s, layer);
    require_not_null(n_tokens, "n_tokens");
    require((k == nullptr) == (v == nullptr), "k and v must both be NULL or both be views");
    const kv::LayerCache& L = seq->cache->layer(layer);
    const int64_t D = s.shape.head_dim, H = s.shape.n_kv_heads;
    const auto* ring = dynamic_cast<const kv::WindowLayerCache*>(&L);
    const int64_t held = ring != nullptr ? ring->n_held() : L.n_tokens();
    const int64_t start = L.n_tokens() - held;
    *n_tokens = held;
    if (first != nullptr) *first = start;
    if (k == nullptr) return;
    capi::check_view(k, "k");
    capi::check_view(v, "v");
    std::vector<float> rows(static_cast<size_t>(held * D));
    for (int h = 0; h < H; ++h) {
      for (int kind = 0; kind < 2; ++kind) {
        if (ring != nullptr) {
          ring->rows_f32(h, start, static_cast<int>(held), kind == 1, rows.data());
        } else {
          const std::vector<double> d =
              kind == 0 ? attn::dequantized_keys(L, h) : attn::dequantized_values(L, h);
          std::transform(d.begin(), d.end(), rows.begin(),
                         [](double x) { return static_cast<float>(x); });
        }
        capi::write_view(capi::view_at(kind == 0 ? *k : *v, h), 1, held, D, rows.data());
      }
    }
  });
}

}  // extern "C"
