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

#include <charconv>
#include <cmath>
#include <cstddef>
#include <limits>
#include <set>
#include <string_view>
#include <utility>

#include <fmt/core.h>

#include "innerq/attn/decode_attention.h"
#include "innerq/attn/prefill_attention.h"
#include "innerq/base/error.h"
#include "innerq/base/parallel_errors.h"

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

// Largest count a config key may hold; every buffer it sizes also needs
// tensors of that size in the file.
constexpr int64_t kMaxCount = int64_t{1} << 24;

// An integer config value in [lo, hi], checked as the type it is stored as.
int config_int(const GgufFile& f, std::string_view key, int64_t lo, int64_t hi) {
  return static_cast<int>(f.get_int(key, lo, hi));
}

// Hands out the tensors the model reads and remembers them, so that tensors
// left over (blocks beyond llama.block_count, anything unknown) are refused
// rather than silently ignored. F32 tensors are checked for NaN/Inf here:
// in a quantized model they are only the small norm vectors.
class TensorLoader {
 public:
  explicit TensorLoader(const GgufFile& f) : f_(f) {}

  WeightMatrix matrix(const std::string& name, int64_t rows, int64_t cols) {
    const GgufTensor& t = take(name);
    WeightMatrix w;
    try {
      w = weight_matrix(t);
    } catch (const Error& e) {
      throw Error(f_.describe(e.what()));
    }
    if (w.rows != rows || w.cols != cols) {
      throw Error(
          f_.describe(fmt::format("tensor '{}' is [{} x {}], expected [{} x {}] (rows x cols)",
                                  name, w.rows, w.cols, rows, cols)));
    }
    return w;
  }

  const float* norm(const std::string& name, int n) {
    const GgufTensor& t = take(name);
    if (t.type != GgmlType::kF32 || t.ne.size() != 1 || t.ne[0] != n) {
      throw Error(f_.describe(fmt::format("tensor '{}' must be F32 [{}], got {} with {} elements",
                                          name, n, ggml_type_name(t.type), t.n_elements)));
    }
    return reinterpret_cast<const float*>(t.data);
  }

  // Throws for the first tensor of the file that no take() asked for.
  void refuse_unused(int n_layers) const {
    for (const GgufTensor& t : f_.tensors()) {
      if (used_.count(t.name) != 0) continue;
      const std::string_view name = t.name;
      uint64_t block = 0;
      if (name.starts_with("blk.") &&
          std::from_chars(name.data() + 4, name.data() + name.size(), block).ec == std::errc() &&
          block >= static_cast<uint64_t>(n_layers)) {
        throw Error(
            f_.describe(fmt::format("tensor '{}' belongs to block {}, but llama.block_count is {}",
                                    name, block, n_layers)));
      }
      throw Error(f_.describe(fmt::format(
          "tensor '{}' is not one a llama model reads (refused rather than ignored)", t.name)));
    }
  }

 private:
  const GgufTensor& take(const std::string& name) {
    const GgufTensor& t = f_.get_tensor(name);
    used_.insert(name);
    if (t.type == GgmlType::kF32) {
      const auto* v = reinterpret_cast<const float*>(t.data);
      for (int64_t i = 0; i < t.n_elements; ++i) {
        if (!std::isfinite(v[i])) {
          throw Error(f_.describe(
              fmt::format("tensor '{}' holds NaN or Inf (element {} is {})", name, i, v[i])));
        }
      }
    }
    return t;
  }

  const GgufFile& f_;
  std::set<std::string, std::less<>> used_;
};

// Whether a weight holds NaN/Inf: a value, or (block formats) a scale or
// offset, whichever format the matrix has, found by dequantizing each row.
// Sets *row to the first such row. Reads the whole matrix: for error paths.
bool holds_non_finite(const WeightMatrix& w, int64_t* row) {
  std::vector<float> values(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row(w, r, values.data());
    for (float v : values) {
      if (!std::isfinite(v)) {
        *row = r;
        return true;
      }
    }
  }
  return false;
}

}  // namespace

LlamaModel::LlamaModel(const std::string& path) : LlamaModel(std::make_unique<GgufFile>(path)) {}

LlamaModel::LlamaModel(std::unique_ptr<GgufFile> file) : file_(std::move(file)) {
  if (file_ == nullptr) throw Error("LlamaModel: no GGUF file given");
  const GgufFile& f = *file_;
  const std::string arch(f.get_string("general.architecture"));
  if (arch != "llama") {
    throw Error(f.describe(fmt::format("architecture '{}' is not supported (llama)", arch)));
  }
  LlamaConfig& c = config_;
  c.n_layers = config_int(f, "llama.block_count", 1, kMaxCount);
  c.n_embd = config_int(f, "llama.embedding_length", 1, kMaxCount);
  c.n_heads = config_int(f, "llama.attention.head_count", 1, c.n_embd);
  c.n_kv_heads =
      static_cast<int>(f.get_int("llama.attention.head_count_kv", 1, c.n_heads, c.n_heads));
  c.n_ff = config_int(f, "llama.feed_forward_length", 1, kMaxCount);
  c.n_ctx_train = config_int(f, "llama.context_length", 1, kMaxCount);
  if (c.n_embd % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0) {
    throw Error(f.describe(fmt::format("embedding {} / heads {} / kv heads {} do not divide",
                                       c.n_embd, c.n_heads, c.n_kv_heads)));
  }
  c.head_dim = c.n_embd / c.n_heads;
  c.n_rot = static_cast<int>(f.get_int("llama.rope.dimension_count", 2, c.head_dim, c.head_dim));
  if (c.n_rot % 2 != 0) {
    throw Error(
        f.describe(fmt::format("llama.rope.dimension_count {} must be even and at most head_dim {}",
                               c.n_rot, c.head_dim)));
  }
  // Checked as read (a double beyond the float range would not convert):
  // NaN or a base below 1 would otherwise surface as NaN keys in the cache.
  const double base = f.get_float("llama.rope.freq_base", 10000.0);
  if (!(base >= 1.0 && base <= std::numeric_limits<float>::max())) {
    throw Error(f.describe(
        fmt::format("llama.rope.freq_base = {} must be finite and at least 1 (RoPE frequencies "
                    "base^(-2i/n_rot) then lie in (0, 1])",
                    base)));
  }
  c.rope_base = static_cast<float>(base);
  const double eps = f.get_float("llama.attention.layer_norm_rms_epsilon", 1e-5);
  if (!(eps > 0.0 && eps < 1.0) || static_cast<float>(eps) == 0.0f) {
    throw Error(f.describe(fmt::format(
        "llama.attention.layer_norm_rms_epsilon = {} must be in (0, 1) as an f32", eps)));
  }
  c.rms_eps = static_cast<float>(eps);
  const std::string scaling = f.get_string("llama.rope.scaling.type", "none");
  if (scaling != "none") {
    throw Error(f.describe(fmt::format("RoPE scaling '{}' is not supported", scaling)));
  }

  tokenizer_ = std::make_unique<Tokenizer>(f);
  c.n_vocab = tokenizer_->n_vocab();

  const int q_dim = c.n_heads * c.head_dim;
  const int kv_dim = c.n_kv_heads * c.head_dim;
  TensorLoader load(f);
  token_embd_ = load.matrix("token_embd.weight", c.n_vocab, c.n_embd);
  output_norm_ = load.norm("output_norm.weight", c.n_embd);
  tied_output_ = f.find_tensor("output.weight") == nullptr;
  output_ = tied_output_ ? token_embd_ : load.matrix("output.weight", c.n_vocab, c.n_embd);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    layers_.push_back(Layer{
        load.norm(p + "attn_norm.weight", c.n_embd),
        load.matrix(p + "attn_q.weight", q_dim, c.n_embd),
        load.matrix(p + "attn_k.weight", kv_dim, c.n_embd),
        load.matrix(p + "attn_v.weight", kv_dim, c.n_embd),
        load.matrix(p + "attn_output.weight", c.n_embd, q_dim),
        load.norm(p + "ffn_norm.weight", c.n_embd),
        load.matrix(p + "ffn_gate.weight", c.n_ff, c.n_embd),
        load.matrix(p + "ffn_up.weight", c.n_ff, c.n_embd),
        load.matrix(p + "ffn_down.weight", c.n_embd, c.n_ff),
    });
  }
  load.refuse_unused(c.n_layers);

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
  // NaN logits would make argmax pick token 0 and every caller (generate,
  // perplexity, passkey, tune, eval) carry on with garbage. Quantized weights
  // are not scanned at load (that would read the whole file), so their NaN/Inf
  // scales surface here. Runs on the calling thread, outside any OpenMP region.
  const size_t vocab = static_cast<size_t>(config_.n_vocab);
  const size_t total = static_cast<size_t>(n) * vocab;
  for (size_t i = 0; i < total; ++i) {
    if (!std::isfinite(logits[i])) {
      throw Error(file_->describe(
          fmt::format("non-finite logits (row {} of the {} in this call, vocabulary entry {}): {}",
                      i / vocab, n, i % vocab, non_finite_cause())));
    }
  }
}

std::string LlamaModel::non_finite_cause() const {
  std::vector<const WeightMatrix*> weights = {&token_embd_};
  for (const Layer& L : layers_) {
    for (const WeightMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      weights.push_back(w);
  }
  if (!tied_output_) weights.push_back(&output_);
  for (const WeightMatrix* w : weights) {
    int64_t row = 0;
    if (holds_non_finite(*w, &row)) {
      return fmt::format("the weights hold NaN or Inf (tensor '{}', row {})", w->name, row);
    }
  }
  return "no weight holds NaN or Inf, so an activation overflowed";
}

namespace {

// Runs step(l) for every layer. A step that throws after some layers took
// the new positions leaves a cache's layers at different lengths; such a
// cache is marked failed (kv_cache.h) before the error goes on, so it cannot
// be read or extended as if it were whole (docs/architecture.md, "Errors and
// threads").
template <class Step>
void for_each_layer(int n_layers, std::span<kv::KvCache* const> caches, Step&& step) {
  int l = 0;
  try {
    for (; l < n_layers; ++l) step(l);
  } catch (const std::exception& e) {
    for (kv::KvCache* cache : caches) {
      if (!cache->layers_agree()) cache->mark_failed(fmt::format("layer {}: {}", l, e.what()));
    }
    throw;
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Prefill: the whole prompt at once
// ---------------------------------------------------------------------------

void LlamaModel::prefill(std::span<const int> tokens, std::span<kv::KvCache* const> caches,
                         bool all_logits, std::vector<float>& logits, int n_threads) const {
  const LlamaConfig& c = config_;
  const int n = static_cast<int>(tokens.size());
  if (n == 0) throw Error("prefill: empty prompt");
  for (const kv::KvCache* cache : caches) {
    cache->require_usable();
    if (cache->n_tokens() != 0)
      throw Error("prefill: the cache must be empty (prefill continues no sequence)");
    if (n > cache->shape().max_tokens) {
      throw Error(fmt::format("prefill: {} prompt tokens do not fit the cache's context of {} (-c)",
                              n, cache->shape().max_tokens));
    }
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
  for_each_layer(c.n_layers, caches, [&](int l) {
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
  });

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

  // Everything that can be checked before a layer takes the new token is
  // checked here, so that a refused step leaves every cache as it was.
  std::vector<int> pos(nb);  // position of each sequence's new token
  for (size_t b = 0; b < nb; ++b) {
    const kv::KvCache& cache = *caches[b];
    cache.require_usable();
    pos[b] = cache.n_tokens();
    if (pos[b] >= cache.shape().max_tokens) {
      throw Error(
          fmt::format("decode: sequence {} holds {} tokens, its whole context (-c)", b, pos[b]));
    }
    for (size_t a = 0; a < b; ++a) {
      if (caches[a] == caches[b])
        throw Error(fmt::format("decode: sequences {} and {} share one cache", a, b));
    }
  }

  std::vector<float> x(nb * d);          // [B, n_embd]
  std::vector<float> xb(nb * d);         // [B, n_embd]
  std::vector<float> q(nb * q_dim);      // [B, n_heads, head_dim]
  std::vector<float> k(nb * kv_dim);     // [B, n_kv_heads, head_dim]
  std::vector<float> v(nb * kv_dim);     // [B, n_kv_heads, head_dim]
  std::vector<float> att(nb * q_dim);    // [B, n_heads, head_dim]
  std::vector<float> gate(nb * c.n_ff);  // [B, n_ff]
  std::vector<float> up(nb * c.n_ff);    // [B, n_ff]

  embed(tokens, x.data());
  for_each_layer(c.n_layers, caches, [&](int l) {
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
    // Every sequence's new row is validated before any is stored, outside
    // the parallel region (no exception may cross one): a bad row refuses
    // the layer for the whole batch.
    for (size_t b = 0; b < nb; ++b) {
      rope(&q[b * q_dim], c.n_heads, pos[b]);
      rope(&k[b * kv_dim], c.n_kv_heads, pos[b]);
      try {
        caches[b]->check_append(l, &k[b * kv_dim], &v[b * kv_dim], 1);
      } catch (const Error& e) {
        throw Error(fmt::format("decode: sequence {}, layer {}: {}", b, l, e.what()));
      }
    }
    const auto attend = [&](int b, int attn_threads) {
      const size_t bb = static_cast<size_t>(b);
      caches[bb]->append(l, &k[bb * kv_dim], &v[bb * kv_dim], 1);
      attn::decode_attention(caches[bb]->layer(l), &q[bb * q_dim], c.n_heads, &att[bb * q_dim],
                             attn::DecodeOptions{attn_threads});
    };
    if (batch == 1) {
      const bool long_cache =
          int64_t{pos[0] + 1} * static_cast<int64_t>(kv_dim) >= kMinParallelAttention;
      attend(0, long_cache ? n_threads : 1);
    } else {
      // What is left to fail here (memory) is carried out of the region.
      ParallelErrors errors;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
      for (int b = 0; b < batch; ++b) errors.run([&] { attend(b, 1); });
      errors.rethrow();
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
  });

  // ---- output head ----
  logits.resize(nb * c.n_vocab);
  output_logits(x.data(), batch, logits.data(), n_threads);
}

}  // namespace innerq::model
