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

// Attention of the new tokens of one append through `cache`, each as
// token-by-token decode would have computed it (docs/architecture.md,
// "Chunked extend"): token i (position steps.first + i) attends to the
// positions up to its own, the stored ones below steps.k_end[i] /
// v_end[i] from the cache and the rest from the f16 rows the windows held
// when it came (kv::ChunkSteps, filled by that append). The positions every
// token sees stored are read once for all of them (up to kChunkRows query
// rows per KV head at a time: the query heads of all the tokens), not once
// per token; the rest per token.
// q:   [steps.n][n_heads][head_dim] post-RoPE queries of the new positions
// out: [steps.n][n_heads][head_dim]
// The cache is the one the append left (a pooled layer, not a sliding-window
// ring); buffers come from `scratch`. options.n_visible is ignored.
void chunk_attention(const kv::LayerCache& cache, const kv::ChunkSteps& steps, const float* q,
                     int n_heads, float* out, const DecodeOptions& options, ChunkScratch& scratch);

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
