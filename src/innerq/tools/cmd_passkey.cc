// innerq/tools/cmd_passkey.cc — `innerq passkey`: passkey retrieval through
// the (quantized) KV cache, each config against the f16 cache on the same
// trials (docs/architecture.md, "Passkey retrieval").
//
// Protocol, per prompt length and trial:
//   - filler source trial mod (number of sources): consecutive lines of a
//     text file from a random line, or the fixed sentence `repeat`;
//   - --keys N random 5-digit keys, each in a needle with its own label
//     (one key: the plain needle of the passkey literature); one of them is
//     asked, at depth (trial + 0.5) / trials, the others at random depths;
//   - prompt = [BOS] intro filler needles... question, exactly `length`
//     tokens;
//   - everything but the question is prefilled ONCE into every config's cache
//     (prefill attention is full precision, so every config stores the same
//     K/V); the question is then fed by teacher-forced decoding, all configs
//     in one batch, so the answer attends through each config's cache;
//   - the answer's NLL: the key's tokens teacher-forced after the question,
//     Σ −log p through each cache;
//   - retrieval: each config greedily generates kAnswerTokens tokens from its
//     own logits after the question (the NLL ran on forks of the caches); the
//     trial passes when the first number in the decoded text is the asked
//     key.
// Everything is drawn from --seed, length and trial, so a (length, trial)
// gives the same prompt whatever configs are listed. Each config's retrieval
// gets a Wilson interval and an exact McNemar test against f16 on the same
// trials (tools/stats.h).
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "innerq/tools/cli_util.h"
#include "innerq/tools/commands.h"
#include "innerq/tools/eval.h"
#include "innerq/tools/passkey_trials.h"
#include "innerq/tools/stats.h"

namespace innerq::tools {
namespace {

constexpr int kMaxTrials = 1000;

struct PasskeyOptions {
  std::string model;
  std::string activations = "int16";
  std::vector<std::string> fillers{"data/wikitext2/valid.txt", std::string(kRepeatName)};
  std::string kv = "innerq";
  std::vector<int> lengths{2048, 4096, 7680};
  int trials = 10;
  int keys = 1;
  uint64_t seed = 0;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool json = false;
};

void validate_lengths(const PasskeyOptions& o, const model::LlamaModel& m) {
  if (o.lengths.empty()) throw Error("--lengths lists no length");
  const int max_length = m.config().n_ctx_train - kAnswerTokens;
  for (int n : o.lengths) {
    if (n < kMinLength || n > max_length) {
      throw Error(fmt::format(
          "--lengths {} must be in [{}, {}] (the model's training context of {} tokens minus {} "
          "answer tokens)",
          n, kMinLength, max_length, m.config().n_ctx_train, kAnswerTokens));
    }
  }
}

void validate_options(const PasskeyOptions& o) {
  if (o.trials < 1 || o.trials > kMaxTrials) {
    throw Error(fmt::format("--trials {} must be in [1, {}]", o.trials, kMaxTrials));
  }
  if (o.keys < 1 || o.keys > kMaxKeys) {
    throw Error(fmt::format("--keys {} must be in [1, {}]", o.keys, kMaxKeys));
  }
  if (o.fillers.empty()) throw Error("-f lists no filler source");
  if (o.threads < 1) throw Error(fmt::format("-t {} must be >= 1", o.threads));
}

// One trial with each config's answer; select() picks the runs of a length,
// a filler source, or all of them.
struct Run {
  const Trial* trial;
  std::vector<Answer> answers;  // per config, [0] = f16
};

// Retrieval and answer NLL of one config over a set of runs, paired with f16.
struct Summary {
  int retrieved = 0, trials = 0, lost = 0, gained = 0;
  double mean_nll = 0.0;
  // Paired: mean of (this NLL − f16's NLL) per trial, and the half width of
  // its 95 % normal interval.
  double nll_delta = 0.0, nll_delta_ci = 0.0;
  Interval wilson;
  double p = 1.0;  // exact McNemar vs f16
};

Summary summarize(const std::vector<const Run*>& runs, size_t config) {
  Summary s;
  for (const Run* r : runs) {
    const bool base = r->answers[0].retrieved, mine = r->answers[config].retrieved;
    s.retrieved += mine;
    s.lost += base && !mine;
    s.gained += mine && !base;
    s.mean_nll += r->answers[config].nll;
  }
  s.trials = static_cast<int>(runs.size());
  if (s.trials > 0) s.mean_nll /= s.trials;
  std::vector<double> d;
  for (const Run* r : runs) d.push_back(r->answers[config].nll - r->answers[0].nll);
  const MeanInterval m = mean_interval(d);
  s.nll_delta = m.mean;
  s.nll_delta_ci = m.half_width;
  s.wilson = wilson_interval(s.retrieved, s.trials);
  s.p = mcnemar_exact_p(s.lost, s.gained);
  return s;
}

std::vector<const Run*> select(const std::vector<Run>& runs,
                               const std::function<bool(const Trial&)>& keep) {
  std::vector<const Run*> out;
  for (const Run& r : runs) {
    if (keep(*r.trial)) out.push_back(&r);
  }
  return out;
}

std::string short_name(const std::string& source) {
  return std::filesystem::path(source).filename().string();
}

void print_table(const PasskeyOptions& o, const std::vector<kv::CacheSpec>& specs,
                 const std::vector<FillerSource>& sources, const std::vector<Run>& runs) {
  std::vector<std::string> names;
  for (const FillerSource& s : sources) names.push_back(short_name(s.name));
  fmt::print("passkey retrieval: {} trials per length, {} key{} per prompt, fillers {}, seed {}\n",
             o.trials, o.keys, o.keys > 1 ? "s" : "", fmt::join(names, ", "), o.seed);
  std::vector<size_t> width;
  for (const kv::CacheSpec& s : specs) width.push_back(std::max<size_t>(s.text.size(), 16));
  const auto row = [&](const std::string& head, const std::function<std::string(size_t)>& cell) {
    fmt::print("{:<24}", head);
    for (size_t c = 0; c < specs.size(); ++c) fmt::print(" {:>{}}", cell(c), width[c]);
    fmt::print("\n");
  };
  row("length  filler", [&](size_t c) { return specs[c].text; });
  for (int length : o.lengths) {
    for (size_t f = 0; f < sources.size(); ++f) {
      const auto sel =
          select(runs, [&](const Trial& t) { return t.length == length && t.filler == f; });
      row(fmt::format("{:<7} {}", length, names[f]), [&](size_t c) {
        const Summary s = summarize(sel, c);
        return fmt::format("{}/{}", s.retrieved, s.trials);
      });
    }
  }
  const auto all = select(runs, [](const Trial&) { return true; });
  std::vector<Summary> total;
  for (size_t c = 0; c < specs.size(); ++c) total.push_back(summarize(all, c));
  row("retrieved", [&](size_t c) {
    return fmt::format("{}/{} {:.0f}%", total[c].retrieved, total[c].trials,
                       100.0 * total[c].retrieved / total[c].trials);
  });
  row("  95% Wilson interval", [&](size_t c) {
    return fmt::format("{:.0f}-{:.0f}%", 100 * total[c].wilson.lo, 100 * total[c].wilson.hi);
  });
  row("  vs f16: lost/gained p", [&](size_t c) {
    return c == 0 ? std::string("-")
                  : fmt::format("{}/{} p={:.2g}", total[c].lost, total[c].gained, total[c].p);
  });
  row("answer NLL (nats)", [&](size_t c) {
    if (c == 0) return fmt::format("{:.3f}", total[c].mean_nll);
    const double rel = total[0].mean_nll > 0 ? total[c].mean_nll / total[0].mean_nll - 1 : 0.0;
    return fmt::format("{:.3f} {:+.0f}%", total[c].mean_nll, 100 * rel);
  });
  row("  paired ΔNLL, 95% CI", [&](size_t c) {
    return c == 0 ? std::string("-")
                  : fmt::format("{:+.3f}±{:.3f}", total[c].nll_delta, total[c].nll_delta_ci);
  });
}

nlohmann::json summary_json(const Summary& s) {
  return {{"retrieved", s.retrieved},
          {"trials", s.trials},
          {"wilson95", {s.wilson.lo, s.wilson.hi}},
          {"lost_vs_f16", s.lost},
          {"gained_vs_f16", s.gained},
          {"mcnemar_p", s.p},
          {"mean_answer_nll", s.mean_nll},
          {"answer_nll_delta_vs_f16", s.nll_delta},
          {"answer_nll_delta_ci95", s.nll_delta_ci}};
}

void print_report_json(const PasskeyOptions& o, const std::vector<kv::CacheSpec>& specs,
                       const std::vector<FillerSource>& sources, const std::vector<Run>& runs) {
  nlohmann::json configs = nlohmann::json::array();
  const auto all = select(runs, [](const Trial&) { return true; });
  for (size_t c = 0; c < specs.size(); ++c) {
    nlohmann::json j = summary_json(summarize(all, c));
    j["kv"] = specs[c].text;
    nlohmann::json by_length = nlohmann::json::array();
    for (int length : o.lengths) {
      const auto sel = select(runs, [&](const Trial& t) { return t.length == length; });
      nlohmann::json l = summary_json(summarize(sel, c));
      l["length"] = length;
      nlohmann::json trials = nlohmann::json::array();
      for (const Run* r : sel) {
        const Trial& t = *r->trial;
        const Answer& a = r->answers[c];
        trials.push_back({{"key", t.key},
                          {"label", t.label},
                          {"depth", t.depth},
                          {"filler", sources[t.filler].name},
                          {"text", a.text},
                          {"retrieved", a.retrieved},
                          {"answer_nll", a.nll}});
      }
      l["runs"] = trials;
      by_length.push_back(l);
    }
    j["by_length"] = by_length;
    nlohmann::json by_filler = nlohmann::json::array();
    for (size_t f = 0; f < sources.size(); ++f) {
      nlohmann::json s =
          summary_json(summarize(select(runs, [&](const Trial& t) { return t.filler == f; }), c));
      s["filler"] = sources[f].name;
      by_filler.push_back(s);
    }
    j["by_filler"] = by_filler;
    configs.push_back(j);
  }
  const nlohmann::json out = {{"model", o.model},   {"fillers", o.fillers}, {"seed", o.seed},
                              {"trials", o.trials}, {"keys", o.keys},       {"lengths", o.lengths},
                              {"configs", configs}};
  // Generated text may end inside a UTF-8 sequence: replace, do not throw.
  tools::print_json(out, 1);
}

void run_passkey(const PasskeyOptions& o) {
  validate_options(o);
  std::vector<FillerSource> sources;
  for (const std::string& f : o.fillers) sources.push_back(read_filler(f));
  const std::vector<kv::CacheSpec> specs = specs_with_f16_base(o.kv);  // [0]: the reference
  const model::LlamaModel m(model::resolve_model_path(o.model), parse_activations(o.activations));
  validate_lengths(o, m);
  std::vector<std::vector<kv::LayerConfig>> configs;
  for (const kv::CacheSpec& s : specs)
    configs.push_back(s.layers(m.config().n_layers, m.config().head_dim));

  std::vector<Trial> trials;
  long total = 0;
  for (int length : o.lengths) {
    for (int i = 0; i < o.trials; ++i) {
      trials.push_back(make_trial(m.tokenizer(), sources, length, i, o.trials, o.keys, o.seed));
    }
    total += static_cast<long>(length) * o.trials;
  }

  ProgressBar bar("passkey");
  const bool show = !o.json || isatty(fileno(stderr));
  long done = 0;
  std::vector<Run> runs;
  for (size_t i = 0; i < trials.size(); ++i) {
    const Trial& t = trials[i];
    const std::string detail = fmt::format("{} tokens, trial {}/{}", t.length,
                                           i % static_cast<size_t>(o.trials) + 1, o.trials);
    const auto progress = [&](int n) {
      done += n;
      if (show) bar.update(done, total, detail);
    };
    progress(0);
    runs.push_back({&t, run_trial(m, configs, t, o.threads, progress)});
  }
  bar.finish();
  if (o.json) {
    print_report_json(o, specs, sources, runs);
  } else {
    print_table(o, specs, sources, runs);
  }
}

}  // namespace

void add_passkey_command(CLI::App& app) {
  auto o = std::make_shared<PasskeyOptions>();
  CLI::App* cmd = app.add_subcommand(
      "passkey",
      "Passkey retrieval through KV-cache configs: keys retrieved (Wilson interval, paired test "
      "against f16) and the answer's NLL; f16 always runs as the reference");
  cmd->add_option("-m,--model", o->model,
                  "smollm2, gemma3-270m, stories260K, or a path to a GGUF file")
      ->required();
  add_activations_option(cmd, &o->activations);
  cmd->add_option("-f,--filler", o->fillers,
                  "comma-separated filler sources, used by turns across trials: text files "
                  "(consecutive lines from a random one) or 'repeat' (the classic fixed sentence)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--kv", o->kv, "comma-separated cache specs; f16 always runs as the reference")
      ->capture_default_str();
  cmd->add_option("--lengths", o->lengths, "comma-separated prompt lengths in tokens")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--trials", o->trials,
                  "trials per length (asked-key depths spread evenly; 50+ to separate configs)")
      ->capture_default_str();
  cmd->add_option("--keys", o->keys,
                  "keys hidden per prompt, each under its own label; one is asked (1-4)")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of the keys, labels and filler positions")
      ->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads")->capture_default_str();
  cmd->add_flag("--json", o->json,
                "print JSON: per config, length and filler the counts, interval, paired test and "
                "NLL, and every trial's key, depth, answer and answer NLL");
  cmd->callback([o] { run_passkey(*o); });
}

}  // namespace innerq::tools
