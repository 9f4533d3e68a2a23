// innerq/tools/generation.h — what `generate` and `chat` share: the sampling
// flags, and the loop that samples a reply token by token through a cache.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
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

// Calibration text without a data set (`tune --self`): samples from the model
// itself, through an f16 cache, each from one of a fixed list of plain
// openings ("The", "Chapter 1", ...), at temperature 0.8, top-k 40, top-p
// 0.95, sample i seeded with seed + i, each up to kSelfSampleTokens tokens or
// an end-of-generation token. Samples are joined by blank lines until the
// text holds at least n_tokens tokens as `tokenize_file` cuts them; the
// text and those tokens are returned. The same model, n_tokens and seed give
// the same text.
// Throws when the model keeps ending its samples at once (no text) or
// n_tokens is outside [1, kMaxSelfTokens]. `progress(done, total)` is called
// after each sample.
inline constexpr int kSelfSampleTokens = 512;
inline constexpr int kMaxSelfTokens = 65536;
struct SelfText {
  std::string text;
  std::vector<int> tokens;  // the text's, without BOS
};
SelfText sample_self_text(const model::LlamaModel& m, int n_tokens, uint64_t seed, int n_threads,
                          const std::function<void(long, long)>& progress);

}  // namespace innerq::tools
