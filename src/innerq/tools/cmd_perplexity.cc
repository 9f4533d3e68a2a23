// innerq/tools/cmd_perplexity.cc — `innerq perplexity`: perplexity, KL
// divergence from the f16 cache and top-1 agreement of KV-cache configs, with
// every scored token attending to the (quantized) cache.
//
// The text is tokenized once and cut into chunks of --ctx tokens (BOS at each
// chunk start when the model adds BOS, as llama.cpp's perplexity does). Per
// chunk, the first --prefix tokens are prefilled once and the same K/V goes to
// every config's cache; then the later tokens are fed teacher-forced through
// the caches, --token-batch at a time (chunked prefill through the quantized
// cache; -b 1 decodes token by token), configs in batches of --batch, and
// each next token is scored from each config's logits (tools/eval.h). The prefill's last logits
// score token `prefix` (the same for every config). f16 is always run as the base.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "innerq/model/sampler.h"
#include "innerq/tools/cli_util.h"
#include "innerq/tools/commands.h"
#include "innerq/tools/eval.h"

namespace innerq::tools {
namespace {

struct PerplexityOptions {
  std::string model;
  std::string activations = "int16";
  std::string file;
  std::string kv = "innerq";
  int ctx = 1024;
  int prefix = 512;
  int chunks = 0;  // 0: all
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int batch = 64;
  int token_batch = 64;
  bool json = false;
};

void run_perplexity(const PerplexityOptions& o) {
  const std::vector<kv::CacheSpec> specs = specs_with_f16_base(o.kv);  // [0]: the base
  const model::LlamaModel m(model::resolve_model_path(o.model), parse_activations(o.activations));
  std::vector<EvalConfig> configs;
  for (const kv::CacheSpec& s : specs)
    configs.push_back({s.text, s.layers(m.config().n_layers, m.config().head_dim)});
  const std::vector<int> tokens = tokenize_file(m, o.file);

  EvalOptions eo;
  eo.ctx = o.ctx;
  eo.prefix = o.prefix;
  eo.chunks = o.chunks;
  eo.threads = o.threads;
  eo.batch = std::max(1, o.batch);
  eo.token_batch = o.token_batch;
  ProgressBar bar("perplexity");
  if (!o.json || isatty(fileno(stderr))) eo.progress = [&](long d, long t) { bar.update(d, t); };
  const std::vector<EvalStats> stats = evaluate(m, tokens, configs, eo);
  bar.finish();

  const int n_chunks = static_cast<int>(stats[0].tokens / (o.ctx - o.prefix));
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < stats.size(); ++i) {
      const EvalStats& s = stats[i];
      out.push_back({{"kv", specs[i].text},
                     {"ppl", s.ppl()},
                     {"kld", s.mean_kld()},
                     {"top1", s.top1_rate()},
                     {"kv_bytes", s.kv_bytes},
                     {"kv_bytes_f16", s.kv_bytes_f16},
                     {"tokens", s.tokens},
                     {"chunks", n_chunks},
                     {"ctx", o.ctx},
                     {"prefix", o.prefix},
                     {"token_batch", o.token_batch},
                     {"activations", o.activations}});
    }
    print_json(out, 1);
    return;
  }
  fmt::print(
      "{}: {} chunks of {} tokens, prefix {}, {} scored tokens per config, {} per step, "
      "{} activations\n",
      o.file, n_chunks, o.ctx, o.prefix, stats[0].tokens, o.token_batch, o.activations);
  size_t width = 24;
  for (const kv::CacheSpec& s : specs) width = std::max(width, s.text.size());
  fmt::print("{:<{}} {:>10} {:>10} {:>8} {:>12} {:>8}\n", "kv", width, "ppl", "kld", "top1",
             "kv_bytes", "vs f16");
  for (size_t i = 0; i < stats.size(); ++i) {
    const EvalStats& s = stats[i];
    fmt::print("{:<{}} {:>10.4f} {:>10.6f} {:>7.2f}% {:>12} {:>7.2f}x\n", specs[i].text, width,
               s.ppl(), s.mean_kld(), 100.0 * s.top1_rate(), s.kv_bytes,
               s.kv_bytes > 0 ? static_cast<double>(s.kv_bytes_f16) / s.kv_bytes : 0.0);
  }
}

}  // namespace

void add_perplexity_command(CLI::App& app) {
  auto o = std::make_shared<PerplexityOptions>();
  CLI::App* cmd = app.add_subcommand(
      "perplexity", "Perplexity, KL divergence vs f16 and top-1 agreement of KV-cache configs");
  cmd->add_option("-m,--model", o->model,
                  "smollm2, gemma3-270m, stories260K, or a path to a GGUF file")
      ->required();
  add_activations_option(cmd, &o->activations);
  cmd->add_option("-f,--file", o->file, "text file")->required();
  cmd->add_option("--kv", o->kv, "comma-separated cache specs; f16 always runs as the base")
      ->capture_default_str();
  cmd->add_option("--ctx,-c", o->ctx, "tokens per chunk")->capture_default_str();
  cmd->add_option("--prefix", o->prefix, "tokens prefilled per chunk; later tokens are scored")
      ->capture_default_str();
  cmd->add_option("--chunks", o->chunks, "chunks to evaluate (0 = all)")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads")->capture_default_str();
  cmd->add_option("--batch", o->batch,
                  "configs decoded together per pass (more: faster, more memory)")
      ->capture_default_str();
  cmd->add_option("-b,--token-batch", o->token_batch,
                  "scored tokens sent through the caches per step (1 = one decode per token)")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "print a JSON array instead of the table");
  cmd->callback([o] { run_perplexity(*o); });
}

}  // namespace innerq::tools
