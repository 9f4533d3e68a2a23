// innerq/tools/generation.cc — the sampling flags and the reply loop.
#include "innerq/tools/generation.h"

#include <cstdio>

#include <fmt/core.h>

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

}  // namespace innerq::tools
