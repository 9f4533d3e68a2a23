// innerq/tools/passkey_trials.cc — passkey prompts and the configs' answers
// (tools/passkey_trials.h).
#include "innerq/tools/passkey_trials.h"

#include <algorithm>
#include <cctype>
#include <memory>
#include <random>
#include <span>
#include <sstream>
#include <utility>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/sampler.h"
#include "innerq/tools/cli_util.h"
#include "innerq/tools/eval.h"

namespace innerq::tools {
namespace {

constexpr std::string_view kIntro =
    "There is an important pass key hidden inside a lot of irrelevant text. Find it and "
    "remember it. ";
constexpr std::string_view kQuestion = " What is the pass key? The pass key is";
// The filler of the passkey literature (Mohtashami & Jaggi, 2023).
constexpr std::string_view kRepeatLine =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
// Labels of the needles when a prompt holds several keys.
constexpr std::string_view kLabels[kMaxKeys] = {"red", "blue", "green", "yellow"};

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

}  // namespace

FillerSource read_filler(const std::string& name) {
  if (name == kRepeatName) return {name, {std::string(kRepeatLine)}};
  return filler_from_text(
      name,
      read_text_file(name, "filler file (scripts/fetch-data.sh fetches the default; or 'repeat')"));
}

FillerSource filler_from_text(const std::string& name, const std::string& text) {
  std::istringstream in(text);
  FillerSource s{name, {}};
  for (std::string line; std::getline(in, line);) s.lines.push_back(line + "\n");
  const bool has_text = std::any_of(s.lines.begin(), s.lines.end(), [](const std::string& l) {
    return std::any_of(l.begin(), l.end(), [](unsigned char c) { return !std::isspace(c); });
  });
  if (!has_text) throw Error(fmt::format("filler '{}' holds no text", name));
  return s;
}

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

std::vector<Answer> run_trial(const model::LlamaModel& m,
                              const std::vector<std::vector<kv::LayerConfig>>& configs,
                              const Trial& t, int threads, const std::function<void(int)>& progress,
                              bool generate) {
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

  if (!generate) return answers;
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

}  // namespace innerq::tools
