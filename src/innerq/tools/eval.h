// innerq/tools/eval.h — teacher-forced evaluation of KV-cache configs against
// the f16 cache, shared by `perplexity` and `tune`.
//
// The text's tokens are cut into chunks of `ctx` tokens (BOS at each chunk
// start when the model adds BOS, as llama.cpp's perplexity does). Per chunk,
// the first `prefix` tokens are prefilled once and the same K/V goes to every
// config's cache; then the later tokens are fed teacher-forced through the
// caches, `token_batch` at a time (LlamaModel::extend: each token attends to
// the cache up to its own position; 1 is token-by-token decode), configs in
// batches of `batch` sequences (one weight pass per step for the whole
// batch), and each next token is scored from each config's logits against
// the base (config 0, f16). Every scored token attends to the (quantized)
// cache through the same code as generation.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "innerq/kv/cache_spec.h"
#include "innerq/model/llama.h"

namespace innerq::tools {

struct EvalConfig {
  std::string name;
  std::vector<kv::LayerConfig> layers;  // one per model layer
};

struct EvalStats {
  double nll = 0.0;  // Σ −log p(next token)
  double kld = 0.0;  // Σ KL(base ‖ this)
  long top1 = 0;     // positions whose argmax equals the base's
  long tokens = 0;
  size_t kv_bytes = 0;  // at the end of the last chunk
  size_t kv_bytes_f16 = 0;

  double ppl() const;
  double mean_kld() const { return tokens > 0 ? kld / tokens : 0.0; }
  double top1_rate() const { return tokens > 0 ? static_cast<double>(top1) / tokens : 0.0; }
};

struct EvalOptions {
  int ctx = 1024;
  int prefix = 512;
  int chunks = 0;  // 0: all
  int threads = 1;
  int batch = 64;  // configs decoded together (besides the base)
  // Scored tokens sent through the caches per step (1: one decode per token).
  int token_batch = 1;
  // Called after each step: (positions done, positions in all).
  std::function<void(long, long)> progress;
};

// The `--kv` list with the f16 base first; a listed f16 is the base itself.
std::vector<kv::CacheSpec> specs_with_f16_base(std::string_view kv_list);

// −log p(token) under softmax(logits), in double.
double token_nll(std::span<const float> logits, int token);

// Reads a UTF-8 text file (regular file, at most 512 MiB) and tokenizes it.
std::vector<int> tokenize_file(const model::LlamaModel& m, const std::string& path);

// configs[0] is the base (its KLD is 0 by definition). Validates ctx, prefix,
// chunks, threads and batch, and that the text holds at least one chunk.
std::vector<EvalStats> evaluate(const model::LlamaModel& m, const std::vector<int>& tokens,
                                const std::vector<EvalConfig>& configs, const EvalOptions& o);

// A progress line on stderr: "\r<label> [#####.....] 45% <detail>", redrawn
// in place on a terminal, printed every 10 % otherwise.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  void update(long done, long total, const std::string& detail = "");
  void finish();

 private:
  std::string label_;
  bool tty_;
  int last_decile_ = -1;
};

}  // namespace innerq::tools
