// innerq/tools/cmd_calibrate.cc — `innerq calibrate`: InnerQ's key mean and
// per-channel factors of every layer and KV head, computed once from a
// calibration text and written to a file (kv/key_factors.h) that
// `--kv innerq:kfactors=FILE` reads, so that every sequence stores the same
// bytes for the same prefix.
//
// The text is cut into chunks of -c tokens as `innerq perplexity` cuts it
// (the first token of each replaced by BOS when the model adds BOS); each chunk is prefilled into
// an f32 cache, as its own sequence. The keys of every chunk but its first `sink` tokens (which the
// cache keeps in f16 and leaves out of its statistic) are gathered per layer
// and KV head, rotated when the spec rotates K (the cache takes its
// statistics in the coordinates it stores), and reduced with the cache's own
// statistic (kv::compute_key_factors): the mean when kcenter=on, then the
// factors of the centered keys for knorm=sqrtmax|rms.
#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "innerq/attn/decode_attention.h"
#include "innerq/base/error.h"
#include "innerq/kernels/hadamard.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/key_factors.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "innerq/tools/cli_util.h"
#include "innerq/tools/commands.h"
#include "innerq/tools/eval.h"

namespace innerq::tools {
namespace {

struct CalibrateOptions {
  std::string model;
  std::string file;
  std::string kv = "innerq";
  std::string out;
  int ctx = 1024;
  int chunks = 8;  // 0: all
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool json = false;
};

// The one config whose statistics the file holds: the spec's base, which must
// be InnerQ (overrides are refused: a file has one knorm, kcenter and rot).
kv::LayerConfig calibrated_config(const kv::CacheSpec& spec) {
  if (spec.layer.kind != kv::CacheKind::kInnerQ) {
    throw Error(
        fmt::format("--kv '{}': calibrate computes InnerQ key statistics; give an innerq "
                    "or innerq-paper spec",
                    spec.text));
  }
  if (!spec.overrides.empty()) {
    throw Error(
        fmt::format("--kv '{}': per-layer overrides are not calibrated (one file holds "
                    "one knorm, kcenter and rot for every layer); give the base spec",
                    spec.text));
  }
  if (spec.layer.key_factors) {
    throw Error(fmt::format("--kv '{}': already names a kfactors file", spec.text));
  }
  if (spec.layer.kperm != kernels::ChannelOrder::kAsIs) {
    throw Error(fmt::format(
        "--kv '{}': kperm={} is not calibrated (a factors file holds its channels in the "
        "model's order, and kfactors refuses kperm); give the spec without kperm",
        spec.text, kv::channel_order_name(spec.layer.kperm)));
  }
  return spec.layer;
}

void run_calibrate(const CalibrateOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.threads < 1) throw Error(fmt::format("-t {} must be >= 1", o.threads));
  const kv::CacheSpec spec = kv::parse_cache_spec(o.kv);
  const kv::LayerConfig config = calibrated_config(spec);
  const model::LlamaModel m(model::resolve_model_path(o.model));
  const model::ModelDesc& desc = m.config();
  if (o.ctx <= config.sink || o.ctx > kMaxContextTokens) {
    throw Error(fmt::format("-c {} must exceed the spec's sink of {} tokens and be at most {}",
                            o.ctx, config.sink, kMaxContextTokens));
  }
  const std::vector<int> tokens = tokenize_file(m, o.file);
  int n_chunks = static_cast<int>(tokens.size() / static_cast<size_t>(o.ctx));
  if (o.chunks > 0) n_chunks = std::min(n_chunks, o.chunks);
  if (n_chunks < 1) {
    throw Error(fmt::format("{}: {} tokens do not fill one chunk of -c {} tokens", o.file,
                            tokens.size(), o.ctx));
  }
  const int L = desc.n_layers, H = desc.n_kv_heads, D = desc.head_dim;
  const int kept = o.ctx - config.sink;  // keys per chunk that enter the statistic
  const uint64_t gathered = static_cast<uint64_t>(n_chunks) * kept * L * H * D * sizeof(float);
  check_allocation(gathered, fmt::format("calibrate: {} chunks × {} keys of {} layers × {} KV "
                                         "heads × head_dim {} in f32",
                                         n_chunks, kept, L, H, D));

  // The f32 cache is a copy of what prefill computes; sliding-window layers
  // keep only their window and ignore the config, so their factors stay 1.
  const kv::CacheShape shape = m.cache_shape(o.ctx);
  std::vector<std::vector<float>> keys(static_cast<size_t>(L) * H);  // [layer][head] → [n][D]
  std::vector<float> logits;
  ProgressBar bar("calibrate");
  for (int chunk = 0; chunk < n_chunks; ++chunk) {
    // As `innerq perplexity` cuts its text (tools/eval.h).
    std::vector<int> input(tokens.begin() + static_cast<long>(chunk) * o.ctx,
                           tokens.begin() + static_cast<long>(chunk + 1) * o.ctx);
    if (m.tokenizer().adds_bos()) input[0] = m.tokenizer().bos();
    kv::KvCache cache(shape, kv::parse_cache_spec("f32").layer);
    kv::KvCache* caches[] = {&cache};
    m.prefill(input, caches, /*all_logits=*/false, logits, o.threads);
    for (int l = 0; l < L; ++l) {
      if (shape.window(l) > 0) continue;
      for (int h = 0; h < H; ++h) {
        const std::vector<double> rows = attn::dequantized_keys(cache.layer(l), h);  // [ctx][D]
        std::vector<float>& out = keys[static_cast<size_t>(l) * H + h];
        const size_t at = out.size();
        out.insert(out.end(), rows.begin() + static_cast<long>(config.sink) * D, rows.end());
        if (config.rot_k) {
          kernels::simd::hadamard_rotate(out.data() + at, static_cast<size_t>(kept), D, false);
        }
      }
    }
    bar.update(chunk + 1, n_chunks);
  }
  bar.finish();

  kv::KeyFactors kf;
  kf.model = fmt::format("{}: {}", desc.arch, m.file().get_string("general.name", "-"));
  kf.n_layers = L;
  kf.n_kv_heads = H;
  kf.head_dim = D;
  kf.knorm = config.knorm;
  kf.centered = config.kcenter;
  kf.rotated = config.rot_k;
  kf.n_tokens = static_cast<uint64_t>(n_chunks) * kept;
  kf.factors.assign(static_cast<size_t>(L) * H * D, 1.0f);
  if (kf.centered) kf.means.assign(kf.factors.size(), 0.0f);
  int calibrated_layers = 0;
  for (int l = 0; l < L; ++l) {
    if (shape.window(l) > 0) continue;
    ++calibrated_layers;
    for (int h = 0; h < H; ++h) {
      const std::vector<float>& rows = keys[static_cast<size_t>(l) * H + h];
      const size_t at = (static_cast<size_t>(l) * H + h) * D;
      kv::compute_key_factors(kf.knorm, kf.centered, rows.data(), static_cast<int>(rows.size() / D),
                              D, kf.centered ? &kf.means[at] : nullptr, &kf.factors[at]);
    }
  }
  const size_t bytes = kv::write_key_factors(kf, o.out);
  float f_min = kf.factors[0], f_max = kf.factors[0];
  for (float f : kf.factors) f_min = std::min(f_min, f), f_max = std::max(f_max, f);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (o.json) {
    print_json({{"model", o.model},
                {"calibrated_on", kf.model},
                {"kv", spec.text},
                {"file", o.out},
                {"bytes", bytes},
                {"chunks", n_chunks},
                {"ctx", o.ctx},
                {"sink", config.sink},
                {"tokens_per_head", kf.n_tokens},
                {"layers", L},
                {"calibrated_layers", calibrated_layers},
                {"kv_heads", H},
                {"head_dim", D},
                {"knorm", kv::key_norm_name(kf.knorm)},
                {"kcenter", kf.centered},
                {"rot_k", kf.rotated},
                {"factor_min", f_min},
                {"factor_max", f_max},
                {"seconds", seconds}});
    return;
  }
  fmt::print(
      "calibrated {} ({}) on {}: {} chunks of {} tokens, {} keys per head (the first {} "
      "of each chunk, the sink, left out)\n",
      o.model, kf.model, o.file, n_chunks, o.ctx, kf.n_tokens, config.sink);
  fmt::print("{}{}\n", kv::describe_key_factors(kf),
             calibrated_layers < L
                 ? fmt::format("; {} sliding-window layers (which ignore the config) keep 1",
                               L - calibrated_layers)
                 : "");
  fmt::print("factors {:.3f} .. {:.3f}{}\n", f_min, f_max,
             kf.centered ? fmt::format(", means {:.3f} .. {:.3f}",
                                       *std::min_element(kf.means.begin(), kf.means.end()),
                                       *std::max_element(kf.means.begin(), kf.means.end()))
                         : "");
  fmt::print("wrote {} ({} bytes) in {:.1f} s\n", o.out, bytes, seconds);
  fmt::print("use it with --kv '{}:kfactors={}'\n", spec.text, o.out);
}

}  // namespace

void add_calibrate_command(CLI::App& app) {
  auto o = std::make_shared<CalibrateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate",
      "Compute InnerQ's key mean and factors per layer and KV head from a calibration text\n"
      "and write them to a file for --kv innerq:kfactors=FILE (the same bytes for the same\n"
      "prefix in every sequence). The file holds the statistics of the given --kv's knorm,\n"
      "kcenter and rot; use it with that spec.");
  cmd->add_option("-m,--model", o->model,
                  "smollm2, gemma3-270m, stories260K, or a path to a GGUF file")
      ->required();
  cmd->add_option("-f,--file", o->file, "calibration text file")->required();
  cmd->add_option("-o,--output", o->out, "key factors file to write")->required();
  cmd->add_option("--kv", o->kv, "the innerq spec the factors are for")->capture_default_str();
  cmd->add_option("-c,--ctx", o->ctx, "tokens per chunk (each chunk is its own sequence)")
      ->capture_default_str();
  cmd->add_option("--chunks", o->chunks, "chunks to use (0 = all)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-t,--threads", o->threads, "threads")->capture_default_str();
  cmd->add_flag("--json", o->json, "print one JSON object instead of the summary");
  cmd->callback([o] { run_calibrate(*o); });
}

}  // namespace innerq::tools
