// innerq/attn/decode_attention.h — attention of one query position against a
// layer's cache, for all query heads of that layer.
//
// Query heads h share KV head h / (n_heads / n_kv_heads) (GQA; MHA when equal).
// Scores are q·k / sqrt(head_dim) over every cached token (sink, quantized
// middle, recent), one softmax, then p·V. The quantized middle is read by the
// fused kernels (dequantize after the per-group dot). Work is split over KV
// heads and token chunks (split softmax merged exactly) on `n_threads` threads.
#pragma once

#include <vector>

#include "innerq/attn/attention_scratch.h"
#include "innerq/kv/kv_cache.h"

namespace innerq::attn {

struct DecodeOptions {
  int n_threads = 1;
  // Run the same chunked algorithm with the scalar reference kernels (tests
  // compare it with the SIMD kernels, kernel by kernel).
  bool scalar_kernels = false;
  // > 0: attend to positions [0, n_visible) only, as a query at position
  // n_visible − 1 does while later positions of the same chunk are already
  // stored (chunked prefill, model/llama.h). 0: every cached position.
  int n_visible = 0;
};

// q:   [n_heads, head_dim] post-RoPE query of the newest position
// out: [n_heads, head_dim]
// The cache must already hold the newest position's K/V. Every buffer comes
// from `scratch` (sized on its first call over this cache: later calls
// allocate nothing).
void decode_attention(const kv::LayerCache& cache, const float* q, int n_heads, float* out,
                      const DecodeOptions& options, AttentionScratch& scratch);
// The same with a scratch of its own, allocated per call (tests, one-off
// calls).
void decode_attention(const kv::LayerCache& cache, const float* q, int n_heads, float* out,
                      const DecodeOptions& options = {});

// Scalar reference of the same computation for every cache kind: dequantizes
// each region in double precision and runs a plain softmax. Slow; for tests.
void decode_attention_reference(const kv::LayerCache& cache, const float* q, int n_heads,
                                float* out, int n_visible = 0);

// The cache's contents as the reference sees them, [n_tokens][head_dim] in
// double: every region decoded from its layout, InnerQ keys multiplied back by
// their normalization factors, rotated layers rotated back (Rᵀ), so rows are
// in the model's coordinates.
std::vector<double> dequantized_keys(const kv::LayerCache& cache, int kv_head);
std::vector<double> dequantized_values(const kv::LayerCache& cache, int kv_head);

}  // namespace innerq::attn
