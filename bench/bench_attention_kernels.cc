// Google Benchmark of the decode-attention region kernels, one KV head, 32k
// tokens, Llama-3-8B head shape (4 query heads per KV head, head_dim 128),
// one thread: where the time of `innerq bench attention` goes, kernel by
// kernel. Reports bytes of cache read per second.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "innerq/attn/decode_attention.h"
#include "innerq/kernels/attn_kernels.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/kv/layer_caches.h"
#include "innerq/kv/segments.h"

namespace innerq {
namespace {

constexpr int kTokens = 32768;
constexpr int kHeadDim = 128;
constexpr int kQueryHeads = 4;

// One-layer, one-KV-head cache of `spec` over gaussian data with outliers.
const kv::KvCache& cache_for(const char* spec) {
  static std::vector<std::pair<std::string, std::unique_ptr<kv::KvCache>>> caches;
  for (auto& [name, cache] : caches) {
    if (name == spec) return *cache;
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> k(static_cast<size_t>(kTokens) * kHeadDim), v(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = normal(rng) * (i % kHeadDim == 5 ? 20.0f : 1.0f);
    v[i] = normal(rng);
  }
  // One block for the whole run: the kernels are timed over one long
  // segment, not over the 256-token blocks of the default pool.
  const kv::CacheShape shape{1, 1, kHeadDim, kTokens};
  const std::vector<kv::LayerConfig> configs{kv::parse_cache_spec(spec).layer};
  auto cache =
      std::make_unique<kv::KvCache>(std::make_shared<kv::KvPool>(shape, configs, 1, kTokens));
  cache->append(0, k.data(), v.data(), kTokens);
  caches.emplace_back(spec, std::move(cache));
  return *caches.back().second;
}

// The largest K (or V) segment of the cache: the quantized middle, or the
// whole plain region.
kv::Segment bulk(const char* spec, bool keys) {
  kv::HeadSegments s;
  cache_for(spec).layer(0).segments(0, s);
  const auto& list = keys ? s.k : s.v;
  return *std::max_element(list.begin(), list.end(),
                           [](const auto& a, const auto& b) { return a.length < b.length; });
}

size_t segment_bytes(const char* spec, bool keys) {
  const kv::MemoryUsage m = cache_for(spec).memory();
  return (m.codes + m.metadata + m.windows) / 2 + (keys ? m.norm : 0);  // K and V about equal
}

void run_k(benchmark::State& state, const char* spec) {
  const kv::Segment s = bulk(spec, true);
  std::vector<float> q(kQueryHeads * kHeadDim, 0.1f),
      scores(static_cast<size_t>(kQueryHeads) * s.length);
  const kernels::QueryHeads heads{q.data(), kQueryHeads, kHeadDim};
  const kernels::HeadRows out{scores.data(), static_cast<size_t>(s.length)};
  std::vector<uint8_t> scratch(kernels::innerq_k_scratch_bytes(s.tile, kHeadDim));
  for (auto _ : state) {
    switch (s.form) {
      case kv::SegmentForm::kTilesF16:
        kernels::simd::k_scores_tiles(static_cast<const f16_bits*>(s.data), s.length, heads, out);
        break;
      case kv::SegmentForm::kQ8_0:
        kernels::simd::k_scores_blocks(static_cast<const BlockQ8_0*>(s.data), s.length, heads, out);
        break;
      case kv::SegmentForm::kQ4_0:
        kernels::simd::k_scores_blocks(static_cast<const BlockQ4_0*>(s.data), s.length, heads, out);
        break;
      case kv::SegmentForm::kInnerQK:
        kernels::simd::k_scores_innerq(s.tile, static_cast<const uint8_t*>(s.data), s.length, heads,
                                       out, {scratch.data(), scratch.size()});
        break;
      case kv::SegmentForm::kKiviK:
        kernels::simd::k_scores_kivi(s.bits, s.group, static_cast<const uint8_t*>(s.data), s.length,
                                     heads, out);
        break;
      default:
        state.SkipWithError("no K bulk segment");
        return;
    }
    benchmark::DoNotOptimize(scores.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * segment_bytes(spec, true)));
}

void run_v(benchmark::State& state, const char* spec) {
  const kv::Segment s = bulk(spec, false);
  std::vector<float> p(static_cast<size_t>(kQueryHeads) * s.length, 1.0f / s.length),
      o(kQueryHeads * kHeadDim, 0.0f);
  const kernels::ConstHeadRows w{p.data(), static_cast<size_t>(s.length)};
  std::vector<uint8_t> scratch(kernels::innerq_v_scratch_bytes(s.tile));
  for (auto _ : state) {
    switch (s.form) {
      case kv::SegmentForm::kRowsF16:
        kernels::simd::v_accumulate_rows(static_cast<const f16_bits*>(s.data), s.length,
                                         kQueryHeads, kHeadDim, w, o.data());
        break;
      case kv::SegmentForm::kQ8_0:
        kernels::simd::v_accumulate_blocks(static_cast<const BlockQ8_0*>(s.data), s.length,
                                           kQueryHeads, kHeadDim, w, o.data());
        break;
      case kv::SegmentForm::kQ4_0:
        kernels::simd::v_accumulate_blocks(static_cast<const BlockQ4_0*>(s.data), s.length,
                                           kQueryHeads, kHeadDim, w, o.data());
        break;
      case kv::SegmentForm::kInnerQV:
        kernels::simd::v_accumulate_innerq(s.tile, static_cast<const uint8_t*>(s.data),
                                           s.length / s.tile.group, kQueryHeads, kHeadDim, w,
                                           o.data(), {scratch.data(), scratch.size()});
        break;
      case kv::SegmentForm::kKiviV:
        kernels::simd::v_accumulate_kivi(s.bits, s.group, static_cast<const uint8_t*>(s.data),
                                         s.length, kQueryHeads, kHeadDim, w, o.data());
        break;
      default:
        state.SkipWithError("no V bulk segment");
        return;
    }
    benchmark::DoNotOptimize(o.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * segment_bytes(spec, false)));
}

// The chunk softmax between the K and V kernels: 4 heads × 32k scores of
// spread sigma, copied in fresh each iteration (the copy, about 14 µs here,
// is included), the SIMD version or the scalar reference. Sharp scores
// (sigma 40) put most weights below e^-87, where an exp computed to the end
// would make subnormals (docs/architecture.md, "Softmax without subnormals").
void run_softmax(benchmark::State& state, bool simd, float sigma) {
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> scores(static_cast<size_t>(kQueryHeads) * kTokens), work(scores.size());
  for (float& x : scores) x = normal(rng);
  std::vector<float> m(kQueryHeads), l(kQueryHeads);
  const kernels::HeadRows rows{work.data(), static_cast<size_t>(kTokens)};
  for (auto _ : state) {
    std::copy(scores.begin(), scores.end(), work.begin());
    if (simd) {
      kernels::simd::softmax_partial(rows, kTokens, kQueryHeads, m.data(), l.data());
    } else {
      kernels::scalar::softmax_partial(rows, kTokens, kQueryHeads, m.data(), l.data());
    }
    benchmark::DoNotOptimize(l.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kQueryHeads * kTokens);
}

// The whole decode attention of the same head on one thread: kernels plus
// softmax, query rounding and the chunk merge.
void run_decode(benchmark::State& state, const char* spec) {
  const kv::LayerCache& layer = cache_for(spec).layer(0);
  std::vector<float> q(kQueryHeads * kHeadDim, 0.1f), o(q.size());
  attn::AttentionScratch scratch;
  for (auto _ : state) {
    attn::decode_attention(layer, q.data(), kQueryHeads, o.data(), {1, false}, scratch);
    benchmark::DoNotOptimize(o.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * 2 * segment_bytes(spec, true)));
}

BENCHMARK_CAPTURE(run_decode, f16, "f16");
BENCHMARK_CAPTURE(run_decode, innerq, "innerq");
BENCHMARK_CAPTURE(run_k, f16, "f16");
BENCHMARK_CAPTURE(run_k, q8_0, "q8_0");
BENCHMARK_CAPTURE(run_k, q4_0, "q4_0");
BENCHMARK_CAPTURE(run_k, kivi, "kivi");
BENCHMARK_CAPTURE(run_k, innerq_k3, "innerq");
BENCHMARK_CAPTURE(run_k, innerq_k4, "innerq:k=4,v=4");
BENCHMARK_CAPTURE(run_k, innerq_k2, "innerq:k=2,v=2");
BENCHMARK_CAPTURE(run_v, f16, "f16");
BENCHMARK_CAPTURE(run_v, q8_0, "q8_0");
BENCHMARK_CAPTURE(run_v, q4_0, "q4_0");
BENCHMARK_CAPTURE(run_v, kivi, "kivi");
BENCHMARK_CAPTURE(run_v, innerq_v2, "innerq");
BENCHMARK_CAPTURE(run_v, innerq_v4, "innerq:k=4,v=4");
BENCHMARK_CAPTURE(run_softmax, simd_mild, true, 4.0f);
BENCHMARK_CAPTURE(run_softmax, simd_sharp, true, 40.0f);
BENCHMARK_CAPTURE(run_softmax, scalar_sharp, false, 40.0f);

}  // namespace
}  // namespace innerq

BENCHMARK_MAIN();
