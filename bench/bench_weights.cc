// bench/bench_weights.cc — one thread's decode matvec with int16 activations:
// the row-at-a-time product (weight_int16.h) against the packed 16-row one
// (weight_packed.h), on SmolLM2's and Gemma 3's matrix shapes and formats.
// Bytes processed are the weight bytes read, so the rate is GB/s of weights
// (a packed K-quant matrix holds more bytes than its rows: compare times).
//
//   build/release/bench/bench_weights [--benchmark_filter=Q4_1]
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "innerq/kernels/weight_packed.h"

namespace innerq::kernels {
namespace {

struct Matrix {
  WeightFormat format;
  int64_t rows, cols;
  size_t row_bytes;
  std::vector<uint8_t> data, packed;
  std::vector<ActChunk> act;
  std::vector<ActBytes> split;
};

Matrix make(const benchmark::State& state) {
  Matrix m;
  m.format = static_cast<WeightFormat>(state.range(0));
  m.rows = state.range(1);
  m.cols = state.range(2);
  const WeightFormatInfo info = weight_format_info(m.format);
  m.row_bytes = static_cast<size_t>(m.cols / info.block_values) * info.block_bytes;
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> byte(0, 255);
  m.data.resize(m.row_bytes * static_cast<size_t>(m.rows));
  for (uint8_t& b : m.data) b = static_cast<uint8_t>(byte(rng));
  for (int64_t r = 0; r < m.rows; ++r) {  // finite scales: fp16 0x1400 ≈ 0.001
    for (int64_t b = 0; b < m.cols / info.block_values; ++b) {
      uint8_t* at = m.data.data() + static_cast<size_t>(r) * m.row_bytes + b * info.block_bytes;
      at[0] = 0x00, at[1] = 0x14;
      if (m.format == WeightFormat::kQ4_1 || m.format == WeightFormat::kQ5_1)
        at[2] = 0, at[3] = 0x94;
    }
  }
  m.packed.resize(packed_groups(m.rows) * packed_group_bytes(m.format, m.cols));
  scalar::pack_rows(m.format, m.data.data(), m.row_bytes, m.rows, m.cols, m.packed.data());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m.cols));
  for (float& v : x) v = normal(rng);
  m.act.resize(x.size() / kActChunk);
  m.split.resize(m.act.size());
  simd::quantize_activations(x.data(), m.cols, m.act.data());
  scalar::split_activations(m.act.data(), static_cast<int64_t>(m.act.size()), m.split.data());
  return m;
}

void BM_Rows(benchmark::State& state) {
  Matrix m = make(state);
  std::vector<float> y(static_cast<size_t>(m.rows));
  for (auto _ : state) {
    simd::dot_rows_int16(m.format, m.data.data(), m.row_bytes, m.rows, m.act.data(), m.act.size(),
                         1, m.cols, y.data(), y.size());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * m.data.size()));
}

void BM_Packed(benchmark::State& state) {
  Matrix m = make(state);
  if (!simd::packed_dot_available()) {
    state.SkipWithError("no AVX-512 VNNI: the packed product runs the scalar reference");
    return;
  }
  std::vector<float> y(static_cast<size_t>(m.rows));
  for (auto _ : state) {
    simd::dot_packed(m.format, m.packed.data(), m.rows, m.split.data(), m.split.size(), 1, m.cols,
                     y.data(), y.size());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * m.packed.size()));
}

void Shapes(benchmark::internal::Benchmark* b) {
  const auto f = [](WeightFormat w) { return static_cast<int64_t>(w); };
  b->ArgNames({"format", "rows", "cols"});
  b->Args({f(WeightFormat::kQ4_1), 1536, 576});   // SmolLM2 ffn_gate
  b->Args({f(WeightFormat::kQ4_1), 576, 1536});   // SmolLM2 ffn_down
  b->Args({f(WeightFormat::kQ8_0), 49152, 576});  // SmolLM2 output
  b->Args({f(WeightFormat::kQ5_0), 2048, 640});   // Gemma 3 ffn_gate
  b->Args({f(WeightFormat::kQ4_0), 2048, 640});
  b->Args({f(WeightFormat::kQ4_K), 640, 1024});  // Gemma 3 attn_output
  b->Args({f(WeightFormat::kQ6_K), 640, 2048});  // Gemma 3 ffn_down (some layers)
}

BENCHMARK(BM_Rows)->Apply(Shapes);
BENCHMARK(BM_Packed)->Apply(Shapes);

}  // namespace
}  // namespace innerq::kernels

BENCHMARK_MAIN();
