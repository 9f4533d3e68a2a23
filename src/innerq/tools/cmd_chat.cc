// innerq/tools/cmd_chat.cc — `innerq chat`: a multi-turn chat whose earlier
// turns stay in the (quantized) KV cache. Each user turn goes through the
// cache with LlamaModel::extend and is never prefilled again; the reply is
// sampled token by token through the same cache.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
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
#include "innerq/model/unicode.h"
#include "innerq/tools/cli_util.h"
#include "innerq/tools/commands.h"
#include "innerq/tools/generation.h"

namespace innerq::tools {
namespace {

struct ChatOptions {
  std::string model;
  std::string turns_file;  // empty: read turns from stdin
  std::string system;      // empty: the template's default
  int n_predict = 256;
  model::SamplerOptions sampling;
  std::string kv = "innerq";
  int ctx = 4096;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool json = false;
};

// Typed at the interactive prompt, ends the chat (as EOF does).
constexpr std::string_view kQuitCommand = "/quit";

bool blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

// One user turn per non-blank line of the file (a trailing \r dropped).
std::vector<std::string> read_turns(const std::string& path) {
  const std::string text = read_text_file(path, "turns file");
  std::vector<std::string> turns;
  size_t begin = 0;
  while (begin < text.size()) {
    const size_t end = std::min(text.find('\n', begin), text.size());
    std::string_view line(text.data() + begin, end - begin);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!blank(line)) turns.emplace_back(line);
    begin = end + 1;
  }
  if (turns.empty()) {
    throw Error(
        fmt::format("the turns file {} has no turn (one user turn per non-empty line)", path));
  }
  return turns;
}

// The next non-blank line of stdin, prompting with "> " on a terminal;
// nothing at EOF or /quit.
std::optional<std::string> read_turn_from_stdin() {
  const bool tty = ::isatty(STDIN_FILENO) != 0;
  std::string line;
  while (true) {
    if (tty) {
      fmt::print(stderr, "> ");
      std::fflush(stderr);
    }
    if (!std::getline(std::cin, line) || line == kQuitCommand) return std::nullopt;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!blank(line)) return line;
  }
}

void run_chat(const ChatOptions& o) {
  if (o.n_predict < 1) throw Error(fmt::format("-n {} must be >= 1", o.n_predict));
  if (o.threads < 1) throw Error(fmt::format("-t {} must be >= 1", o.threads));
  if (o.ctx < 2 || o.ctx > kMaxContextTokens) {
    throw Error(fmt::format("-c {} must be a token count from 2 to {}", o.ctx, kMaxContextTokens));
  }
  const kv::CacheSpec spec = kv::parse_cache_spec(o.kv);
  model::Sampler sampler(o.sampling);
  std::vector<std::string> file_turns;
  if (!o.turns_file.empty()) file_turns = read_turns(o.turns_file);
  const model::LlamaModel m(model::resolve_model_path(o.model));
  const model::Tokenizer& tok = m.tokenizer();
  tok.require_chat_template();

  kv::KvCache cache(m.cache_shape(o.ctx), spec.layers(m.config().n_layers, m.config().head_dim));
  model::LlamaModel::Workspace ws;
  std::vector<float> logits;
  for (int turn = 0;; ++turn) {
    std::optional<std::string> user;
    if (o.turns_file.empty()) {
      user = read_turn_from_stdin();
    } else if (turn < static_cast<int>(file_turns.size())) {
      user = file_turns[static_cast<size_t>(turn)];
      if (!o.json) fmt::print(stderr, "> {}\n", *user);
    }
    if (!user) break;

    const bool first = turn == 0;
    const std::vector<int> added = tok.tokenize(tok.chat_turn(*user, o.system, first),
                                                first && tok.adds_bos(), /*parse_special=*/true);
    const int n_added = static_cast<int>(added.size());
    if (cache.n_tokens() + n_added >= o.ctx) {
      throw Error(fmt::format(
          "the context is full: the cache holds {} tokens of -c {}, and turn {} adds {} more "
          "(and needs room for a reply); give a larger -c",
          cache.n_tokens(), o.ctx, turn + 1, n_added));
    }
    const auto t_prefill = std::chrono::steady_clock::now();
    m.extend(added, cache, /*all_logits=*/false, logits, o.threads, ws);
    const double prefill_s = seconds_since(t_prefill);

    const Reply reply = sample_reply(m, cache, sampler, logits, o.n_predict, /*store_last=*/true,
                                     /*stream=*/!o.json, o.threads, ws);
    const double decode_tps = reply.n_decoded > 0 ? reply.n_decoded / reply.decode_s : 0.0;
    if (o.json) {
      // Text fields carry invalid UTF-8 as U+FFFD (cli_util.h); "tokens" has
      // the exact reply.
      print_json({{"turn", turn + 1},
                  {"user", *user},
                  {"text", reply.text},
                  {"text_utf8_valid", model::utf8_valid(reply.text)},
                  {"tokens", reply.tokens},
                  {"n_prompt", n_added},
                  {"n_reply", reply.tokens.size()},
                  {"stop", reply.stop},
                  {"kv", spec.text},
                  {"kv_tokens", cache.n_tokens()},
                  {"ctx", o.ctx},
                  {"kv_bytes", cache.memory().total()},
                  {"kv_reserved_bytes", cache.reserved_bytes()},
                  {"prefill_ms", prefill_s * 1e3},
                  {"decode_tps", decode_tps}});
      std::fflush(stdout);  // a reader of a pipe gets each turn as it ends
    } else {
      fmt::print("\n");
      std::fflush(stdout);  // the reply, then its stats line
      fmt::print(stderr,
                 "[turn {}: +{} prompt tokens in {:.0f} ms | {} reply tokens, {:.1f} tok/s | "
                 "stop: {} | cache {}: {}/{} tokens, {} bytes, {} reserved]\n",
                 turn + 1, n_added, prefill_s * 1e3, reply.tokens.size(), decode_tps, reply.stop,
                 spec.text, cache.n_tokens(), o.ctx, cache.memory().total(),
                 cache.reserved_bytes());
    }
    if (reply.stop == "context") {
      throw Error(fmt::format(
          "the context is full: the cache holds {} tokens of -c {}, and turn {}'s reply stopped "
          "after {} tokens; give a larger -c",
          cache.n_tokens(), o.ctx, turn + 1, reply.tokens.size()));
    }
  }
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto o = std::make_shared<ChatOptions>();
  CLI::App* cmd = app.add_subcommand(
      "chat", "Multi-turn chat whose earlier turns stay in the KV cache (never prefilled again)");
  cmd->add_option("-m,--model", o->model,
                  "smollm2, gemma3-270m, or a path to a GGUF file with a ChatML or Gemma chat "
                  "template")
      ->required();
  cmd->add_option("--turns", o->turns_file,
                  "read user turns from a file, one per non-empty line (default: stdin, "
                  "until EOF or /quit)");
  cmd->add_option("--system", o->system, "system text (default: the template's own)");
  cmd->add_option("-n,--n-predict", o->n_predict, "most tokens per reply")->capture_default_str();
  add_sampling_options(*cmd, o->sampling);
  cmd->add_option("--kv", o->kv, "KV cache spec, e.g. f16, q4_0, kivi, innerq, innerq:k=4,v=4")
      ->capture_default_str();
  cmd->add_option("-c,--ctx", o->ctx, "context length (cache capacity) for the whole chat")
      ->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads")->capture_default_str();
  cmd->add_flag("--json", o->json, "print one JSON object per turn instead of streaming text");
  cmd->callback([o] { run_chat(*o); });
}

}  // namespace innerq::tools
