// The caller-owned buffers of decode and window attention (attention_scratch.h).
#include "innerq/attn/attention_scratch.h"

#include <algorithm>

#include "innerq/kernels/attn_kernels.h"
#include "innerq/kv/layer_caches.h"
#include "innerq/kv/window_layer_cache.h"

namespace innerq::attn {
namespace {

// v holding at least n elements, reserved exactly (so bytes() follows the
// formula, not a growth factor).
template <class T>
void fit_vector(std::vector<T>& v, size_t n) {
  if (v.size() >= n) return;
  if (v.capacity() < n) v.reserve(n);
  v.resize(n);
}

template <class T>
size_t held(const std::vector<T>& v) {
  return v.capacity() * sizeof(T);
}

}  // namespace

int decode_chunk_tokens(int64_t n, int n_kv_heads, int n_threads) {
  const int64_t wanted_per_head = std::max(1, (4 * n_threads + n_kv_heads - 1) / n_kv_heads);
  const int64_t size = std::max<int64_t>(kMinChunk, (n + wanted_per_head - 1) / wanted_per_head);
  return static_cast<int>((size + kChunkAlign - 1) / kChunkAlign * kChunkAlign);
}

AttentionScratch::Sizes AttentionScratch::sizes(const kv::LayerCache& cache, int n_heads,
                                                int n_threads) {
  const size_t K = static_cast<size_t>(cache.n_kv_heads()),
               D = static_cast<size_t>(cache.head_dim());
  const size_t nq = static_cast<size_t>(std::max(1, n_heads / cache.n_kv_heads()));
  const int T = std::max(1, n_threads);
  Sizes s;
  if (const auto* ring = dynamic_cast<const kv::WindowLayerCache*>(&cache)) {
    s.queries = nq * D;
    s.scores = nq * static_cast<size_t>(ring->slots() + kTileRows);
    s.partial = 2 * nq;
    s.threads = 1;
    return s;
  }
  const int64_t N = std::max<int64_t>(cache.capacity_tokens(), cache.n_tokens());
  const kv::LayerConfig& c = cache.config();
  const size_t origin = c.kind == kv::CacheKind::kInnerQ ? static_cast<size_t>(c.sink) : 0;
  const size_t C = origin + static_cast<size_t>(decode_chunk_tokens(N, cache.n_kv_heads(), T));
  const size_t W =
      static_cast<size_t>(std::max(1, (4 * T + cache.n_kv_heads() - 1) / cache.n_kv_heads())) + 1;
  s.segments = static_cast<size_t>(cache.block_tokens() > 0 ? N / cache.block_tokens() : 0) + 3;
  s.heads = K;
  s.cuts = W + 1;
  s.queries = 3 * static_cast<size_t>(n_heads) * D;
  s.partial = K * W * nq * (D + 2);
  s.scores = nq * C;
  if (c.kind == kv::CacheKind::kKivi || c.kind == kv::CacheKind::kInnerQ) {
    s.cut = nq * (C + kChunkAlign);
  }
  if (c.kind == kv::CacheKind::kInnerQ) {
    const auto& layer = static_cast<const kv::InnerQLayerCache&>(cache);
    s.kernel = std::max(kernels::innerq_k_scratch_bytes(layer.k_format(), cache.head_dim()),
                        kernels::innerq_v_scratch_bytes(layer.v_format()));
  }
  s.threads = static_cast<size_t>(T);
  return s;
}

void AttentionScratch::fit(const Sizes& s) {
  fit_vector(heads_, s.heads);
  for (kv::HeadSegments& h : heads_) {
    if (h.k.capacity() < s.segments) h.k.reserve(s.segments);
    if (h.v.capacity() < s.segments) h.v.reserve(s.segments);
  }
  if (cuts_.capacity() < s.cuts) cuts_.reserve(s.cuts);
  fit_vector(queries_, s.queries);
  fit_vector(partial_, s.partial);
  fit_vector(threads_, s.threads);
  for (size_t i = 0; i < s.threads; ++i) {  // the call's threads only
    fit_vector(threads_[i].scores, s.scores);
    fit_vector(threads_[i].cut, s.cut);
    fit_vector(threads_[i].kernel, s.kernel);
  }
}

void AttentionScratch::fit_window(int nq, int head_dim, size_t stride) {
  Sizes s;
  s.queries = static_cast<size_t>(nq) * head_dim;
  s.scores = static_cast<size_t>(nq) * stride;
  s.partial = 2 * static_cast<size_t>(nq);
  s.threads = 1;
  fit(s);
}

void AttentionScratch::reserve(const kv::LayerCache& cache, int n_heads, int n_threads) {
  // Thread i serves calls on more than i threads, whose chunks are no longer
  // than those of a call on i + 1: sized once for each thread count.
  for (int t = 1; t <= std::max(1, n_threads); ++t) fit(sizes(cache, n_heads, t));
}

size_t AttentionScratch::bound_bytes(const kv::LayerCache& cache, int n_heads, int n_threads) {
  const Sizes s = sizes(cache, n_heads, n_threads);  // the shared buffers grow with threads
  size_t bytes = s.heads * (sizeof(kv::HeadSegments) + 2 * s.segments * sizeof(kv::Segment)) +
                 s.cuts * sizeof(int) + s.threads * sizeof(Thread) +
                 (s.queries + s.partial) * sizeof(float);
  for (int t = 1; t <= static_cast<int>(s.threads); ++t) {  // thread t − 1's, from t threads
    const Sizes mine = sizes(cache, n_heads, t);
    bytes += (mine.scores + mine.cut) * sizeof(float) + mine.kernel;
  }
  return bytes;
}

size_t AttentionScratch::bytes() const {
  size_t bytes = held(heads_) + held(cuts_) + held(queries_) + held(partial_) + held(threads_);
  for (const kv::HeadSegments& h : heads_) bytes += held(h.k) + held(h.v);
  for (const Thread& t : threads_) bytes += held(t.scores) + held(t.cut) + held(t.kernel);
  return bytes;
}

size_t ChunkScratch::bytes() const {
  size_t b = held(heads_) + held(queries_) + held(cuts_) + held(threads_);
  for (const kv::HeadSegments& h : heads_) b += held(h.k) + held(h.v);
  for (const Thread& t : threads_) {
    b += held(t.step.k) + held(t.step.v) + held(t.scores) + held(t.cut) + held(t.kernel) +
         held(t.o) + held(t.m) + held(t.l) + held(t.acc);
  }
  return b;
}

void ChunkScratch::release() {
  std::vector<kv::HeadSegments>().swap(heads_);
  std::vector<float>().swap(queries_);
  std::vector<int>().swap(cuts_);
  std::vector<Thread>().swap(threads_);
}

void AttentionScratch::release() {
  std::vector<kv::HeadSegments>().swap(heads_);
  std::vector<int>().swap(cuts_);
  std::vector<float>().swap(queries_);
  std::vector<float>().swap(partial_);
  std::vector<Thread>().swap(threads_);
}

}  // namespace innerq::attn
