// innerq/tools/cmd_info.cc — `innerq info`: what a GGUF model is (architecture,
// shape, parameters, weight types, tokenizer) and what its KV cache costs at
// a given context length.
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "innerq/tools/commands.h"

namespace innerq::tools {
namespace {

struct InfoOptions {
  std::string model;
  std::string kv = "f16,innerq";
  int ctx = 0;  // 0: the model's training context
};

// Exact cache bytes for `ctx` tokens: one layer is filled (storage does not
// depend on the values) and, since every layer has the same config, scaled
// by the layer count.
kv::MemoryUsage cache_memory(const model::LlamaModel& m, const kv::CacheSpec& spec, int ctx,
                             size_t* f16_bytes) {
  kv::CacheShape shape = m.cache_shape(ctx);
  const int n_layers = shape.n_layers;
  shape.n_layers = 1;
  kv::KvCache one(shape, spec.layer);
  const std::vector<float> zeros(static_cast<size_t>(ctx) * shape.n_kv_heads * shape.head_dim,
                                 0.0f);
  one.append(0, zeros.data(), zeros.data(), ctx);
  kv::MemoryUsage per_layer = one.memory();
  kv::MemoryUsage all;
  for (int l = 0; l < n_layers; ++l) all += per_layer;
  *f16_bytes = one.bytes_f16_equivalent() * static_cast<size_t>(n_layers);
  return all;
}

void run_info(const InfoOptions& o) {
  const std::vector<kv::CacheSpec> specs = kv::parse_cache_spec_list(o.kv);
  const std::string path = model::resolve_model_path(o.model);
  const model::LlamaModel m(path);
  const model::GgufFile& f = m.file();
  const model::LlamaConfig& c = m.config();
  const int ctx = o.ctx > 0 ? o.ctx : c.n_ctx_train;

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
  for (const kv::CacheSpec& spec : specs) {
    size_t f16_bytes = 0;
    kv::MemoryUsage mem;
    try {
      mem = cache_memory(m, spec, ctx, &f16_bytes);
    } catch (const Error& e) {  // e.g. head_dim smaller than the spec's group
      fmt::print("{:<24} not available: {}\n", spec.text, e.what());
      continue;
    }
    fmt::print("{:<24} {:>14} {:>12} {:>10} {:>8.1f}% {:>7.2f}x\n", spec.text, mem.total(),
               mem.codes, mem.metadata,
               100.0 * static_cast<double>(mem.windows) / std::max<size_t>(1, mem.total()),
               static_cast<double>(f16_bytes) / std::max<size_t>(1, mem.total()));
  }
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto o = std::make_shared<InfoOptions>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a GGUF model and its KV cache memory");
  cmd->add_option("-m,--model", o->model, "smollm2, stories260K, or a path to a GGUF file")
      ->required();
  cmd->add_option("--kv", o->kv, "comma-separated cache specs to size")->capture_default_str();
  cmd->add_option("-c,--ctx", o->ctx, "context length (0 = the model's training context)")
      ->capture_default_str();
  cmd->callback([o] { run_info(*o); });
}

}  // namespace innerq::tools
