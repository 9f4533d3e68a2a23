// innerq/tools/generation.h — what `generate` and `chat` share: the sampling
// flags, and the loop that samples a reply token by token through a cache.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"
#include "innerq/model/sampler.h"

namespace innerq::tools {

double seconds_since(std::chrono::steady_clock::time_point t0);

// --temp, --top-k, --top-p and --seed into `o`.
void add_sampling_options(CLI::App& cmd, model::SamplerOptions& o);

struct Reply {
  std::vector<int> tokens;  // sampled, without the token that stopped the reply
  std::string text;         // their pieces
  // "eos": an end-of-generation token; "length": max_tokens; "context": the
  // cache is full (its shape's max_tokens).
  std::string stop = "length";
  int n_decoded = 0;  // tokens sent through the cache
  double decode_s = 0.0;
};

// Samples from `logits` ([n_vocab], the next position of what `cache`
// holds) until an end-of-generation token, max_tokens tokens or a full
// cache, printing each piece to stdout when `stream`. Each sampled token is
// decoded through the cache to give the next logits; the last one of a
// reply that stopped at max_tokens only with `store_last` (a chat goes on
// from the whole reply; generate does not need it).
Reply sample_reply(const model::LlamaModel& m, kv::KvCache& cache, model::Sampler& sampler,
                   std::vector<float>& logits, int max_tokens, bool store_last, bool stream,
                   int n_threads, model::LlamaModel::Workspace& ws);

}  // namespace innerq::tools
