// innerq/tools/passkey_trials.h — passkey prompts and how each cache config
// answers them: the protocol of `innerq passkey` (docs/architecture.md,
// "Passkey retrieval"), shared with `innerq tune --passkey`, whose
// calibration trials are built the same way from the calibration text.
//
// A trial is drawn from (seed, length, trial index) alone, so a (length,
// trial) gives the same prompt whatever configs run on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "innerq/kv/cache_spec.h"
#include "innerq/model/llama.h"
#include "innerq/model/tokenizer.h"

namespace innerq::tools {

inline constexpr int kAnswerTokens = 8;                    // greedy tokens generated per config
inline constexpr int kMinLength = 256;                     // shortest prompt
inline constexpr int kMaxKeys = 4;                         // keys hidden per prompt
inline constexpr std::string_view kRepeatName = "repeat";  // the built-in filler

// A filler source: the built-in `repeat` sentence or a text file's lines.
struct FillerSource {
  std::string name;  // "repeat", the file's path, or what else the text is
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

// The source `name` names: kRepeatName or a text file (its lines with their
// '\n'); throws when the file is missing or holds no text.
FillerSource read_filler(const std::string& name);
// `text`'s lines as a source named `name` (tune --self: the model's samples);
// throws when it holds no text.
FillerSource filler_from_text(const std::string& name, const std::string& text);

// Trial `trial` of `trials` at `length` tokens: n_keys random 5-digit keys
// in needles, the asked one at depth (trial + 0.5) / trials, the others at
// random depths; filler source trial mod sources.size(). Throws when the
// length leaves no room for filler.
Trial make_trial(const model::Tokenizer& tok, const std::vector<FillerSource>& sources, int length,
                 int trial, int trials, int n_keys, uint64_t seed);

// Prefills everything but the question once into one cache per config, feeds
// the question through all of them in one batch, and scores the answer
// teacher-forced through forks of the caches (Answer::nll); with `generate`,
// each config then greedily writes kAnswerTokens tokens from its own cache
// (Answer::text, Answer::retrieved). `progress(tokens)` is called after the
// prefill and each decode step.
std::vector<Answer> run_trial(const model::LlamaModel& m,
                              const std::vector<std::vector<kv::LayerConfig>>& configs,
                              const Trial& t, int threads, const std::function<void(int)>& progress,
                              bool generate = true);

}  // namespace innerq::tools
