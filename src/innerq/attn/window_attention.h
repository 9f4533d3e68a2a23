// innerq/attn/window_attention.h — decode attention of a sliding-window layer
// over its ring of the last `window` positions (kv/window_layer_cache.h).
//
// The same computation as decode_attention over an f16 cache: scores
// q·k / sqrt(head_dim) over the last `window` positions (not the ring's
// spare slots), one softmax, p·V, GQA (query head h reads KV head
// h / (n_heads / n_kv_heads)). The ring is at most a window long (512 for
// Gemma 3), so it runs on the calling thread.
//
// A chunk of several new positions (chunked prefill, model/llama.h) cannot
// read the ring after its append: the chunk's later positions may overwrite
// slots its earlier queries still see. WindowChunk copies what the ring holds
// before the append and adds the chunk's own rows; window_chunk_attention
// then lets each chunk position attend causally within the window.
#pragma once

#include <vector>

#include "innerq/attn/attention_scratch.h"
#include "innerq/base/fp16.h"
#include "innerq/kv/window_layer_cache.h"

namespace innerq::attn {

// q:   [n_heads, head_dim] post-RoPE query of the newest position
// out: [n_heads, head_dim]
// The cache must already hold the newest position's K/V. Buffers come from
// `scratch` (attention_scratch.h).
void window_attention(const kv::WindowLayerCache& cache, const float* q, int n_heads, float* out,
                      AttentionScratch& scratch);
// The same with a scratch of its own, allocated per call (tests).
void window_attention(const kv::WindowLayerCache& cache, const float* q, int n_heads, float* out);

// The same in double precision from the ring's f16 values (tests).
void window_attention_reference(const kv::WindowLayerCache& cache, const float* q, int n_heads,
                                float* out);

// The K/V that a chunk of n_chunk new positions N..N+n_chunk−1 of a
// sliding-window layer attends to, in position order and f16 as the ring
// stores them: the last min(N, window − 1) positions the ring held before the
// chunk (the oldest its first query sees), then the chunk's own rows. Kept
// between calls: once it has held its largest chunk it allocates nothing.
class WindowChunk {
 public:
  // Copies the ring's past positions; call before the chunk is appended to it.
  void begin(const kv::WindowLayerCache& ring, int n_chunk);
  // k, v: [n_chunk, n_kv_heads, head_dim], the chunk's post-RoPE rows.
  void add_chunk(const float* k, const float* v);

  int window() const { return window_; }
  int n_kv_heads() const { return n_kv_heads_; }
  int head_dim() const { return head_dim_; }
  int n_past() const { return n_past_; }
  int n_chunk() const { return n_chunk_; }
  size_t bytes() const { return (k_.capacity() + v_.capacity()) * sizeof(f16_bits); }  // held
  // [n_past + n_chunk][D] of one KV head
  const f16_bits* k_rows(int head) const { return k_.data() + head_offset(head); }
  const f16_bits* v_rows(int head) const { return v_.data() + head_offset(head); }

 private:
  size_t head_offset(int head) const {
    return static_cast<size_t>(head) * static_cast<size_t>(n_past_ + n_chunk_) * head_dim_;
  }

  int window_ = 0, n_kv_heads_ = 0, head_dim_ = 0, n_past_ = 0, n_chunk_ = 0;
  std::vector<f16_bits> k_, v_;  // [n_kv_heads][n_past + n_chunk][D]
};

// Attention of the chunk's position i (0 ≤ i < n_chunk) over the positions
// of `chunk` it sees: the last `window` up to and including its own.
// q: [n_heads, head_dim] post-RoPE query; out: [n_heads, head_dim].
void window_chunk_attention(const WindowChunk& chunk, int i, const float* q, int n_heads,
                            float* out, AttentionScratch& scratch);
// The same with a scratch of its own, allocated per call (tests).
void window_chunk_attention(const WindowChunk& chunk, int i, const float* q, int n_heads,
                            float* out);

// The same in double precision (tests).
void window_chunk_attention_reference(const WindowChunk& chunk, int i, const float* q, int n_heads,
                                      float* out);

}  // namespace innerq::attn
