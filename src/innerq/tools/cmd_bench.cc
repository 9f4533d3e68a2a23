// innerq/tools/cmd_bench.cc — `innerq bench attention`: decode attention of
// one layer over synthetic caches, every cache config timed in the same run,
// with bytes read, GB/s against this machine's measured read bandwidth, the
// error against unquantized attention and the speedup over f16.
// `innerq bench decode`: the model decoding a batch of sequences at a given
// context, tokens/s per cache config against f16 in the same run, and the
// process's peak memory growth against the planned cache bytes.
#include <malloc.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "innerq/attn/decode_attention.h"
#include "innerq/base/error.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "innerq/tools/bench_attention.h"
#include "innerq/tools/cli_util.h"
#include "innerq/tools/commands.h"

namespace innerq::tools {

AttentionShape parse_attention_shape(const std::string& text) {
  if (text == "llama3-8b") return {text, 32, 8, 128};
  if (text == "smollm2-135m") return {text, 9, 3, 64};
  if (text == "mha") return {text, 32, 32, 128};
  int hq = 0, hkv = 0, d = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%d:%d:%d%c", &hq, &hkv, &d, &tail) != 3 || hq <= 0 || hkv <= 0 ||
      d <= 0 || hq % hkv != 0 || d > 1024 || hq > 1024) {
    throw Error(fmt::format(
        "--shape '{}': expected llama3-8b, smollm2-135m, mha or HQ:HKV:D with HKV dividing HQ",
        text));
  }
  return {text, hq, hkv, d};
}

void fill_synthetic_kv(int n_tokens, int n_kv_heads, int head_dim, unsigned seed,
                       std::vector<float>& k, std::vector<float>& v) {
  // Outlier channels: a few fixed channels per head scaled ×20, as in real
  // post-RoPE keys; the first tokens are louder (attention sinks).
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const size_t n = static_cast<size_t>(n_tokens) * n_kv_heads * head_dim;
  k.resize(n);
  v.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(i % head_dim);
    const size_t token = i / (static_cast<size_t>(n_kv_heads) * head_dim);
    const bool outlier = c % 37 == 5;
    k[i] = normal(rng) * (outlier ? 20.0f : 1.0f) * (token < 4 ? 3.0f : 1.0f);
    v[i] = normal(rng);
  }
}

double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    norm += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(diff / norm);
}

namespace {

struct BenchCliArgs {
  std::string shape = "llama3-8b";
  std::string contexts = "1024,4096,16384,32768";
  std::string specs = "f16,q8_0,q4_0,kivi,innerq";
  std::string device = "cpu";
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::string seqs = "1";
  int reps = 0;
  int chunk = 0;
  bool json = false;
};

// A comma list of positive counts up to `max` ("1024,4096"); with `k_suffix`
// an item may end in k (×1024). `option` and `what` name it in errors.
std::vector<int> parse_counts(const std::string& text, const char* option, const char* what,
                              long max, bool k_suffix) {
  std::vector<int> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    char* end = nullptr;
    const long n = std::strtol(item.c_str(), &end, 10);
    long factor = 1;
    if (k_suffix && end && (*end == 'k' || *end == 'K')) {
      factor = 1024;
      ++end;
    }
    if (item.empty() || !end || *end != '\0' || n <= 0 || n > max / factor) {
      throw Error(fmt::format("{} '{}': '{}' is not {} between 1 and {}{}", option, text, item,
                              what, max, k_suffix ? " (e.g. 1024,4096 or 16k)" : ""));
    }
    out.push_back(static_cast<int>(n * factor));
    pos = comma + 1;
  }
  return out;
}

// Bytes the bandwidth probe reads: 1 GiB (far past any L3 here), or a
// quarter of the available memory on a smaller machine.
size_t bandwidth_probe_bytes() {
  return static_cast<size_t>(std::min<uint64_t>(
      uint64_t{1} << 30, std::max<uint64_t>(available_memory_bytes() / 4, uint64_t{64} << 20)));
}

// Best-of-three read bandwidth of a bandwidth_probe_bytes() buffer on
// n_threads threads.
double measure_read_bandwidth_gbps(int n_threads) {
  const size_t n = bandwidth_probe_bytes() / sizeof(uint64_t);
  std::vector<uint64_t> buffer(n);
#pragma omp parallel for num_threads(n_threads)
  for (size_t i = 0; i < n; ++i) buffer[i] = i;
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    uint64_t sum = 0;
#pragma omp parallel for num_threads(n_threads) reduction(+ : sum)
    for (size_t i = 0; i < n; ++i) sum += buffer[i];
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (sum == 1) fmt::print(stderr, " ");  // keeps the sum alive
    best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / s / 1e9);
  }
  return best;
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

// Times every cache of one context in interleaved rounds — one call of each
// per round — so that whatever else the machine is doing lands on all of them
// alike: at least 7 rounds and about 0.5 s, or `reps` rounds. Returns the
// per-call wall times in microseconds, [cache][round].
std::vector<std::vector<double>> time_interleaved(const std::vector<const kv::LayerCache*>& caches,
                                                  const std::vector<float>& q, int n_heads,
                                                  int threads, int reps) {
  const attn::DecodeOptions options{threads, false};
  std::vector<float> out(q.size());
  attn::AttentionScratch scratch;  // sized by the first round: the timed calls allocate nothing
  for (const kv::LayerCache* c : caches)
    attn::decode_attention(*c, q.data(), n_heads, out.data(), options, scratch);
  std::vector<std::vector<double>> us(caches.size());
  double total = 0.0;
  for (int round = 0; round < (reps > 0 ? reps : 200); ++round) {
    for (size_t i = 0; i < caches.size(); ++i) {
      const auto start = std::chrono::steady_clock::now();
      attn::decode_attention(*caches[i], q.data(), n_heads, out.data(), options, scratch);
      us[i].push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
              .count());
      total += us[i].back();
    }
    if (reps == 0 && round >= 6 && total > 0.5e6) break;
  }
  return us;
}

// `bench attention --chunk N`: the attention of the last N tokens of a
// cache, appended at once (chunked extend), two ways per round, interleaved
// over the specs: one attn::chunk_attention call (the stored cache read once
// for all N, each token seeing the windows as token-by-token decode did) and
// N decode_attention calls, one per token with n_visible (how extend read
// the cache before: the whole cache per token, and the windows as the chunk
// left them). The ratio is measured in the same run.
int run_bench_chunk_cpu(const BenchAttentionArgs& args, const std::vector<kv::CacheSpec>& specs,
                        double bandwidth) {
  const AttentionShape& s = args.shape;
  const int N = args.chunk;
  if (!args.json) {
    fmt::print("{:<30} {:>7} {:>6} {:>11} {:>13} {:>8} {:>10} {:>8} {:>7}\n", "kv", "ctx", "chunk",
               "us_chunk", "us_per_token", "speedup", "kv_MiB", "GB/s", "of_bw");
  }
  nlohmann::json rows = nlohmann::json::array();
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  const size_t q_row = static_cast<size_t>(s.n_heads) * s.head_dim;
  std::vector<float> q(static_cast<size_t>(N) * q_row), out(q.size());
  for (float& x : q) x = normal(rng);
  for (int ctx : args.contexts) {
    if (ctx <= N) {
      throw Error(
          fmt::format("--ctx {}: must exceed --chunk {} (the chunk is the last tokens)", ctx, N));
    }
    std::vector<float> k, v;
    fill_synthetic_kv(ctx, s.n_kv_heads, s.head_dim, 7 + static_cast<unsigned>(ctx), k, v);
    const kv::CacheShape shape{1, s.n_kv_heads, s.head_dim, ctx};
    const size_t kv_row = static_cast<size_t>(s.n_kv_heads) * s.head_dim;
    std::vector<std::unique_ptr<kv::KvCache>> caches;
    std::vector<kv::ChunkSteps> steps(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      caches.push_back(
          std::make_unique<kv::KvCache>(shape, specs[i].layers(shape.n_layers, shape.head_dim)));
      caches.back()->append(0, k.data(), v.data(), ctx - N);
      caches.back()->append(0, &k[(ctx - N) * kv_row], &v[(ctx - N) * kv_row], N, &steps[i]);
    }
    attn::ChunkScratch chunk_scratch;
    attn::AttentionScratch scratch;
    attn::DecodeOptions options{args.n_threads, false};
    const auto run_chunk = [&](size_t i) {
      attn::chunk_attention(caches[i]->layer(0), steps[i], q.data(), s.n_heads, out.data(), options,
                            chunk_scratch);
    };
    const auto run_tokens = [&](size_t i) {
      for (int t = 0; t < N; ++t) {
        attn::DecodeOptions o = options;
        o.n_visible = ctx - N + t + 1;
        attn::decode_attention(caches[i]->layer(0), &q[t * q_row], s.n_heads, &out[t * q_row], o,
                               scratch);
      }
    };
    for (size_t i = 0; i < specs.size(); ++i) {  // sizes the scratch: timed calls allocate nothing
      run_chunk(i);
      run_tokens(i);
    }
    std::vector<std::vector<double>> chunk_us(specs.size()), token_us(specs.size());
    const auto time_us = [](auto&& f) {
      const auto start = std::chrono::steady_clock::now();
      f();
      return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
          .count();
    };
    double total = 0.0;
    for (int round = 0; round < (args.reps > 0 ? args.reps : 200); ++round) {
      for (size_t i = 0; i < specs.size(); ++i) {
        chunk_us[i].push_back(time_us([&] { run_chunk(i); }));
        token_us[i].push_back(time_us([&] { run_tokens(i); }));
        total += chunk_us[i].back() + token_us[i].back();
      }
      if (args.reps == 0 && round >= 4 && total > 1e6) break;
    }
    for (size_t i = 0; i < specs.size(); ++i) {
      const double tc = median(chunk_us[i]), tt = median(token_us[i]);
      const double bytes = static_cast<double>(caches[i]->memory().total());
      const double gbps = bytes / (tc * 1e-6) / 1e9;
      rows.push_back({{"kv", specs[i].text},
                      {"ctx", ctx},
                      {"chunk", N},
                      {"us_chunk", tc},
                      {"us_per_token_reads", tt},
                      {"speedup", tt / tc},
                      {"rounds", chunk_us[i].size()},
                      {"kv_bytes", static_cast<uint64_t>(bytes)},
                      {"gbps", gbps},
                      {"bandwidth_gbps", bandwidth},
                      {"shape", s.name},
                      {"threads", args.n_threads}});
      if (!args.json) {
        fmt::print(
            "{:<30} {:>7} {:>6} {:>11.1f} {:>13.1f} {:>7.2f}x {:>10.2f} {:>8.1f} {:>6.0f}%\n",
            specs[i].text, ctx, N, tc, tt, tt / tc, bytes / (1 << 20), gbps,
            100.0 * gbps / bandwidth);
        std::fflush(stdout);
      }
    }
  }
  if (args.json) print_json(rows, 2);
  return 0;
}

int run_bench_attention_cpu(const BenchAttentionArgs& args) {
  const AttentionShape& s = args.shape;
  // f16 is always timed: every ratio is measured in the same run.
  std::vector<kv::CacheSpec> specs = args.specs;
  const bool f16_listed = std::any_of(specs.begin(), specs.end(),
                                      [](const kv::CacheSpec& c) { return c.text == "f16"; });
  // f16 goes first: the baseline of every ratio.
  std::stable_partition(specs.begin(), specs.end(),
                        [](const kv::CacheSpec& c) { return c.text == "f16"; });
  if (!f16_listed) specs.insert(specs.begin(), kv::parse_cache_spec("f16"));

  // Everything one context allocates, planned before any of it is: the
  // synthetic K/V and the f32 reference (3 × f32 rows) and each cache.
  for (int ctx : args.contexts) {
    uint64_t bytes =
        uint64_t{3} * 2 * static_cast<uint64_t>(ctx) * s.n_kv_heads * s.head_dim * sizeof(float);
    for (const kv::CacheSpec& spec : specs) {
      bytes += kv::plan_layer_memory(spec.layers(1, s.head_dim)[0], s.n_kv_heads, s.head_dim, ctx)
                   .total();
    }
    check_allocation(bytes, fmt::format("bench attention at --ctx {} ({} KV heads × head_dim {})",
                                        ctx, s.n_kv_heads, s.head_dim));
  }
  const double bandwidth = measure_read_bandwidth_gbps(args.n_threads);
  if (!args.json) {
    fmt::print(
        "{}, one layer: shape {} ({} query heads, {} KV heads, head_dim {}), "
        "{} thread(s)\n",
        args.chunk > 0 ? fmt::format("chunked extend attention of {} tokens", args.chunk)
                       : std::string("decode attention"),
        s.name, s.n_heads, s.n_kv_heads, s.head_dim, args.n_threads);
    fmt::print("memory read bandwidth ({} MiB, {} thread(s)): {:.1f} GB/s\n\n",
               bandwidth_probe_bytes() >> 20, args.n_threads, bandwidth);
  }
  if (args.chunk > 0) return run_bench_chunk_cpu(args, specs, bandwidth);
  if (!args.json) {
    fmt::print("{:<30} {:>7} {:>10} {:>10} {:>8} {:>6} {:>9} {:>8}\n", "kv", "ctx", "us", "kv_MiB",
               "GB/s", "of_bw", "rel_err", "vs_f16");
  }
  nlohmann::json rows = nlohmann::json::array();
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> q(static_cast<size_t>(s.n_heads) * s.head_dim);
  for (float& x : q) x = normal(rng);
  for (int ctx : args.contexts) {
    std::vector<float> k, v;
    fill_synthetic_kv(ctx, s.n_kv_heads, s.head_dim, 7 + static_cast<unsigned>(ctx), k, v);
    const kv::CacheShape shape{1, s.n_kv_heads, s.head_dim, ctx};
    std::vector<float> exact(q.size());
    {
      kv::KvCache f32(shape, kv::parse_cache_spec("f32").layer);
      f32.append(0, k.data(), v.data(), ctx);
      attn::decode_attention(f32.layer(0), q.data(), s.n_heads, exact.data(), {args.n_threads});
    }
    std::vector<std::unique_ptr<kv::KvCache>> caches;
    std::vector<const kv::LayerCache*> layers;
    for (const kv::CacheSpec& spec : specs) {
      caches.push_back(
          std::make_unique<kv::KvCache>(shape, spec.layers(shape.n_layers, shape.head_dim)));
      caches.back()->append(0, k.data(), v.data(), ctx);
      layers.push_back(&caches.back()->layer(0));
    }
    const std::vector<std::vector<double>> us =
        time_interleaved(layers, q, s.n_heads, args.n_threads, args.reps);
    const double f16_us = median(us[0]);  // specs[0] is f16
    for (size_t i = 0; i < specs.size(); ++i) {
      if (i == 0 && !f16_listed) continue;
      const kv::CacheSpec& spec = specs[i];
      std::vector<float> out(q.size());
      attn::decode_attention(*layers[i], q.data(), s.n_heads, out.data(), {args.n_threads});
      const double t = median(us[i]);
      const double bytes = static_cast<double>(caches[i]->memory().total());
      const double gbps = bytes / (t * 1e-6) / 1e9;
      const double err = relative_error(out, exact);
      const double speedup = f16_us / t;
      rows.push_back({{"kv", spec.text},
                      {"ctx", ctx},
                      {"us", t},
                      {"us_min", *std::min_element(us[i].begin(), us[i].end())},
                      {"rounds", us[i].size()},
                      {"kv_bytes", static_cast<uint64_t>(bytes)},
                      {"gbps", gbps},
                      {"rel_err", err},
                      {"speedup_vs_f16", speedup},
                      {"bandwidth_gbps", bandwidth},
                      {"shape", s.name},
                      {"threads", args.n_threads}});
      if (!args.json) {
        fmt::print("{:<30} {:>7} {:>10.1f} {:>10.2f} {:>8.1f} {:>5.0f}% {:>9.4f} {:>7.2f}x\n",
                   spec.text, ctx, t, bytes / (1 << 20), gbps, 100.0 * gbps / bandwidth, err,
                   speedup);
        std::fflush(stdout);
      }
    }
  }
  if (args.json) print_json(rows, 2);
  return 0;
}

// ---------------------------------------------------------------------------
// bench decode
// ---------------------------------------------------------------------------

struct BenchDecodeArgs {
  std::string model = "smollm2";
  std::string batches = "1,4,16";
  std::string contexts = "1024,4096";
  std::string specs = "f16,innerq";
  std::string activations = "int16";
  int steps = 32;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool together = false;
  bool json = false;
};

// This process's resident memory from /proc/self/status, in bytes: VmRSS now
// and VmHWM, its peak since start or since reset_peak_rss().
struct ResidentMemory {
  uint64_t rss = 0, peak = 0;
};

ResidentMemory read_resident_memory() {
  std::ifstream status("/proc/self/status");
  ResidentMemory m;
  std::string key;
  uint64_t kib = 0;
  while (status >> key) {
    if (key == "VmRSS:" && status >> kib) m.rss = kib << 10;
    if (key == "VmHWM:" && status >> kib) m.peak = kib << 10;
  }
  if (m.rss == 0 || m.peak == 0) throw Error("bench decode: /proc/self/status has no VmRSS/VmHWM");
  return m;
}

// Linux resets VmHWM to the current RSS when "5" is written to
// /proc/self/clear_refs. Returns false where that is refused.
bool reset_peak_rss() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

// The bytes a pool for `batch` sequences of `n_tokens` tokens in caches of
// `layers` takes, with those sequences' windows, factors and rings
// (kv::MemoryPlan::bytes: the block pool's own arithmetic): what the memory
// measured below is compared with.
uint64_t planned_cache_bytes(const kv::CacheShape& shape,
                             const std::vector<kv::LayerConfig>& layers, int n_tokens, int batch) {
  return kv::plan_memory(shape, layers).bytes(batch, n_tokens);
}

// The logits of a decode step of `batch` sequences: [batch, n_vocab].
uint64_t logits_bytes(const model::ModelDesc& d, int batch) {
  return static_cast<uint64_t>(d.n_vocab) * static_cast<uint64_t>(batch) * sizeof(float);
}

// B sequences of one cache spec, filled to a context and decoded together.
class DecodeBatch {
 public:
  // Builds `batch` sequences of `layers` in one pool sized (and every page
  // of it written) for ctx + steps + 1 tokens each, and fills each to `ctx`
  // by appending k/v ([ctx, n_kv_heads, head_dim], the same to every layer
  // and sequence: what attention reads costs the same whatever the values).
  // together: the sequences grow in turn, kTogetherChunk tokens each, so
  // that their blocks interleave in the pool as when a server's batch grows
  // step by step; otherwise one sequence is filled after another (each
  // one's blocks consecutive).
  DecodeBatch(const model::LlamaModel& m, const std::vector<kv::LayerConfig>& layers, int batch,
              int ctx, int steps, const std::vector<float>& k, const std::vector<float>& v,
              bool together)
      : tokens_(static_cast<size_t>(batch), std::max(m.tokenizer().bos(), 0)),
        workspace_(m, batch, batch) {
    const model::ModelDesc& d = m.config();
    const kv::CacheShape shape = m.cache_shape(ctx + steps + 1);
    pool_ = kv::KvPool::for_sequences(shape, layers, batch, ctx + steps + 1, /*prefault=*/true);
    const size_t row = static_cast<size_t>(d.n_kv_heads) * d.head_dim;
    constexpr int kFillChunk = 256;  // tokens appended per call: bounds the append's own buffers
    constexpr int kTogetherChunk = 16;
    for (int b = 0; b < batch; ++b) {
      owned_.push_back(std::make_unique<kv::KvCache>(pool_));
      caches_.push_back(owned_.back().get());
    }
    const int chunk = together ? kTogetherChunk : kFillChunk;
    const auto fill = [&](kv::KvCache& c, int t) {
      for (int l = 0; l < d.n_layers; ++l) {
        c.append(l, k.data() + t * row, v.data() + t * row, std::min(chunk, ctx - t));
      }
    };
    if (together) {
      for (int t = 0; t < ctx; t += chunk) {
        for (kv::KvCache* c : caches_) fill(*c, t);
      }
    } else {
      for (kv::KvCache* c : caches_) {
        for (int t = 0; t < ctx; t += chunk) fill(*c, t);
      }
    }
  }

  // Sizes the workspace for decoding these caches on `threads` threads
  // (LlamaModel::reserve_decode): its bytes are then the steps' buffers.
  void reserve(const model::LlamaModel& m, int threads) {
    m.reserve_decode(caches_, threads, workspace_);
  }
  uint64_t workspace_bytes() const { return workspace_.bytes(); }

  // One decode step of every sequence; each next token is its greedy choice.
  void step(const model::LlamaModel& m, int threads) {
    m.decode(tokens_, caches_, logits_, threads, workspace_);
    const size_t V = logits_.size() / tokens_.size();
    for (size_t b = 0; b < tokens_.size(); ++b) {
      const float* r = logits_.data() + b * V;
      tokens_[b] = static_cast<int>(std::max_element(r, r + V) - r);
    }
  }

  uint64_t pool_bytes() const { return pool_->bytes(); }
  uint64_t reserved_bytes() const {  // Σ KvCache::reserved_bytes(): blocks, windows, factors
    uint64_t bytes = 0;
    for (const kv::KvCache* c : caches_) bytes += c->reserved_bytes();
    return bytes;
  }
  uint64_t kv_bytes() const {
    uint64_t bytes = 0;
    for (const kv::KvCache* c : caches_) bytes += c->memory().total();
    return bytes;
  }

 private:
  std::shared_ptr<kv::KvPool> pool_;
  std::vector<std::unique_ptr<kv::KvCache>> owned_;
  std::vector<kv::KvCache*> caches_;
  std::vector<int> tokens_;    // [batch] the next token of each sequence
  std::vector<float> logits_;  // [batch, n_vocab]
  model::LlamaModel::Workspace workspace_;
};

// Tokens of the warm-up sequence of each spec: past every window, so that
// it quantizes and attends to quantized storage as the measured runs do.
constexpr int kWarmTokens = 640;

struct MemoryRun {
  uint64_t kv_bytes = 0;          // memory().total() of every cache after the step
  uint64_t pool_bytes = 0;        // the shared pool's blocks (KvPool::bytes)
  uint64_t reserved = 0;          // Σ KvCache::reserved_bytes()
  uint64_t planned = 0;           // planned_cache_bytes + workspace + logits
  uint64_t peak_growth = 0;       // VmHWM while decoding − VmRSS before the caches were built
  uint64_t fill_peak_growth = 0;  // VmHWM while building and filling − VmRSS before
  uint64_t held_growth = 0;       // VmRSS after − VmRSS before
  uint64_t trimmed_growth = 0;    // the same after malloc_trim (freed heap pages returned)
  bool peak_reset = false;        // whether VmHWM could be reset before the caches were built
  uint64_t workspace = 0;         // LlamaModel::Workspace::bytes() as reserved, in the plan
  uint64_t workspace_after = 0;   // the same after the step (equal unless a step grew it)
};

// The process's memory growth while one spec's batch is built, filled and
// decoded one step, against its plan; alone, nothing else allocated meanwhile.
MemoryRun measure_memory(const model::LlamaModel& m, const kv::CacheSpec& spec, int batch, int ctx,
                         int steps, const std::vector<float>& k, const std::vector<float>& v,
                         int threads, bool together) {
  const model::ModelDesc& d = m.config();
  const std::vector<kv::LayerConfig> layers = spec.layers(d.n_layers, d.head_dim);
  MemoryRun run;
  run.planned =
      planned_cache_bytes(m.cache_shape(ctx + steps + 1), layers, ctx + steps + 1, batch) +
      logits_bytes(d, batch);
  malloc_trim(0);  // what earlier runs freed goes back to the system first
  run.peak_reset = reset_peak_rss();
  const ResidentMemory before = read_resident_memory();
  DecodeBatch caches(m, layers, batch, ctx, steps, k, v, together);
  // The workspace as sized for these caches before any step: its bytes
  // join the plan, and the steps must hold no more.
  caches.reserve(m, threads);
  run.workspace = caches.workspace_bytes();
  run.planned += run.workspace;
  // Filling appends 256 tokens at a time; the first of them holds InnerQ's
  // first flush and takes a buffer of its keys until it ends: heap the
  // decode never uses again. The peak that counts is the decode's, measured
  // from here, after giving that heap back.
  const ResidentMemory filled = read_resident_memory();
  run.fill_peak_growth = filled.peak > before.rss ? filled.peak - before.rss : 0;
  malloc_trim(0);
  run.peak_reset = run.peak_reset && reset_peak_rss();
  caches.step(m, threads);
  run.kv_bytes = caches.kv_bytes();
  run.pool_bytes = caches.pool_bytes();
  run.reserved = caches.reserved_bytes();
  run.workspace_after = caches.workspace_bytes();
  const ResidentMemory after = read_resident_memory();
  run.peak_growth = after.peak > before.rss ? after.peak - before.rss : 0;
  run.held_growth = after.rss > before.rss ? after.rss - before.rss : 0;
  malloc_trim(0);
  const ResidentMemory trimmed = read_resident_memory();
  run.trimmed_growth = trimmed.rss > before.rss ? trimmed.rss - before.rss : 0;
  return run;
}

// Seconds of `steps` decode steps per spec, the specs' batches built side by
// side and stepped in turn (one step of each per round), so that whatever
// else the machine does lands on all of them alike. One untimed step each
// first.
std::vector<double> time_decode_interleaved(const model::LlamaModel& m,
                                            const std::vector<kv::CacheSpec>& specs, int batch,
                                            int ctx, int steps, const std::vector<float>& k,
                                            const std::vector<float>& v, int threads,
                                            bool together) {
  std::vector<std::unique_ptr<DecodeBatch>> batches;
  for (const kv::CacheSpec& spec : specs) {
    batches.push_back(
        std::make_unique<DecodeBatch>(m, spec.layers(m.config().n_layers, m.config().head_dim),
                                      batch, ctx, steps, k, v, together));
    batches.back()->reserve(m, threads);
    batches.back()->step(m, threads);
  }
  std::vector<double> seconds(specs.size(), 0.0);
  for (int s = 0; s < steps; ++s) {
    for (size_t i = 0; i < batches.size(); ++i) {
      const auto start = std::chrono::steady_clock::now();
      batches[i]->step(m, threads);
      seconds[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  }
  return seconds;
}

int run_bench_decode(const BenchDecodeArgs& args) {
  const std::vector<int> batches = parse_counts(args.batches, "-b", "a batch size", 4096, false);
  const std::vector<int> contexts =
      parse_counts(args.contexts, "--ctx", "a token count", kMaxContextTokens, true);
  if (args.steps < 1 || args.steps > 1 << 20) {
    throw Error(fmt::format("-n {} must be between 1 and {}", args.steps, 1 << 20));
  }
  std::vector<kv::CacheSpec> specs = kv::parse_cache_spec_list(args.specs);
  const bool f16_listed = std::any_of(specs.begin(), specs.end(),
                                      [](const kv::CacheSpec& c) { return c.text == "f16"; });
  std::stable_partition(specs.begin(), specs.end(),
                        [](const kv::CacheSpec& c) { return c.text == "f16"; });
  if (!f16_listed) specs.insert(specs.begin(), kv::parse_cache_spec("f16"));

  const model::LlamaModel m(model::resolve_model_path(args.model),
                            parse_activations(args.activations));
  const model::ModelDesc& d = m.config();
  for (int ctx : contexts) {
    checked_token_sum(ctx, int64_t{args.steps} + 1, kMaxContextTokens, "--ctx plus -n");
    for (int batch : batches) {
      // Every spec's batch is alive at once while the steps are timed.
      const kv::CacheShape shape = m.cache_shape(ctx + args.steps + 1);
      uint64_t bytes = 0;
      for (const kv::CacheSpec& spec : specs)
        bytes += planned_cache_bytes(shape, spec.layers(d.n_layers, d.head_dim),
                                     ctx + args.steps + 1, batch);
      check_allocation(bytes, fmt::format("bench decode: {} sequences of {} tokens for each of {} "
                                          "specs",
                                          batch, ctx, specs.size()));
    }
  }
  // Weights mapped from the file (INNERQ_MMAP=1, or no huge pages) become
  // resident as they are read: one decode step first touches every page of
  // them, so that the memory measured later is the caches' own.
  {
    kv::KvCache warm(m.cache_shape(2), kv::parse_cache_spec("f16").layer);
    kv::KvCache* caches[] = {&warm};
    std::vector<float> logits;
    m.decode(std::vector<int>{0}, caches, logits, args.threads);
  }
  if (!args.json) {
    fmt::print(
        "decode: {} ({}, {} layers, {} KV heads, head_dim {}), {} activations, {} thread(s), {} "
        "timed steps after 1 untimed, the specs' batches stepped in turn\n",
        args.model, d.arch, d.n_layers, d.n_kv_heads, d.head_dim, args.activations, args.threads,
        args.steps);
    fmt::print(
        "caches filled to ctx with synthetic K/V ({}), then the model decodes every sequence "
        "of the batch per step\n",
        args.together ? "together, 16 tokens per sequence in turn: blocks interleaved"
                      : "one sequence after another: blocks consecutive");
    fmt::print(
        "plan: the pool and windows (kv::MemoryPlan::bytes) for batch x (ctx+n+1) tokens plus "
        "the decode workspace sized for those caches (LlamaModel::reserve_decode) and the "
        "logits;\npeak: VmHWM during a decode step of that spec's batch alone "
        "(reset after "
        "filling the caches and returning freed heap) minus VmRSS before the caches were "
        "built\n\n");
    fmt::print("{:<24} {:>5} {:>6} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>8}\n", "kv", "batch",
               "ctx", "tok/s", "ms/step", "vs_f16", "kv_MiB", "plan_MiB", "peak_MiB", "vs_plan");
  }
  nlohmann::json rows = nlohmann::json::array();
  std::vector<float> k, v;
  for (int ctx : contexts) {
    fill_synthetic_kv(ctx, d.n_kv_heads, d.head_dim, 7 + static_cast<unsigned>(ctx), k, v);
    // Each spec fills and decodes one short sequence first, so that the
    // program's own code for it (quantize, flush, attention kernels: up to
    // 1 MiB of pages of the binary) is resident before memory is measured:
    // what is measured is then the caches and buffers the plan names.
    for (const kv::CacheSpec& spec : specs) {
      DecodeBatch(m, spec.layers(d.n_layers, d.head_dim), 1, std::min(ctx, kWarmTokens), 1, k, v,
                  args.together)
          .step(m, args.threads);
    }
    for (int batch : batches) {
      std::vector<MemoryRun> memory;
      for (const kv::CacheSpec& spec : specs)
        memory.push_back(
            measure_memory(m, spec, batch, ctx, args.steps, k, v, args.threads, args.together));
      const std::vector<double> seconds = time_decode_interleaved(
          m, specs, batch, ctx, args.steps, k, v, args.threads, args.together);
      const double f16_tps = static_cast<double>(batch) * args.steps / seconds[0];
      for (size_t i = 0; i < specs.size(); ++i) {
        const MemoryRun& r = memory[i];
        const double tps = static_cast<double>(batch) * args.steps / seconds[i];
        if (i == 0 && !f16_listed) continue;
        const double vs_plan = 100.0 * (static_cast<double>(r.peak_growth) - r.planned) / r.planned;
        rows.push_back({{"kv", specs[i].text},
                        {"batch", batch},
                        {"ctx", ctx},
                        {"steps", args.steps},
                        {"tokens_per_s", tps},
                        {"ms_per_step", 1e3 * seconds[i] / args.steps},
                        {"speedup_vs_f16", tps / f16_tps},
                        {"kv_bytes", r.kv_bytes},
                        {"planned_bytes", r.planned},
                        {"workspace_bytes", r.workspace},
                        {"workspace_grew_bytes", r.workspace_after - r.workspace},
                        {"pool_bytes", r.pool_bytes},
                        {"sequences_reserved_bytes", r.reserved},
                        {"peak_rss_growth_bytes", r.peak_growth},
                        {"fill_peak_rss_growth_bytes", r.fill_peak_growth},
                        {"rss_growth_bytes", r.held_growth},
                        {"rss_growth_trimmed_bytes", r.trimmed_growth},
                        {"peak_vs_plan_pct", vs_plan},
                        {"peak_reset", r.peak_reset},
                        {"together", args.together},
                        {"model", args.model},
                        {"activations", args.activations},
                        {"threads", args.threads}});
        if (!args.json) {
          constexpr double kMiB = 1 << 20;
          fmt::print(
              "{:<24} {:>5} {:>6} {:>9.1f} {:>8.2f} {:>6.2f}x {:>9.1f} {:>9.1f} {:>9.1f} "
              "{:>+7.1f}%{}{}\n",
              specs[i].text, batch, ctx, tps, 1e3 * seconds[i] / args.steps, tps / f16_tps,
              r.kv_bytes / kMiB, r.planned / kMiB, r.peak_growth / kMiB, vs_plan,
              r.peak_reset ? "" : " (peak not reset)",
              r.workspace_after == r.workspace
                  ? ""
                  : fmt::format(" (a step grew the workspace by {} bytes)",
                                r.workspace_after - r.workspace));
          std::fflush(stdout);
        }
      }
    }
  }
  if (args.json) print_json(rows, 2);
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks (speed lives here, not in tests)");
  bench->require_subcommand(1);
  auto args = std::make_shared<BenchCliArgs>();
  CLI::App* attention = bench->add_subcommand(
      "attention",
      "Time decode attention of one layer over synthetic caches (keys with outlier channels)\n"
      "for each cache config and context length. Prints microseconds per call (median),\n"
      "cache bytes, bytes read per second against this machine's measured read bandwidth,\n"
      "relative error against unquantized f32 attention, and the speedup over f16 measured\n"
      "in the same run.");
  attention
      ->add_option("--shape", args->shape,
                   "llama3-8b (32/8/128), smollm2-135m (9/3/64), mha (32/32/128) or HQ:HKV:D")
      ->capture_default_str();
  attention
      ->add_option("--ctx", args->contexts, "Comma-separated context lengths in tokens (16k ok)")
      ->capture_default_str();
  attention->add_option("--kv", args->specs, "Comma-separated cache specs (f16 is always timed)")
      ->capture_default_str();
  attention->add_option("-t,--threads", args->threads, "CPU threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  attention->add_option("--device", args->device, "cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  attention
      ->add_option("--seqs", args->seqs,
                   "Comma-separated sequences per call (cuda), e.g. 1,8; one set of caches "
                   "serves every count")
      ->capture_default_str();
  attention
      ->add_option("--reps", args->reps,
                   "Timed rounds, each calling every cache once (0: at least 7 rounds and 0.5 s)")
      ->check(CLI::Range(0, 100000));
  attention
      ->add_option("--chunk", args->chunk,
                   "Time chunked extend instead (CPU): attention of the last N tokens of each "
                   "cache, appended at once, in one chunk_attention call vs N decode calls")
      ->check(CLI::Range(0, 1 << 16));
  attention->add_flag("--json", args->json, "Print a JSON array of rows");
  attention->callback([args] {
    BenchAttentionArgs a;
    a.shape = parse_attention_shape(args->shape);
    a.contexts = parse_counts(args->contexts, "--ctx", "a token count", 1 << 22, true);
    a.specs = kv::parse_cache_spec_list(args->specs);
    a.n_threads = args->threads;
    a.n_seqs = parse_counts(args->seqs, "--seqs", "a sequence count", 1024, false);
    a.reps = args->reps;
    a.chunk = args->chunk;
    a.json = args->json;
    if (a.chunk > 0 && args->device == "cuda") {
      throw Error("bench attention: --chunk times the CPU path (leave out --device cuda)");
    }
    const int code =
        args->device == "cuda" ? run_bench_attention_cuda(a) : run_bench_attention_cpu(a);
    if (code != 0) throw CLI::RuntimeError(code);
  });

  auto dargs = std::make_shared<BenchDecodeArgs>();
  CLI::App* decode = bench->add_subcommand(
      "decode",
      "Time the model decoding a batch of sequences at a context length, for each cache\n"
      "config: tokens/s (batch x steps / time), ms per step and the ratio to f16 measured in\n"
      "the same run. Caches are filled with synthetic K/V (attention costs the same whatever\n"
      "the values). Also the process's peak memory growth while the caches are built and\n"
      "decoded, against the planned cache bytes plus the decode buffers.");
  decode
      ->add_option("-m,--model", dargs->model,
                   "smollm2, gemma3-270m, stories260K, or a path to a GGUF file")
      ->capture_default_str();
  add_activations_option(decode, &dargs->activations);
  decode->add_option("-b,--batch", dargs->batches, "Comma-separated batch sizes (sequences)")
      ->capture_default_str();
  decode->add_option("--ctx", dargs->contexts, "Comma-separated context lengths in tokens (4k ok)")
      ->capture_default_str();
  decode->add_option("--kv", dargs->specs, "Comma-separated cache specs (f16 is always timed)")
      ->capture_default_str();
  decode->add_option("-n,--steps", dargs->steps, "Timed decode steps")->capture_default_str();
  decode->add_option("-t,--threads", dargs->threads, "CPU threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  decode->add_flag("--together", dargs->together,
                   "Fill the batch's sequences in turn, 16 tokens each, so their blocks interleave "
                   "in the pool (a served batch growing together); default: one after another");
  decode->add_flag("--json", dargs->json, "Print a JSON array of rows");
  decode->callback([dargs] {
    const int code = run_bench_decode(*dargs);
    if (code != 0) throw CLI::RuntimeError(code);
  });
}

}  // namespace innerq::tools
