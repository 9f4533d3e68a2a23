// innerq/tools/cmd_tune.cc — `innerq tune`: per-layer K/V bit widths for a
// byte budget, found offline on calibration text (KVTuner-style).
//
// The calibration text is a file (-f) or, with --self N, N tokens the model
// samples itself (tools/generation.h, sample_self_text): no data set needed,
// since which layers are sensitive is a property of the model more than of
// the text (docs/quality.md, "Tuned without data").
//
// Sliding-window layers (Gemma 3) keep their window in f16 whatever the spec
// says, so only the other layers are measured, budgeted and written; the
// base is resolved for the model's head_dim first (`innerq` chooses its bits
// and key frame by head_dim, kv/cache_spec.h).
//
// 1. Sensitivity: for every such layer l and bit width b, the KL divergence from
//    the f16 cache when only layer l is quantized — its K at b bits (V at 8),
//    or its V at b bits (K at 8) — every other layer f16. All these configs
//    run through the same teacher-forced evaluation as `perplexity`
//    (tools/eval.h), in batches.
//    With --passkey N, each config's sensitivity also counts retrieval: its
//    answer NLL per answer token over f16's on N calibration passkeys built
//    from the calibration text (tools/passkey_trials.h; a seed of tune's own,
//    so never the prompts of `innerq passkey`), times --passkey-weight,
//    clamped at 0. KLD on ordinary text does not price the keys a lookup
//    needs (docs/architecture.md, "Passkey retrieval").
// 2. Search: the KLDs of layers add up to first order, so the tuner picks one
//    (K bits, V bits) pair per layer minimizing Σ_l S_K(l, k_l) + S_V(l, v_l)
//    under the budget on the average bits per value of the quantized storage
//    (codes and group metadata; the f16 windows are the same for every
//    choice). An exact dynamic program over layers and cost in 1/16-bit units;
//    ties go to the cheaper, then the earlier, choice, so the result is
//    deterministic.
// 3. Output: a layers file (one full spec per layer), used as
//    `--kv innerq:layers=FILE` (kv/cache_spec.h).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "innerq/base/error.h"
#include "innerq/kernels/group_format.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "innerq/tools/cli_util.h"
#include "innerq/tools/commands.h"
#include "innerq/tools/eval.h"
#include "innerq/tools/generation.h"
#include "innerq/tools/passkey_trials.h"

namespace innerq::tools {
namespace {

struct TuneOptions {
  std::string model;
  std::string file;
  int self = 0;  // --self: calibrate on this many tokens of the model's own samples
  std::string base = "innerq";
  std::string out;
  std::vector<int> bits = {2, 3, 4, 8};
  double budget = 3.0;
  int ctx = 512;
  int prefix = 256;
  int chunks = 2;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int batch = 64;
  bool json = false;
  bool validate = false;
  int passkey = 0;  // calibration passkey trials (0: KLD only)
  int passkey_length = 1024;
  double passkey_weight = 1.0;
};

constexpr int kMaxPasskeyTrials = 1000;
// The seed of --self's samples ("self").
constexpr uint64_t kSelfSeed = 0x73656c66;
// The seed of tune's calibration passkeys ("tune"): `innerq passkey` draws
// its prompts from its own --seed (default 0).
constexpr uint64_t kPasskeySeed = 0x74756e65;

// For each config (configs[0]: f16), the mean over `trials` calibration
// passkeys of its answer NLL minus f16's, per answer token, clamped at 0
// (nats). Configs run `batch` at a time, each batch with its own prefill.
std::vector<double> passkey_deltas(const model::LlamaModel& m,
                                   const std::vector<EvalConfig>& configs,
                                   const std::vector<FillerSource>& filler, const TuneOptions& o,
                                   ProgressBar& bar) {
  const size_t n = configs.size();
  const size_t batch = static_cast<size_t>(o.batch);
  const long per_trial = static_cast<long>((n + batch - 1) / batch) * o.passkey_length;
  const long total = per_trial * o.passkey;
  long done = 0;
  std::vector<double> delta(n, 0.0);
  for (int i = 0; i < o.passkey; ++i) {
    const Trial t = make_trial(m.tokenizer(), filler, o.passkey_length, i, o.passkey,
                               /*n_keys=*/1, kPasskeySeed);
    std::vector<double> nll(n);
    for (size_t b0 = 0; b0 < n; b0 += batch) {
      std::vector<std::vector<kv::LayerConfig>> group;
      for (size_t c = b0; c < std::min(n, b0 + batch); ++c) group.push_back(configs[c].layers);
      const std::vector<Answer> a = run_trial(
          m, group, t, o.threads,
          [&](int tokens) { bar.update(done += tokens, total, fmt::format("passkey {}", i + 1)); },
          /*generate=*/false);
      for (size_t j = 0; j < a.size(); ++j) nll[b0 + j] = a[j].nll;
    }
    for (size_t c = 0; c < n; ++c)
      delta[c] += (nll[c] - nll[0]) / static_cast<double>(t.answer.size());
  }
  for (double& d : delta) d = std::max(0.0, d / o.passkey);
  return delta;
}

// A base with codebook key levels (`innerq` from head_dim 256 on) keeps
// them where the codebook exists (2-4 bits); 8-bit keys are uniform.
void keep_levels_valid(kv::LayerConfig& c) {
  if (!levels_fit(c.k_levels, c.k_bits, c.k_mode)) c.k_levels = Levels::kUniform;
}

// Cost of b-bit groups in 1/16-bit units per value (exact for G ≤ 128).
int cost_units(int bits, int group, QuantMode mode) {
  return static_cast<int>(group_record_bytes(bits, group, mode) * 8 * 16 / group);
}

struct Choice {
  int k_bits, v_bits, cost;
};

void run_tune(const TuneOptions& o) {
  const kv::CacheSpec base_spec = kv::parse_cache_spec(o.base);
  if (base_spec.layer.kind != kv::CacheKind::kInnerQ || !base_spec.overrides.empty()) {
    throw Error(
        fmt::format("--base '{}' must be one innerq config without layer overrides", o.base));
  }
  if (o.bits.empty()) throw Error("--bits: give at least one bit width");
  for (int b : o.bits) {
    if (!is_supported_bits(b)) {
      throw Error(fmt::format("--bits: {} is not a supported bit width (2, 3, 4, 8)", b));
    }
  }
  if (!(o.budget > 0.0) || o.budget > 16.0) {
    throw Error(fmt::format("--budget {} must be in (0, 16] bits per value", o.budget));
  }
  if (o.out.empty()) throw Error("-o FILE is required: where to write the layers file");
  if (o.file.empty() && o.self == 0) {
    throw Error(
        "give the calibration text: -f FILE, or --self N (N tokens the model samples "
        "itself)");
  }
  if (!o.file.empty() && o.self != 0) throw Error("-f and --self name two calibration texts");
  if (o.self < 0 || o.self > kMaxSelfTokens) {
    throw Error(fmt::format("--self {} must be in [1, {}] tokens", o.self, kMaxSelfTokens));
  }
  if (o.self > 0 && static_cast<long>(o.self) < static_cast<long>(o.ctx) * std::max(1, o.chunks)) {
    throw Error(fmt::format("--self {} tokens do not fill --chunks {} of --ctx {} tokens", o.self,
                            std::max(1, o.chunks), o.ctx));
  }
  if (o.passkey < 0 || o.passkey > kMaxPasskeyTrials) {
    throw Error(fmt::format("--passkey {} must be in [0, {}] calibration trials", o.passkey,
                            kMaxPasskeyTrials));
  }
  if (!std::isfinite(o.passkey_weight) || o.passkey_weight < 0.0) {
    throw Error(fmt::format("--passkey-weight {} must be a finite number >= 0", o.passkey_weight));
  }
  if (o.batch < 1) throw Error(fmt::format("--batch {} must be >= 1", o.batch));

  const model::LlamaModel m(model::resolve_model_path(o.model));
  const int L = m.config().n_layers;
  if (o.passkey > 0) {
    const int max_length = m.config().n_ctx_train - kAnswerTokens;
    if (o.passkey_length < kMinLength || o.passkey_length > max_length) {
      throw Error(fmt::format(
          "--passkey-length {} must be in [{}, {}] (the model's training context minus {} answer "
          "tokens)",
          o.passkey_length, kMinLength, max_length, kAnswerTokens));
    }
  }
  // The base as this model's head_dim resolves it (`innerq` chooses its bits
  // and key frame by head_dim): every tuned layer sets its own k and v on
  // top, and the layers file spells every field out.
  const kv::LayerConfig base = base_spec.layers(1, m.config().head_dim)[0];
  // Sliding-window layers keep their window in f16 whatever the spec says
  // (docs/architecture.md, "Sliding-window layers"): only the others are
  // measured, budgeted and written.
  const kv::CacheShape shape = m.cache_shape(o.ctx);
  std::vector<int> tuned;
  for (int l = 0; l < L; ++l)
    if (shape.window(l) == 0) tuned.push_back(l);
  if (tuned.empty()) throw Error(fmt::format("-m {}: every layer is a sliding window", o.model));
  const int T = static_cast<int>(tuned.size());
  SelfText self;
  if (o.self > 0) {
    ProgressBar sbar(fmt::format("tune: sampling {} tokens of calibration text", o.self));
    self = sample_self_text(m, o.self, kSelfSeed, o.threads,
                            [&](long d, long t) { sbar.update(d, t); });
    sbar.finish();
  }
  const std::string text_name =
      o.self > 0 ? fmt::format("the model's own samples (--self {})", o.self) : o.file;
  const std::vector<int> tokens = o.self > 0 ? std::move(self.tokens) : tokenize_file(m, o.file);
  // The calibration text is also the passkeys' filler.
  std::vector<FillerSource> filler;
  if (o.passkey > 0)
    filler.push_back(o.self > 0 ? filler_from_text(text_name, self.text) : read_filler(o.file));

  // Config 0: f16 base. Then per layer: K at each width (V 8), V at each
  // width (K 8); the (8, 8) point is shared.
  kv::LayerConfig f16 = kv::parse_cache_spec("f16").layer;
  std::vector<EvalConfig> configs{
      {"f16", std::vector<kv::LayerConfig>(static_cast<size_t>(L), f16)}};
  std::vector<int> bits = o.bits;
  std::sort(bits.begin(), bits.end());
  bits.erase(std::unique(bits.begin(), bits.end()), bits.end());
  const size_t nb = bits.size();
  // index[i][kind][b] into configs for tuned layer i; kind 0 = K, 1 = V.
  std::vector<size_t> index(static_cast<size_t>(T) * 2 * nb);
  auto at = [&](int i, int kind, size_t b) -> size_t& {
    return index[(static_cast<size_t>(i) * 2 + kind) * nb + b];
  };
  for (int i = 0; i < T; ++i) {
    const int l = tuned[static_cast<size_t>(i)];
    size_t shared = 0;
    for (int kind = 0; kind < 2; ++kind) {
      for (size_t b = 0; b < nb; ++b) {
        if (bits[b] == 8 && shared != 0) {
          at(i, kind, b) = shared;
          continue;
        }
        kv::LayerConfig c = base;
        c.k_bits = kind == 0 ? bits[b] : 8;
        c.v_bits = kind == 1 ? bits[b] : 8;
        keep_levels_valid(c);
        std::vector<kv::LayerConfig> layers(static_cast<size_t>(L), f16);
        layers[static_cast<size_t>(l)] = c;
        configs.push_back({fmt::format("layer {} k{} v{}", l, c.k_bits, c.v_bits), layers});
        at(i, kind, b) = configs.size() - 1;
        if (bits[b] == 8) shared = configs.size() - 1;
      }
    }
  }

  // The cheapest choice must fit the budget: checked before the long
  // sensitivity pass.
  const int max_cost = static_cast<int>(std::floor(o.budget * 2 * 16 * T + 1e-9));
  const int cheapest = cost_units(bits.front(), base.key_group(), base.k_mode) +
                       cost_units(bits.front(), base.group, base.v_mode);
  if (cheapest * T > max_cost) {
    throw Error(fmt::format(
        "--budget {} bits per value is below the cheapest choice ({:.3f} bits with --bits {} "
        "and the base's modes)",
        o.budget, cheapest / 32.0, bits.front()));
  }

  EvalOptions eo;
  eo.ctx = o.ctx;
  eo.prefix = o.prefix;
  eo.chunks = o.chunks;
  eo.threads = o.threads;
  eo.batch = o.batch;
  ProgressBar bar(fmt::format("tune: {} sensitivity configs", configs.size() - 1));
  eo.progress = [&](long d, long t) { bar.update(d, t); };
  const std::vector<EvalStats> stats = evaluate(m, tokens, configs, eo);
  bar.finish();
  std::vector<double> retrieval(configs.size(), 0.0);
  const auto passkeys = [&](const std::vector<EvalConfig>& runs, const std::string& what) {
    ProgressBar pbar(fmt::format("tune: {} on {} calibration passkeys of {} tokens", what,
                                 o.passkey, o.passkey_length));
    std::vector<double> d = passkey_deltas(m, runs, filler, o, pbar);
    pbar.finish();
    return d;
  };
  if (o.passkey > 0) retrieval = passkeys(configs, fmt::format("{} configs", configs.size() - 1));
  auto kld = [&](int i, int kind, size_t b) { return stats[at(i, kind, b)].mean_kld(); };
  auto dnll = [&](int i, int kind, size_t b) { return retrieval[at(i, kind, b)]; };
  auto sens = [&](int i, int kind, size_t b) {
    return kld(i, kind, b) + o.passkey_weight * dnll(i, kind, b);
  };

  // Dynamic program over layers; cost in 1/16-bit units of (K + V) per value.
  std::vector<Choice> options;
  for (size_t kb = 0; kb < nb; ++kb)
    for (size_t vb = 0; vb < nb; ++vb)
      options.push_back({static_cast<int>(kb), static_cast<int>(vb),
                         cost_units(bits[kb], base.key_group(), base.k_mode) +
                             cost_units(bits[vb], base.group, base.v_mode)});
  std::stable_sort(options.begin(), options.end(),
                   [](const Choice& a, const Choice& b) { return a.cost < b.cost; });
  constexpr double kInf = std::numeric_limits<double>::infinity();
  const size_t width = static_cast<size_t>(max_cost) + 1;
  std::vector<double> best(width, kInf), next(width);
  std::vector<int> pick(static_cast<size_t>(T) * width, -1);
  best[0] = 0.0;
  for (int l = 0; l < T; ++l) {
    std::fill(next.begin(), next.end(), kInf);
    for (size_t c = 0; c < width; ++c) {
      if (best[c] == kInf) continue;
      for (size_t i = 0; i < options.size(); ++i) {
        const Choice& ch = options[i];
        const size_t nc = c + static_cast<size_t>(ch.cost);
        if (nc >= width) continue;
        const double v = best[c] + sens(l, 0, static_cast<size_t>(ch.k_bits)) +
                         sens(l, 1, static_cast<size_t>(ch.v_bits));
        if (v < next[nc]) {
          next[nc] = v;
          pick[static_cast<size_t>(l) * width + nc] = static_cast<int>(i);
        }
      }
    }
    // pick[l][nc] must also remember the predecessor cost: recoverable as
    // nc − cost(option).
    best.swap(next);
  }
  size_t end = 0;
  for (size_t c = 0; c < width; ++c)
    if (best[c] < best[end] || (best[end] == kInf && best[c] < kInf)) end = c;
  std::vector<Choice> chosen(static_cast<size_t>(T));
  for (int l = T - 1, c = static_cast<int>(end); l >= 0; --l) {
    const int i = pick[static_cast<size_t>(l) * width + static_cast<size_t>(c)];
    chosen[static_cast<size_t>(l)] = options[static_cast<size_t>(i)];
    c -= options[static_cast<size_t>(i)].cost;
  }
  const double predicted = best[end];
  const double avg_bits = static_cast<double>(end) / (2.0 * 16 * T);
  // The objective's two parts for per-layer K and V choices (bit indices).
  struct Parts {
    double kld = 0.0, dnll = 0.0;
  };
  const auto parts = [&](auto k_index, auto v_index) {
    Parts p;
    for (int i = 0; i < T; ++i) {
      p.kld += kld(i, 0, k_index(i)) + kld(i, 1, v_index(i));
      p.dnll += dnll(i, 0, k_index(i)) + dnll(i, 1, v_index(i));
    }
    return p;
  };
  const Parts chosen_parts =
      parts([&](int i) { return static_cast<size_t>(chosen[static_cast<size_t>(i)].k_bits); },
            [&](int i) { return static_cast<size_t>(chosen[static_cast<size_t>(i)].v_bits); });

  // The same additive prediction for every uniform choice within the budget.
  struct Uniform {
    int k, v;
    double bits, objective;
    Parts parts;
  };
  std::vector<Uniform> uniform;
  for (size_t kb = 0; kb < nb; ++kb)
    for (size_t vb = 0; vb < nb; ++vb) {
      const int cost = cost_units(bits[kb], base.key_group(), base.k_mode) +
                       cost_units(bits[vb], base.group, base.v_mode);
      if (cost * T > max_cost) continue;
      double s = 0.0;
      for (int i = 0; i < T; ++i) s += sens(i, 0, kb) + sens(i, 1, vb);
      uniform.push_back({bits[kb], bits[vb], cost / 32.0, s,
                         parts([&](int) { return kb; }, [&](int) { return vb; })});
    }

  // The tuned layers as configs (window layers f16, as the evaluation
  // treats them whatever they hold).
  const auto tuned_layers = [&](auto k_of, auto v_of) {
    std::vector<kv::LayerConfig> layers(static_cast<size_t>(L), f16);
    for (int i = 0; i < T; ++i) {
      kv::LayerConfig c = base;
      c.k_bits = k_of(i);
      c.v_bits = v_of(i);
      keep_levels_valid(c);
      layers[static_cast<size_t>(tuned[static_cast<size_t>(i)])] = c;
    }
    return layers;
  };
  const auto chosen_k = [&](int i) {
    return bits[static_cast<size_t>(chosen[static_cast<size_t>(i)].k_bits)];
  };
  const auto chosen_v = [&](int i) {
    return bits[static_cast<size_t>(chosen[static_cast<size_t>(i)].v_bits)];
  };

  // --validate: the choice and every uniform choice within the budget run
  // for real on the same calibration chunks, all layers quantized at once,
  // so the additive prediction can be checked (measured[0]: the choice).
  std::vector<double> measured, measured_dnll;
  if (o.validate) {
    std::vector<EvalConfig> runs{configs[0], {"tuned", tuned_layers(chosen_k, chosen_v)}};
    for (const Uniform& u : uniform) {
      runs.push_back({fmt::format("K{} V{}", u.k, u.v),
                      tuned_layers([&](int) { return u.k; }, [&](int) { return u.v; })});
    }
    ProgressBar vbar(fmt::format("tune: validating {} configs", runs.size() - 1));
    eo.progress = [&](long d, long t) { vbar.update(d, t); };
    const std::vector<EvalStats> v = evaluate(m, tokens, runs, eo);
    vbar.finish();
    for (size_t r = 1; r < v.size(); ++r) measured.push_back(v[r].mean_kld());
    if (o.passkey > 0) {
      measured_dnll = passkeys(runs, "validating");
      measured_dnll.erase(measured_dnll.begin());
    }
  }

  std::ofstream out(o.out);
  if (!out) throw Error(fmt::format("-o '{}': cannot write the layers file", o.out));
  out << fmt::format(
      "# innerq tune: {} layers{}, budget {} bits/value (quantized storage), chose {:.4f}\n"
      "# model {}, calibration text {} ({} chunks of {} tokens, prefix {})\n"
      "# base {}\n# predicted KLD (sum of per-layer sensitivities) {:.5f}{}\n"
      "# use: --kv 'innerq:layers={}'\n",
      T, T < L ? fmt::format(" of {} (the others are sliding windows)", L) : std::string(),
      o.budget, avg_bits, o.model, text_name, stats[0].tokens / (o.ctx - o.prefix), o.ctx, o.prefix,
      kv::spec_string(base), chosen_parts.kld,
      o.passkey > 0 ? fmt::format("\n# objective: KLD + {} x answer NLL/token over f16 on {} "
                                  "calibration passkeys of {} tokens (predicted NLL/token {:.5f})",
                                  o.passkey_weight, o.passkey, o.passkey_length, chosen_parts.dnll)
                    : std::string(),
      o.out);
  const std::vector<kv::LayerConfig> written = tuned_layers(chosen_k, chosen_v);
  for (const int l : tuned) {
    out << l << '=' << kv::spec_string(written[static_cast<size_t>(l)]) << '\n';
  }
  if (!out) throw Error(fmt::format("-o '{}': write failed", o.out));

  if (o.json) {
    nlohmann::json j;
    j["budget_bits"] = o.budget;
    j["chosen_bits"] = avg_bits;
    j["predicted_kld"] = chosen_parts.kld;
    j["predicted_objective"] = predicted;
    if (o.validate) j["measured_kld"] = measured[0];
    if (o.passkey > 0) {
      j["passkey"] = {{"trials", o.passkey},
                      {"length", o.passkey_length},
                      {"weight", o.passkey_weight},
                      {"predicted_dnll", chosen_parts.dnll}};
      if (o.validate) j["passkey"]["measured_dnll"] = measured_dnll[0];
    }
    j["file"] = o.out;
    j["calibration"] = {{"text", text_name}, {"tokens", tokens.size()}};
    j["bits"] = bits;
    for (int i = 0; i < T; ++i) {
      nlohmann::json row;
      row["layer"] = tuned[static_cast<size_t>(i)];
      row["k_bits"] = chosen_k(i);
      row["v_bits"] = chosen_v(i);
      for (size_t b = 0; b < nb; ++b) {
        row["kld_k"].push_back(kld(i, 0, b));
        row["kld_v"].push_back(kld(i, 1, b));
        if (o.passkey > 0) {
          row["dnll_k"].push_back(dnll(i, 0, b));
          row["dnll_v"].push_back(dnll(i, 1, b));
        }
      }
      j["layers"].push_back(row);
    }
    for (size_t u = 0; u < uniform.size(); ++u) {
      nlohmann::json row = {{"k_bits", uniform[u].k},
                            {"v_bits", uniform[u].v},
                            {"bits", uniform[u].bits},
                            {"kld", uniform[u].parts.kld},
                            {"objective", uniform[u].objective}};
      if (o.passkey > 0) row["dnll"] = uniform[u].parts.dnll;
      if (o.validate) row["measured_kld"] = measured[u + 1];
      if (o.validate && o.passkey > 0) row["measured_dnll"] = measured_dnll[u + 1];
      j["uniform"].push_back(row);
    }
    print_json(j, 1);
    return;
  }
  const auto table = [&](const std::string& title, auto value) {
    fmt::print("{}\n{:>5}", title, "layer");
    for (int b : bits) fmt::print(" {:>9}", fmt::format("K{}", b));
    for (int b : bits) fmt::print(" {:>9}", fmt::format("V{}", b));
    fmt::print("  chosen\n");
    for (int i = 0; i < T; ++i) {
      fmt::print("{:>5}", tuned[static_cast<size_t>(i)]);
      for (size_t b = 0; b < nb; ++b) fmt::print(" {:>9.5f}", value(i, 0, b));
      for (size_t b = 0; b < nb; ++b) fmt::print(" {:>9.5f}", value(i, 1, b));
      fmt::print("  K{} V{}\n", chosen_k(i), chosen_v(i));
    }
  };
  table(
      "sensitivity: KLD with only this layer quantized (K at b bits with V 8, or V at b with K "
      "8)",
      kld);
  if (o.passkey > 0) {
    table(fmt::format("\nretrieval: answer NLL per token over f16, same configs, {} calibration "
                      "passkeys of {} tokens (weight {} in the objective)",
                      o.passkey, o.passkey_length, o.passkey_weight),
          dnll);
  }
  const auto predicted_text = [&](const Parts& p) {
    return o.passkey > 0
               ? fmt::format("predicted KLD {:.5f}, answer dNLL/token {:.5f}", p.kld, p.dnll)
               : fmt::format("predicted KLD {:.5f}", p.kld);
  };
  const auto measured_text = [&](size_t r) {
    if (!o.validate) return std::string();
    return o.passkey > 0 ? fmt::format("; measured {:.5f}, {:.5f}", measured[r], measured_dnll[r])
                         : fmt::format(", measured {:.5f}", measured[r]);
  };
  fmt::print("\nchosen: {:.4f} bits per value (budget {}), {}{}\n", avg_bits, o.budget,
             predicted_text(chosen_parts), measured_text(0));
  fmt::print("uniform choices within the budget (same prediction{}):\n",
             o.validate ? "; measured: every tuned layer quantized, on the same text" : "");
  for (size_t u = 0; u < uniform.size(); ++u)
    fmt::print("  K{} V{}  {:.4f} bits  {}{}\n", uniform[u].k, uniform[u].v, uniform[u].bits,
               predicted_text(uniform[u].parts), measured_text(u + 1));
  fmt::print("wrote {} (use --kv 'innerq:layers={}')\n", o.out, o.out);
}

}  // namespace

void add_tune_command(CLI::App& app) {
  auto o = std::make_shared<TuneOptions>();
  CLI::App* cmd = app.add_subcommand(
      "tune",
      "Find per-layer K/V bit widths for a byte budget on calibration text (writes a layers "
      "file for --kv innerq:layers=FILE)");
  cmd->add_option("-m,--model", o->model,
                  "smollm2, gemma3-270m, stories260K, or a path to a GGUF file")
      ->required();
  cmd->add_option("-f,--file", o->file,
                  "calibration text (e.g. wikitext2/valid.txt; never the test split); or --self");
  cmd->add_option("--self", o->self,
                  "instead of -f: calibrate on N tokens the model samples itself from plain "
                  "openings (temperature 0.8, a fixed seed), so no data set is needed; N >= "
                  "--ctx x --chunks");
  cmd->add_option("-o,--output", o->out, "layers file to write")->required();
  cmd->add_option("--base", o->base, "innerq config whose bits are tuned per layer")
      ->capture_default_str();
  cmd->add_option("--budget", o->budget,
                  "average bits per value of the quantized storage (K and V, metadata included)")
      ->capture_default_str();
  cmd->add_option("--bits", o->bits, "bit widths to choose from, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--ctx,-c", o->ctx, "tokens per calibration chunk")->capture_default_str();
  cmd->add_option("--prefix", o->prefix, "tokens prefilled per chunk; later tokens are scored")
      ->capture_default_str();
  cmd->add_option("--chunks", o->chunks, "calibration chunks (0 = all)")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads")->capture_default_str();
  cmd->add_option("--batch", o->batch, "configs decoded together per pass")->capture_default_str();
  cmd->add_flag("--json", o->json, "print the sensitivities and the choice as JSON");
  cmd->add_option("--passkey", o->passkey,
                  "also price retrieval: N calibration passkeys (filler: the calibration text, a "
                  "seed of tune's own); each config's answer NLL per token over f16's joins its "
                  "KLD in the objective (0 = KLD only)")
      ->capture_default_str();
  cmd->add_option("--passkey-length", o->passkey_length, "tokens per calibration passkey prompt")
      ->capture_default_str();
  cmd->add_option("--passkey-weight", o->passkey_weight,
                  "weight of the answer NLL per token (nats) against the KLD per token (nats)")
      ->capture_default_str();
  cmd->add_flag("--validate", o->validate,
                "also run the choice and each uniform choice within the budget on the same "
                "calibration chunks, every layer quantized at once, and print their measured KLD "
                "next to the prediction");
  cmd->callback([o] { run_tune(*o); });
}

}  // namespace innerq::tools
