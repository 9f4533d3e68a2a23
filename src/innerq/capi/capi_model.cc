// The C ABI (include/innerq/innerq.h): GGUF models, tokens, the forward
// pass through sequences, sampling.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "innerq/capi/capi_internal.h"
#include "innerq/model/llama.h"
#include "innerq/model/sampler.h"

struct innerq_model {
  std::unique_ptr<innerq::model::LlamaModel> model;
  innerq::model::LlamaModel::Workspace ws;
  std::vector<int32_t> window;  // per layer, for innerq_model_shape
  std::vector<float> logits;
};

struct innerq_sampler {
  innerq::model::Sampler sampler;
};

namespace innerq::capi {
namespace {

const model::LlamaModel& model_of(const innerq_model* m) {
  require_not_null(m, "model");
  return *m->model;
}

void check_tokens(const model::LlamaModel& m, const int32_t* tokens, int64_t n, const char* name) {
  require_not_null(tokens, name);
  const int n_vocab = m.config().n_vocab;
  for (int64_t i = 0; i < n; ++i) {
    require(tokens[i] >= 0 && tokens[i] < n_vocab,
            fmt::format("{}[{}] = {} is not a token id (0..{})", name, i, tokens[i], n_vocab - 1));
  }
}

// Writes text with a NUL into buf (cap bytes); its length into *len.
void copy_text(const std::string& text, char* buf, size_t cap, size_t* len) {
  require_not_null(len, "len");
  *len = text.size();
  if (buf == nullptr || cap <= text.size()) {
    fail(INNERQ_ERROR_BUFFER_TOO_SMALL,
         fmt::format("the text needs {} bytes and a NUL; buf holds {}", text.size(),
                     buf == nullptr ? 0 : cap));
  }
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
}

// The sequence's pool must have the model's cache shape (but max_tokens).
void check_sequence_shape(const model::LlamaModel& m, const innerq_seq* seq, const char* name) {
  require(seq != nullptr, fmt::format("{} is NULL", name));
  const kv::CacheShape want = m.cache_shape(1), &got = seq->state->shape;
  require(got.n_layers == want.n_layers && got.n_kv_heads == want.n_kv_heads &&
              got.head_dim == want.head_dim && got.windows == want.windows,
          fmt::format("{}: its pool's shape ({} layers, {} KV heads, head_dim {}) is not the "
                      "model's ({} layers, {} KV heads, head_dim {}, with its sliding-window "
                      "layers): make the pool from innerq_model_shape",
                      name, got.n_layers, got.n_kv_heads, got.head_dim, want.n_layers,
                      want.n_kv_heads, want.head_dim));
}

// The caches of a batch of sequences of the model's shape (any pools).
std::vector<kv::KvCache*> model_caches(const model::LlamaModel& m, innerq_seq* const* seqs,
                                       int32_t n_seqs) {
  require_not_null(seqs, "seqs");
  require(n_seqs >= 1 && n_seqs <= 65536, fmt::format("n_seqs {} is not in 1..65536", n_seqs));
  std::vector<kv::KvCache*> caches(static_cast<size_t>(n_seqs));
  for (int32_t b = 0; b < n_seqs; ++b) {
    const std::string name = fmt::format("seqs[{}]", b);
    check_sequence_shape(m, seqs[b], name.c_str());
    caches[static_cast<size_t>(b)] = seqs[b]->cache.get();
    seqs[b]->steps_layer = -1;  // the model's step changes every layer
  }
  return caches;
}

}  // namespace
}  // namespace innerq::capi

using namespace innerq;
using capi::fail;
using capi::guard;
using capi::require;
using capi::require_not_null;

extern "C" {

innerq_status innerq_model_load(const char* path, innerq_model** out) {
  return guard(
      "innerq_model_load",
      [&] {
        require_not_null(path, "path");
        require_not_null(out, "out");
        auto m = std::make_unique<innerq_model>();
        m->model = std::make_unique<model::LlamaModel>(std::string(path));
        const std::vector<int> w = m->model->config().windows();
        m->window.assign(w.begin(), w.end());
        *out = m.release();
      },
      INNERQ_ERROR_IO);
}

void innerq_model_free(innerq_model* model) {
  delete model;
}

innerq_status innerq_model_info_get(const innerq_model* model, innerq_model_info* out) {
  return guard("innerq_model_info_get", [&] {
    const model::LlamaModel& m = capi::model_of(model);
    require_not_null(out, "out");
    const model::ModelDesc& c = m.config();
    const model::Tokenizer& t = m.tokenizer();
    innerq_model_info info{};
    info.arch = c.arch.c_str();
    info.n_layers = c.n_layers;
    info.n_heads = c.n_heads;
    info.n_kv_heads = c.n_kv_heads;
    info.head_dim = c.head_dim;
    info.n_embd = c.n_embd;
    info.n_vocab = c.n_vocab;
    info.n_ctx_train = c.n_ctx_train;
    info.n_window_layers = c.n_window_layers();
    info.bos = t.bos();
    info.eos = t.eos();
    info.adds_bos = t.adds_bos() ? 1 : 0;
    info.chat_template = static_cast<int32_t>(t.chat_template());
    info.n_params = m.n_params();
    *out = info;
  });
}

innerq_status innerq_model_shape(const innerq_model* model, int32_t max_tokens, innerq_shape* out) {
  return guard("innerq_model_shape", [&] {
    const model::LlamaModel& m = capi::model_of(model);
    require_not_null(out, "out");
    require(max_tokens >= 1 && max_tokens <= kv::kMaxSavedTokens,
            fmt::format("max_tokens {} is not in 1..{}", max_tokens, kv::kMaxSavedTokens));
    const model::ModelDesc& c = m.config();
    *out = innerq_shape{c.n_layers, c.n_kv_heads, c.head_dim, max_tokens,
                        model->window.empty() ? nullptr : model->window.data()};
  });
}

innerq_status innerq_tokenize(const innerq_model* model, const char* text, size_t text_len,
                              int add_bos, int parse_special, int32_t* tokens, int64_t cap,
                              int64_t* n_tokens) {
  return guard("innerq_tokenize", [&] {
    const model::LlamaModel& m = capi::model_of(model);
    require(text != nullptr || text_len == 0, "text is NULL");
    require_not_null(n_tokens, "n_tokens");
    require(cap >= 0, fmt::format("cap {} is negative", cap));
    const model::Tokenizer& t = m.tokenizer();
    const std::vector<int> ids = t.tokenize(std::string_view(text == nullptr ? "" : text, text_len),
                                            add_bos != 0 && t.adds_bos(), parse_special != 0);
    *n_tokens = static_cast<int64_t>(ids.size());
    if (tokens == nullptr || cap < *n_tokens) {
      fail(INNERQ_ERROR_BUFFER_TOO_SMALL, fmt::format("the text has {} tokens; tokens holds {}",
                                                      ids.size(), tokens == nullptr ? 0 : cap));
    }
    std::copy(ids.begin(), ids.end(), tokens);
  });
}

innerq_status innerq_detokenize(const innerq_model* model, const int32_t* tokens, int64_t n_tokens,
                                char* buf, size_t cap, size_t* len) {
  return guard("innerq_detokenize", [&] {
    const model::LlamaModel& m = capi::model_of(model);
    require(n_tokens >= 0, fmt::format("n_tokens {} is negative", n_tokens));
    if (n_tokens > 0) capi::check_tokens(m, tokens, n_tokens, "tokens");
    const std::vector<int> ids(tokens, tokens + n_tokens);
    capi::copy_text(m.tokenizer().decode(ids), buf, cap, len);
  });
}

innerq_status innerq_chat_turn(const innerq_model* model, const char* user, const char* system,
                               int first, char* buf, size_t cap, size_t* len) {
  return guard("innerq_chat_turn", [&] {
    const model::LlamaModel& m = capi::model_of(model);
    require_not_null(user, "user");
    const model::Tokenizer& t = m.tokenizer();
    if (t.chat_template() == model::ChatTemplate::kNone) {
      fail(INNERQ_ERROR_UNSUPPORTED,
           "the model's vocabulary has no chat template (ChatML or Gemma turn tokens)");
    }
    capi::copy_text(t.chat_turn(user, system == nullptr ? "" : system, first != 0), buf, cap, len);
  });
}

int innerq_token_ends_generation(const innerq_model* model, int32_t token) {
  if (model == nullptr || token < 0 || token >= model->model->config().n_vocab) return 0;
  return model->model->tokenizer().ends_generation(token) ? 1 : 0;
}

innerq_status innerq_model_extend(innerq_model* model, innerq_seq* const* seqs, int32_t n_seqs,
                                  const int32_t* tokens, int64_t n_tokens, int all_logits,
                                  float* logits) {
  return guard("innerq_model_extend", [&] {
    const model::LlamaModel& m = capi::model_of(model);
    const std::vector<kv::KvCache*> caches = capi::model_caches(m, seqs, n_seqs);
    const int held = caches[0]->n_tokens();
    int room = std::numeric_limits<int>::max();
    for (int32_t b = 0; b < n_seqs; ++b) {
      const kv::KvCache& c = *caches[static_cast<size_t>(b)];
      require((c.n_tokens() == 0) == (held == 0),
              fmt::format("seqs[{}] holds {} tokens and seqs[0] {}: a call prefills empty "
                          "sequences or extends held ones, not both",
                          b, c.n_tokens(), held));
      room = std::min(room, c.shape().max_tokens - c.n_tokens());
    }
    require(n_tokens >= 1 && n_tokens <= room,
            fmt::format("n_tokens {} is not in 1..{} (the room left in the fullest sequence)",
                        n_tokens, room));
    capi::check_tokens(m, tokens, n_tokens, "tokens");
    const std::span<const int> ids(tokens, static_cast<size_t>(n_tokens));
    const bool all = all_logits != 0;
    if (held == 0) {
      m.prefill(ids, caches, all, model->logits, capi::n_threads());
      // prefill gives one set of logits: the same for every sequence.
      const size_t per_seq = model->logits.size();
      model->logits.resize(per_seq * static_cast<size_t>(n_seqs));
      for (int32_t b = 1; b < n_seqs; ++b) {
        std::copy_n(model->logits.begin(), per_seq, model->logits.begin() + b * per_seq);
      }
    } else {
      m.extend(ids, caches, all, model->logits, capi::n_threads(), model->ws);
    }
    if (logits != nullptr) std::copy(model->logits.begin(), model->logits.end(), logits);
  });
}

innerq_status innerq_model_decode(innerq_model* model, innerq_seq* const* seqs,
                                  const int32_t* tokens, int32_t n_seqs, float* logits) {
  return guard("innerq_model_decode", [&] {
    const model::LlamaModel& m = capi::model_of(model);
    const std::vector<kv::KvCache*> caches = capi::model_caches(m, seqs, n_seqs);
    capi::check_tokens(m, tokens, n_seqs, "tokens");
    const std::span<const int> ids(tokens, static_cast<size_t>(n_seqs));
    m.decode(ids, caches, model->logits, capi::n_threads(), model->ws);
    if (logits != nullptr) std::copy(model->logits.begin(), model->logits.end(), logits);
  });
}

uint64_t innerq_model_scratch_bytes(const innerq_model* model) {
  if (model == nullptr) return 0;
  return model->ws.bytes() + model->logits.capacity() * sizeof(float);
}

void innerq_model_release_scratch(innerq_model* model) {
  if (model == nullptr) return;
  model->ws = model::LlamaModel::Workspace();
  model->logits = std::vector<float>();
}

innerq_sampler_params innerq_sampler_default_params(void) {
  return innerq_sampler_params{0.0f, 40, 0.95f, 0};
}

innerq_status innerq_sampler_create(const innerq_sampler_params* params, innerq_sampler** out) {
  return guard("innerq_sampler_create", [&] {
    require_not_null(params, "params");
    require_not_null(out, "out");
    require(std::isfinite(params->temperature) && std::isfinite(params->top_p),
            fmt::format("temperature {} and top_p {} must be finite", params->temperature,
                        params->top_p));
    model::SamplerOptions o;
    o.temperature = params->temperature;
    o.top_k = params->top_k;
    o.top_p = params->top_p;
    o.seed = params->seed;
    *out = new innerq_sampler{model::Sampler(o)};
  });
}

void innerq_sampler_free(innerq_sampler* sampler) {
  delete sampler;
}

innerq_status innerq_sample(innerq_sampler* sampler, const float* logits, int32_t n_vocab,
                            int32_t* token) {
  return guard("innerq_sample", [&] {
    require_not_null(sampler, "sampler");
    require_not_null(logits, "logits");
    require_not_null(token, "token");
    require(n_vocab >= 1, fmt::format("n_vocab {} must be at least 1", n_vocab));
    for (int32_t i = 0; i < n_vocab; ++i) {
      require(std::isfinite(logits[i]) || logits[i] == -std::numeric_limits<float>::infinity(),
              fmt::format("logits[{}] = {} is NaN or +Inf", i, logits[i]));
    }
    *token = sampler->sampler.sample({logits, static_cast<size_t>(n_vocab)});
  });
}

}  // extern "C"
