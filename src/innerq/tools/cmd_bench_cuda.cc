// innerq/tools/cmd_bench_cuda.cc — `innerq bench attention --device cuda`:
// the CPU bench's rows (kv, ctx, seqs, us, kv_bytes, gbps, rel_err against
// exact attention, speedup_vs_f16) for the fused CUDA kernels and the cuBLAS
// two-GEMM f16 baseline, plus the speedup over that baseline and over the
// KIVI kernel. Caches are built on the CPU (kv::KvCache) from synthetic K/V
// and uploaded; n_seqs sequences of the same length run in one launch, for
// each count asked for (the caches are built once, for the largest). Every
// row's rel_err is checked against a tolerance (tolerance_from_cpu); a row
// beyond it is reported as wrong, without its timing, and the command exits
// with status 1.
#include <fmt/core.h>
#include <fmt/ranges.h>

#include "innerq/tools/bench_attention.h"
#include "innerq/tools/cli_util.h"

#ifdef INNERQ_HAVE_CUDA
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "innerq/attn/cuda/device_attention.h"
#include "innerq/attn/decode_attention.h"
#include "innerq/base/error.h"
#include "innerq/base/fp16.h"
#include "innerq/kv/kv_cache.h"
#endif

namespace innerq::tools {

#ifndef INNERQ_HAVE_CUDA

int run_bench_attention_cuda(const BenchAttentionArgs&) {
  fmt::print(
      stderr,
      "innerq: error: this innerq was built without CUDA (configure with -DINNERQ_CUDA=ON)\n");
  return 2;
}

#else

namespace {

namespace cu = attn::cuda;

// The sequences of one context length: synthetic K/V, queries and the exact
// attention output (double arithmetic on the f32 K/V), [n_seqs][n_heads][D].
struct Workload {
  std::vector<std::vector<float> > k, v;  // [seq]: [ctx][n_kv_heads][D]
  std::vector<float> q, exact;
};

// fill_synthetic_kv's distribution (gaussian, key channels c % 37 == 5 ×20,
// the first 4 tokens' keys ×3), drawn in blocks of 1024 tokens with one
// generator each so that all threads work on a 128k-token sequence.
void fill_synthetic_kv_parallel(int n_tokens, int n_kv_heads, int head_dim, unsigned seed,
                                std::vector<float>& k, std::vector<float>& v) {
  constexpr int kBlockTokens = 1024;
  const size_t row = static_cast<size_t>(n_kv_heads) * head_dim;
  k.resize(row * n_tokens);
  v.resize(row * n_tokens);
  const int n_blocks = (n_tokens + kBlockTokens - 1) / kBlockTokens;
#pragma omp parallel for schedule(dynamic, 1)
  for (int b = 0; b < n_blocks; ++b) {
    std::mt19937 rng(seed * 7919u + static_cast<unsigned>(b));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int t_end = std::min(n_tokens, (b + 1) * kBlockTokens);
    for (size_t i = row * b * kBlockTokens; i < row * t_end; ++i) {
      const int c = static_cast<int>(i % head_dim);
      const size_t token = i / row;
      k[i] = normal(rng) * (c % 37 == 5 ? 20.0f : 1.0f) * (token < 4 ? 3.0f : 1.0f);
      v[i] = normal(rng);
    }
  }
}

// Exact decode attention of query heads [n_heads][D] over K/V [n][H_kv][D],
// one (query head) per task, double accumulation.
void exact_attention(const AttentionShape& s, int n, const std::vector<float>& k,
                     const std::vector<float>& v, const float* q, float* out) {
  const int D = s.head_dim, group = s.n_heads / s.n_kv_heads;
  const size_t row = static_cast<size_t>(s.n_kv_heads) * D;
#pragma omp parallel for schedule(dynamic, 1)
  for (int h = 0; h < s.n_heads; ++h) {
    const size_t kv = static_cast<size_t>(h / group) * D;
    const float* qh = q + static_cast<size_t>(h) * D;
    std::vector<double> scores(static_cast<size_t>(n));
    double m = -1e300;
    for (int t = 0; t < n; ++t) {
      double dot = 0.0;
      for (int c = 0; c < D; ++c) dot += static_cast<double>(qh[c]) * k[t * row + kv + c];
      scores[static_cast<size_t>(t)] = dot / std::sqrt(static_cast<double>(D));
      m = std::max(m, scores[static_cast<size_t>(t)]);
    }
    std::vector<double> acc(static_cast<size_t>(D), 0.0);
    double l = 0.0;
    for (int t = 0; t < n; ++t) {
      const double p = std::exp(scores[static_cast<size_t>(t)] - m);
      l += p;
      for (int c = 0; c < D; ++c) acc[static_cast<size_t>(c)] += p * v[t * row + kv + c];
    }
    for (int c = 0; c < D; ++c)
      out[static_cast<size_t>(h) * D + c] = static_cast<float>(acc[c] / l);
  }
}

Workload make_workload(const AttentionShape& s, int ctx, int n_seqs) {
  Workload w;
  w.k.resize(static_cast<size_t>(n_seqs));
  w.v.resize(static_cast<size_t>(n_seqs));
  const size_t per_seq = static_cast<size_t>(s.n_heads) * s.head_dim;
  w.q.resize(per_seq * n_seqs);
  w.exact.resize(w.q.size());
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (float& x : w.q) x = normal(rng);
  for (int q = 0; q < n_seqs; ++q) {
    const size_t i = static_cast<size_t>(q);
    fill_synthetic_kv_parallel(ctx, s.n_kv_heads, s.head_dim,
                               7 + static_cast<unsigned>(ctx + 1000 * q), w.k[i], w.v[i]);
    exact_attention(s, ctx, w.k[i], w.v[i], w.q.data() + i * per_seq, w.exact.data() + i * per_seq);
  }
  return w;
}

// One cache per sequence, built in parallel; layers[q] is sequence q's layer.
struct Caches {
  std::vector<std::unique_ptr<kv::KvCache> > caches;
  std::vector<const kv::LayerCache*> layers;
};

Caches build_caches(const AttentionShape& s, int ctx, const Workload& w,
                    const kv::LayerConfig& config) {
  const int n = static_cast<int>(w.k.size());
  Caches c;
  c.caches.resize(w.k.size());
#pragma omp parallel for
  for (int q = 0; q < n; ++q) {
    const size_t i = static_cast<size_t>(q);
    c.caches[i] =
        std::make_unique<kv::KvCache>(kv::CacheShape{1, s.n_kv_heads, s.head_dim, ctx}, config);
    c.caches[i]->append(0, w.k[i].data(), w.v[i].data(), ctx);
  }
  for (const auto& cache : c.caches) c.layers.push_back(&cache->layer(0));
  return c;
}

// The CPU decode (attn::decode_attention) over the same caches, [n_seqs][n_heads][D].
std::vector<float> cpu_decode(const AttentionShape& s, const Caches& c, const Workload& w,
                              int n_threads) {
  const size_t per_seq = static_cast<size_t>(s.n_heads) * s.head_dim;
  std::vector<float> out(w.q.size());
  for (size_t i = 0; i < c.layers.size(); ++i) {
    attn::decode_attention(*c.layers[i], w.q.data() + i * per_seq, s.n_heads,
                           out.data() + i * per_seq, {n_threads});
  }
  return out;
}

// How far a GPU output may be from exact attention: the CPU decode of the
// same caches computes the same function (its error is the cache's
// quantization and f16 rounding), and the GPU adds its own rounding, which
// tests/cuda bounds element by element: for InnerQ the int8 query (2^-8 of
// each 32-channel chunk's largest term) and u8 weights (2^-9), for every
// kernel f32 sums; at 2–4-bit K/V each is far below the quantization error,
// so half of the CPU's error again covers them, and 2^-10 covers the f16
// rows, whose CPU error is itself near f16 rounding (2^-11). A row beyond
// this bound is a wrong kernel, not a slow one.
double tolerance_from_cpu(double cpu_rel_err) {
  return 1.5 * cpu_rel_err + std::ldexp(1.0, -10);
}

// The cuBLAS baseline also rounds the query to f16 (the fused kernels take
// it in f32). That perturbs each score by at most 2^-11·Σ_c|q_c·k_c|/sqrt(D),
// the same bound as the f16 rounding of the keys, so its error is at most
// the f16 cache's counted twice.
double cublas_tolerance_from_cpu(double f16_cpu_rel_err) {
  return tolerance_from_cpu(2.0 * f16_cpu_rel_err);
}

// ‖got − want‖ / ‖want‖ over the first n elements.
double prefix_error(const std::vector<float>& got, const std::vector<float>& want, size_t n) {
  return relative_error(std::vector<float>(got.begin(), got.begin() + static_cast<ptrdiff_t>(n)),
                        std::vector<float>(want.begin(), want.begin() + static_cast<ptrdiff_t>(n)));
}

// Median microseconds of enqueue(); reps = 0 picks enough repetitions for
// ~0.3 s (10 to 1000).
double time_us(const std::function<void()>& enqueue, int reps) {
  if (reps == 0) {
    const double probe_ms = cu::median_time_ms(enqueue, 3);
    reps = static_cast<int>(std::clamp(300.0 / std::max(probe_ms, 1e-3), 10.0, 1000.0));
  }
  return 1e3 * cu::median_time_ms(enqueue, reps);
}

struct Measured {
  double us = 0.0;
  size_t kv_bytes = 0;
  double rel_err = 0.0;
  int chunk = 0;
};

// The first n_seqs sequences of `caches`, decoded in one launch.
Measured run_fused(const AttentionShape& s, const Caches& caches, const Workload& w, int n_seqs,
                   int reps) {
  const size_t n = static_cast<size_t>(n_seqs) * s.n_heads * s.head_dim;
  cu::DeviceLayerBatch batch({caches.layers.begin(), caches.layers.begin() + n_seqs});
  const cu::DeviceBuffer q(w.q.data(), n * sizeof(float));
  const cu::DeviceBuffer out(n * sizeof(float));
  const double us =
      time_us([&] { batch.decode(q.as<const float>(), s.n_heads, out.as<float>()); }, reps);
  std::vector<float> got(n);
  out.download(got.data(), n * sizeof(float));
  return {us, batch.kv_bytes(), prefix_error(got, w.exact, n), batch.chunk_tokens()};
}

Measured run_cublas(const AttentionShape& s, const Caches& f16, const Workload& w, int n_seqs,
                    int reps) {
  const size_t n = static_cast<size_t>(n_seqs) * s.n_heads * s.head_dim;
  cu::CublasF16Batch batch({f16.layers.begin(), f16.layers.begin() + n_seqs});
  std::vector<f16_bits> q16(n);
  for (size_t i = 0; i < n; ++i) q16[i] = f32_to_f16(w.q[i]);
  const cu::DeviceBuffer q(q16.data(), n * sizeof(f16_bits));
  const cu::DeviceBuffer out(n * sizeof(float));
  const double us =
      time_us([&] { batch.decode(q.as<const uint16_t>(), s.n_heads, out.as<float>()); }, reps);
  std::vector<float> got(n);
  out.download(got.data(), n * sizeof(float));
  size_t bytes = 0;
  for (int i = 0; i < n_seqs; ++i) bytes += f16.layers[static_cast<size_t>(i)]->memory().total();
  return {us, bytes, prefix_error(got, w.exact, n), 0};
}

// KIVI at the same bit width as an InnerQ config when K and V agree,
// otherwise at the lower of the two (K3V2 → KIVI-2, which reads fewer bytes,
// so the ratio understates InnerQ).
kv::LayerConfig kivi_at_equal_bits(const kv::LayerConfig& innerq) {
  kv::LayerConfig c = kv::parse_cache_spec("kivi").layer;
  c.k_bits = c.v_bits = std::min(innerq.k_bits, innerq.v_bits);
  return c;
}

bool is_plain_kivi(const kv::LayerConfig& c) {
  const kv::LayerConfig kivi = kv::parse_cache_spec("kivi").layer;
  return c.kind == kv::CacheKind::kKivi && c.group == kivi.group && c.recent == kivi.recent;
}

}  // namespace

int run_bench_attention_cuda(const BenchAttentionArgs& args) {
  std::string why;
  if (!cu::device_available(&why)) {
    fmt::print(stderr, "innerq: error: no usable CUDA device: {}\n", why);
    return 2;
  }
  const AttentionShape& s = args.shape;
  std::vector<int> counts = args.n_seqs;
  std::sort(counts.begin(), counts.end());
  counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
  const int max_seqs = counts.back();
  const size_t per_seq = static_cast<size_t>(s.n_heads) * s.head_dim;
  const cu::DeviceInfo device = cu::device_info();
  const double copy_gbps = cu::copy_bandwidth_gbps(size_t{1} << 30);
  // With --json the table goes to stderr as rows finish, the JSON to stdout at the end.
  std::FILE* table = args.json ? stderr : stdout;
  fmt::print(table,
             "decode attention, one layer, CUDA: shape {} ({} query heads, {} KV heads, "
             "head_dim {}), {} sequence(s) per launch\n",
             s.name, s.n_heads, s.n_kv_heads, s.head_dim, fmt::join(counts, " or "));
  fmt::print(table,
             "device: {} ({} SMs, {:.0f} GiB); cudaMemcpy D2D bandwidth (1 GiB, read + "
             "write): {:.1f} GB/s\n"
             "rel_err: against exact attention on the f32 K/V; tol: 1.5 x the CPU decode's "
             "rel_err on the same cache + 2^-10 (cuBLAS: its f16 query counted too)\n\n",
             device.name, device.sm_count, device.memory_gib, copy_gbps);
  fmt::print(table,
             "{:<30} {:>7} {:>4} {:>5} {:>9} {:>9} {:>8} {:>6} {:>8} {:>8} {:>7} {:>9} {:>7}\n",
             "kv", "ctx", "seqs", "chunk", "us", "kv_MiB", "GB/s", "of_bw", "rel_err", "tol",
             "vs_f16", "vs_cublas", "vs_kivi");
  std::fflush(table);
  // f16 is always timed, first: every ratio is measured in the same run.
  std::vector<kv::CacheSpec> specs = args.specs;
  const auto is_f16 = [](const kv::CacheSpec& c) { return c.text == "f16"; };
  const bool f16_listed = std::any_of(specs.begin(), specs.end(), is_f16);
  specs.erase(std::remove_if(specs.begin(), specs.end(), is_f16), specs.end());
  specs.insert(specs.begin(), kv::parse_cache_spec("f16"));

  nlohmann::json rows = nlohmann::json::array();
  std::vector<std::string> problems;
  auto add_row = [&](const std::string& kv_text, int ctx, int n_seqs, const Measured& m, double tol,
                     double f16_us, double cublas_us, std::optional<double> vs_kivi) {
    const double gbps = static_cast<double>(m.kv_bytes) / (m.us * 1e-6) / 1e9;
    const bool ok = m.rel_err <= tol;  // false for NaN too
    rows.push_back({{"kv", kv_text},
                    {"ctx", ctx},
                    {"seqs", n_seqs},
                    {"chunk", m.chunk},
                    {"us", m.us},
                    {"kv_bytes", static_cast<uint64_t>(m.kv_bytes)},
                    {"gbps", gbps},
                    {"rel_err", m.rel_err},
                    {"tolerance", tol},
                    {"ok", ok},
                    {"speedup_vs_f16", f16_us / m.us},
                    {"speedup_vs_cublas_f16", cublas_us / m.us},
                    {"speedup_vs_kivi", vs_kivi ? nlohmann::json(*vs_kivi) : nlohmann::json()},
                    {"copy_bandwidth_gbps", copy_gbps},
                    {"shape", s.name},
                    {"device", device.name}});
    if (!ok) {
      // A wrong result is not a speed: no timing columns for it.
      problems.push_back(fmt::format("{} ctx {} seqs {}: rel_err {:.3g} exceeds tolerance {:.3g}",
                                     kv_text, ctx, n_seqs, m.rel_err, tol));
      fmt::print(table, "{:<30} {:>7} {:>4} {:>5}  WRONG: rel_err {:.4g} > tol {:.4g}\n", kv_text,
                 ctx, n_seqs, m.chunk, m.rel_err, tol);
    } else {
      fmt::print(table,
                 "{:<30} {:>7} {:>4} {:>5} {:>9.1f} {:>9.2f} {:>8.1f} {:>5.0f}% {:>8.5f} {:>8.5f} "
                 "{:>6.2f}x {:>8.2f}x {:>7}\n",
                 kv_text, ctx, n_seqs, m.chunk > 0 ? std::to_string(m.chunk) : "-", m.us,
                 static_cast<double>(m.kv_bytes) / (1 << 20), gbps, 100.0 * gbps / copy_gbps,
                 m.rel_err, tol, f16_us / m.us, cublas_us / m.us,
                 vs_kivi ? fmt::format("{:.2f}x", *vs_kivi) : std::string("-"));
    }
    std::fflush(table);
  };

  const kv::LayerConfig f16_config = kv::parse_cache_spec("f16").layer;
  for (const int ctx : args.contexts) {
    // Built once for the largest count; a smaller count decodes the first
    // sequences of the same caches.
    const Workload w = make_workload(s, ctx, max_seqs);
    std::map<std::string, Caches> built;             // by spec text
    std::map<std::string, std::vector<float> > cpu;  // the CPU decode of those caches
    auto caches_for = [&](const std::string& text, const kv::LayerConfig& config) -> Caches& {
      auto it = built.find(text);
      if (it == built.end()) it = built.emplace(text, build_caches(s, ctx, w, config)).first;
      return it->second;
    };
    auto cpu_error = [&](const std::string& text, int n_seqs) {
      auto it = cpu.find(text);
      if (it == cpu.end()) {
        it = cpu.emplace(text, cpu_decode(s, built.at(text), w, args.n_threads)).first;
      }
      return prefix_error(it->second, w.exact, per_seq * n_seqs);
    };
    for (const int n_seqs : counts) {
      // A spec's caches timed at n_seqs, with the row's tolerance; throws innerq::Error.
      auto measure = [&](const std::string& text, const kv::LayerConfig& config) {
        const Caches& caches = caches_for(text, config);
        const double tol = tolerance_from_cpu(cpu_error(text, n_seqs));
        return std::pair{run_fused(s, caches, w, n_seqs, args.reps), tol};
      };
      const Caches& f16 = caches_for("f16", f16_config);
      const double cublas_tol = cublas_tolerance_from_cpu(cpu_error("f16", n_seqs));
      const Measured cublas = run_cublas(s, f16, w, n_seqs, args.reps);
      std::map<int, double> kivi_us;  // by bit width, only from right results
      std::map<int, bool> kivi_tried;
      double f16_us = 0.0;
      for (const kv::CacheSpec& spec : specs) {
        std::pair<Measured, double> result;
        try {
          result = measure(spec.text, spec.layer);
        } catch (const Error& e) {
          problems.push_back(
              fmt::format("{} ctx {} seqs {}: {}", spec.text, ctx, n_seqs, e.what()));
          fmt::print(table, "{:<30} {:>7} {:>4}  FAILED: {}\n", spec.text, ctx, n_seqs, e.what());
          std::fflush(table);
          continue;
        }
        const auto& [m, tol] = result;
        if (spec.text == "f16") {
          f16_us = m.us;
          add_row("cublas-f16 (two GEMMs)", ctx, n_seqs, cublas, cublas_tol, f16_us, cublas.us,
                  std::nullopt);
        }
        if (is_plain_kivi(spec.layer) && m.rel_err <= tol) kivi_us[spec.layer.k_bits] = m.us;
        std::optional<double> vs_kivi;
        if (spec.layer.kind == kv::CacheKind::kInnerQ) {
          const kv::LayerConfig kivi = kivi_at_equal_bits(spec.layer);
          if (!kivi_us.count(kivi.k_bits) && !kivi_tried[kivi.k_bits]) {
            kivi_tried[kivi.k_bits] = true;
            const std::string text = fmt::format("kivi at {} bits", kivi.k_bits);
            try {
              const auto [km, ktol] = measure(text, kivi);
              if (km.rel_err <= ktol) {
                kivi_us[kivi.k_bits] = km.us;
              } else {
                problems.push_back(
                    fmt::format("{} ctx {} seqs {}: rel_err {:.3g} exceeds tolerance {:.3g}", text,
                                ctx, n_seqs, km.rel_err, ktol));
              }
            } catch (const Error& e) {
              problems.push_back(fmt::format("{} ctx {} seqs {}: {}", text, ctx, n_seqs, e.what()));
            }
          }
          if (kivi_us.count(kivi.k_bits)) vs_kivi = kivi_us[kivi.k_bits] / m.us;
        }
        if (spec.text == "f16" && !f16_listed) {
          if (!(m.rel_err <= tol)) {
            problems.push_back(
                fmt::format("f16 ctx {} seqs {}: rel_err {:.3g} exceeds tolerance {:.3g}", ctx,
                            n_seqs, m.rel_err, tol));
          }
          continue;
        }
        add_row(spec.text, ctx, n_seqs, m, tol, f16_us, cublas.us, vs_kivi);
      }
    }
  }
  if (args.json) print_json(rows, 2);
  for (const std::string& p : problems) fmt::print(stderr, "innerq: error: {}\n", p);
  return problems.empty() ? 0 : 1;
}

#endif

}  // namespace innerq::tools
