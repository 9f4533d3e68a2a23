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
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <fmt/format.h>
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
#include "innerq/tools/stats.h"

namespace innerq::tools {
namespace {

constexpr int kAnswerTokens = 8;  // greedy tokens generated per config
constexpr int kMinLength = 256;
constexpr int kMaxTrials = 1000;
constexpr int kMaxKeys = 4;
constexpr std::string_view kIntro =
    "There is an important pass key hidden inside a lot of irrelevant text. Find it and "
    "remember it. ";
constexpr std::string_view kQuestion = " What is the pass key? The pass key is";
// The filler of the passkey literature (Mohtashami & Jaggi, 2023).
constexpr std::string_view kRepeatName = "repeat";
constexpr std::string_view kRepeatLine =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
// Labels of the needles when a prompt holds several keys.
constexpr std::string_view kLabels[kMaxKeys] = {"red", "blue", "green", "yellow"};

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

struct FillerSource {
  std::string name;  // "repeat" or the file's path
  std::vector<std::string> lines;
};

// One prompt: `n_question` trailing tokens are the question; `answer` is the
// asked key as the model would write it after the question.
struct Trial {
  int length = 0;
  size_t filler = 0;  // index into the sources
  std::string key, label;
  double depth = 0.0;
  std::vector<int> prompt;
  int n_question = 0;
  std::vector<int> answer;
};

// What one config made of one trial.
struct Answer {
  std::string text;
  bool retrieved = false;
  double nll = 0.0;  // Σ −log p(answer tokens), nats
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

// A filler source: the built-in `repeat` sentence or a text file's lines
// (with their '\n'); throws when the file is missing or holds no text.
FillerSource read_filler(const std::string& name) {
  if (name == kRepeatName) return {name, {std::string(kRepeatLine)}};
  std::istringstream in(
      read_text_file(name, "filler file (scripts/fetch-data.sh fetches the default; or 'repeat')"));
  FillerSource s{name, {}};
  for (std::string line; std::getline(in, line);) s.lines.push_back(line + "\n");
  const bool has_text = std::any_of(s.lines.begin(), s.lines.end(), [](const std::string& l) {
    return std::any_of(l.begin(), l.end(), [](unsigned char c) { return !std::isspace(c); });
  });
  if (!has_text) throw Error(fmt::format("filler file '{}' holds no text", name));
  return s;
}

// Tokens of `text` as it continues earlier text. SentencePiece prefixes "▁"
// (a space) to each tokenize call, so one leading space is dropped there.
std::vector<int> tokenize_continuation(const model::Tokenizer& tok, std::string_view text) {
  if (tok.kind() == model::TokenizerKind::kSentencePiece && text.starts_with(' ')) {
    text.remove_prefix(1);
  }
  return tok.tokenize(text, /*add_bos=*/false, /*parse_special=*/false);
}

// The key's tokens as they follow `question` in one text: the tokens of
// question + " " + key past those of the question alone (a merge across the
// boundary falls back to the key tokenized on its own).
std::vector<int> answer_tokens(const model::Tokenizer& tok, std::string_view question,
                               const std::string& key) {
  const std::vector<int> q = tokenize_continuation(tok, question);
  const std::vector<int> both = tokenize_continuation(tok, fmt::format("{} {}", question, key));
  if (both.size() > q.size() && std::equal(q.begin(), q.end(), both.begin())) {
    return {both.begin() + static_cast<long>(q.size()), both.end()};
  }
  return tokenize_continuation(tok, " " + key);
}

// At least `n` tokens of consecutive lines from `first` on (wrapping at the
// end of the source), cut to exactly `n`.
std::vector<int> filler_tokens(const model::Tokenizer& tok, const std::vector<std::string>& lines,
                               size_t first, int n) {
  size_t chars = static_cast<size_t>(n) * 6;  // about 4 per token in English prose
  for (;;) {
    std::string text;
    for (size_t i = first; text.size() < chars; i = (i + 1) % lines.size()) text += lines[i];
    std::vector<int> ids = tokenize_continuation(tok, text);
    if (ids.size() >= static_cast<size_t>(n)) {
      ids.resize(static_cast<size_t>(n));
      return ids;
    }
    chars *= 2;
  }
}

struct Needle {
  double depth;
  std::vector<int> tokens;
};

Trial make_trial(const model::Tokenizer& tok, const std::vector<FillerSource>& sources, int length,
                 int trial, int trials, int n_keys, uint64_t seed) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(length), static_cast<uint32_t>(trial)};
  std::mt19937_64 rng(seq);
  std::uniform_int_distribution<int> draw_key(10000, 99999);
  Trial t;
  t.length = length;
  t.filler = static_cast<size_t>(trial) % sources.size();
  const std::vector<std::string>& lines = sources[t.filler].lines;
  t.key = std::to_string(draw_key(rng));
  t.depth = (trial + 0.5) / trials;
  const size_t first = std::uniform_int_distribution<size_t>(0, lines.size() - 1)(rng);

  std::vector<Needle> needles;
  std::string question;
  if (n_keys == 1) {
    needles.push_back({t.depth, tokenize_continuation(
                                    tok, fmt::format(" The pass key is {0}. Remember it. {0} is "
                                                     "the pass key. ",
                                                     t.key))});
    question = kQuestion;
  } else {
    // Distinct keys under distinct labels; the asked one is drawn too.
    std::vector<std::string> keys{t.key};
    while (static_cast<int>(keys.size()) < n_keys) {
      std::string k = std::to_string(draw_key(rng));
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(std::move(k));
    }
    const int asked = std::uniform_int_distribution<int>(0, n_keys - 1)(rng);
    std::swap(keys[0], keys[static_cast<size_t>(asked)]);  // keys[asked] == t.key
    std::uniform_real_distribution<double> draw_depth(0.0, 1.0);
    for (int i = 0; i < n_keys; ++i) {
      const std::string_view label = kLabels[i];
      const double depth = i == asked ? t.depth : draw_depth(rng);
      needles.push_back(
          {depth, tokenize_continuation(tok, fmt::format(" The pass key of the {0} box is {1}. "
                                                         "Remember it. {1} is the pass key of "
                                                         "the {0} box. ",
                                                         label, keys[static_cast<size_t>(i)]))});
    }
    t.label = kLabels[asked];
    question = fmt::format(" What is the pass key of the {0} box? The pass key of the {0} box is",
                           t.label);
  }
  std::stable_sort(needles.begin(), needles.end(),
                   [](const Needle& a, const Needle& b) { return a.depth < b.depth; });

  const std::vector<int> intro = tok.tokenize(kIntro, tok.adds_bos(), /*parse_special=*/false);
  const std::vector<int> q = tokenize_continuation(tok, question);
  size_t fixed = intro.size() + q.size();
  for (const Needle& n : needles) fixed += n.tokens.size();
  const int n_filler = length - static_cast<int>(fixed);
  if (n_filler < 1) {
    throw Error(fmt::format(
        "--lengths {} leaves no room for filler: the intro, {} needle{} and the question take {} "
        "tokens of this model",
        length, needles.size(), needles.size() > 1 ? "s" : "", fixed));
  }
  const std::vector<int> filler = filler_tokens(tok, lines, first, n_filler);

  t.prompt = intro;
  long at = 0;
  for (const Needle& n : needles) {
    const long to = static_cast<long>(n.depth * n_filler);
    t.prompt.insert(t.prompt.end(), filler.begin() + at, filler.begin() + to);
    t.prompt.insert(t.prompt.end(), n.tokens.begin(), n.tokens.end());
    at = to;
  }
  t.prompt.insert(t.prompt.end(), filler.begin() + at, filler.end());
  t.prompt.insert(t.prompt.end(), q.begin(), q.end());
  t.n_question = static_cast<int>(q.size());
  t.answer = answer_tokens(tok, question, t.key);
  return t;
}

// The first run of digits in `text`, or "".
std::string first_number(const std::string& text) {
  const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  const auto begin = std::find_if(text.begin(), text.end(), is_digit);
  return std::string(begin, std::find_if_not(begin, text.end(), is_digit));
}

std::span<const float> logits_row(const std::vector<float>& logits, size_t b, int n_vocab) {
  return std::span<const float>(logits).subspan(b * static_cast<size_t>(n_vocab),
                                                static_cast<size_t>(n_vocab));
}

// Greedy next token of each config from logits [B, n_vocab].
std::vector<int> argmax_rows(const std::vector<float>& logits, size_t batch, int n_vocab) {
  std::vector<int> ids(batch);
  for (size_t b = 0; b < batch; ++b) ids[b] = model::argmax(logits_row(logits, b, n_vocab));
  return ids;
}

// Prefill once, feed the question through every cache, score the answer
// teacher-forced through forks of the caches, and generate from the caches;
// one answer per config. `progress(tokens)` is called after the prefill and each decode.
std::vector<Answer> run_trial(const model::LlamaModel& m,
                              const std::vector<std::vector<kv::LayerConfig>>& configs,
                              const Trial& t, int threads,
                              const std::function<void(int)>& progress) {
  const int n_answer = static_cast<int>(t.answer.size());
  const int capacity = t.length + std::max(kAnswerTokens, n_answer);
  std::vector<std::unique_ptr<kv::KvCache>> owned;
  std::vector<kv::KvCache*> caches;
  for (const auto& layers : configs) {
    owned.push_back(std::make_unique<kv::KvCache>(m.cache_shape(capacity), layers));
    caches.push_back(owned.back().get());
  }
  const size_t B = caches.size();
  const int V = m.config().n_vocab;
  std::vector<Answer> answers(B);
  const std::span<const int> prompt(t.prompt);
  const size_t n_context = prompt.size() - static_cast<size_t>(t.n_question);
  std::vector<float> logits;
  m.prefill(prompt.first(n_context), caches, /*all_logits=*/false, logits, threads);
  progress(static_cast<int>(n_context));
  for (int q : prompt.subspan(n_context)) {
    m.decode(std::vector<int>(B, q), caches, logits, threads);
    progress(1);
  }

  // The answer's NLL through forks (copy-on-write: they share the prompt's
  // blocks), so the caches generate from exactly the state after the
  // question; a truncate would leave tokens that the answer pushed out of a
  // window quantized.
  {
    std::vector<std::unique_ptr<kv::KvCache>> forks;
    std::vector<kv::KvCache*> forked;
    for (kv::KvCache* c : caches) {
      forks.push_back(c->fork());
      forked.push_back(forks.back().get());
    }
    std::vector<float> scored = logits;
    for (int i = 0; i < n_answer; ++i) {
      const int token = t.answer[static_cast<size_t>(i)];
      for (size_t b = 0; b < B; ++b) answers[b].nll += token_nll(logits_row(scored, b, V), token);
      if (i + 1 < n_answer) m.decode(std::vector<int>(B, token), forked, scored, threads);
    }
  }

  std::vector<std::vector<int>> generated(B);
  for (int step = 0; step < kAnswerTokens; ++step) {
    const std::vector<int> next = argmax_rows(logits, B, V);
    for (size_t b = 0; b < B; ++b) generated[b].push_back(next[b]);
    if (step + 1 < kAnswerTokens) m.decode(next, caches, logits, threads);
  }
  for (size_t b = 0; b < B; ++b) {
    answers[b].text = m.tokenizer().decode(generated[b]);
    answers[b].retrieved = first_number(answers[b].text) == t.key;
  }
  return answers;
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
