// innerq/model/llama.cc — the Llama forward pass, top to bottom.
//
// Per layer (x is the residual stream, [n_tokens, n_embd]):
//   xb  = rmsnorm(x) · attn_norm
//   q,k,v = xb·Wqᵀ, xb·Wkᵀ, xb·Wvᵀ; RoPE on q and k
//   x  += attention(q, k, v)·Woᵀ          (prefill: f32 causal; decode: the cache)
//   xb  = rmsnorm(x) · ffn_norm
//   x  += (silu(xb·Wgateᵀ) ⊙ xb·Wupᵀ)·Wdownᵀ
// then logits = rmsnorm(x) · output_norm · Woutᵀ (Wout = token_embd when the
// file has no output.weight).
#include "innerq/model/llama.h"

#include <cmath>

#include <fmt/core.h>

#include "innerq/attn/decode_attention.h"
#include "innerq/attn/prefill_attention.h"
#include "innerq/base/error.h"

namespace innerq::model {
namespace {

// Cached K/V values below which decode attention stays on one thread.
constexpr int64_t kMinParallelAttention = 1 << 15;

// ---------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------

// out = x / sqrt(mean(x²) + eps) · w, over one row of n values.
void rmsnorm(const float* x, const float* w, int n, float eps, float* out) {
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
  for (int i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

// gate = silu(gate) ⊙ up
void swiglu(float* gate, const float* up, size_t n) {
  for (size_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void add_into(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

int config_int(const GgufFile& f, const std::string& key) {
  const uint64_t v = f.get_uint(key);
  if (v == 0 || v > (1u << 24)) {
    throw Error(f.describe(fmt::format("{} = {} is out of range", key, v)));
  }
  return static_cast<int>(v);
}

WeightMatrix matrix(const GgufFile& f, const std::string& name, int64_t rows, int64_t cols) {
  const GgufTensor& t = f.get_tensor(name);
  WeightMatrix w;
  try {
    w = weight_matrix(t);
  } catch (const Error& e) {
    throw Error(f.describe(e.what()));
  }
  if (w.rows != rows || w.cols != cols) {
    throw Error(f.describe(fmt::format("tensor '{}' is [{} x {}], expected [{} x {}] (rows x cols)",
                                       name, w.rows, w.cols, rows, cols)));
  }
  return w;
}

const float* norm_weights(const GgufFile& f, const std::string& name, int n) {
  const GgufTensor& t = f.get_tensor(name);
  if (t.type != GgmlType::kF32 || t.ne.size() != 1 || t.ne[0] != n) {
    throw Error(f.describe(fmt::format("tensor '{}' must be F32 [{}], got {} with {} elements",
                                       name, n, ggml_type_name(t.type), t.n_elements)));
  }
  return reinterpret_cast<const float*>(t.data);
}

}  // namespace

LlamaModel::LlamaModel(const std::string& path) : file_(std::make_unique<GgufFile>(path)) {
  const GgufFile& f = *file_;
  const std::string arch(f.get_string("general.architecture"));
  if (arch != "llama") {
    throw Error(f.describe(fmt::format("architecture '{}' is not supported (llama)", arch)));
  }
  LlamaConfig& c = config_;
  c.n_layers = config_int(f, "llama.block_count");
  c.n_embd = config_int(f, "llama.embedding_length");
  c.n_heads = config_int(f, "llama.attention.head_count");
  c.n_kv_heads = f.find("llama.attention.head_count_kv")
                     ? config_int(f, "llama.attention.head_count_kv")
                     : c.n_heads;
  c.n_ff = config_int(f, "llama.feed_forward_length");
  c.n_ctx_train = config_int(f, "llama.context_length");
  if (c.n_embd % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0) {
    throw Error(f.describe(fmt::format("embedding {} / heads {} / kv heads {} do not divide",
                                       c.n_embd, c.n_heads, c.n_kv_heads)));
  }
  c.head_dim = c.n_embd / c.n_heads;
  c.n_rot =
      static_cast<int>(f.get_uint("llama.rope.dimension_count", static_cast<uint64_t>(c.head_dim)));
  if (c.n_rot <= 0 || c.n_rot > c.head_dim || c.n_rot % 2 != 0) {
    throw Error(
        f.describe(fmt::format("llama.rope.dimension_count {} must be even and at most head_dim {}",
                               c.n_rot, c.head_dim)));
  }
  c.rope_base = static_cast<float>(f.get_float("llama.rope.freq_base", 10000.0));
  c.rms_eps = static_cast<float>(f.get_float("llama.attention.layer_norm_rms_epsilon", 1e-5));
  const std::string scaling = f.get_string("llama.rope.scaling.type", "none");
  if (scaling != "none") {
    throw Error(f.describe(fmt::format("RoPE scaling '{}' is not supported", scaling)));
  }

  tokenizer_ = std::make_unique<Tokenizer>(f);
  c.n_vocab = tokenizer_->n_vocab();

  const int q_dim = c.n_heads * c.head_dim;
  const int kv_dim = c.n_kv_heads * c.head_dim;
  token_embd_ = matrix(f, "token_embd.weight", c.n_vocab, c.n_embd);
  output_norm_ = norm_weights(f, "output_norm.weight", c.n_embd);
  tied_output_ = f.find_tensor("output.weight") == nullptr;
  output_ = tied_output_ ? token_embd_ : matrix(f, "output.weight", c.n_vocab, c.n_embd);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    layers_.push_back(Layer{
        norm_weights(f, p + "attn_norm.weight", c.n_embd),
        matrix(f, p + "attn_q.weight", q_dim, c.n_embd),
        matrix(f, p + "attn_k.weight", kv_dim, c.n_embd),
        matrix(f, p + "attn_v.weight", kv_dim, c.n_embd),
        matrix(f, p + "attn_output.weight", c.n_embd, q_dim),
        norm_weights(f, p + "ffn_norm.weight", c.n_embd),
        matrix(f, p + "ffn_gate.weight", c.n_ff, c.n_embd),
        matrix(f, p + "ffn_up.weight", c.n_ff, c.n_embd),
        matrix(f, p + "ffn_down.weight", c.n_embd, c.n_ff),
    });
  }

  // θ_i = pos · base^(−2i / n_rot)
  for (int i = 0; i < c.n_rot / 2; ++i) {
    inv_freq_.push_back(
        static_cast<float>(std::pow(static_cast<double>(c.rope_base), -2.0 * i / c.n_rot)));
  }
}

int64_t LlamaModel::n_params() const {
  int64_t n = 0;
  for (const GgufTensor& t : file_->tensors()) n += t.n_elements;
  return n;
}

kv::CacheShape LlamaModel::cache_shape(int max_tokens) const {
  return kv::CacheShape{config_.n_layers, config_.n_kv_heads, config_.head_dim, max_tokens};
}

// ---------------------------------------------------------------------------
// Embeddings, RoPE, output head
// ---------------------------------------------------------------------------

// x: [n, n_embd]
void LlamaModel::embed(std::span<const int> tokens, float* x) const {
  for (size_t t = 0; t < tokens.size(); ++t) {
    const int id = tokens[t];
    if (id < 0 || id >= config_.n_vocab) {
      throw Error(fmt::format("token id {} is outside the vocabulary of {}", id, config_.n_vocab));
    }
    dequantize_row(token_embd_, id, x + t * static_cast<size_t>(config_.n_embd));
  }
}

// v: [n_heads, head_dim] at position pos. Adjacent pairs (v[2i], v[2i+1]) of
// the first n_rot dims rotate by pos·θ_i (ggml's NORM RoPE; the GGUF
// converter permutes HF's Q/K rows so that this matches HF's half-split RoPE).
void LlamaModel::rope(float* v, int n_heads, int pos) const {
  const int hd = config_.head_dim;
  for (int i = 0; i < config_.n_rot / 2; ++i) {
    const float angle = static_cast<float>(pos) * inv_freq_[static_cast<size_t>(i)];
    const float cs = std::cos(angle);
    const float sn = std::sin(angle);
    for (int h = 0; h < n_heads; ++h) {
      float* p = v + h * hd + 2 * i;
      const float a = p[0];
      const float b = p[1];
      p[0] = a * cs - b * sn;
      p[1] = a * sn + b * cs;
    }
  }
}

void LlamaModel::output_logits(float* x, int n, float* logits, int n_threads) const {
  const int d = config_.n_embd;
  for (int t = 0; t < n; ++t) rmsnorm(x + t * d, output_norm_, d, config_.rms_eps, x + t * d);
  matmul(output_, x, n, logits, n_threads);
}

// ---------------------------------------------------------------------------
// Prefill: the whole prompt at once
// ---------------------------------------------------------------------------

void LlamaModel::prefill(std::span<const int> tokens, std::span<kv::KvCache* const> caches,
                         bool all_logits, std::vector<float>& logits, int n_threads) const {
  const LlamaConfig& c = config_;
  const int n = static_cast<int>(tokens.size());
  if (n == 0) throw Error("prefill: empty prompt");
  for (const kv::KvCache* cache : caches) {
    if (cache->n_tokens() != 0)
      throw Error("prefill: the cache must be empty (prefill continues no sequence)");
  }
  const size_t d = static_cast<size_t>(c.n_embd);
  const size_t q_dim = static_cast<size_t>(c.n_heads) * c.head_dim;
  const size_t kv_dim = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  const size_t nn = static_cast<size_t>(n);

  std::vector<float> x(nn * d);          // [n, n_embd] residual stream
  std::vector<float> xb(nn * d);         // [n, n_embd]
  std::vector<float> q(nn * q_dim);      // [n, n_heads, head_dim]
  std::vector<float> k(nn * kv_dim);     // [n, n_kv_heads, head_dim]
  std::vector<float> v(nn * kv_dim);     // [n, n_kv_heads, head_dim]
  std::vector<float> att(nn * q_dim);    // [n, n_heads, head_dim]
  std::vector<float> gate(nn * c.n_ff);  // [n, n_ff]
  std::vector<float> up(nn * c.n_ff);    // [n, n_ff]

  embed(tokens, x.data());
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& L = layers_[static_cast<size_t>(l)];

    // ---- attention ----
    for (size_t t = 0; t < nn; ++t)
      rmsnorm(&x[t * d], L.attn_norm, c.n_embd, c.rms_eps, &xb[t * d]);
    matmul(L.wq, xb.data(), n, q.data(), n_threads);
    matmul(L.wk, xb.data(), n, k.data(), n_threads);
    matmul(L.wv, xb.data(), n, v.data(), n_threads);
    for (int t = 0; t < n; ++t) {
      rope(&q[t * q_dim], c.n_heads, t);
      rope(&k[t * kv_dim], c.n_kv_heads, t);
    }
    attn::prefill_attention({n, c.n_heads, c.n_kv_heads, c.head_dim}, q.data(), k.data(), v.data(),
                            att.data(), n_threads);
    for (kv::KvCache* cache : caches) cache->append(l, k.data(), v.data(), n);
    matmul(L.wo, att.data(), n, xb.data(), n_threads);
    add_into(x.data(), xb.data(), x.size());

    // ---- feed-forward (SwiGLU) ----
    for (size_t t = 0; t < nn; ++t) rmsnorm(&x[t * d], L.ffn_norm, c.n_embd, c.rms_eps, &xb[t * d]);
    matmul(L.w_gate, xb.data(), n, gate.data(), n_threads);
    matmul(L.w_up, xb.data(), n, up.data(), n_threads);
    swiglu(gate.data(), up.data(), gate.size());
    matmul(L.w_down, gate.data(), n, xb.data(), n_threads);
    add_into(x.data(), xb.data(), x.size());
  }

  // ---- output head ----
  if (all_logits) {
    logits.resize(nn * c.n_vocab);
    output_logits(x.data(), n, logits.data(), n_threads);
  } else {
    logits.resize(static_cast<size_t>(c.n_vocab));
    output_logits(&x[(nn - 1) * d], 1, logits.data(), n_threads);
  }
}

// ---------------------------------------------------------------------------
// Decode: one new token for each of B sequences
// ---------------------------------------------------------------------------

void LlamaModel::decode(std::span<const int> tokens, std::span<kv::KvCache* const> caches,
                        std::vector<float>& logits, int n_threads) const {
  const LlamaConfig& c = config_;
  const int batch = static_cast<int>(tokens.size());
  if (batch == 0 || caches.size() != tokens.size()) {
    throw Error("decode: need one cache per token and at least one token");
  }
  const size_t d = static_cast<size_t>(c.n_embd);
  const size_t q_dim = static_cast<size_t>(c.n_heads) * c.head_dim;
  const size_t kv_dim = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  const size_t nb = static_cast<size_t>(batch);

  std::vector<int> pos(nb);  // position of each sequence's new token
  for (size_t b = 0; b < nb; ++b) pos[b] = caches[b]->n_tokens();

  std::vector<float> x(nb * d);          // [B, n_embd]
  std::vector<float> xb(nb * d);         // [B, n_embd]
  std::vector<float> q(nb * q_dim);      // [B, n_heads, head_dim]
  std::vector<float> k(nb * kv_dim);     // [B, n_kv_heads, head_dim]
  std::vector<float> v(nb * kv_dim);     // [B, n_kv_heads, head_dim]
  std::vector<float> att(nb * q_dim);    // [B, n_heads, head_dim]
  std::vector<float> gate(nb * c.n_ff);  // [B, n_ff]
  std::vector<float> up(nb * c.n_ff);    // [B, n_ff]

  embed(tokens, x.data());
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& L = layers_[static_cast<size_t>(l)];

    // ---- attention through the cache ----
    for (size_t b = 0; b < nb; ++b)
      rmsnorm(&x[b * d], L.attn_norm, c.n_embd, c.rms_eps, &xb[b * d]);
    matmul(L.wq, xb.data(), batch, q.data(), n_threads);
    matmul(L.wk, xb.data(), batch, k.data(), n_threads);
    matmul(L.wv, xb.data(), batch, v.data(), n_threads);
    // Several sequences: one thread per sequence (each cache is its own
    // object). One sequence: decode attention splits its cache over the
    // threads, unless the cache is too short to be worth waking them. The
    // single-sequence call stays outside any OpenMP region: a parallel region
    // nested in an inactive one gets a second thread team, which competes
    // with the idle-spinning first one for the cores.
    const auto attend = [&](int b, int attn_threads) {
      const size_t bb = static_cast<size_t>(b);
      rope(&q[bb * q_dim], c.n_heads, pos[bb]);
      rope(&k[bb * kv_dim], c.n_kv_heads, pos[bb]);
      caches[bb]->append(l, &k[bb * kv_dim], &v[bb * kv_dim], 1);
      attn::decode_attention(caches[bb]->layer(l), &q[bb * q_dim], c.n_heads, &att[bb * q_dim],
                             attn::DecodeOptions{attn_threads});
    };
    if (batch == 1) {
      const bool long_cache =
          int64_t{pos[0] + 1} * static_cast<int64_t>(kv_dim) >= kMinParallelAttention;
      attend(0, long_cache ? n_threads : 1);
    } else {
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
      for (int b = 0; b < batch; ++b) attend(b, 1);
    }
    matmul(L.wo, att.data(), batch, xb.data(), n_threads);
    add_into(x.data(), xb.data(), x.size());

    // ---- feed-forward (SwiGLU) ----
    for (size_t b = 0; b < nb; ++b) rmsnorm(&x[b * d], L.ffn_norm, c.n_embd, c.rms_eps, &xb[b * d]);
    matmul(L.w_gate, xb.data(), batch, gate.data(), n_threads);
    matmul(L.w_up, xb.data(), batch, up.data(), n_threads);
    swiglu(gate.data(), up.data(), gate.size());
    matmul(L.w_down, gate.data(), batch, xb.data(), n_threads);
    add_into(x.data(), xb.data(), x.size());
  }

  // ---- output head ----
  logits.resize(nb * c.n_vocab);
  output_logits(x.data(), batch, logits.data(), n_threads);
}

}  // namespace innerq::model
