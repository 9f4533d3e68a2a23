// innerq/tools/cmd_info.cc — `innerq info`: what a GGUF model is (architecture,
// shape, parameters, weight types, tokenizer) and what its KV cache costs at
// a given context length.
#include <algorithm>
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
  int ctx = 0;  // 0: the model's training context
  bool json = false;
};

// Exact cache bytes of one layer with `config` holding `ctx` tokens, planned
// by arithmetic (kv_cache.h): nothing of the cache's size is allocated.
kv::MemoryUsage layer_memory(const model::LlamaModel& m, const kv::LayerConfig& config, int ctx,
                             size_t* f16_bytes) {
  const kv::CacheShape shape = m.cache_shape(std::max(ctx, 1));
  *f16_bytes = static_cast<size_t>(ctx) * 2 /* K and V */ * shape.n_kv_heads * shape.head_dim *
               sizeof(f16_bits);
  return kv::plan_layer_memory(config, shape.n_kv_heads, shape.head_dim, ctx);
}

// Bytes of every layer (per-layer configs from the spec's overrides), each
// distinct config measured once.
std::vector<kv::MemoryUsage> cache_memory(const model::LlamaModel& m, const kv::CacheSpec& spec,
                                          int ctx, size_t* f16_bytes) {
  const std::vector<kv::LayerConfig> layers = spec.layers(m.config().n_layers);
  std::map<std::string, kv::MemoryUsage> measured;
  std::vector<kv::MemoryUsage> out;
  size_t f16_layer = 0;
  for (const kv::LayerConfig& c : layers) {
    const std::string key = kv::describe(c);
    auto it = measured.find(key);
    if (it == measured.end()) it = measured.emplace(key, layer_memory(m, c, ctx, &f16_layer)).first;
    out.push_back(it->second);
  }
  *f16_bytes = f16_layer * layers.size();
  return out;
}

// The same facts as the text output, as one JSON object.
void print_info_json(const model::LlamaModel& m, const std::string& path,
                     const std::vector<kv::CacheSpec>& specs, int ctx) {
  const model::ModelDesc& c = m.config();
  nlohmann::json j;
  j["file"] = path;
  j["architecture"] = m.file().get_string("general.architecture");
  j["layers"] = c.n_layers;
  j["embedding"] = c.n_embd;
  j["heads"] = c.n_heads;
  j["kv_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["parameters"] = m.n_params();
  j["ctx"] = ctx;
  j["caches"] = nlohmann::json::array();
  for (const kv::CacheSpec& spec : specs) {
    nlohmann::json e;
    e["kv"] = spec.text;
    size_t f16_bytes = 0;
    try {
      const std::vector<kv::MemoryUsage> per_layer = cache_memory(m, spec, ctx, &f16_bytes);
      kv::MemoryUsage mem;
      for (const kv::MemoryUsage& l : per_layer) {
        mem += l;
        e["layer_bytes"].push_back(l.total());
      }
      e["bytes"] = mem.total();
      e["codes"] = mem.codes;
      e["metadata"] = mem.metadata;
      e["windows"] = mem.windows;
      e["norm"] = mem.norm;
      e["bytes_f16"] = f16_bytes;
      e["bits_per_value"] =
          16.0 * static_cast<double>(mem.total()) / std::max<size_t>(1, f16_bytes);
    } catch (const Error& err) {
      e["error"] = err.what();
    }
    j["caches"].push_back(e);
  }
  print_json(j, 1);
}

void run_info(const InfoOptions& o) {
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
    print_info_json(m, path, specs, ctx);
    return;
  }
  fmt::print("file          {} ({:.1f} MB, GGUF v{})\n", path, f.file_size() / 1e6, f.version());
  fmt::print("name          {}\n", f.get_string("general.name", "-"));
  fmt::print("architecture  {}\n", f.get_string("general.architecture"));
  fmt::print("layers        {}\n", c.n_layers);
  fmt::print("embedding     {}  (heads {}, kv heads {}, head_dim {}, GQA {}:1)\n", c.n_embd,
             c.n_heads, c.n_kv_heads, c.head_dim, c.n_heads / c.n_kv_heads);
  fmt::print("feed-forward  {}\n", c.n_ff);
  fmt::print("rope          base {}, {} rotated dims (adjacent pairs)\n", c.rope_base, c.n_rot);
  fmt::print("context       {} (training)\n", c.n_ctx_train);
  fmt::print("parameters    {} ({:.1f} M){}\n", m.n_params(), m.n_params() / 1e6,
             m.tied_output() ? ", output tied to token_embd" : "");
  std::map<std::string, std::pair<int, int64_t>> types;  // type -> (tensors, elements)
  for (const model::GgufTensor& t : f.tensors()) {
    auto& e = types[model::ggml_type_name(t.type)];
    e.first += 1;
    e.second += t.n_elements;
  }
  for (const auto& [name, e] : types) {
    fmt::print("weights       {:<5} {:>4} tensors, {:>11} values\n", name, e.first, e.second);
  }
  const model::Tokenizer& tok = m.tokenizer();
  fmt::print("tokenizer     {}{}, vocab {}, bos {}, eos {}{}\n", tok.kind_name(),
             tok.pre_tokenizer().empty() ? "" : fmt::format(" (pre: {})", tok.pre_tokenizer()),
             tok.n_vocab(), tok.bos(), tok.eos(), tok.adds_bos() ? ", adds BOS" : "");

  fmt::print("\nKV cache for {} tokens:\n", ctx);
  fmt::print("{:<24} {:>14} {:>12} {:>10} {:>8} {:>8}\n", "kv", "bytes", "codes", "metadata",
             "windows", "vs f16");
  std::vector<std::pair<kv::CacheSpec, std::vector<kv::MemoryUsage>>> per_layer_specs;
  for (const kv::CacheSpec& spec : specs) {
    size_t f16_bytes = 0;
    kv::MemoryUsage mem;
    std::vector<kv::MemoryUsage> per_layer;
    try {
      per_layer = cache_memory(m, spec, ctx, &f16_bytes);
    } catch (const Error& e) {  // e.g. head_dim smaller than the spec's group
      fmt::print("{:<24} not available: {}\n", spec.text, e.what());
      continue;
    }
    for (const kv::MemoryUsage& l : per_layer) mem += l;
    if (!spec.overrides.empty()) per_layer_specs.push_back({spec, per_layer});
    fmt::print("{:<24} {:>14} {:>12} {:>10} {:>8.1f}% {:>7.2f}x\n", spec.text, mem.total(),
               mem.codes, mem.metadata,
               100.0 * static_cast<double>(mem.windows) / std::max<size_t>(1, mem.total()),
               static_cast<double>(f16_bytes) / std::max<size_t>(1, mem.total()));
  }
  // Specs with per-layer overrides: each layer's config and bytes.
  for (const auto& [spec, per_layer] : per_layer_specs) {
    const std::vector<kv::LayerConfig> layers = spec.layers(c.n_layers);
    fmt::print("\nper layer, {}:\n", spec.text);
    for (size_t l = 0; l < layers.size(); ++l) {
      fmt::print("  layer {:>3}  {:>12} bytes  {}\n", l, per_layer[l].total(),
                 kv::describe(layers[l]));
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
  cmd->add_flag("--json", o->json, "print one JSON object (model facts, cache bytes per spec)");
  cmd->callback([o] { run_info(*o); });
}

}  // namespace innerq::tools
