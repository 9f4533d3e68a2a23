// innerq/tools/cmd_generate.cc — `innerq generate`: text generation from a GGUF
// model on any KV-cache configuration, with prefill / decode speed and the
// cache's size against an f16 cache of the same tokens.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
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
#include "innerq/model/unicode.h"
#include "innerq/tools/cli_util.h"
#include "innerq/tools/commands.h"
#include "innerq/tools/generation.h"

namespace innerq::tools {
namespace {

struct GenerateOptions {
  std::string model;
  std::string activations = "int16";
  std::string prompt;
  std::string prompt_file;
  int n_predict = 128;
  model::SamplerOptions sampling;
  std::string kv = "innerq";
  int ctx = 0;  // 0: prompt + n_predict
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool chat = false;
  bool json = false;
};

void run_generate(const GenerateOptions& o) {
  if (o.n_predict < 0) throw Error(fmt::format("-n {} must be >= 0", o.n_predict));
  if (o.threads < 1) throw Error(fmt::format("-t {} must be >= 1", o.threads));
  if (o.ctx < 0 || o.ctx > kMaxContextTokens) {
    throw Error(fmt::format("-c {} must be 0 (the prompt plus -n) or a token count up to {}", o.ctx,
                            kMaxContextTokens));
  }
  const kv::CacheSpec spec = kv::parse_cache_spec(o.kv);
  model::Sampler sampler(o.sampling);
  const model::LlamaModel m(model::resolve_model_path(o.model), parse_activations(o.activations));
  const model::Tokenizer& tok = m.tokenizer();

  const std::string user_text =
      o.prompt_file.empty() ? o.prompt : read_text_file(o.prompt_file, "prompt file");
  const std::string text = o.chat ? tok.chat_prompt(user_text) : user_text;
  const std::vector<int> prompt = tok.tokenize(text, tok.adds_bos(), /*parse_special=*/true);
  if (prompt.empty()) throw Error("the prompt is empty (give one with -p or -f)");
  const int n_prompt = static_cast<int>(prompt.size());
  const int ctx = o.ctx > 0 ? o.ctx
                            : checked_token_sum(n_prompt, std::max(1, o.n_predict),
                                                kMaxContextTokens, "the context (prompt + -n)");
  if (n_prompt >= ctx) {
    throw Error(fmt::format("the prompt has {} tokens, which does not fit the context of {} (-c)",
                            n_prompt, ctx));
  }

  kv::KvCache cache(m.cache_shape(ctx), spec.layers(m.config().n_layers, m.config().head_dim));
  kv::KvCache* caches[] = {&cache};
  if (!o.json && !o.chat) {
    fmt::print("{}", tok.decode(prompt));
    std::fflush(stdout);
  }

  std::vector<float> logits;
  const auto t_prefill = std::chrono::steady_clock::now();
  m.prefill(prompt, caches, /*all_logits=*/false, logits, o.threads);
  const double prefill_s = seconds_since(t_prefill);

  model::LlamaModel::Workspace ws;
  const Reply reply = sample_reply(m, cache, sampler, logits, o.n_predict, /*store_last=*/false,
                                   /*stream=*/!o.json, o.threads, ws);

  const double prefill_tps = n_prompt / prefill_s;
  const double decode_tps = reply.n_decoded > 0 ? reply.n_decoded / reply.decode_s : 0.0;
  const size_t kv_bytes = cache.memory().total();
  const size_t kv_f16 = cache.bytes_f16_equivalent();
  if (o.json) {
    // Text fields carry invalid UTF-8 as U+FFFD (cli_util.h); "tokens" and
    // "text_utf8_valid" tell a reader whether and how to get the exact bytes.
    nlohmann::json j = {{"model", o.model},
                        {"kv", spec.text},
                        {"prompt", user_text},
                        {"text", reply.text},
                        {"text_utf8_valid", model::utf8_valid(reply.text)},
                        {"tokens", reply.tokens},
                        {"n_prompt", n_prompt},
                        {"n_generated", reply.tokens.size()},
                        {"stop", reply.stop},
                        {"prefill_tps", prefill_tps},
                        {"decode_tps", decode_tps},
                        {"kv_tokens", cache.n_tokens()},
                        {"kv_bytes", kv_bytes},
                        {"kv_bytes_f16", kv_f16},
                        {"threads", o.threads}};
    print_json(j);
    return;
  }
  fmt::print("\n");
  fmt::print(stderr,
             "\nprefill: {} tokens in {:.3f} s ({:.1f} tok/s) | decode: {} tokens in {:.3f} s "
             "({:.1f} tok/s) | stop: {}\n",
             n_prompt, prefill_s, prefill_tps, reply.n_decoded, reply.decode_s, decode_tps,
             reply.stop);
  fmt::print(stderr, "kv cache {}: {} tokens, {} bytes vs {} bytes as f16 (f16/kv = {:.2f}x)\n",
             spec.text, cache.n_tokens(), kv_bytes, kv_f16,
             kv_bytes > 0 ? static_cast<double>(kv_f16) / kv_bytes : 0.0);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd =
      app.add_subcommand("generate", "Generate text from a GGUF model on a KV-cache config");
  cmd->add_option("-m,--model", o->model,
                  "smollm2, gemma3-270m, stories260K, or a path to a GGUF file")
      ->required();
  add_activations_option(cmd, &o->activations);
  CLI::Option* prompt = cmd->add_option("-p,--prompt", o->prompt, "prompt text");
  CLI::Option* file = cmd->add_option("-f,--file", o->prompt_file, "read the prompt from a file");
  prompt->excludes(file);
  cmd->add_option("-n,--n-predict", o->n_predict, "tokens to generate")->capture_default_str();
  add_sampling_options(*cmd, o->sampling);
  cmd->add_option("--kv", o->kv, "KV cache spec, e.g. f16, q4_0, kivi, innerq, innerq:k=4,v=4")
      ->capture_default_str();
  cmd->add_option("-c,--ctx", o->ctx, "context length (cache capacity); 0 = prompt + n")
      ->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads")->capture_default_str();
  cmd->add_flag("--chat", o->chat, "wrap the prompt in the model's chat template");
  cmd->add_flag("--json", o->json, "print one JSON object instead of streaming text");
  cmd->callback([o] { run_generate(*o); });
}

}  // namespace innerq::tools
