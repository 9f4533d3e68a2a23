// bench/bench_quant.cc — throughput of the quantization kernels per format,
// scalar reference and Highway SIMD. Bytes processed are the f32 values on
// the float side (input of quantize, output of dequantize, the keys of the
// fused dot, the V values of the fused accumulate, all counted as 4 bytes per
// value), so the reported rate is GB/s of f32 values.
//
//   build/release/bench/bench_quant [--benchmark_filter=simd]
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "innerq/kernels/quant_kernels.h"

namespace innerq::kernels {
namespace {

constexpr size_t kValues = size_t{1} << 18;  // 1 MiB of f32 per operation

std::vector<float> gaussian(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

GroupSpec spec_of(const benchmark::State& state) {
  return {static_cast<int>(state.range(0)), static_cast<int>(state.range(1)),
          static_cast<QuantMode>(state.range(2))};
}

template <bool kSimd>
void BM_Quantize(benchmark::State& state) {
  const GroupSpec spec = spec_of(state);
  const std::vector<float> x = gaussian(kValues, 1);
  const size_t n_groups = kValues / spec.group;
  std::vector<uint8_t> records(n_groups * spec.record_bytes());
  for (auto _ : state) {
    (kSimd ? simd::quantize_row : scalar::quantize_row)(spec, x.data(), n_groups, records.data());
    benchmark::DoNotOptimize(records.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kValues * sizeof(float)));
}

template <bool kSimd>
void BM_Dequantize(benchmark::State& state) {
  const GroupSpec spec = spec_of(state);
  const std::vector<float> x = gaussian(kValues, 1);
  const size_t n_groups = kValues / spec.group;
  std::vector<uint8_t> records(n_groups * spec.record_bytes());
  simd::quantize_row(spec, x.data(), n_groups, records.data());
  std::vector<float> x_hat(kValues);
  for (auto _ : state) {
    (kSimd ? simd::dequantize_row : scalar::dequantize_row)(spec, records.data(), n_groups,
                                                            x_hat.data());
    benchmark::DoNotOptimize(x_hat.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kValues * sizeof(float)));
}

// Scores of one query against kValues/128 rows of head_dim 128.
template <bool kSimd>
void BM_FusedDot(benchmark::State& state) {
  const GroupSpec spec = spec_of(state);
  constexpr size_t kHeadDim = 128;
  const size_t n_rows = kValues / kHeadDim, n_groups = kHeadDim / spec.group;
  const std::vector<float> keys = gaussian(kValues, 1), q = gaussian(kHeadDim, 2);
  std::vector<uint8_t> rows(n_rows * n_groups * spec.record_bytes());
  simd::quantize_row(spec, keys.data(), n_rows * n_groups, rows.data());
  std::vector<float> q_sums(n_groups), scores(n_rows);
  for (auto _ : state) {
    (kSimd ? simd::group_sums : scalar::group_sums)(spec.group, q.data(), n_groups, q_sums.data());
    (kSimd ? simd::dot_rows : scalar::dot_rows)(spec, q.data(), q_sums.data(), rows.data(),
                                                n_groups, n_rows, scores.data());
    benchmark::DoNotOptimize(scores.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kValues * sizeof(float)));
}

// o += p·V over kValues/(G·128) token blocks of head_dim 128.
template <bool kSimd>
void BM_FusedAccumulate(benchmark::State& state) {
  const GroupSpec spec = spec_of(state);
  constexpr size_t kHeadDim = 128;
  const size_t n_blocks = kValues / (kHeadDim * spec.group);
  const std::vector<float> values = gaussian(kValues, 1), p = gaussian(kValues / kHeadDim, 2);
  std::vector<uint8_t> blocks(n_blocks * kHeadDim * spec.record_bytes());
  for (size_t b = 0; b < n_blocks; ++b) {
    simd::quantize_token_block(spec, &values[b * kHeadDim * spec.group], kHeadDim,
                               &blocks[b * kHeadDim * spec.record_bytes()]);
  }
  std::vector<float> out(kHeadDim);
  for (auto _ : state) {
    (kSimd ? simd::accumulate_token_blocks : scalar::accumulate_token_blocks)(
        spec, p.data(), blocks.data(), kHeadDim, n_blocks, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kValues * sizeof(float)));
}

void Formats(benchmark::internal::Benchmark* b) {
  b->ArgNames({"bits", "G", "mode"});
  for (int bits : {2, 3, 4, 8}) {
    for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric, QuantMode::kHybrid}) {
      b->Args({bits, 32, static_cast<int64_t>(mode)});
    }
  }
  for (int bits : {2, 3, 4}) b->Args({bits, 128, static_cast<int64_t>(QuantMode::kHybrid)});
}

BENCHMARK(BM_Quantize<true>)->Name("quantize/simd")->Apply(Formats);
BENCHMARK(BM_Quantize<false>)->Name("quantize/scalar")->Apply(Formats);
BENCHMARK(BM_Dequantize<true>)->Name("dequantize/simd")->Apply(Formats);
BENCHMARK(BM_Dequantize<false>)->Name("dequantize/scalar")->Apply(Formats);
BENCHMARK(BM_FusedDot<true>)->Name("fused_dot/simd")->Apply(Formats);
BENCHMARK(BM_FusedDot<false>)->Name("fused_dot/scalar")->Apply(Formats);
BENCHMARK(BM_FusedAccumulate<true>)->Name("fused_accumulate/simd")->Apply(Formats);
BENCHMARK(BM_FusedAccumulate<false>)->Name("fused_accumulate/scalar")->Apply(Formats);

}  // namespace
}  // namespace innerq::kernels

BENCHMARK_MAIN();
