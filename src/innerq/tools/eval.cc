// Teacher-forced evaluation of cache configs (eval.h).
#include "innerq/tools/eval.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <sstream>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/sampler.h"
#include "innerq/tools/cli_util.h"

namespace innerq::tools {
namespace {

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

// The base's log-probabilities of one position, computed once and reused for
// every config scored at that position.
struct BaseRow {
  std::vector<double> logp, p;
  int top = 0;
  void set(const float* logits, int V) {
    log_softmax(logits, V, logp);
    p.resize(logp.size());
    for (size_t i = 0; i < logp.size(); ++i) p[i] = std::exp(logp[i]);
    top = model::argmax(std::span<const float>(logits, static_cast<size_t>(V)));
  }
};

void score_row(const BaseRow& base, const float* row, int V, int next, EvalStats& s,
               std::vector<double>& lp) {
  log_softmax(row, V, lp);
  double kl = 0.0;
  for (size_t i = 0; i < lp.size(); ++i) kl += base.p[i] * (base.logp[i] - lp[i]);
  s.nll -= lp[static_cast<size_t>(next)];
  s.kld += std::max(0.0, kl);
  s.top1 += model::argmax(std::span<const float>(row, static_cast<size_t>(V))) == base.top;
  s.tokens += 1;
}

}  // namespace

double token_nll(std::span<const float> logits, int token) {
  std::vector<double> lp;
  log_softmax(logits.data(), static_cast<int>(logits.size()), lp);
  return -lp.at(static_cast<size_t>(token));
}

std::vector<kv::CacheSpec> specs_with_f16_base(std::string_view kv_list) {
  std::vector<kv::CacheSpec> specs{kv::parse_cache_spec("f16")};
  for (const kv::CacheSpec& s : kv::parse_cache_spec_list(kv_list)) {
    if (s.text != specs[0].text) specs.push_back(s);
  }
  return specs;
}

double EvalStats::ppl() const {
  return tokens > 0 ? std::exp(nll / tokens) : 0.0;
}

std::vector<int> tokenize_file(const model::LlamaModel& m, const std::string& path) {
  return m.tokenizer().tokenize(read_text_file(path, "text file"), /*add_bos=*/false,
                                /*parse_special=*/false);
}

std::vector<EvalStats> evaluate(const model::LlamaModel& m, const std::vector<int>& tokens,
                                const std::vector<EvalConfig>& configs, const EvalOptions& o) {
  if (o.ctx < 2) throw Error(fmt::format("--ctx {} must be at least 2", o.ctx));
  if (o.ctx > m.config().n_ctx_train) {
    throw Error(fmt::format("--ctx {} exceeds the model's training context of {} tokens", o.ctx,
                            m.config().n_ctx_train));
  }
  if (o.prefix < 1 || o.prefix >= o.ctx) {
    throw Error(fmt::format("--prefix {} must be in [1, ctx {})", o.prefix, o.ctx));
  }
  if (o.chunks < 0) throw Error(fmt::format("--chunks {} must be >= 0", o.chunks));
  if (o.threads < 1) throw Error(fmt::format("-t {} must be >= 1", o.threads));
  if (o.batch < 1) throw Error(fmt::format("--batch {} must be >= 1", o.batch));
  if (o.token_batch < 1) throw Error(fmt::format("--token-batch {} must be >= 1", o.token_batch));
  if (configs.empty()) throw Error("evaluate: no configs");
  const int available = static_cast<int>(tokens.size() / static_cast<size_t>(o.ctx));
  if (available == 0) {
    throw Error(fmt::format("the text has {} tokens, fewer than one chunk of --ctx {}",
                            tokens.size(), o.ctx));
  }
  const int n_chunks = o.chunks > 0 ? std::min(o.chunks, available) : available;
  const int V = m.config().n_vocab;
  const model::Tokenizer& tok = m.tokenizer();

  std::vector<EvalStats> stats(configs.size());
  const size_t n_others = configs.size() - 1;
  const size_t n_batches = n_others == 0 ? 1 : (n_others + o.batch - 1) / o.batch;
  const long per_chunk = o.ctx - o.prefix;
  const long total = per_chunk * n_chunks * static_cast<long>(n_batches);
  long done = 0;
  std::vector<float> logits;
  std::vector<double> lp;
  model::LlamaModel::Workspace ws;
  // With several batches, later batches reuse the base's logits of the first
  // (kept as floats, per_chunk × vocab).
  std::vector<float> base_logits(n_batches > 1 ? static_cast<size_t>(per_chunk) * V : 0);
  BaseRow base;
  for (int c = 0; c < n_chunks; ++c) {
    std::vector<int> chunk(tokens.begin() + static_cast<long>(c) * o.ctx,
                           tokens.begin() + static_cast<long>(c + 1) * o.ctx);
    if (tok.adds_bos()) chunk[0] = tok.bos();
    // Each batch: the base first (only in the first batch, whose rows every
    // later batch reuses), then up to `batch` configs.
    for (size_t b = 0; b < n_batches; ++b) {
      std::vector<size_t> members;
      if (b == 0) members.push_back(0);
      for (size_t i = 1 + b * o.batch; i < std::min(configs.size(), 1 + (b + 1) * o.batch); ++i)
        members.push_back(i);
      std::vector<std::unique_ptr<kv::KvCache>> owned;
      std::vector<kv::KvCache*> caches;
      for (size_t i : members) {
        owned.push_back(std::make_unique<kv::KvCache>(m.cache_shape(o.ctx), configs[i].layers));
        caches.push_back(owned.back().get());
      }
      m.prefill(std::span<const int>(chunk).first(static_cast<size_t>(o.prefix)), caches, false,
                logits, o.threads);
      // The prefill's last logits are the same for every config: they score
      // token `prefix`.
      base.set(logits.data(), V);
      for (size_t i : members) score_row(base, logits.data(), V, chunk[o.prefix], stats[i], lp);
      // Tokens prefix..ctx−2 go in; each scores the token after it.
      for (int t = o.prefix; t + 1 < o.ctx; t += o.token_batch) {
        const int n = std::min(o.token_batch, o.ctx - 1 - t);
        m.extend(
            std::span<const int>(chunk).subspan(static_cast<size_t>(t), static_cast<size_t>(n)),
            caches, /*all_logits=*/true, logits, o.threads, ws);
        // logits: [members, n, V]
        for (int i = 0; i < n; ++i) {
          const int pos = t + i;
          float* kept = base_logits.empty()
                            ? nullptr
                            : base_logits.data() + static_cast<size_t>(pos - o.prefix) * V;
          if (b == 0) {  // member 0 is the base
            const float* row = logits.data() + static_cast<size_t>(i) * V;
            base.set(row, V);
            if (kept) std::copy(row, row + V, kept);
          } else {
            base.set(kept, V);
          }
          for (size_t j = 0; j < members.size(); ++j) {
            score_row(base, logits.data() + (j * static_cast<size_t>(n) + i) * V, V,
                      chunk[static_cast<size_t>(pos) + 1], stats[members[j]], lp);
          }
        }
        done += n;
        if (o.progress) o.progress(done, total);
      }
      ++done;
      if (o.progress) o.progress(done, total);
      for (size_t j = 0; j < members.size(); ++j) {
        stats[members[j]].kv_bytes = caches[j]->memory().total();
        stats[members[j]].kv_bytes_f16 = caches[j]->bytes_f16_equivalent();
      }
    }
  }
  return stats;
}

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)), tty_(isatty(fileno(stderr)) != 0) {}

void ProgressBar::update(long done, long total, const std::string& detail) {
  if (total <= 0) return;
  const double frac = std::min(1.0, static_cast<double>(done) / total);
  const int decile = static_cast<int>(frac * 10);
  if (!tty_ && decile == last_decile_) return;
  last_decile_ = decile;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(frac * kWidth);
  fmt::print(stderr, "{}{} [{}{}] {:3d}% {}{}", tty_ ? "\r" : "", label_,
             std::string(static_cast<size_t>(filled), '#'),
             std::string(static_cast<size_t>(kWidth - filled), '.'), static_cast<int>(100.0 * frac),
             detail, tty_ ? "   " : "\n");
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (tty_) fmt::print(stderr, "\r{:100}\r", "");
}

}  // namespace innerq::tools
