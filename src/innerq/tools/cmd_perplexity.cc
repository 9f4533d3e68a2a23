// innerq/tools/cmd_perplexity.cc — `innerq perplexity`: perplexity, KL
// divergence from the f16 cache and top-1 agreement of KV-cache configs, with
// every scored token attending to the (quantized) cache.
//
// The text is tokenized once and cut into chunks of --ctx tokens (BOS at each
// chunk start when the model adds BOS, as llama.cpp's perplexity does). Per
// chunk, the first --prefix tokens are prefilled once and the same K/V goes to
// every config's cache; then each later token is fed by teacher-forced
// decoding, all configs in one batch, and the next token is scored from each
// config's logits. The prefill's last logits score token `prefix` (the same for
// every config). f16 is always run as the base.
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
#include "innerq/tools/commands.h"

namespace innerq::tools {
namespace {

struct PerplexityOptions {
  std::string model;
  std::string file;
  std::string kv = "innerq";
  int ctx = 1024;
  int prefix = 512;
  int chunks = 0;  // 0: all
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool json = false;
};

struct SpecStats {
  kv::CacheSpec spec;
  double nll = 0.0;  // Σ −log p(next token)
  double kld = 0.0;  // Σ KL(base ‖ this)
  long top1 = 0;     // positions whose argmax equals the base's
  long tokens = 0;
  size_t kv_bytes = 0;  // at the end of the last chunk
  size_t kv_bytes_f16 = 0;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot read text file '{}'", path));
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw Error(fmt::format("cannot read text file '{}'", path));
  return s.str();
}

// log-softmax of one row, in double: out[i] = x[i] − log Σ exp(x).
void log_softmax(const float* x, int n, std::vector<double>& out) {
  out.resize(static_cast<size_t>(n));
  double mx = x[0];
  for (int i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += std::exp(x[i] - mx);
  const double lse = mx + std::log(sum);
  for (int i = 0; i < n; ++i) out[static_cast<size_t>(i)] = x[i] - lse;
}

// Scores `next` for every spec from logits [n_specs, V]; spec 0 is the base.
void score(const std::vector<float>& logits, int V, int next, std::vector<SpecStats>& stats) {
  std::vector<double> base, base_p, lp;
  log_softmax(logits.data(), V, base);
  base_p.resize(base.size());
  for (size_t i = 0; i < base.size(); ++i) base_p[i] = std::exp(base[i]);
  const int base_top = model::argmax(std::span<const float>(logits.data(), static_cast<size_t>(V)));
  for (size_t s = 0; s < stats.size(); ++s) {
    const float* row = logits.data() + s * static_cast<size_t>(V);
    log_softmax(row, V, lp);
    double kl = 0.0;
    for (size_t i = 0; i < base.size(); ++i) kl += base_p[i] * (base[i] - lp[i]);
    stats[s].nll -= lp[static_cast<size_t>(next)];
    stats[s].kld += std::max(0.0, kl);
    stats[s].top1 += model::argmax(std::span<const float>(row, static_cast<size_t>(V))) == base_top;
    stats[s].tokens += 1;
  }
}

void run_perplexity(const PerplexityOptions& o) {
  if (o.ctx < 2) throw Error(fmt::format("--ctx {} must be at least 2", o.ctx));
  if (o.prefix < 1 || o.prefix >= o.ctx) {
    throw Error(fmt::format("--prefix {} must be in [1, ctx {})", o.prefix, o.ctx));
  }
  if (o.chunks < 0) throw Error(fmt::format("--chunks {} must be >= 0", o.chunks));
  if (o.threads < 1) throw Error(fmt::format("-t {} must be >= 1", o.threads));

  // Spec 0 is the f16 base; a listed f16 is the base itself.
  std::vector<SpecStats> stats;
  stats.push_back({kv::parse_cache_spec("f16")});
  for (const kv::CacheSpec& s : kv::parse_cache_spec_list(o.kv)) {
    if (s.text != stats[0].spec.text) stats.push_back({s});
  }
  const std::string text = read_text(o.file);
  const model::LlamaModel m(model::resolve_model_path(o.model));
  const model::Tokenizer& tok = m.tokenizer();
  const int V = m.config().n_vocab;

  std::vector<int> tokens = tok.tokenize(text, /*add_bos=*/false, /*parse_special=*/false);
  const int available = static_cast<int>(tokens.size()) / o.ctx;
  if (available == 0) {
    throw Error(fmt::format("'{}' has {} tokens, fewer than one chunk of --ctx {}", o.file,
                            tokens.size(), o.ctx));
  }
  const int n_chunks = o.chunks > 0 ? std::min(o.chunks, available) : available;
  const bool progress = isatty(fileno(stderr)) != 0;

  std::vector<float> logits;
  for (int c = 0; c < n_chunks; ++c) {
    std::vector<int> chunk(tokens.begin() + static_cast<long>(c) * o.ctx,
                           tokens.begin() + static_cast<long>(c + 1) * o.ctx);
    if (tok.adds_bos()) chunk[0] = tok.bos();

    std::vector<std::unique_ptr<kv::KvCache>> owned;
    std::vector<kv::KvCache*> caches;
    for (const SpecStats& s : stats) {
      owned.push_back(std::make_unique<kv::KvCache>(m.cache_shape(o.ctx), s.spec.layer));
      caches.push_back(owned.back().get());
    }

    // Prefill once; its last logits are the same for every config.
    m.prefill(std::span<const int>(chunk).first(static_cast<size_t>(o.prefix)), caches, false,
              logits, o.threads);
    std::vector<float> replicated(stats.size() * static_cast<size_t>(V));
    for (size_t s = 0; s < stats.size(); ++s)
      std::copy(logits.begin(), logits.end(), replicated.begin() + s * V);
    score(replicated, V, chunk[static_cast<size_t>(o.prefix)], stats);

    // Teacher-forced decoding: all configs in one batch.
    for (int t = o.prefix; t + 1 < o.ctx; ++t) {
      const std::vector<int> feed(stats.size(), chunk[static_cast<size_t>(t)]);
      m.decode(feed, caches, logits, o.threads);
      score(logits, V, chunk[static_cast<size_t>(t + 1)], stats);
      if (progress && (t - o.prefix) % 32 == 0) {
        fmt::print(stderr, "\rchunk {}/{}: token {}/{}, base ppl {:.4f}   ", c + 1, n_chunks, t + 1,
                   o.ctx, std::exp(stats[0].nll / stats[0].tokens));
      }
    }
    for (size_t s = 0; s < stats.size(); ++s) {
      stats[s].kv_bytes = caches[s]->memory().total();
      stats[s].kv_bytes_f16 = caches[s]->bytes_f16_equivalent();
    }
  }
  if (progress) fmt::print(stderr, "\r{:60}\r", "");

  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const SpecStats& s : stats) {
      out.push_back({{"kv", s.spec.text},
                     {"ppl", std::exp(s.nll / s.tokens)},
                     {"kld", s.kld / s.tokens},
                     {"top1", static_cast<double>(s.top1) / s.tokens},
                     {"kv_bytes", s.kv_bytes},
                     {"kv_bytes_f16", s.kv_bytes_f16},
                     {"tokens", s.tokens}});
    }
    fmt::print("{}\n", out.dump(1));
    return;
  }
  fmt::print("{}: {} chunks of {} tokens, prefix {}, {} scored tokens per config\n", o.file,
             n_chunks, o.ctx, o.prefix, stats[0].tokens);
  fmt::print("{:<24} {:>10} {:>10} {:>8} {:>12} {:>8}\n", "kv", "ppl", "kld", "top1", "kv_bytes",
             "vs f16");
  for (const SpecStats& s : stats) {
    fmt::print("{:<24} {:>10.4f} {:>10.6f} {:>7.2f}% {:>12} {:>7.2f}x\n", s.spec.text,
               std::exp(s.nll / s.tokens), s.kld / s.tokens, 100.0 * s.top1 / s.tokens, s.kv_bytes,
               s.kv_bytes > 0 ? static_cast<double>(s.kv_bytes_f16) / s.kv_bytes : 0.0);
  }
}

}  // namespace

void add_perplexity_command(CLI::App& app) {
  auto o = std::make_shared<PerplexityOptions>();
  CLI::App* cmd = app.add_subcommand(
      "perplexity", "Perplexity, KL divergence vs f16 and top-1 agreement of KV-cache configs");
  cmd->add_option("-m,--model", o->model, "smollm2, stories260K, or a path to a GGUF file")
      ->required();
  cmd->add_option("-f,--file", o->file, "text file")->required();
  cmd->add_option("--kv", o->kv, "comma-separated cache specs; f16 always runs as the base")
      ->capture_default_str();
  cmd->add_option("--ctx,-c", o->ctx, "tokens per chunk")->capture_default_str();
  cmd->add_option("--prefix", o->prefix, "tokens prefilled per chunk; later tokens are scored")
      ->capture_default_str();
  cmd->add_option("--chunks", o->chunks, "chunks to evaluate (0 = all)")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads")->capture_default_str();
  cmd->add_flag("--json", o->json, "print a JSON array instead of the table");
  cmd->callback([o] { run_perplexity(*o); });
}

}  // namespace innerq::tools
