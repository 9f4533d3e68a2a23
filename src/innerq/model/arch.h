// innerq/model/arch.h — one description of a model's architecture, read once
// from its GGUF metadata; the forward pass (llama.cc) is driven by it and
// never asks which architecture it runs (docs/architecture.md,
// "Architectures").
//
//   arch    RoPE pairs      FFN      extras
//   llama   adjacent (NORM) SwiGLU   Llama 3 frequency factors (rope_freqs.weight),
//                                    linear RoPE scaling; Mistral-style key_length
//   qwen2   half split      SwiGLU   Q/K/V biases
//   qwen3   half split      SwiGLU   per-head RMSNorm of q and k
//   gemma3  half split      GeGLU    per-head q/k norm, post-attention and post-FFN
//   (NEOX)                  (tanh)   norms, embeddings × sqrt(n_embd), sliding-window
//                                    layers with their own RoPE base, final
//                                    logit soft-capping when the file asks
#pragma once

#include <string>
#include <vector>

#include "innerq/model/gguf.h"

namespace innerq::model {

enum class RopeStyle {
  kAdjacentPairs,  // (v[2i], v[2i+1]) rotate by θ_i: ggml's NORM RoPE
  kHalfSplit,      // (v[i], v[i + n_rot/2]) rotate by θ_i: ggml's NEOX RoPE
};

// The FFN is down(act(gate·x) ⊙ up·x).
enum class Activation {
  kSilu,      // SwiGLU: silu(g) = g·σ(g)
  kGeluTanh,  // GeGLU: gelu(g) ≈ g/2·(1 + tanh(√(2/π)·(g + 0.044715·g³)))
};

struct LayerDesc {
  int window = 0;          // > 0: attends to its last `window` positions only
  float rope_base = 0.0f;  // θ_i = pos·rope_scale·rope_base^(−2i/n_rot) / factor_i
};

struct ModelDesc {
  std::string arch;  // general.architecture
  int n_layers = 0;
  int n_embd = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;  // key_length (Gemma 3 and Mistral Nemo: not n_embd / n_heads)
  int n_ff = 0;
  int n_vocab = 0;  // the tokenizer's
  int n_ctx_train = 0;
  int n_rot = 0;  // leading dimensions of each head that RoPE rotates
  float rms_eps = 1e-5f;
  RopeStyle rope_style = RopeStyle::kAdjacentPairs;
  float rope_base = 10000.0f;  // of the global layers
  float rope_scale = 1.0f;     // linear RoPE scaling: 1 / rope.scaling.factor
  float embed_scale = 1.0f;    // token embeddings are multiplied by it
  float attn_scale = 0.0f;     // scores are q·k·attn_scale (1/sqrt(head_dim) by default)
  float final_softcap = 0.0f;  // > 0: logits become c·tanh(logits / c)
  bool qkv_bias = false;       // blk.N.attn_{q,k,v}.bias
  bool qk_norm = false;        // blk.N.attn_{q,k}_norm.weight, per head, before RoPE
  bool post_norms = false;     // blk.N.post_attention_norm, blk.N.post_ffw_norm
  Activation activation = Activation::kSilu;
  std::vector<LayerDesc> layers;  // [n_layers]

  int n_window_layers() const;
  // Per layer windows for kv::CacheShape (empty when no layer has one).
  std::vector<int> windows() const;
};

// Reads `<arch>.*` metadata of the architectures above and checks every
// value (counts in their stored type, heads that divide, RoPE and norm
// constants finite and in range). Throws innerq::Error naming the file and
// the key; an unknown architecture or a feature the forward pass lacks
// (attention soft-capping, YaRN) is refused by name. n_vocab is left 0.
ModelDesc read_model_desc(const GgufFile& f);

const char* rope_style_name(RopeStyle style);
const char* activation_name(Activation activation);

}  // namespace innerq::model
