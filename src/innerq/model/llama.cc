// innerq/model/llama.cc — the forward pass, top to bottom, driven by the
// model's description (arch.h); no step asks which architecture it runs.
//
// Per layer (x is the residual stream, [n_tokens, n_embd]):
//   x  ×= embed_scale                      (once, after the embedding lookup)
//   xb  = rmsnorm(x) · attn_norm
//   q,k,v = xb·Wqᵀ (+bq), xb·Wkᵀ (+bk), xb·Wvᵀ (+bv)
//   q,k = rmsnorm per head · q_norm, k_norm   (qk_norm)
//   RoPE on q and k with the layer's base; q ×= attn_scale·sqrt(head_dim)
//   a   = attention(q, k, v)·Woᵀ           (prefill: f32 causal, windowed for
//                                           sliding-window layers; decode: the cache)
//   x  += post_norms ? rmsnorm(a) · post_attention_norm : a
//   xb  = rmsnorm(x) · ffn_norm
//   f   = (act(xb·Wgateᵀ) ⊙ xb·Wupᵀ)·Wdownᵀ   (act: silu or tanh-gelu)
//   x  += post_norms ? rmsnorm(f) · post_ffw_norm : f
// then logits = rmsnorm(x) · output_norm · Woutᵀ (Wout = token_embd when the
// file has no output.weight), soft-capped as c·tanh(logits/c) where the file
// sets a final cap.
#include "innerq/model/llama.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numbers>
#include <set>
#include <string_view>
#include <utility>

#include <fmt/core.h>
#include <omp.h>

#include "innerq/attn/decode_attention.h"
#include "innerq/attn/prefill_attention.h"
#include "innerq/attn/window_attention.h"
#include "innerq/base/error.h"
#include "innerq/base/parallel_errors.h"
#include "innerq/kernels/activation.h"
#include "innerq/kv/window_layer_cache.h"

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

// Each of the n rows of x ([n, dim]) normalized in place.
void rmsnorm_rows(float* x, const float* w, int n, int dim, float eps) {
  for (int t = 0; t < n; ++t) {
    float* row = x + static_cast<size_t>(t) * dim;
    rmsnorm(row, w, dim, eps, row);
  }
}

// gate = act(gate) ⊙ up (kernels/activation.h), in chunks over the threads
// when there are many values (prefill: tokens × n_ff).
void gated_activation(Activation act, float* gate, const float* up, size_t n, int n_threads) {
  const auto run =
      act == Activation::kSilu ? kernels::simd::gated_silu : kernels::simd::gated_gelu_tanh;
  constexpr size_t kChunk = size_t{1} << 14;
  const auto chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for num_threads(n_threads) schedule(static) if (chunks > 4)
  for (int64_t c = 0; c < chunks; ++c) {
    const size_t at = static_cast<size_t>(c) * kChunk;
    run(gate + at, up + at, std::min(kChunk, n - at));
  }
}

// Each row of x ([n, dim]) plus the bias b ([dim]).
void add_bias(float* x, const float* b, int n, int dim) {
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < dim; ++i) x[static_cast<size_t>(t) * dim + i] += b[i];
  }
}

void add_into(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

// Hands out the tensors the model reads and remembers them, so that tensors
// left over (blocks beyond <arch>.block_count, anything unknown) are refused
// rather than silently ignored. F32 tensors are checked for NaN/Inf here:
// in a quantized model they are only the small norm and bias vectors.
class TensorLoader {
 public:
  TensorLoader(const GgufFile& f, std::string arch) : f_(f), arch_(std::move(arch)) {}

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

  // An F32 vector: a norm's weights, a bias, RoPE frequency factors.
  const float* vector(const std::string& name, int n) {
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
            f_.describe(fmt::format("tensor '{}' belongs to block {}, but {}.block_count is {}",
                                    name, block, arch_, n_layers)));
      }
      throw Error(f_.describe(fmt::format(
          "tensor '{}' is not one a {} model reads (refused rather than ignored)", t.name, arch_)));
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
  std::string arch_;
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

LlamaModel::LlamaModel(const std::string& path, Activations activations)
    : LlamaModel(std::make_unique<GgufFile>(path), activations) {}

LlamaModel::LlamaModel(std::unique_ptr<GgufFile> file, Activations activations)
    : file_(std::move(file)), activations_(activations) {
  if (file_ == nullptr) throw Error("LlamaModel: no GGUF file given");
  const GgufFile& f = *file_;
  config_ = read_model_desc(f);
  ModelDesc& c = config_;
  tokenizer_ = std::make_unique<Tokenizer>(f);
  c.n_vocab = tokenizer_->n_vocab();

  const int q_dim = c.n_heads * c.head_dim;
  const int kv_dim = c.n_kv_heads * c.head_dim;
  TensorLoader load(f, c.arch);
  token_embd_ = load.matrix("token_embd.weight", c.n_vocab, c.n_embd);
  output_norm_ = load.vector("output_norm.weight", c.n_embd);
  tied_output_ = f.find_tensor("output.weight") == nullptr;
  output_ = tied_output_ ? token_embd_ : load.matrix("output.weight", c.n_vocab, c.n_embd);

  // Llama 3's RoPE scaling: the converter stores one factor per frequency
  // (θ_i is divided by it) as rope_freqs.weight; every layer uses them.
  std::vector<double> freq_factors(static_cast<size_t>(c.n_rot / 2), 1.0);
  if (f.find_tensor("rope_freqs.weight") != nullptr) {
    const float* factors = load.vector("rope_freqs.weight", c.n_rot / 2);
    for (int i = 0; i < c.n_rot / 2; ++i) {
      if (!(factors[i] > 0.0f)) {
        throw Error(f.describe(fmt::format(
            "tensor 'rope_freqs.weight' element {} is {}; RoPE frequency factors must be positive",
            i, factors[i])));
      }
      freq_factors[static_cast<size_t>(i)] = factors[i];
    }
  }

  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    Layer L;
    L.attn_norm = load.vector(p + "attn_norm.weight", c.n_embd);
    L.wq = load.matrix(p + "attn_q.weight", q_dim, c.n_embd);
    L.wk = load.matrix(p + "attn_k.weight", kv_dim, c.n_embd);
    L.wv = load.matrix(p + "attn_v.weight", kv_dim, c.n_embd);
    L.wo = load.matrix(p + "attn_output.weight", c.n_embd, q_dim);
    if (c.qkv_bias) {
      L.bq = load.vector(p + "attn_q.bias", q_dim);
      L.bk = load.vector(p + "attn_k.bias", kv_dim);
      L.bv = load.vector(p + "attn_v.bias", kv_dim);
    }
    if (c.qk_norm) {
      L.q_norm = load.vector(p + "attn_q_norm.weight", c.head_dim);
      L.k_norm = load.vector(p + "attn_k_norm.weight", c.head_dim);
    }
    L.ffn_norm = load.vector(p + "ffn_norm.weight", c.n_embd);
    L.w_gate = load.matrix(p + "ffn_gate.weight", c.n_ff, c.n_embd);
    L.w_up = load.matrix(p + "ffn_up.weight", c.n_ff, c.n_embd);
    L.w_down = load.matrix(p + "ffn_down.weight", c.n_embd, c.n_ff);
    if (c.post_norms) {
      L.post_attn_norm = load.vector(p + "post_attention_norm.weight", c.n_embd);
      L.post_ffn_norm = load.vector(p + "post_ffw_norm.weight", c.n_embd);
    }
    // θ_i = pos · scale · base^(−2i / n_rot) / factor_i
    const double base = c.layers[static_cast<size_t>(l)].rope_base;
    for (int i = 0; i < c.n_rot / 2; ++i) {
      L.inv_freq.push_back(static_cast<float>(c.rope_scale * std::pow(base, -2.0 * i / c.n_rot) /
                                              freq_factors[static_cast<size_t>(i)]));
    }
    layers_.push_back(std::move(L));
  }
  load.refuse_unused(c.n_layers);
  shape_ = kv::CacheShape{c.n_layers, c.n_kv_heads, c.head_dim, 1, c.windows()};
  if (activations_ == Activations::kInt16) {  // kF32 reads the rows as the file has them
    std::vector<WeightMatrix*> ws = {&token_embd_, &output_};
    for (Layer& L : layers_) {
      for (WeightMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
        ws.push_back(w);
      }
    }
    uint8_t* writable = file_->unseal();
    packed_.pack(ws, writable != nullptr, omp_get_max_threads());
    file_->seal();
  }
}

int64_t LlamaModel::n_params() const {
  int64_t n = 0;
  for (const GgufTensor& t : file_->tensors()) n += t.n_elements;
  return n;
}

kv::CacheShape LlamaModel::cache_shape(int max_tokens) const {
  kv::CacheShape shape = shape_;
  shape.max_tokens = max_tokens;
  return shape;
}

void LlamaModel::check_caches(std::span<kv::KvCache* const> caches) const {
  // Compared with the shape kept from construction: building one per call
  // would allocate its windows every decode step.
  const kv::CacheShape& want = shape_;
  for (size_t b = 0; b < caches.size(); ++b) {
    const kv::CacheShape& got = caches[b]->shape();
    if (got.n_layers != want.n_layers || got.n_kv_heads != want.n_kv_heads ||
        got.head_dim != want.head_dim || got.windows != want.windows) {
      const auto windowed = [](const kv::CacheShape& shape) {
        return std::count_if(shape.windows.begin(), shape.windows.end(),
                             [](int w) { return w > 0; });
      };
      throw Error(fmt::format(
          "cache {}: {} layers, {} kv heads, head_dim {}, {} sliding-window layers do not match "
          "the model's {}, {}, {}, {}; build it from the model's cache_shape()",
          b, got.n_layers, got.n_kv_heads, got.head_dim, windowed(got), want.n_layers,
          want.n_kv_heads, want.head_dim, windowed(want)));
    }
  }
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
    float* row = x + t * static_cast<size_t>(config_.n_embd);
    dequantize_row(token_embd_, id, row);
    if (config_.embed_scale != 1.0f) {
      for (int i = 0; i < config_.n_embd; ++i) row[i] *= config_.embed_scale;
    }
  }
}

// v: [n_heads, head_dim] at position pos. Pairs of the first n_rot dims
// rotate by pos·θ_i: adjacent ones (v[2i], v[2i+1]) in ggml's NORM RoPE (the
// GGUF converter permutes HF Llama's Q/K rows so that this matches HF's
// half-split RoPE), (v[i], v[i + n_rot/2]) in NEOX (Qwen, Gemma).
void LlamaModel::rope(const Layer& L, float* v, int n_heads, int pos) const {
  const int hd = config_.head_dim;
  const int half = config_.n_rot / 2;
  const bool adjacent = config_.rope_style == RopeStyle::kAdjacentPairs;
  for (int i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * L.inv_freq[static_cast<size_t>(i)];
    const float cs = std::cos(angle);
    const float sn = std::sin(angle);
    const int i0 = adjacent ? 2 * i : i;
    const int i1 = adjacent ? 2 * i + 1 : i + half;
    for (int h = 0; h < n_heads; ++h) {
      float* p = v + h * hd;
      const float a = p[i0];
      const float b = p[i1];
      p[i0] = a * cs - b * sn;
      p[i1] = a * sn + b * cs;
    }
  }
}

void LlamaModel::output_logits(float* x, int n, float* logits, int n_threads, Workspace& s) const {
  const int d = config_.n_embd;
  for (int t = 0; t < n; ++t) rmsnorm(x + t * d, output_norm_, d, config_.rms_eps, x + t * d);
  matmul(output_, x, n, logits, n_threads, s.matmul, activations_);
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
  // After the check: the cap would turn an overflow to ±Inf into ±c.
  if (config_.final_softcap > 0.0f) {
    const float cap = config_.final_softcap;
    for (size_t i = 0; i < total; ++i) logits[i] = cap * std::tanh(logits[i] / cap);
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

// A cache refused a layer's new K/V rows (not finite, or beyond f16): the
// model's weights or activations are at fault, so the error names the file
// and the first weight holding NaN/Inf (a scan of the whole model, on this
// error path only).
Error LlamaModel::refused_rows(const char* step, int sequence, int layer, const Error& e) const {
  const std::string where = sequence < 0
                                ? fmt::format("{}, layer {}", step, layer)
                                : fmt::format("{}: sequence {}, layer {}", step, sequence, layer);
  return Error(file_->describe(fmt::format("{}: {}; {}", where, e.what(), non_finite_cause())));
}

namespace {

// Runs step(l) for every layer. A step that throws after some layers took
// the new positions leaves a cache's layers at different lengths; such a
// cache is truncated back to the shortest layer before the error goes on,
// so it is never read or extended as if it were whole (docs/architecture.md,
// "Errors and threads"). A layer's own append is all or nothing, and a
// sliding-window ring gives back up to kWindowSpare positions even after it
// wrapped, so a decode step always rolls back; only a longer chunk through
// a wrapped ring cannot, and then the cache is marked failed.
template <class Step>
void for_each_layer(int n_layers, std::span<kv::KvCache* const> caches, Step&& step) {
  int l = 0;
  try {
    for (; l < n_layers; ++l) step(l);
  } catch (const std::exception& e) {
    for (kv::KvCache* cache : caches) {
      if (cache->layers_agree()) continue;
      // Back to the length every layer has (kv_cache.h, truncate); where a
      // wrapped ring cannot give that many positions back, the cache is
      // marked failed instead.
      try {
        cache->truncate(0);
      } catch (const std::exception&) {
        cache->mark_failed(fmt::format("layer {}: {}", l, e.what()));
      }
    }
    throw;
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// One layer's steps, shared by prefill and decode
// ---------------------------------------------------------------------------

LlamaModel::Workspace::Workspace(const LlamaModel& m, int rows, int sequences) {
  reserve(m.config(), rows, sequences, 1);
}

size_t LlamaModel::Workspace::bytes() const {
  size_t floats = 0;
  for (const std::vector<float>* b : {&x, &xb, &q, &k, &v, &att, &gate, &up}) {
    floats += b->capacity();
  }
  size_t total = floats * sizeof(float) + (tokens.capacity() + pos.capacity()) * sizeof(int);
  for (const attn::WindowChunk& w : windows) total += w.bytes();
  for (const kv::ChunkSteps& st : steps) total += st.bytes();
  total += chunk.bytes() + matmul.bytes();
  for (const attn::AttentionScratch& a : attention) total += a.bytes();
  return total;
}

void LlamaModel::Workspace::reserve(const ModelDesc& c, int rows, int sequences, int threads) {
  const size_t n = static_cast<size_t>(rows);
  const auto at_least = [](auto& buffer, size_t size) {
    if (buffer.size() < size) buffer.resize(size);
  };
  at_least(x, n * c.n_embd);
  at_least(xb, n * c.n_embd);
  at_least(q, n * c.n_heads * c.head_dim);
  at_least(k, n * c.n_kv_heads * c.head_dim);
  at_least(v, n * c.n_kv_heads * c.head_dim);
  at_least(att, n * c.n_heads * c.head_dim);
  at_least(gate, n * c.n_ff);
  at_least(up, n * c.n_ff);
  at_least(tokens, n);
  at_least(pos, n);
  at_least(windows, static_cast<size_t>(sequences));
  at_least(steps, static_cast<size_t>(sequences));
  at_least(attention, static_cast<size_t>(std::max(threads, 1)));
}

void LlamaModel::reserve_decode(std::span<kv::KvCache* const> caches, int n_threads,
                                Workspace& ws) const {
  check_caches(caches);
  const ModelDesc& c = config_;
  const int batch = static_cast<int>(caches.size());
  const int T = std::max(1, n_threads);
  ws.reserve(c, batch, batch, T);
  for (const Layer& L : layers_) {
    for (const WeightMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      reserve_matmul(*w, batch, T, activations_, ws.matmul);
  }
  reserve_matmul(output_, batch, T, activations_, ws.matmul);
  // As forward_cached attends: one sequence on all threads (or one, for a
  // short cache: reserve covers every count up to T), or one thread per
  // sequence, each thread's scratch serving any of them.
  for (int l = 0; l < c.n_layers; ++l) {
    for (int b = 0; b < batch; ++b) {
      const kv::LayerCache& layer = caches[static_cast<size_t>(b)]->layer(l);
      if (batch == 1) {
        ws.attention[0].reserve(layer, c.n_heads, T);
      } else {
        for (int t = 0; t < T; ++t)
          ws.attention[static_cast<size_t>(t)].reserve(layer, c.n_heads, 1);
      }
    }
  }
}

void LlamaModel::attention_inputs(const Layer& L, const float* x, std::span<const int> pos,
                                  Workspace& s, int n_threads) const {
  const ModelDesc& c = config_;
  const int n = static_cast<int>(pos.size());
  const int q_dim = c.n_heads * c.head_dim;
  const int kv_dim = c.n_kv_heads * c.head_dim;
  for (int t = 0; t < n; ++t) {
    const size_t row = static_cast<size_t>(t) * c.n_embd;
    rmsnorm(x + row, L.attn_norm, c.n_embd, c.rms_eps, &s.xb[row]);
  }
  const WeightMatrix* qkv[] = {&L.wq, &L.wk, &L.wv};
  float* const qkv_out[] = {s.q.data(), s.k.data(), s.v.data()};
  matmul_group(qkv, s.xb.data(), n, qkv_out, n_threads, s.matmul, activations_);
  if (L.bq != nullptr) {
    add_bias(s.q.data(), L.bq, n, q_dim);
    add_bias(s.k.data(), L.bk, n, kv_dim);
    add_bias(s.v.data(), L.bv, n, kv_dim);
  }
  if (L.q_norm != nullptr) {  // per head: [n·heads, head_dim] rows
    rmsnorm_rows(s.q.data(), L.q_norm, n * c.n_heads, c.head_dim, c.rms_eps);
    rmsnorm_rows(s.k.data(), L.k_norm, n * c.n_kv_heads, c.head_dim, c.rms_eps);
  }
  // Attention divides scores by sqrt(head_dim); q carries the rest.
  const float q_scale = c.attn_scale * std::sqrt(static_cast<float>(c.head_dim));
  for (int t = 0; t < n; ++t) {
    float* qt = &s.q[static_cast<size_t>(t) * q_dim];
    rope(L, qt, c.n_heads, pos[static_cast<size_t>(t)]);
    rope(L, &s.k[static_cast<size_t>(t) * kv_dim], c.n_kv_heads, pos[static_cast<size_t>(t)]);
    if (q_scale != 1.0f) {
      for (int i = 0; i < q_dim; ++i) qt[i] *= q_scale;
    }
  }
}

void LlamaModel::attention_output_and_ffn(const Layer& L, float* x, int n, Workspace& s,
                                          int n_threads) const {
  const ModelDesc& c = config_;
  const size_t xn = static_cast<size_t>(n) * c.n_embd;
  matmul(L.wo, s.att.data(), n, s.xb.data(), n_threads, s.matmul, activations_);
  if (L.post_attn_norm != nullptr)
    rmsnorm_rows(s.xb.data(), L.post_attn_norm, n, c.n_embd, c.rms_eps);
  add_into(x, s.xb.data(), xn);

  for (int t = 0; t < n; ++t) {
    const size_t row = static_cast<size_t>(t) * c.n_embd;
    rmsnorm(x + row, L.ffn_norm, c.n_embd, c.rms_eps, &s.xb[row]);
  }
  const WeightMatrix* gate_up[] = {&L.w_gate, &L.w_up};
  float* const gate_up_out[] = {s.gate.data(), s.up.data()};
  matmul_group(gate_up, s.xb.data(), n, gate_up_out, n_threads, s.matmul, activations_);
  gated_activation(c.activation, s.gate.data(), s.up.data(), static_cast<size_t>(n) * c.n_ff,
                   n_threads);
  matmul(L.w_down, s.gate.data(), n, s.xb.data(), n_threads, s.matmul, activations_);
  if (L.post_ffn_norm != nullptr)
    rmsnorm_rows(s.xb.data(), L.post_ffn_norm, n, c.n_embd, c.rms_eps);
  add_into(x, s.xb.data(), xn);
}

// ---------------------------------------------------------------------------
// Prefill: the whole prompt at once
// ---------------------------------------------------------------------------

void LlamaModel::prefill(std::span<const int> tokens, std::span<kv::KvCache* const> caches,
                         bool all_logits, std::vector<float>& logits, int n_threads) const {
  const ModelDesc& c = config_;
  const int n = static_cast<int>(tokens.size());
  if (n == 0) throw Error("prefill: empty prompt");
  check_caches(caches);
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
  const size_t nn = static_cast<size_t>(n);
  // Once per prompt: prefill allocates its own buffers.
  Workspace s;
  s.reserve(c, n, 0, n_threads);
  const std::span<int> pos(s.pos.data(), nn);
  for (int t = 0; t < n; ++t) pos[static_cast<size_t>(t)] = t;
  float* x = s.x.data();  // [n, n_embd] residual stream
  embed(tokens, x);
  for_each_layer(c.n_layers, caches, [&](int l) {
    const Layer& L = layers_[static_cast<size_t>(l)];
    attention_inputs(L, x, pos, s, n_threads);
    const attn::PrefillShape shape{n, c.n_heads, c.n_kv_heads, c.head_dim,
                                   c.layers[static_cast<size_t>(l)].window};
    attn::prefill_attention(shape, s.q.data(), s.k.data(), s.v.data(), s.att.data(), n_threads);
    for (kv::KvCache* cache : caches) {
      try {
        cache->append(l, s.k.data(), s.v.data(), n);
      } catch (const Error& e) {
        throw refused_rows("prefill", -1, l, e);
      }
    }
    attention_output_and_ffn(L, x, n, s, n_threads);
  });

  // ---- output head ----
  if (all_logits) {
    logits.resize(nn * c.n_vocab);
    output_logits(x, n, logits.data(), n_threads, s);
  } else {
    logits.resize(static_cast<size_t>(c.n_vocab));
    output_logits(x + (nn - 1) * d, 1, logits.data(), n_threads, s);
  }
}

// ---------------------------------------------------------------------------
// Decode and extend: new tokens through the caches
// ---------------------------------------------------------------------------

void LlamaModel::decode(std::span<const int> tokens, std::span<kv::KvCache* const> caches,
                        std::vector<float>& logits, int n_threads) const {
  Workspace ws;
  decode(tokens, caches, logits, n_threads, ws);
}

void LlamaModel::decode(std::span<const int> tokens, std::span<kv::KvCache* const> caches,
                        std::vector<float>& logits, int n_threads, Workspace& ws) const {
  if (tokens.empty() || caches.size() != tokens.size()) {
    throw Error("decode: need one cache per token and at least one token");
  }
  const int batch = static_cast<int>(tokens.size());
  check_new_tokens(1, caches, "decode");
  ws.reserve(config_, batch, batch, n_threads);
  std::copy(tokens.begin(), tokens.end(), ws.tokens.begin());
  forward_cached(1, caches, /*all_logits=*/true, logits, n_threads, ws, "decode");
}

void LlamaModel::extend(std::span<const int> tokens, kv::KvCache& cache, bool all_logits,
                        std::vector<float>& logits, int n_threads, Workspace& ws) const {
  kv::KvCache* caches[] = {&cache};
  extend(tokens, caches, all_logits, logits, n_threads, ws);
}

void LlamaModel::extend(std::span<const int> tokens, std::span<kv::KvCache* const> caches,
                        bool all_logits, std::vector<float>& logits, int n_threads,
                        Workspace& ws) const {
  if (tokens.empty()) throw Error("extend: no tokens");
  if (caches.empty()) throw Error("extend: no cache");
  const int n = static_cast<int>(tokens.size());
  const int batch = static_cast<int>(caches.size());
  check_new_tokens(n, caches, "extend");
  if (int64_t{n} * batch > std::numeric_limits<int>::max()) {
    throw Error(
        fmt::format("extend: {} tokens for each of {} caches are too many for one call", n, batch));
  }
  ws.reserve(config_, n * batch, batch, n_threads);
  for (int b = 0; b < batch; ++b)
    std::copy(tokens.begin(), tokens.end(), ws.tokens.begin() + static_cast<ptrdiff_t>(b) * n);
  forward_cached(n, caches, all_logits, logits, n_threads, ws, "extend");
}

// Everything that can be checked before a layer takes the new tokens, so
// that a refused step leaves every cache as it was.
void LlamaModel::check_new_tokens(int n_new, std::span<kv::KvCache* const> caches,
                                  const char* step) const {
  check_caches(caches);
  for (size_t b = 0; b < caches.size(); ++b) {
    const kv::KvCache& cache = *caches[b];
    cache.require_usable();
    const int held = cache.n_tokens();
    if (n_new > cache.shape().max_tokens - held) {
      throw Error(n_new == 1
                      ? fmt::format("{}: sequence {} holds {} tokens, its whole context (-c)", step,
                                    b, held)
                      : fmt::format("{}: sequence {} holds {} tokens; {} more do not fit "
                                    "its context of {} (-c)",
                                    step, b, held, n_new, cache.shape().max_tokens));
    }
    for (size_t a = 0; a < b; ++a) {
      if (caches[a] == caches[b])
        throw Error(fmt::format("{}: sequences {} and {} share one cache", step, a, b));
    }
  }
}

void LlamaModel::forward_cached(int n_new, std::span<kv::KvCache* const> caches, bool all_logits,
                                std::vector<float>& logits, int n_threads, Workspace& ws,
                                const char* step) const {
  const ModelDesc& c = config_;
  const int batch = static_cast<int>(caches.size());
  const int rows = batch * n_new;  // row b·n_new + i: token i of cache b
  const size_t d = static_cast<size_t>(c.n_embd);
  const size_t q_dim = static_cast<size_t>(c.n_heads) * c.head_dim;
  const size_t kv_dim = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  const size_t nb = static_cast<size_t>(batch);
  const size_t n = static_cast<size_t>(n_new);

  for (size_t b = 0; b < nb; ++b) {
    const int held = caches[b]->n_tokens();
    for (size_t i = 0; i < n; ++i) ws.pos[b * n + i] = held + static_cast<int>(i);
  }

  float* x = ws.x.data();  // [rows, n_embd] residual stream
  embed(std::span<const int>(ws.tokens.data(), static_cast<size_t>(rows)), x);
  const std::span<const int> pos(ws.pos.data(), static_cast<size_t>(rows));
  for_each_layer(c.n_layers, caches, [&](int l) {
    const Layer& L = layers_[static_cast<size_t>(l)];
    const bool windowed = c.layers[static_cast<size_t>(l)].window > 0;
    // A window ring read by several new tokens at once: from a copy of what
    // it holds, taken before the append overwrites any of it.
    const bool window_chunk = windowed && n_new > 1;
    // A pooled layer read by several new tokens at once: the append records
    // what each of them would have seen, and chunk attention reads the cache
    // once for all of them.
    const bool pooled_chunk = !windowed && n_new > 1;
    attention_inputs(L, x, pos, ws, n_threads);

    // ---- store the new K/V ----
    // Every sequence's new rows are validated before any is stored, outside
    // the parallel region (no exception may cross one): bad rows refuse the
    // layer for the whole batch.
    for (size_t b = 0; b < nb; ++b) {
      try {
        caches[b]->check_append(l, &ws.k[b * n * kv_dim], &ws.v[b * n * kv_dim], n_new);
      } catch (const Error& e) {
        throw refused_rows(step, static_cast<int>(b), l, e);
      }
    }
    const auto store = [&](int b) {
      const size_t bb = static_cast<size_t>(b);
      if (window_chunk) {  // check_caches: this layer's cache is a window ring
        ws.windows[bb].begin(static_cast<const kv::WindowLayerCache&>(caches[bb]->layer(l)), n_new);
      }
      caches[bb]->append(l, &ws.k[bb * n * kv_dim], &ws.v[bb * n * kv_dim], n_new,
                         pooled_chunk ? &ws.steps[bb] : nullptr);
      if (window_chunk) ws.windows[bb].add_chunk(&ws.k[bb * n * kv_dim], &ws.v[bb * n * kv_dim]);
    };
    // ---- attention through the cache ----
    // Row r = b·n_new + i attends to cache b up to its own position.
    // scratch: the workspace's attention buffers of the thread running it.
    const auto attend = [&](int r, int attn_threads, attn::AttentionScratch& scratch) {
      const size_t rr = static_cast<size_t>(r);
      const int b = r / n_new, i = r % n_new;
      const kv::LayerCache& layer = caches[static_cast<size_t>(b)]->layer(l);
      if (window_chunk) {
        attn::window_chunk_attention(ws.windows[static_cast<size_t>(b)], i, &ws.q[rr * q_dim],
                                     c.n_heads, &ws.att[rr * q_dim], scratch);
      } else if (windowed) {
        attn::window_attention(static_cast<const kv::WindowLayerCache&>(layer), &ws.q[rr * q_dim],
                               c.n_heads, &ws.att[rr * q_dim], scratch);
      } else {  // one new token (pooled chunks: attend_chunk)
        attn::DecodeOptions options;
        options.n_threads = attn_threads;
        attn::decode_attention(layer, &ws.q[rr * q_dim], c.n_heads, &ws.att[rr * q_dim], options,
                               scratch);
      }
    };
    // All new tokens of cache b at once, on all threads.
    const auto attend_chunk = [&](size_t b) {
      attn::DecodeOptions options;
      options.n_threads = n_threads;
      attn::chunk_attention(caches[b]->layer(l), ws.steps[b], &ws.q[b * n * q_dim], c.n_heads,
                            &ws.att[b * n * q_dim], options, ws.chunk);
    };
    // Several rows: one thread per row (each cache is its own object; the
    // rows of one cache only read it). One row: decode attention splits its
    // cache over the threads, unless the cache is too short to be worth
    // waking them. The single-row call stays outside any OpenMP region: a
    // parallel region nested in an inactive one gets a second thread team,
    // which competes with the idle-spinning first one for the cores.
    if (rows == 1) {
      store(0);
      const bool long_cache =
          int64_t{ws.pos[0] + 1} * static_cast<int64_t>(kv_dim) >= kMinParallelAttention;
      attend(0, long_cache ? n_threads : 1, ws.attention[0]);
    } else {
      // What is left to fail here (memory) is carried out of the regions.
      ParallelErrors errors;
      if (batch == 1) {
        store(0);
      } else {
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
        for (int b = 0; b < batch; ++b) errors.run([&] { store(b); });
        errors.rethrow();
      }
      if (pooled_chunk) {
        for (size_t b = 0; b < nb; ++b) attend_chunk(b);
      } else {
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
        for (int r = 0; r < rows; ++r) {
          errors.run(
              [&] { attend(r, 1, ws.attention[static_cast<size_t>(omp_get_thread_num())]); });
        }
        errors.rethrow();
      }
    }
    attention_output_and_ffn(L, x, rows, ws, n_threads);
  });

  // ---- output head ----
  const size_t V = static_cast<size_t>(c.n_vocab);
  if (all_logits || n_new == 1) {
    logits.resize(static_cast<size_t>(rows) * V);
    output_logits(x, rows, logits.data(), n_threads, ws);
    return;
  }
  // Each cache's last new row, gathered (the FFN is done with xb).
  for (size_t b = 0; b < nb; ++b) std::copy_n(x + (b * n + n - 1) * d, d, ws.xb.data() + b * d);
  logits.resize(nb * V);
  output_logits(ws.xb.data(), batch, logits.data(), n_threads, ws);
}

}  // namespace innerq::model
