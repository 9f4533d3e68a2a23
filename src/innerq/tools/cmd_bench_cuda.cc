// innerq/tools/cmd_bench_cuda.cc — `innerq bench attention --device cuda`:
// the CPU bench's rows (kv, ctx, seqs, us, kv_bytes, gbps, rel_err against
// f32 attention, speedup_vs_f16) for the fused CUDA kernels, plus the speedup
// over the cuBLAS two-GEMM f16 baseline and over the KIVI kernel. Caches are
// built on the CPU (fill_synthetic_kv, kv::KvCache) and uploaded; n_seqs
// sequences of the same length run in one launch.
#include <fmt/core.h>

#include "innerq/tools/bench_attention.h"

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
// (f32 cache) attention output, [n_seqs][n_heads][D].
struct Workload {
  std::vector<std::vector<float> > k, v;
  std::vector<float> q, exact;
};

Workload make_workload(const AttentionShape& s, int ctx, int n_seqs, int n_threads) {
  Workload w;
  w.k.resize(static_cast<size_t>(n_seqs));
  w.v.resize(static_cast<size_t>(n_seqs));
  const size_t per_seq = static_cast<size_t>(s.n_heads) * s.head_dim;
  w.q.resize(per_seq * n_seqs);
  w.exact.resize(w.q.size());
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (float& x : w.q) x = normal(rng);
  const kv::CacheShape shape{1, s.n_kv_heads, s.head_dim, ctx};
#pragma omp parallel for
  for (int q = 0; q < n_seqs; ++q) {
    const size_t i = static_cast<size_t>(q);
    fill_synthetic_kv(ctx, s.n_kv_heads, s.head_dim, 7 + static_cast<unsigned>(ctx + 1000 * q),
                      w.k[i], w.v[i]);
  }
  for (int q = 0; q < n_seqs; ++q) {
    const size_t i = static_cast<size_t>(q);
    kv::KvCache f32(shape, kv::parse_cache_spec("f32").layer);
    f32.append(0, w.k[i].data(), w.v[i].data(), ctx);
    attn::decode_attention(f32.layer(0), w.q.data() + i * per_seq, s.n_heads,
                           w.exact.data() + i * per_seq, {n_threads});
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
  double us;
  size_t kv_bytes;
  double rel_err;
};

Measured run_fused(const AttentionShape& s, int ctx, const Workload& w,
                   const kv::LayerConfig& config, int reps) {
  cu::DeviceLayerBatch batch(build_caches(s, ctx, w, config).layers);
  const cu::DeviceBuffer q(w.q.data(), w.q.size() * sizeof(float));
  const cu::DeviceBuffer out(w.q.size() * sizeof(float));
  const double us =
      time_us([&] { batch.decode(q.as<const float>(), s.n_heads, out.as<float>()); }, reps);
  std::vector<float> got(w.q.size());
  out.download(got.data(), got.size() * sizeof(float));
  return {us, batch.kv_bytes(), relative_error(got, w.exact)};
}

double run_cublas(const AttentionShape& s, int ctx, const Workload& w, int reps) {
  cu::CublasF16Batch batch(build_caches(s, ctx, w, kv::parse_cache_spec("f16").layer).layers);
  std::vector<f16_bits> q16(w.q.size());
  for (size_t i = 0; i < q16.size(); ++i) q16[i] = f32_to_f16(w.q[i]);
  const cu::DeviceBuffer q(q16.data(), q16.size() * sizeof(f16_bits));
  const cu::DeviceBuffer out(q16.size() * sizeof(f16_bits));
  return time_us([&] { batch.decode(q.as<const uint16_t>(), s.n_heads, out.as<uint16_t>()); },
                 reps);
}

// KIVI at the same bit width as an InnerQ config when K and V agree,
// otherwise at the lower of the two (K3V2 → KIVI-2, which reads fewer bytes,
// so the ratio understates InnerQ).
kv::LayerConfig kivi_at_equal_bits(const kv::LayerConfig& innerq) {
  kv::LayerConfig c = kv::parse_cache_spec("kivi").layer;
  c.k_bits = c.v_bits = std::min(innerq.k_bits, innerq.v_bits);
  return c;
}

}  // namespace

int run_bench_attention_cuda(const BenchAttentionArgs& args) {
  std::string why;
  if (!cu::device_available(&why)) {
    fmt::print(stderr, "innerq: error: no usable CUDA device: {}\n", why);
    return 2;
  }
  const AttentionShape& s = args.shape;
  const cu::DeviceInfo device = cu::device_info();
  const double copy_gbps = cu::copy_bandwidth_gbps(size_t{1} << 30);
  if (!args.json) {
    fmt::print(
        "decode attention, one layer, CUDA: shape {} ({} query heads, {} KV heads, "
        "head_dim {}), {} sequence(s) per launch\n",
        s.name, s.n_heads, s.n_kv_heads, s.head_dim, args.n_seqs);
    fmt::print(
        "device: {} ({} SMs, {:.0f} GiB); cudaMemcpy D2D bandwidth (1 GiB, read + "
        "write): {:.1f} GB/s\n\n",
        device.name, device.sm_count, device.memory_gib, copy_gbps);
    fmt::print("{:<30} {:>7} {:>4} {:>9} {:>9} {:>8} {:>6} {:>9} {:>7} {:>9} {:>7}\n", "kv", "ctx",
               "seqs", "us", "kv_MiB", "GB/s", "of_bw", "rel_err", "vs_f16", "vs_cublas",
               "vs_kivi");
  }
  // f16 is always timed, first: every ratio is measured in the same run.
  std::vector<kv::CacheSpec> specs = args.specs;
  const auto is_f16 = [](const kv::CacheSpec& c) { return c.text == "f16"; };
  const bool f16_listed = std::any_of(specs.begin(), specs.end(), is_f16);
  specs.erase(std::remove_if(specs.begin(), specs.end(), is_f16), specs.end());
  specs.insert(specs.begin(), kv::parse_cache_spec("f16"));

  nlohmann::json rows = nlohmann::json::array();
  for (const int ctx : args.contexts) {
    const Workload w = make_workload(s, ctx, args.n_seqs, args.n_threads);
    const double cublas_us = run_cublas(s, ctx, w, args.reps);
    std::map<int, double> kivi_us;  // by bit width
    double f16_us = 0.0;
    for (const kv::CacheSpec& spec : specs) {
      const Measured m = run_fused(s, ctx, w, spec.layer, args.reps);
      if (spec.text == "f16") f16_us = m.us;
      if (spec.layer.kind == kv::CacheKind::kKivi && spec.layer.group == 32 &&
          spec.layer.recent == kv::parse_cache_spec("kivi").layer.recent) {
        kivi_us[spec.layer.k_bits] = m.us;
      }
      if (spec.text == "f16" && !f16_listed) continue;
      std::optional<double> vs_kivi;
      if (spec.layer.kind == kv::CacheKind::kInnerQ) {
        const kv::LayerConfig kivi = kivi_at_equal_bits(spec.layer);
        if (!kivi_us.count(kivi.k_bits))
          kivi_us[kivi.k_bits] = run_fused(s, ctx, w, kivi, args.reps).us;
        vs_kivi = kivi_us[kivi.k_bits] / m.us;
      }
      const double gbps = static_cast<double>(m.kv_bytes) / (m.us * 1e-6) / 1e9;
      rows.push_back({{"kv", spec.text},
                      {"ctx", ctx},
                      {"seqs", args.n_seqs},
                      {"us", m.us},
                      {"kv_bytes", static_cast<uint64_t>(m.kv_bytes)},
                      {"gbps", gbps},
                      {"rel_err", m.rel_err},
                      {"speedup_vs_f16", f16_us / m.us},
                      {"speedup_vs_cublas_f16", cublas_us / m.us},
                      {"speedup_vs_kivi", vs_kivi ? nlohmann::json(*vs_kivi) : nlohmann::json()},
                      {"copy_bandwidth_gbps", copy_gbps},
                      {"shape", s.name},
                      {"device", device.name}});
      if (!args.json) {
        fmt::print(
            "{:<30} {:>7} {:>4} {:>9.1f} {:>9.2f} {:>8.1f} {:>5.0f}% {:>9.4f} {:>6.2f}x "
            "{:>8.2f}x {:>7}\n",
            spec.text, ctx, args.n_seqs, m.us, static_cast<double>(m.kv_bytes) / (1 << 20), gbps,
            100.0 * gbps / copy_gbps, m.rel_err, f16_us / m.us, cublas_us / m.us,
            vs_kivi ? fmt::format("{:.2f}x", *vs_kivi) : std::string("-"));
        std::fflush(stdout);
      }
    }
  }
  if (args.json) fmt::print("{}\n", rows.dump(2));
  return 0;
}

#endif

}  // namespace innerq::tools
