// innerq/model/llama.h — a Llama-family model loaded from GGUF, running its
// attention through innerq KV caches.
//
// Prefill runs the prompt in one batch with full-precision causal attention
// and appends its post-RoPE K/V to the caches (the same K/V to each, so one
// prefill can feed several cache configurations). Decode runs one token per
// sequence, several sequences at once (each with its own cache), and reads
// past tokens only through attn::decode_attention over the cache.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "innerq/kv/kv_cache.h"
#include "innerq/model/gguf.h"
#include "innerq/model/tokenizer.h"
#include "innerq/model/weights.h"

namespace innerq::model {

struct LlamaConfig {
  int n_layers = 0;
  int n_embd = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int n_ff = 0;
  int n_vocab = 0;
  int n_ctx_train = 0;
  int n_rot = 0;  // leading dimensions of each head that RoPE rotates
  float rope_base = 10000.0f;
  float rms_eps = 1e-5f;
};

class LlamaModel {
 public:
  // Opens and validates the GGUF file; throws innerq::Error naming it. A file
  // that cannot be a valid model is refused (docs/architecture.md, "GGUF
  // files"): metadata out of range, tensors the model does not read, NaN/Inf
  // in F32 weights.
  explicit LlamaModel(const std::string& path);
  // The same, over a file already parsed (from memory in the fuzz target).
  explicit LlamaModel(std::unique_ptr<GgufFile> file);

  const GgufFile& file() const { return *file_; }
  const LlamaConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  bool tied_output() const { return tied_output_; }
  int64_t n_params() const;

  kv::CacheShape cache_shape(int max_tokens) const;

  // tokens: [n] at positions 0..n-1; every cache must be empty and receives
  // the same K/V. logits: [n, n_vocab] when all_logits, else [n_vocab] of the
  // last position.
  void prefill(std::span<const int> tokens, std::span<kv::KvCache* const> caches, bool all_logits,
               std::vector<float>& logits, int n_threads) const;

  // One token per sequence: tokens[b] goes to caches[b] at position
  // caches[b]->n_tokens(). logits: [B, n_vocab].
  void decode(std::span<const int> tokens, std::span<kv::KvCache* const> caches,
              std::vector<float>& logits, int n_threads) const;

 private:
  struct Layer {
    const float* attn_norm;  // [n_embd]
    WeightMatrix wq, wk, wv, wo;
    const float* ffn_norm;  // [n_embd]
    WeightMatrix w_gate, w_up, w_down;
  };

  void embed(std::span<const int> tokens, float* x) const;
  void rope(float* v, int n_heads, int pos) const;
  // x: [n, n_embd] in; logits: [n, n_vocab] out (x is normalized in place).
  // Throws innerq::Error naming the file if any logit is NaN or Inf.
  void output_logits(float* x, int n, float* logits, int n_threads) const;
  // Why logits came out non-finite: the first weight matrix holding NaN/Inf
  // (a value, or a quantized block's scale), else an activation overflow.
  std::string non_finite_cause() const;

  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  LlamaConfig config_;
  WeightMatrix token_embd_;
  const float* output_norm_ = nullptr;
  WeightMatrix output_;
  bool tied_output_ = false;
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;  // [n_rot / 2] RoPE frequencies
};

}  // namespace innerq::model
