// innerq/attn/prefill_attention.h — causal full-precision attention over a
// prompt's own keys and values (prefill does not read the quantized cache;
// docs/architecture.md, "Data flow of a decode step").
#pragma once

namespace innerq::attn {

struct PrefillShape {
  int n_tokens;    // prompt positions processed together
  int n_heads;     // query heads
  int n_kv_heads;  // divides n_heads
  int head_dim;
  // > 0: position i attends to positions max(0, i − window + 1)..i only
  // (a sliding-window layer); 0: to every earlier position.
  int window = 0;
};

// q:   [n_tokens, n_heads, head_dim]     (post-RoPE)
// k,v: [n_tokens, n_kv_heads, head_dim]  (post-RoPE keys)
// out: [n_tokens, n_heads, head_dim]
// Position i attends to positions 0..i (the last `window` of them when set).
void prefill_attention(const PrefillShape& shape, const float* q, const float* k, const float* v,
                       float* out, int n_threads);

}  // namespace innerq::attn
