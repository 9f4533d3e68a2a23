// innerq/attn/window_attention.h — decode attention of a sliding-window layer
// over its ring of the last `window` positions (kv/window_layer_cache.h).
//
// The same computation as decode_attention over an f16 cache: scores
// q·k / sqrt(head_dim) over the positions the ring holds, one softmax, p·V,
// GQA (query head h reads KV head h / (n_heads / n_kv_heads)). The ring is
// at most a window long (512 for Gemma 3), so it runs on the calling thread.
#pragma once

#include <vector>

#include "innerq/kv/window_layer_cache.h"

namespace innerq::attn {

// q:   [n_heads, head_dim] post-RoPE query of the newest position
// out: [n_heads, head_dim]
// The cache must already hold the newest position's K/V.
void window_attention(const kv::WindowLayerCache& cache, const float* q, int n_heads, float* out);

// The same in double precision from the ring's f16 values (tests).
void window_attention_reference(const kv::WindowLayerCache& cache, const float* q, int n_heads,
                                float* out);

}  // namespace innerq::attn
