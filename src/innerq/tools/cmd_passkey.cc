// innerq/tools/cmd_passkey.cc — `innerq passkey`: passkey retrieval through
// the (quantized) KV cache, each config against the f16 cache.
//
// Protocol (per prompt length and trial; docs/architecture.md, "Evaluation
// and tuning", is the same teacher-forced scheme):
//   - a random 5-digit key and a depth (trial + 0.5) / trials;
//   - filler: consecutive lines of the filler file from a random line,
//     tokenized and cut at token level to fill the length;
//   - prompt = [BOS] intro filler[:a] needle filler[a:] question, exactly
//     `length` tokens, with the needle at a = depth × filler tokens;
//   - everything but the question is prefilled ONCE into every config's cache
//     (prefill attention is full precision, so every config stores the same
//     K/V); the question is then fed by teacher-forced decoding, all configs
//     in one batch, so the answer attends through each config's cache;
//   - each config greedily generates kAnswerTokens tokens from its own
//     logits; the trial passes when the first number in the decoded text is
//     the key.
// Everything is drawn from --seed, length and trial, so a (length, trial)
// gives the same prompt whatever else is listed.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
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

constexpr int kAnswerTokens = 8;  // greedy tokens generated per config
constexpr int kMinLength = 256;
constexpr int kMaxTrials = 100;
constexpr std::string_view kIntro =
    "There is an important pass key hidden inside a lot of irrelevant text. Find it and "
    "remember it. ";
constexpr std::string_view kQuestion = " What is the pass key? The pass key is";

struct PasskeyOptions {
  std::string model;
  std::string activations = "int16";
  std::string file = "data/wikitext2/valid.txt";
  std::string kv = "innerq";
  std::vector<int> lengths{2048, 4096, 7680};
  int trials = 5;
  uint64_t seed = 0;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool json = false;
};

// One prompt: `n_question` trailing tokens are the question.
struct Trial {
  int length = 0;
  std::string key;
  double depth = 0.0;
  std::vector<int> prompt;
  int n_question = 0;
};

// What one config made of one trial.
struct Answer {
  std::string text;
  bool retrieved = false;
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
  if (o.threads < 1) throw Error(fmt::format("-t {} must be >= 1", o.threads));
}

// The filler file's lines (with their '\n'); throws when it is missing or
// holds no text.
std::vector<std::string> read_lines(const std::string& path) {
  std::istringstream in(
      read_text_file(path, "filler file (scripts/fetch-data.sh fetches the default)"));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line + "\n");
  const bool has_text = std::any_of(lines.begin(), lines.end(), [](const std::string& l) {
    return std::any_of(l.begin(), l.end(), [](unsigned char c) { return !std::isspace(c); });
  });
  if (!has_text) throw Error(fmt::format("filler file '{}' holds no text", path));
  return lines;
}

// Tokens of `text` as it continues earlier text. SentencePiece prefixes "▁"
// (a space) to each tokenize call, so one leading space is dropped there.
std::vector<int> tokenize_continuation(const model::Tokenizer& tok, std::string_view text) {
  if (tok.kind() == model::TokenizerKind::kSentencePiece && text.starts_with(' ')) {
    text.remove_prefix(1);
  }
  return tok.tokenize(text, /*add_bos=*/false, /*parse_special=*/false);
}

// At least `n` tokens of consecutive lines from `first` on (wrapping at the
// end of the file), cut to exactly `n`.
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

Trial make_trial(const model::Tokenizer& tok, const std::vector<std::string>& lines, int length,
                 int trial, int trials, uint64_t seed) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(length), static_cast<uint32_t>(trial)};
  std::mt19937_64 rng(seq);
  Trial t;
  t.length = length;
  t.key = std::to_string(std::uniform_int_distribution<int>(10000, 99999)(rng));
  t.depth = (trial + 0.5) / trials;
  const size_t first = std::uniform_int_distribution<size_t>(0, lines.size() - 1)(rng);

  const std::vector<int> intro = tok.tokenize(kIntro, tok.adds_bos(), /*parse_special=*/false);
  const std::vector<int> needle = tokenize_continuation(
      tok, fmt::format(" The pass key is {0}. Remember it. {0} is the pass key. ", t.key));
  const std::vector<int> question = tokenize_continuation(tok, kQuestion);
  const int n_filler = length - static_cast<int>(intro.size() + needle.size() + question.size());
  if (n_filler < 1) throw Error(fmt::format("length {} leaves no room for filler", length));
  const std::vector<int> filler = filler_tokens(tok, lines, first, n_filler);
  const auto at = filler.begin() + static_cast<long>(t.depth * n_filler);

  t.prompt = intro;
  t.prompt.insert(t.prompt.end(), filler.begin(), at);
  t.prompt.insert(t.prompt.end(), needle.begin(), needle.end());
  t.prompt.insert(t.prompt.end(), at, filler.end());
  t.prompt.insert(t.prompt.end(), question.begin(), question.end());
  t.n_question = static_cast<int>(question.size());
  return t;
}

// The first run of digits in `text`, or "".
std::string first_number(const std::string& text) {
  const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  const auto begin = std::find_if(text.begin(), text.end(), is_digit);
  return std::string(begin, std::find_if_not(begin, text.end(), is_digit));
}

// Greedy next token of each config from logits [B, n_vocab].
std::vector<int> argmax_rows(const std::vector<float>& logits, size_t batch, int n_vocab) {
  std::vector<int> ids(batch);
  for (size_t b = 0; b < batch; ++b) {
    ids[b] = model::argmax(std::span<const float>(logits).subspan(b * n_vocab, n_vocab));
  }
  return ids;
}

// Prefill once, feed the question through every cache, generate; one answer
// per config. `progress(tokens)` is called after the prefill and each decode.
std::vector<Answer> run_trial(const model::LlamaModel& m,
                              const std::vector<std::vector<kv::LayerConfig>>& configs,
                              const Trial& t, int threads,
                              const std::function<void(int)>& progress) {
  std::vector<std::unique_ptr<kv::KvCache>> owned;
  std::vector<kv::KvCache*> caches;
  for (const auto& layers : configs) {
    owned.push_back(std::make_unique<kv::KvCache>(m.cache_shape(t.length + kAnswerTokens), layers));
    caches.push_back(owned.back().get());
  }
  const std::span<const int> prompt(t.prompt);
  const size_t n_context = prompt.size() - static_cast<size_t>(t.n_question);
  std::vector<float> logits;
  m.prefill(prompt.first(n_context), caches, /*all_logits=*/false, logits, threads);
  progress(static_cast<int>(n_context));
  for (int q : prompt.subspan(n_context)) {
    m.decode(std::vector<int>(caches.size(), q), caches, logits, threads);
    progress(1);
  }
  std::vector<std::vector<int>> generated(caches.size());
  for (int step = 0; step < kAnswerTokens; ++step) {
    const std::vector<int> next = argmax_rows(logits, caches.size(), m.config().n_vocab);
    for (size_t b = 0; b < next.size(); ++b) generated[b].push_back(next[b]);
    if (step + 1 < kAnswerTokens) m.decode(next, caches, logits, threads);
  }
  std::vector<Answer> answers;
  for (const std::vector<int>& ids : generated) {
    std::string text = m.tokenizer().decode(ids);
    const bool ok = first_number(text) == t.key;
    answers.push_back({std::move(text), ok});
  }
  return answers;
}

// answers[length index][trial][config]
using Results = std::vector<std::vector<std::vector<Answer>>>;

int count_retrieved(const std::vector<std::vector<Answer>>& by_trial, size_t config) {
  return static_cast<int>(std::count_if(by_trial.begin(), by_trial.end(),
                                        [&](const auto& a) { return a[config].retrieved; }));
}

void print_table(const PasskeyOptions& o, const std::vector<kv::CacheSpec>& specs,
                 const Results& results) {
  fmt::print("passkey retrieval: {} trials per length, filler {}, seed {}\n", o.trials, o.file,
             o.seed);
  std::vector<size_t> width;
  fmt::print("{:<8}", "length");
  for (const kv::CacheSpec& s : specs) {
    width.push_back(std::max<size_t>(s.text.size(), 9));
    fmt::print(" {:>{}}", s.text, width.back());
  }
  fmt::print("\n");
  std::vector<int> total(specs.size(), 0);
  for (size_t l = 0; l < results.size(); ++l) {
    fmt::print("{:<8}", o.lengths[l]);
    for (size_t c = 0; c < specs.size(); ++c) {
      const int k = count_retrieved(results[l], c);
      total[c] += k;
      fmt::print(" {:>{}}", fmt::format("{}/{}", k, o.trials), width[c]);
    }
    fmt::print("\n");
  }
  fmt::print("{:<8}", "total");
  for (size_t c = 0; c < specs.size(); ++c) {
    fmt::print(" {:>{}}", fmt::format("{}/{}", total[c], o.trials * results.size()), width[c]);
  }
  fmt::print("\n");
}

void print_report_json(const PasskeyOptions& o, const std::vector<kv::CacheSpec>& specs,
                       const std::vector<std::vector<Trial>>& trials, const Results& results) {
  nlohmann::json configs = nlohmann::json::array();
  for (size_t c = 0; c < specs.size(); ++c) {
    nlohmann::json by_length = nlohmann::json::array();
    int total = 0;
    for (size_t l = 0; l < results.size(); ++l) {
      nlohmann::json runs = nlohmann::json::array();
      for (size_t i = 0; i < results[l].size(); ++i) {
        const Answer& a = results[l][i][c];
        runs.push_back({{"key", trials[l][i].key},
                        {"depth", trials[l][i].depth},
                        {"text", a.text},
                        {"retrieved", a.retrieved}});
      }
      const int k = count_retrieved(results[l], c);
      total += k;
      by_length.push_back(
          {{"length", o.lengths[l]}, {"retrieved", k}, {"trials", o.trials}, {"runs", runs}});
    }
    configs.push_back({{"kv", specs[c].text},
                       {"retrieved", total},
                       {"trials", o.trials * static_cast<int>(results.size())},
                       {"by_length", by_length}});
  }
  const nlohmann::json out = {{"model", o.model},   {"file", o.file},       {"seed", o.seed},
                              {"trials", o.trials}, {"lengths", o.lengths}, {"configs", configs}};
  // Generated text may end inside a UTF-8 sequence: replace, do not throw.
  tools::print_json(out, 1);
}

void run_passkey(const PasskeyOptions& o) {
  validate_options(o);
  const std::vector<std::string> lines = read_lines(o.file);
  const std::vector<kv::CacheSpec> specs = specs_with_f16_base(o.kv);  // [0]: the reference
  const model::LlamaModel m(model::resolve_model_path(o.model), parse_activations(o.activations));
  validate_lengths(o, m);
  std::vector<std::vector<kv::LayerConfig>> configs;
  for (const kv::CacheSpec& s : specs) configs.push_back(s.layers(m.config().n_layers));

  std::vector<std::vector<Trial>> trials(o.lengths.size());
  long total = 0;
  for (size_t l = 0; l < o.lengths.size(); ++l) {
    for (int i = 0; i < o.trials; ++i) {
      trials[l].push_back(make_trial(m.tokenizer(), lines, o.lengths[l], i, o.trials, o.seed));
    }
    total += static_cast<long>(o.lengths[l]) * o.trials;
  }

  ProgressBar bar("passkey");
  const bool show = !o.json || isatty(fileno(stderr));
  long done = 0;
  Results results(o.lengths.size());
  for (size_t l = 0; l < trials.size(); ++l) {
    for (const Trial& t : trials[l]) {
      const std::string detail =
          fmt::format("{} tokens, trial {}/{}", t.length, results[l].size() + 1, o.trials);
      const auto progress = [&](int n) {
        done += n;
        if (show) bar.update(done, total, detail);
      };
      progress(0);
      results[l].push_back(run_trial(m, configs, t, o.threads, progress));
    }
  }
  bar.finish();
  if (o.json) {
    print_report_json(o, specs, trials, results);
  } else {
    print_table(o, specs, results);
  }
}

}  // namespace

void add_passkey_command(CLI::App& app) {
  auto o = std::make_shared<PasskeyOptions>();
  CLI::App* cmd = app.add_subcommand(
      "passkey", "Passkey retrieval through KV-cache configs (f16 always runs as the reference)");
  cmd->add_option("-m,--model", o->model,
                  "smollm2, gemma3-270m, stories260K, or a path to a GGUF file")
      ->required();
  add_activations_option(cmd, &o->activations);
  cmd->add_option("-f,--file", o->file, "filler text file")->capture_default_str();
  cmd->add_option("--kv", o->kv, "comma-separated cache specs; f16 always runs as the reference")
      ->capture_default_str();
  cmd->add_option("--lengths", o->lengths, "comma-separated prompt lengths in tokens")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--trials", o->trials, "trials per length (key depths spread evenly)")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of the keys and filler positions")
      ->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads")->capture_default_str();
  cmd->add_flag("--json", o->json, "print JSON with every trial's key and answer");
  cmd->callback([o] { run_passkey(*o); });
}

}  // namespace innerq::tools
