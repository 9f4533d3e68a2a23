// innerq/tools/generation.cc — the sampling flags and the reply loop.
#include "innerq/tools/generation.h"

#include <algorithm>
#include <array>
#include <cstdio>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"

namespace innerq::tools {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void add_sampling_options(CLI::App& cmd, model::SamplerOptions& o) {
  cmd.add_option("--temp", o.temperature, "temperature; 0 = greedy")->capture_default_str();
  cmd.add_option("--top-k", o.top_k, "top-k cut (0 = off)")->capture_default_str();
  cmd.add_option("--top-p", o.top_p, "nucleus cut (1 = off)")->capture_default_str();
  cmd.add_option("--seed", o.seed, "sampling seed")->capture_default_str();
}

Reply sample_reply(const model::LlamaModel& m, kv::KvCache& cache, model::Sampler& sampler,
                   std::vector<float>& logits, int max_tokens, bool store_last, bool stream,
                   int n_threads, model::LlamaModel::Workspace& ws) {
  const model::Tokenizer& tok = m.tokenizer();
  kv::KvCache* caches[] = {&cache};
  int token[1];
  Reply r;
  while (static_cast<int>(r.tokens.size()) < max_tokens) {
    token[0] = sampler.sample(logits);
    if (tok.ends_generation(token[0])) {
      r.stop = "eos";
      break;
    }
    r.tokens.push_back(token[0]);
    const std::string piece = tok.token_to_piece(token[0]);
    r.text += piece;
    if (stream) {
      fmt::print("{}", piece);
      std::fflush(stdout);
    }
    if (static_cast<int>(r.tokens.size()) == max_tokens && !store_last) break;
    if (cache.n_tokens() >= cache.shape().max_tokens) {
      r.stop = "context";
      break;
    }
    const auto t_decode = std::chrono::steady_clock::now();
    m.decode(token, caches, logits, n_threads, ws);
    r.decode_s += seconds_since(t_decode);
    ++r.n_decoded;
  }
  return r;
}

SelfText sample_self_text(const model::LlamaModel& m, int n_tokens, uint64_t seed, int n_threads,
                          const std::function<void(long, long)>& progress) {
  if (n_tokens < 1 || n_tokens > kMaxSelfTokens) {
    throw Error(fmt::format("--self {} must be in [1, {}] tokens", n_tokens, kMaxSelfTokens));
  }
  // Openings that name no domain; the model's own continuations choose it.
  static constexpr std::array<const char*, 12> kOpenings = {
      "The",         "In 1998,",         "Chapter 1",        "The history of",
      "Scientists",  "Once upon a time", "According to the", "Hello",
      "My favorite", "Today we",         "The following",    "It was"};
  const model::Tokenizer& tok = m.tokenizer();
  const std::vector<kv::LayerConfig> f16 =
      kv::parse_cache_spec("f16").layers(m.config().n_layers, m.config().head_dim);
  model::LlamaModel::Workspace ws;
  std::vector<float> logits;
  SelfText out;
  int have = 0, empty_in_a_row = 0;
  for (uint64_t i = 0; have < n_tokens; ++i) {
    const std::string opening = kOpenings[i % kOpenings.size()];
    const std::vector<int> prompt = tok.tokenize(opening, tok.adds_bos(), /*parse_special=*/false);
    const int n_prompt = static_cast<int>(prompt.size());
    // The last sample stops near n_tokens (the count is checked on the
    // whole text below, so a short one is followed by another).
    const int want = std::min(kSelfSampleTokens, n_tokens - have + 8);
    const int ctx = std::min(n_prompt + want, m.config().n_ctx_train);
    if (n_prompt >= ctx) throw Error("sample_self_text: the model's context is too short");
    kv::KvCache cache(m.cache_shape(ctx), f16);
    kv::KvCache* caches[] = {&cache};
    m.prefill(prompt, caches, /*all_logits=*/false, logits, n_threads);
    model::Sampler sampler({.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = seed + i});
    const Reply r = sample_reply(m, cache, sampler, logits, ctx - n_prompt, /*store_last=*/false,
                                 /*stream=*/false, n_threads, ws);
    // A model that answers every opening with its end token at once would
    // loop forever: a dozen empty samples in a row end it.
    empty_in_a_row = r.tokens.empty() ? empty_in_a_row + 1 : 0;
    if (empty_in_a_row == static_cast<int>(kOpenings.size())) {
      throw Error(
          fmt::format("--self: the model ended {} samples in a row at once (no text to "
                      "calibrate on); give a text file with -f",
                      empty_in_a_row));
    }
    out.text += opening + r.text + "\n\n";
    out.tokens = tok.tokenize(out.text, /*add_bos=*/false, /*parse_special=*/false);
    have = static_cast<int>(out.tokens.size());
    if (progress) progress(std::min(have, n_tokens), n_tokens);
  }
  return out;
}

}  // namespace innerq::tools
