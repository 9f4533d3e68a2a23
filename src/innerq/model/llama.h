// innerq/model/llama.h — a Llama-family model loaded from GGUF (llama, qwen2,
// qwen3, gemma3; model/arch.h), running its attention through innerq KV
// caches.
//
// Prefill runs the prompt in one batch with full-precision causal attention
// and appends its post-RoPE K/V to the caches (the same K/V to each, so one
// prefill can feed several cache configurations). Decode runs one token per
// sequence, several sequences at once (each with its own cache), and reads
// past tokens only through the cache: attn::decode_attention for global
// layers, attn::window_attention for sliding-window layers, whose caches keep
// only their window (cache_shape() says which layers those are). Extend sends
// a chunk of new tokens through caches that may already hold a sequence
// (chunked prefill, a new chat turn, teacher-forced scoring): the chunk's K/V
// is stored first, then each new token attends to the cache up to its own
// position exactly as token-by-token decode would have seen it — the
// windows as they were at that position, not as the chunk left them — in
// one pass over the stored cache for the whole chunk (attn::chunk_attention;
// docs/architecture.md, "Chunked extend").
//
// decode() and extend() take their buffers from a Workspace the caller keeps,
// so a generation loop allocates nothing per token in this layer once the
// workspace has seen its largest call.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "innerq/attn/attention_scratch.h"
#include "innerq/attn/window_attention.h"
#include "innerq/base/error.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/arch.h"
#include "innerq/model/gguf.h"
#include "innerq/model/tokenizer.h"
#include "innerq/model/weights.h"

namespace innerq::model {

class LlamaModel {
 public:
  // The buffers of one forward pass: residual stream, activations, positions
  // and the sliding-window chunks of rows = sequences × tokens per call,
  // matmul's weight tiles, and the attention scratch of each thread. A call
  // that needs more than it holds grows it (once); smaller calls reuse it,
  // so a decode step allocates nothing. One per calling thread; not tied to
  // one model's weights, but sized by a model's shape.
  class Workspace {
   public:
    Workspace() = default;
    // Sized for calls of up to `rows` rows over up to `sequences` caches.
    Workspace(const LlamaModel& m, int rows, int sequences);
    // Heap bytes held (release them by assigning an empty Workspace).
    size_t bytes() const;

   private:
    friend class LlamaModel;
    void reserve(const ModelDesc& c, int rows, int sequences, int threads);

    std::vector<float> x;                    // [rows, n_embd] residual stream
    std::vector<float> xb;                   // [rows, n_embd]
    std::vector<float> q;                    // [rows, n_heads, head_dim]
    std::vector<float> k;                    // [rows, n_kv_heads, head_dim]
    std::vector<float> v;                    // [rows, n_kv_heads, head_dim]
    std::vector<float> att;                  // [rows, n_heads, head_dim]
    std::vector<float> gate;                 // [rows, n_ff]
    std::vector<float> up;                   // [rows, n_ff]
    std::vector<int> tokens;                 // [rows]
    std::vector<int> pos;                    // [rows]
    std::vector<attn::WindowChunk> windows;  // [sequences], sliding-window layers
    std::vector<kv::ChunkSteps> steps;       // [sequences], what each chunk token saw
    attn::ChunkScratch chunk;                // chunk attention's buffers
    MatmulScratch matmul;                    // matmul's weight tiles and int16 activations
    // [threads]: rows that attend in parallel use their thread's; a single
    // row uses the first (decode attention then splits it over the threads).
    std::vector<attn::AttentionScratch> attention;
  };

  // Opens and validates the GGUF file; throws innerq::Error naming it. A file
  // that cannot be a valid model is refused (docs/architecture.md, "GGUF
  // files"): metadata out of range, tensors the model does not read, NaN/Inf
  // in F32 weights.
  explicit LlamaModel(const std::string& path, Activations activations = Activations::kInt16);
  // The same, over a file already parsed (from memory in the fuzz target).
  explicit LlamaModel(std::unique_ptr<GgufFile> file,
                      Activations activations = Activations::kInt16);

  const GgufFile& file() const { return *file_; }
  const ModelDesc& config() const { return config_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  bool tied_output() const { return tied_output_; }
  int64_t n_params() const;

  // How the weight products treat activations (model/weights.h): kInt16,
  // the default, quantizes them per 32 values (within about 2⁻¹⁶ of f32);
  // kF32 multiplies them as they are (the reference the model tests use).
  Activations activations() const { return activations_; }
  // The packed copies of the weights the decode product reads (0 bytes
  // where packing is off: no AVX-512 VNNI, INNERQ_PACK=0, or kF32).
  const PackedWeights& packed_weights() const { return packed_; }

  // The shape of this model's caches, with its sliding-window layers. Every
  // cache given to prefill() or decode() must have this shape (but for
  // max_tokens).
  kv::CacheShape cache_shape(int max_tokens) const;

  // tokens: [n] at positions 0..n-1; every cache must be empty and receives
  // the same K/V. logits: [n, n_vocab] when all_logits, else [n_vocab] of the
  // last position.
  void prefill(std::span<const int> tokens, std::span<kv::KvCache* const> caches, bool all_logits,
               std::vector<float>& logits, int n_threads) const;

  // One token per sequence: tokens[b] goes to caches[b] at position
  // caches[b]->n_tokens(). logits: [B, n_vocab].
  void decode(std::span<const int> tokens, std::span<kv::KvCache* const> caches,
              std::vector<float>& logits, int n_threads, Workspace& ws) const;
  // The same with a workspace of its own (allocates per call).
  void decode(std::span<const int> tokens, std::span<kv::KvCache* const> caches,
              std::vector<float>& logits, int n_threads) const;

  // Sizes ws for decode() of these caches on n_threads up to their
  // capacity (kv::LayerCache::capacity_tokens): activations, the matmul
  // scratch and every layer's attention scratch. Afterwards ws.bytes() is
  // what decode steps of these caches hold, and they allocate nothing more
  // (docs/architecture.md, "No allocation per token"); a memory plan adds
  // it to the caches' (bench decode does).
  void reserve_decode(std::span<kv::KvCache* const> caches, int n_threads, Workspace& ws) const;

  // tokens: [n] appended to every cache at its positions n_tokens()...; the
  // caches may be empty or hold a sequence, and each receives the same
  // tokens (teacher-forced scoring of several configs). Token i attends to
  // positions 0..n_tokens()+i of its cache exactly as decode would have read
  // them: what the windows held then, and the cache stores what token-by-
  // token appends would have stored (kv::LayerCache::append with steps).
  // logits: [B, n, n_vocab] when all_logits, else [B, n_vocab] of each
  // cache's last new position. A chunk that does not fit a cache's
  // max_tokens is refused before anything is stored.
  void extend(std::span<const int> tokens, std::span<kv::KvCache* const> caches, bool all_logits,
              std::vector<float>& logits, int n_threads, Workspace& ws) const;
  void extend(std::span<const int> tokens, kv::KvCache& cache, bool all_logits,
              std::vector<float>& logits, int n_threads, Workspace& ws) const;

 private:
  struct Layer {
    const float* attn_norm;                 // [n_embd]
    WeightMatrix wq, wk, wv, wo;            // [q_dim | kv_dim | kv_dim, n_embd], [n_embd, q_dim]
    const float* bq = nullptr;              // [q_dim]   qkv_bias
    const float* bk = nullptr;              // [kv_dim]  qkv_bias
    const float* bv = nullptr;              // [kv_dim]  qkv_bias
    const float* q_norm = nullptr;          // [head_dim] qk_norm
    const float* k_norm = nullptr;          // [head_dim] qk_norm
    const float* post_attn_norm = nullptr;  // [n_embd] post_norms
    const float* ffn_norm;                  // [n_embd]
    WeightMatrix w_gate, w_up, w_down;      // [n_ff, n_embd] x2, [n_embd, n_ff]
    const float* post_ffn_norm = nullptr;   // [n_embd] post_norms
    std::vector<float> inv_freq;            // [n_rot / 2] RoPE frequencies of this layer
  };
  void check_caches(std::span<kv::KvCache* const> caches) const;
  // The attention inputs of n rows of x ([n, n_embd]) at positions pos:
  // norm, projections, biases, q/k norms, RoPE; q also scaled so that the
  // attention's 1/sqrt(head_dim) gives attn_scale.
  void attention_inputs(const Layer& L, const float* x, std::span<const int> pos, Workspace& s,
                        int n_threads) const;
  // x += the attention output att (after Wo and the post-attention norm),
  // then x += the FFN of x.
  void attention_output_and_ffn(const Layer& L, float* x, int n, Workspace& s, int n_threads) const;
  // Throws, before anything is stored, unless every cache can take n_new
  // more tokens (usable, room left, no cache twice).
  void check_new_tokens(int n_new, std::span<kv::KvCache* const> caches, const char* step) const;
  // decode and extend: n_new tokens for each cache (row b·n_new + i holds
  // token i of cache b, ws.tokens), through the caches.
  void forward_cached(int n_new, std::span<kv::KvCache* const> caches, bool all_logits,
                      std::vector<float>& logits, int n_threads, Workspace& ws,
                      const char* step) const;
  void embed(std::span<const int> tokens, float* x) const;
  void rope(const Layer& L, float* v, int n_heads, int pos) const;
  // x: [n, n_embd] in; logits: [n, n_vocab] out (x is normalized in place).
  // Throws innerq::Error naming the file if any logit is NaN or Inf.
  void output_logits(float* x, int n, float* logits, int n_threads, Workspace& s) const;
  // Why logits came out non-finite: the first weight matrix holding NaN/Inf
  // (a value, or a quantized block's scale), else an activation overflow.
  std::string non_finite_cause() const;
  Error refused_rows(const char* step, int sequence, int layer, const Error& e) const;

  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelDesc config_;
  WeightMatrix token_embd_;
  const float* output_norm_ = nullptr;
  WeightMatrix output_;
  bool tied_output_ = false;
  Activations activations_ = Activations::kInt16;
  std::vector<Layer> layers_;
  PackedWeights packed_;  // after the matrices it points them into
  kv::CacheShape shape_;  // cache_shape() but for max_tokens
};

}  // namespace innerq::model
