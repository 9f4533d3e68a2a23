// innerq/tools/cmd_info.cc — `innerq info`: what a GGUF model is (architecture,
// shape, parameters, weight types, tokenizer) and what its KV cache costs at
// a given context length.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "innerq/base/error.h"
#include "innerq/base/fp16.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "innerq/tools/cli_util.h"
#include "innerq/tools/commands.h"

namespace innerq::tools {
namespace {

struct InfoOptions {
  std::string model;
  std::string kv = "f16,innerq";
  int ctx = 0;            // 0: the model's training context
  double budget_mib = 0;  // > 0: how many tokens per sequence fit this pool
  int seqs = 1;
  bool json = false;
};

// The block pool's arithmetic for one spec (kv::MemoryPlan): bytes of one
// block of every global layer, what one sequence of ctx tokens reserves
// (blocks + windows + factors + sliding-window rings), and, given a budget,
// the tokens each of `seqs` sequences can hold.
struct PoolFacts {
  size_t block_bytes = 0;
  int block_tokens = 0;
  size_t sequence_bytes = 0;
  int64_t budget_tokens = -1;  // -1: no budget asked
};

PoolFacts pool_facts(const model::LlamaModel& m, const kv::CacheSpec& spec, int ctx,
                     const InfoOptions& o) {
  const kv::CacheShape shape = m.cache_shape(std::max(ctx, 1));
  const kv::MemoryPlan plan = kv::plan_memory(shape, spec.layers(shape.n_layers, shape.head_dim));
  PoolFacts f;
  f.block_tokens = plan.block_tokens;
  for (int l = 0; l < shape.n_layers; ++l) f.block_bytes += plan.layer(l, 0).block_bytes;
  f.sequence_bytes = plan.sequence_bytes(ctx);
  if (o.budget_mib > 0) {
    f.budget_tokens =
        plan.tokens_for_budget(static_cast<size_t>(o.budget_mib * 1024 * 1024), o.seqs);
  }
  return f;
}

// Exact cache bytes of each layer holding `ctx` tokens, planned by arithmetic
// (kv_cache.h): nothing of the cache's size is allocated. Layers take their
// config from the spec's overrides; a sliding-window layer keeps its window
// in f16 whatever the spec says. f16_bytes: what the same tokens take as f16
// (a windowed layer counts the positions it keeps).
struct LayerPlan {
  kv::MemoryUsage memory;
  size_t f16_bytes = 0;
  std::string what;  // the layer's cache, e.g. "window 512, f16" or the config
};

std::vector<LayerPlan> cache_plan(const model::LlamaModel& m, const kv::CacheSpec& spec, int ctx) {
  const kv::CacheShape shape = m.cache_shape(std::max(ctx, 1));
  const std::vector<kv::LayerConfig> layers = spec.layers(shape.n_layers, shape.head_dim);
  std::map<std::string, kv::MemoryUsage> measured;  // each distinct config planned once
  std::vector<LayerPlan> out;
  for (int l = 0; l < shape.n_layers; ++l) {
    const int window = shape.window(l);
    const int64_t held = window > 0 ? std::min(ctx, window) : ctx;
    LayerPlan p;
    p.f16_bytes = static_cast<size_t>(held) * 2 /* K and V */ * shape.n_kv_heads * shape.head_dim *
                  sizeof(f16_bits);
    if (window > 0) {
      p.what = fmt::format("window {}, f16", window);
      p.memory = kv::plan_window_layer_memory(window, shape.n_kv_heads, shape.head_dim, ctx);
    } else {
      p.what = kv::describe(layers[static_cast<size_t>(l)]);
      auto it = measured.find(p.what);
      if (it == measured.end()) {
        it = measured
                 .emplace(p.what, kv::plan_layer_memory(layers[static_cast<size_t>(l)],
                                                        shape.n_kv_heads, shape.head_dim, ctx))
                 .first;
      }
      p.memory = it->second;
    }
    out.push_back(std::move(p));
  }
  return out;
}

// Tensor counts and values per weight type.
std::map<std::string, std::pair<int, int64_t>> weight_types(const model::GgufFile& f) {
  std::map<std::string, std::pair<int, int64_t>> types;
  for (const model::GgufTensor& t : f.tensors()) {
    auto& e = types[model::ggml_type_name(t.type)];
    e.first += 1;
    e.second += t.n_elements;
  }
  return types;
}

// "0-4, 6-10, 12-16" for the layers where pick(l) holds.
template <class Pick>
std::string layer_ranges(int n_layers, Pick&& pick) {
  std::string out;
  for (int l = 0; l < n_layers; ++l) {
    if (!pick(l)) continue;
    int last = l;
    while (last + 1 < n_layers && pick(last + 1)) ++last;
    out += fmt::format("{}{}", out.empty() ? "" : ", ",
                       last == l ? fmt::format("{}", l) : fmt::format("{}-{}", l, last));
    l = last;
  }
  return out;
}

// Where the weights of the 32-value formats were packed for the int16
// product (model/weights.h, PackedWeights).
std::string packed_summary(const model::PackedWeights& p) {
  if (p.bytes_in_place() == 0 && p.bytes() == 0) {
    return model::packing_enabled()
               ? "none (no Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K matrix, or no room for a copy)"
               : "off (needs AVX-512 VNNI; INNERQ_PACK=0 turns it off)";
  }
  std::string out = fmt::format("{:.1f} MB in 16-row groups for AVX-512 VNNI",
                                static_cast<double>(p.bytes_in_place() + p.bytes()) / 1e6);
  if (p.bytes_in_place() > 0) out += fmt::format(", {:.1f} MB in place", p.bytes_in_place() / 1e6);
  if (p.bytes() > 0) out += fmt::format(", {:.1f} MB as a copy beside the rows", p.bytes() / 1e6);
  return out + " (INNERQ_PACK=0 keeps the file's rows)";
}

// What the forward pass does besides the plain Llama block.
std::string arch_features(const model::ModelDesc& c) {
  std::string out = fmt::format("RoPE {}, {}", model::rope_style_name(c.rope_style),
                                model::activation_name(c.activation));
  if (c.qkv_bias) out += ", q/k/v biases";
  if (c.qk_norm) out += ", per-head q/k norm";
  if (c.post_norms) out += ", post-attention and post-FFN norms";
  if (c.embed_scale != 1.0f) out += fmt::format(", embeddings x {:.4g}", c.embed_scale);
  if (c.final_softcap > 0.0f) out += fmt::format(", logits soft-capped at {}", c.final_softcap);
  return out;
}

// The same facts as the text output, as one JSON object.
void print_info_json(const model::LlamaModel& m, const std::string& path,
                     const std::vector<kv::CacheSpec>& specs, int ctx, const InfoOptions& o) {
  const model::ModelDesc& c = m.config();
  nlohmann::json j;
  j["file"] = path;
  j["weights_memory"] = m.file().in_huge_pages() ? "huge_pages" : "mapped";
  j["weights_packed_in_place_bytes"] = m.packed_weights().bytes_in_place();
  j["weights_packed_copy_bytes"] = m.packed_weights().bytes();
  j["architecture"] = c.arch;
  j["layers"] = c.n_layers;
  j["embedding"] = c.n_embd;
  j["heads"] = c.n_heads;
  j["kv_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["feed_forward"] = c.n_ff;
  j["rope_style"] = model::rope_style_name(c.rope_style);
  j["activation"] = model::activation_name(c.activation);
  j["layer_windows"] = nlohmann::json::array();
  j["layer_rope_bases"] = nlohmann::json::array();
  for (const model::LayerDesc& l : c.layers) {
    j["layer_windows"].push_back(l.window);
    j["layer_rope_bases"].push_back(l.rope_base);
  }
  j["window_layers"] = c.n_window_layers();
  for (const auto& [name, e] : weight_types(m.file())) {
    j["weight_types"][name] = {{"tensors", e.first}, {"values", e.second}};
  }
  j["parameters"] = m.n_params();
  j["ctx"] = ctx;
  j["caches"] = nlohmann::json::array();
  for (const kv::CacheSpec& spec : specs) {
    nlohmann::json e;
    e["kv"] = spec.text;
    try {
      kv::MemoryUsage mem;
      size_t f16_bytes = 0;
      for (const LayerPlan& l : cache_plan(m, spec, ctx)) {
        mem += l.memory;
        f16_bytes += l.f16_bytes;
        e["layer_bytes"].push_back(l.memory.total());
      }
      e["bytes"] = mem.total();
      e["codes"] = mem.codes;
      e["metadata"] = mem.metadata;
      e["windows"] = mem.windows;
      e["norm"] = mem.norm;
      e["bytes_f16"] = f16_bytes;
      e["bits_per_value"] =
          16.0 * static_cast<double>(mem.total()) / std::max<size_t>(1, f16_bytes);
      const PoolFacts pf = pool_facts(m, spec, ctx, o);
      e["block_tokens"] = pf.block_tokens;
      e["block_bytes"] = pf.block_bytes;
      e["sequence_reserved_bytes"] = pf.sequence_bytes;
      if (pf.budget_tokens >= 0) {
        e["budget_bytes"] = static_cast<size_t>(o.budget_mib * 1024 * 1024);
        e["budget_sequences"] = o.seqs;
        e["budget_tokens_per_sequence"] = pf.budget_tokens;
      }
    } catch (const Error& err) {
      e["error"] = err.what();
    }
    j["caches"].push_back(e);
  }
  print_json(j, 1);
}

void run_info(const InfoOptions& o) {
  if (o.budget_mib < 0 || !std::isfinite(o.budget_mib) || o.budget_mib > 1 << 24) {
    throw Error(fmt::format("--budget {} MiB must be between 0 and 2^24", o.budget_mib));
  }
  if (o.seqs < 1 || o.seqs > 1 << 16) {
    throw Error(fmt::format("--seqs {} must be between 1 and 65536", o.seqs));
  }
  if (o.ctx < 0 || o.ctx > kMaxContextTokens) {
    throw Error(
        fmt::format("-c {} must be 0 (the model's training context) or a token count up "
                    "to {}",
                    o.ctx, kMaxContextTokens));
  }
  const std::vector<kv::CacheSpec> specs = kv::parse_cache_spec_list(o.kv);
  const std::string path = model::resolve_model_path(o.model);
  const model::LlamaModel m(path);
  const model::GgufFile& f = m.file();
  const model::ModelDesc& c = m.config();
  const int ctx = o.ctx > 0 ? o.ctx : std::clamp(c.n_ctx_train, 1, kMaxContextTokens);

  if (o.json) {
    print_info_json(m, path, specs, ctx, o);
    return;
  }
  fmt::print("file          {} ({:.1f} MB, GGUF v{})\n", path, f.file_size() / 1e6, f.version());
  fmt::print("weights in    {}\n",
             f.in_huge_pages() ? "memory in 2 MiB pages (INNERQ_MMAP=1 maps the file instead)"
                               : "the file's mapping (4 KiB pages)");
  fmt::print("packed        {}\n", packed_summary(m.packed_weights()));
  fmt::print("name          {}\n", f.get_string("general.name", "-"));
  fmt::print("architecture  {} ({})\n", c.arch, arch_features(c));
  const auto windowed = [&](int l) { return c.layers[static_cast<size_t>(l)].window > 0; };
  if (c.n_window_layers() == 0) {
    fmt::print("layers        {}\n", c.n_layers);
  } else {
    const model::LayerDesc& w = *std::find_if(
        c.layers.begin(), c.layers.end(), [](const model::LayerDesc& l) { return l.window > 0; });
    fmt::print(
        "layers        {}: {} sliding-window ({}; {} positions, RoPE base {}), {} global ({})\n",
        c.n_layers, c.n_window_layers(), layer_ranges(c.n_layers, windowed), w.window, w.rope_base,
        c.n_layers - c.n_window_layers(),
        layer_ranges(c.n_layers, [&](int l) { return !windowed(l); }));
  }
  fmt::print("embedding     {}  (heads {}, kv heads {}, head_dim {}, GQA {}:1)\n", c.n_embd,
             c.n_heads, c.n_kv_heads, c.head_dim, c.n_heads / c.n_kv_heads);
  fmt::print("feed-forward  {}\n", c.n_ff);
  fmt::print(
      "rope          base {}, {} rotated dims{}{}\n", c.rope_base, c.n_rot,
      c.rope_scale != 1.0f ? fmt::format(", linear scaling x{}", 1.0f / c.rope_scale) : "",
      f.find_tensor("rope_freqs.weight") != nullptr ? ", frequency factors (rope_freqs)" : "");
  fmt::print("context       {} (training)\n", c.n_ctx_train);
  fmt::print("parameters    {} ({:.1f} M){}\n", m.n_params(), m.n_params() / 1e6,
             m.tied_output() ? ", output tied to token_embd" : "");
  for (const auto& [name, e] : weight_types(f)) {
    fmt::print("weights       {:<5} {:>4} tensors, {:>11} values\n", name, e.first, e.second);
  }
  const model::Tokenizer& tok = m.tokenizer();
  fmt::print("tokenizer     {}{}, vocab {}, bos {}, eos {}{}\n", tok.kind_name(),
             tok.pre_tokenizer().empty() ? "" : fmt::format(" (pre: {})", tok.pre_tokenizer()),
             tok.n_vocab(), tok.bos(), tok.eos(), tok.adds_bos() ? ", adds BOS" : "");

  fmt::print("\nKV cache for {} tokens{}:\n", ctx,
             c.n_window_layers() > 0 ? " (sliding-window layers keep their window in f16)" : "");
  fmt::print("{:<24} {:>14} {:>12} {:>10} {:>8} {:>8}\n", "kv", "bytes", "codes", "metadata",
             "windows", "vs f16");
  std::vector<std::pair<std::string, std::vector<LayerPlan>>> per_layer_specs;
  for (const kv::CacheSpec& spec : specs) {
    std::vector<LayerPlan> plan;
    try {
      plan = cache_plan(m, spec, ctx);
    } catch (const Error& e) {  // e.g. head_dim smaller than the spec's group
      fmt::print("{:<24} not available: {}\n", spec.text, e.what());
      continue;
    }
    kv::MemoryUsage mem;
    size_t f16_bytes = 0;
    for (const LayerPlan& l : plan) {
      mem += l.memory;
      f16_bytes += l.f16_bytes;
    }
    if (!spec.overrides.empty() || c.n_window_layers() > 0)
      per_layer_specs.push_back({spec.text, plan});
    fmt::print("{:<24} {:>14} {:>12} {:>10} {:>8.1f}% {:>7.2f}x\n", spec.text, mem.total(),
               mem.codes, mem.metadata,
               100.0 * static_cast<double>(mem.windows) / std::max<size_t>(1, mem.total()),
               static_cast<double>(f16_bytes) / std::max<size_t>(1, mem.total()));
  }
  fmt::print(
      "\nblock pool ({} tokens a block; a sequence reserves whole blocks, its f16 windows "
      "and sliding-window rings):\n",
      kv::kDefaultBlockTokens);
  fmt::print("{:<24} {:>14} {:>18}{}\n", "kv", "bytes/block", "reserved/sequence",
             o.budget_mib > 0 ? fmt::format(" {:>22}", fmt::format("tokens/seq in {:g} MiB x{}",
                                                                   o.budget_mib, o.seqs))
                              : "");
  for (const kv::CacheSpec& spec : specs) {
    try {
      const PoolFacts pf = pool_facts(m, spec, ctx, o);
      fmt::print("{:<24} {:>14} {:>18}{}\n", spec.text, pf.block_bytes, pf.sequence_bytes,
                 pf.budget_tokens >= 0 ? fmt::format(" {:>22}", pf.budget_tokens) : "");
    } catch (const Error&) {  // reported in the table above
    }
  }
  // Specs whose layers differ (overrides, sliding windows): each run of
  // layers with the same cache, and its bytes per layer.
  for (const auto& [text, plan] : per_layer_specs) {
    fmt::print("\nper layer, {}:\n", text);
    for (size_t l = 0; l < plan.size(); ++l) {
      size_t last = l;
      while (last + 1 < plan.size() && plan[last + 1].what == plan[l].what) ++last;
      fmt::print("  layer{} {:<7} {:>12} bytes{}  {}\n", last == l ? " " : "s",
                 last == l ? fmt::format("{}", l) : fmt::format("{}-{}", l, last),
                 plan[l].memory.total(), last == l ? "     " : " each", plan[l].what);
      l = last;
    }
  }
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto o = std::make_shared<InfoOptions>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a GGUF model and its KV cache memory");
  cmd->add_option("-m,--model", o->model,
                  "smollm2, gemma3-270m, stories260K, or a path to a GGUF file")
      ->required();
  cmd->add_option("--kv", o->kv, "comma-separated cache specs to size")->capture_default_str();
  cmd->add_option("-c,--ctx", o->ctx, "context length (0 = the model's training context)")
      ->capture_default_str();
  cmd->add_option("--budget", o->budget_mib,
                  "a pool size in MiB: print how many tokens each of --seqs sequences can hold")
      ->capture_default_str();
  cmd->add_option("--seqs", o->seqs, "sequences sharing the --budget pool")->capture_default_str();
  cmd->add_flag("--json", o->json, "print one JSON object (model facts, cache bytes per spec)");
  cmd->callback([o] { run_info(*o); });
}

}  // namespace innerq::tools
