// innerq/model/weights.cc — matmul over ggml-format weights: scalar reference
// and Highway kernels (self-including foreach_target pattern; one dispatch per
// matmul call). The block formats are the kernels layer's
// (kernels/weight_blocks.h); F32 and F16 are read here.
#include "innerq/model/weights.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <optional>
#include <span>
#include <vector>

#include <fmt/core.h>
#include <omp.h>

#include "innerq/base/error.h"
#include "innerq/base/fp16.h"
#include "innerq/base/huge_pages.h"
#include "innerq/kernels/weight_blocks.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "innerq/model/weights.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#ifndef INNERQ_MODEL_WEIGHTS_ONCE_  // once, not per Highway target
#define INNERQ_MODEL_WEIGHTS_ONCE_
namespace innerq::model {
namespace {

// Below this many multiply-adds a matmul runs on the calling thread: waking a
// thread team costs more than the work (and far more on a busy machine).
constexpr int64_t kMinParallelWork = 1 << 18;

// The kernel calls of a product over several matrices of one input, each
// call `rows_per_call` rows of one matrix: one parallel loop covers them all.
int64_t count_row_calls(const WeightMatrix* const* ws, size_t n_matrices, int64_t rows_per_call) {
  int64_t n = 0;
  for (size_t m = 0; m < n_matrices; ++m) n += (ws[m]->rows + rows_per_call - 1) / rows_per_call;
  return n;
}

struct RowCall {
  size_t m;    // the matrix
  int64_t r0;  // its first row
};

RowCall row_call(const WeightMatrix* const* ws, int64_t c, int64_t rows_per_call) {
  RowCall call{0, c * rows_per_call};
  while (call.r0 >= ws[call.m]->rows) {  // calls never straddle two matrices
    call.r0 -= (ws[call.m]->rows + rows_per_call - 1) / rows_per_call * rows_per_call;
    ++call.m;
  }
  return call;
}

}  // namespace
}  // namespace innerq::model
#endif

HWY_BEFORE_NAMESPACE();
namespace innerq::model {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most 16 lanes (AVX-512); the tile keeps 4×4 accumulators in registers.
using DF = hn::CappedTag<float, 16>;

// ---------------------------------------------------------------------------
// Decode: one token, fused dequantize-and-dot per block.
// ---------------------------------------------------------------------------

float DotF32(DF df, const float* w, const float* x, int64_t n) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  auto acc0 = hn::Zero(df);
  auto acc1 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    acc0 = hn::MulAdd(hn::LoadU(df, w + i), hn::LoadU(df, x + i), acc0);
    acc1 = hn::MulAdd(hn::LoadU(df, w + i + N), hn::LoadU(df, x + i + N), acc1);
  }
  for (; i + N <= n; i += N) acc0 = hn::MulAdd(hn::LoadU(df, w + i), hn::LoadU(df, x + i), acc0);
  float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0, acc1)));
  for (; i < n; ++i) sum += w[i] * x[i];
  return sum;
}

float DotF16(DF df, const f16_bits* w, const float* x, int64_t n) {
  const hn::Rebind<hwy::float16_t, DF> dh;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const auto* wh = reinterpret_cast<const hwy::float16_t*>(w);
  auto acc = hn::Zero(df);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    acc = hn::MulAdd(hn::PromoteTo(df, hn::LoadU(dh, wh + i)), hn::LoadU(df, x + i), acc);
  }
  float sum = hn::GetLane(hn::SumOfLanes(df, acc));
  for (; i < n; ++i) sum += f16_to_f32(w[i]) * x[i];
  return sum;
}

// Rows per block-kernel call: one dispatch per 16 rows, not per dot product.
constexpr int64_t kRowsPerKernelCall = 16;

void MatvecImpl(const WeightMatrix& w, const float* x, float* y, int n_threads) {
  const DF df;
  const bool parallel = w.rows * w.cols >= kMinParallelWork;
  if (const std::optional<kernels::WeightFormat> format = block_format(w.type)) {
    const int64_t n_calls = (w.rows + kRowsPerKernelCall - 1) / kRowsPerKernelCall;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (parallel)
    for (int64_t c = 0; c < n_calls; ++c) {
      const int64_t r0 = c * kRowsPerKernelCall;
      kernels::simd::dot_rows(*format, w.row(r0), w.row_bytes,
                              std::min(kRowsPerKernelCall, w.rows - r0), x, w.cols, y + r0);
    }
    return;
  }
#pragma omp parallel for num_threads(n_threads) schedule(static) if (parallel)
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* row = w.row(r);
    if (w.type == GgmlType::kF32) {
      y[r] = DotF32(df, reinterpret_cast<const float*>(row), x, w.cols);
    } else {
      y[r] = DotF16(df, reinterpret_cast<const f16_bits*>(row), x, w.cols);
    }
  }
}

// ---------------------------------------------------------------------------
// Prefill: many tokens. kTileRows rows are expanded to f32 once per block of
// kTokenBlock tokens and reused by all of them (4 rows × 2 or 4 tokens of
// accumulators in registers).
// ---------------------------------------------------------------------------

constexpr int kTileRows = kMatmulTileRows;
constexpr int kTokenBlock = 64;

// out: [cols], F16 row r in f32.
void DequantizeF16RowInto(const WeightMatrix& w, int64_t r, float* out) {
  const DF df;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const auto* h = reinterpret_cast<const hwy::float16_t*>(w.row(r));
  int64_t i = 0;
  for (; i + N <= w.cols; i += N) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, h + i)), df, out + i);
  for (; i < w.cols; ++i) out[i] = f16_to_f32(reinterpret_cast<const f16_bits*>(w.row(r))[i]);
}

// Tokens per register tile: 4 where there are 32 vector registers (AVX-512:
// 16 accumulators + loads), else 2.
#if HWY_TARGET <= HWY_AVX3
constexpr int kTileTokens = 4;
#else
constexpr int kTileTokens = 2;
#endif

// y[t][r] = w[r]·x[t] for kTileRows rows and kTileTokens tokens of length n.
void Tile(DF df, const float* const w[kTileRows], const float* const x[kTileTokens], int64_t n,
          float y[kTileTokens][kTileRows]) {
  using V = decltype(hn::Zero(df));
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  V acc[kTileRows][kTileTokens];
  for (int r = 0; r < kTileRows; ++r) {
    for (int t = 0; t < kTileTokens; ++t) acc[r][t] = hn::Zero(df);
  }
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    V xv[kTileTokens];
    for (int t = 0; t < kTileTokens; ++t) xv[t] = hn::LoadU(df, x[t] + i);
    for (int r = 0; r < kTileRows; ++r) {
      const V wv = hn::LoadU(df, w[r] + i);
      for (int t = 0; t < kTileTokens; ++t) acc[r][t] = hn::MulAdd(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < kTileRows; ++r) {
    for (int t = 0; t < kTileTokens; ++t) {
      float sum = hn::GetLane(hn::SumOfLanes(df, acc[r][t]));
      for (int64_t k = i; k < n; ++k) sum += w[r][k] * x[t][k];
      y[t][r] = sum;
    }
  }
}

// tiles: the caller's [n_threads][kTileRows][cols],
// sized before the region: nothing inside it may throw (docs/architecture.md,
// "Errors and threads").
void MatmulTiledImpl(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads,
                     float* tiles) {
  const DF df;
  const int64_t cols = w.cols;
  const int64_t n_tiles = (w.rows + kTileRows - 1) / kTileRows;
  const std::optional<kernels::WeightFormat> format = block_format(w.type);
  const bool parallel = w.rows * w.cols * n_tokens >= kMinParallelWork;
  const size_t tile_size = static_cast<size_t>(kTileRows * cols);
#pragma omp parallel num_threads(n_threads) if (parallel)
  {
    const std::span<float> tile(tiles + static_cast<size_t>(omp_get_thread_num()) * tile_size,
                                tile_size);
    for (int t0 = 0; t0 < n_tokens; t0 += kTokenBlock) {
      const int t1 = std::min(n_tokens, t0 + kTokenBlock);
#pragma omp for schedule(static)
      for (int64_t tile_i = 0; tile_i < n_tiles; ++tile_i) {
        const int64_t r0 = tile_i * kTileRows;
        const int n_rows = static_cast<int>(std::min<int64_t>(kTileRows, w.rows - r0));
        const float* rows[kTileRows];
        for (int r = 0; r < kTileRows; ++r) rows[r] = tile.data() + r * cols;
        if (format) {
          kernels::simd::dequantize_rows(*format, w.row(r0), w.row_bytes, n_rows, cols, tile.data(),
                                         static_cast<size_t>(cols));
        } else {
          for (int r = 0; r < n_rows; ++r) {
            if (w.type == GgmlType::kF32) {
              rows[r] = reinterpret_cast<const float*>(w.row(r0 + r));
            } else {
              DequantizeF16RowInto(w, r0 + r, tile.data() + r * cols);
            }
          }
        }
        for (int r = n_rows; r < kTileRows; ++r) {
          std::fill(tile.data() + r * cols, tile.data() + (r + 1) * cols, 0.0f);
        }
        for (int t = t0; t < t1; t += kTileTokens) {
          // Past the last token, repeat it (results dropped) to keep the tile full.
          const float* xs[kTileTokens];
          for (int k = 0; k < kTileTokens; ++k) xs[k] = x + std::min(t + k, t1 - 1) * cols;
          float ys[kTileTokens][kTileRows];
          Tile(df, rows, xs, cols, ys);
          for (int k = 0; k < kTileTokens && t + k < t1; ++k) {
            for (int r = 0; r < n_rows; ++r)
              y[static_cast<int64_t>(t + k) * w.rows + r0 + r] = ys[k][r];
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Int16 activations (kernels/weight_int16.h): act holds x quantized, [n_tokens]
// rows of cols / 32 chunks (n_tokens ≤ kInt16MaxTokens).
// ---------------------------------------------------------------------------

// ws: n_matrices matrices of the same columns, ys their outputs; one parallel
// region over all their kRowsPerKernelCall-row calls.
void MatmulInt16(const WeightMatrix* const* ws, float* const* ys, int n_matrices,
                 const kernels::ActChunk* act, int n_tokens, int n_threads) {
  const size_t chunks = static_cast<size_t>(ws[0]->cols / kernels::kActChunk);
  const int64_t n_calls = count_row_calls(ws, static_cast<size_t>(n_matrices), kRowsPerKernelCall);
  int64_t work = 0;
  for (int m = 0; m < n_matrices; ++m) work += ws[m]->rows * ws[m]->cols * n_tokens;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (work >= kMinParallelWork)
  for (int64_t c = 0; c < n_calls; ++c) {
    const RowCall call = row_call(ws, c, kRowsPerKernelCall);
    const WeightMatrix& w = *ws[call.m];
    kernels::simd::dot_rows_int16(*block_format(w.type), w.row(call.r0), w.row_bytes,
                                  std::min(kRowsPerKernelCall, w.rows - call.r0), act, chunks,
                                  n_tokens, w.cols, ys[call.m] + call.r0,
                                  static_cast<size_t>(w.rows));
  }
}

void MatmulImpl(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads,
                float* tiles) {
  if (n_tokens == 1) {
    MatvecImpl(w, x, y, n_threads);
  } else {
    MatmulTiledImpl(w, x, n_tokens, y, n_threads, tiles);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace innerq::model
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace innerq::model {

HWY_EXPORT(MatmulImpl);
HWY_EXPORT(MatmulInt16);

std::optional<kernels::WeightFormat> block_format(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return kernels::WeightFormat::kQ4_0;
    case GgmlType::kQ4_1:
      return kernels::WeightFormat::kQ4_1;
    case GgmlType::kQ5_0:
      return kernels::WeightFormat::kQ5_0;
    case GgmlType::kQ5_1:
      return kernels::WeightFormat::kQ5_1;
    case GgmlType::kQ8_0:
      return kernels::WeightFormat::kQ8_0;
    case GgmlType::kQ2_K:
      return kernels::WeightFormat::kQ2_K;
    case GgmlType::kQ3_K:
      return kernels::WeightFormat::kQ3_K;
    case GgmlType::kQ4_K:
      return kernels::WeightFormat::kQ4_K;
    case GgmlType::kQ5_K:
      return kernels::WeightFormat::kQ5_K;
    case GgmlType::kQ6_K:
      return kernels::WeightFormat::kQ6_K;
    case GgmlType::kBF16:
      return kernels::WeightFormat::kBF16;
    default:
      return std::nullopt;
  }
}

bool weight_type_supported(GgmlType type) {
  return type == GgmlType::kF32 || type == GgmlType::kF16 || block_format(type).has_value();
}

WeightMatrix weight_matrix(const GgufTensor& tensor) {
  if (!weight_type_supported(tensor.type)) {
    throw Error(fmt::format(
        "tensor '{}': weight type {} is not supported (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, "
        "Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
        tensor.name, ggml_type_name(tensor.type)));
  }
  if (tensor.ne.empty() || tensor.ne.size() > 2) {
    throw Error(fmt::format("tensor '{}': expected a matrix, got {} dimensions", tensor.name,
                            tensor.ne.size()));
  }
  int64_t block = 1;
  size_t block_bytes = tensor.type == GgmlType::kF32 ? 4 : 2;
  if (const std::optional<kernels::WeightFormat> format = block_format(tensor.type)) {
    const kernels::WeightFormatInfo info = kernels::weight_format_info(*format);
    block = info.block_values;
    block_bytes = info.block_bytes;
  }
  WeightMatrix w;
  w.name = tensor.name;
  w.type = tensor.type;
  w.cols = tensor.ne[0];
  w.rows = tensor.rows();
  if (w.cols <= 0 || w.rows <= 0 || w.cols % block != 0) {
    throw Error(fmt::format("tensor '{}': rows of {} values are not whole {} blocks of {} values",
                            tensor.name, w.cols, ggml_type_name(tensor.type), block));
  }
  w.row_bytes = static_cast<size_t>(w.cols / block) * block_bytes;
  if (tensor.n_bytes / w.row_bytes != static_cast<size_t>(w.rows) ||
      tensor.n_bytes % w.row_bytes != 0) {
    throw Error(fmt::format("tensor '{}': {} bytes, but {} rows of {} {} values take {} bytes each",
                            tensor.name, tensor.n_bytes, w.rows, w.cols,
                            ggml_type_name(tensor.type), w.row_bytes));
  }
  w.data = tensor.data;
  return w;
}

void dequantize_row(const WeightMatrix& w, int64_t r, float* out) {
  if (w.data == nullptr) {  // packed in place (a 32-value format)
    kernels::scalar::dequantize_packed_row(*block_format(w.type), w.packed, r, w.cols, out);
    return;
  }
  const uint8_t* row = w.row(r);
  if (const std::optional<kernels::WeightFormat> format = block_format(w.type)) {
    kernels::simd::dequantize_rows(*format, row, w.row_bytes, 1, w.cols, out,
                                   static_cast<size_t>(w.cols));
  } else if (w.type == GgmlType::kF32) {
    std::copy_n(reinterpret_cast<const float*>(row), w.cols, out);
  } else if (w.type == GgmlType::kF16) {
    const auto* h = reinterpret_cast<const f16_bits*>(row);
    for (int64_t i = 0; i < w.cols; ++i) out[i] = f16_to_f32(h[i]);
  } else {
    throw Error(fmt::format("tensor '{}': cannot dequantize {}", w.name, ggml_type_name(w.type)));
  }
}

namespace {

// Whether matmul multiplies w with int16 activations.
bool takes_int16(const WeightMatrix& w, int n_tokens, Activations a) {
  const std::optional<kernels::WeightFormat> format = block_format(w.type);
  return a == Activations::kInt16 && n_tokens <= kInt16MaxTokens && format &&
         kernels::int16_dot_supported(*format);
}

// Tokens per block of split activations in prefill; from this many tokens on,
// the threads also share the activations' quantization.
constexpr int kPackedTokenBlock = 64;

// x quantized into s.act for cols columns and, with `split`, split into
// s.act_bytes for the packed kernels. Each token is done on its own, so in
// prefill the threads share the tokens (a token's bytes are the same
// whichever thread makes them); the buffers are sized first, and nothing in
// the region throws.
const kernels::ActChunk* quantized_input(const float* x, int n_tokens, int64_t cols,
                                         MatmulScratch& s, int n_threads, bool split) {
  const size_t chunks = static_cast<size_t>(cols / kernels::kActChunk);
  const size_t n_chunks = static_cast<size_t>(n_tokens) * chunks;
  if (s.act.size() < n_chunks) s.act.resize(n_chunks);
  if (split && s.act_bytes.size() < n_chunks) s.act_bytes.resize(n_chunks);
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n_tokens >= kPackedTokenBlock)
  for (int t = 0; t < n_tokens; ++t) {
    kernels::ActChunk* a = s.act.data() + static_cast<size_t>(t) * chunks;
    kernels::simd::quantize_activations(x + static_cast<int64_t>(t) * cols, cols, a);
    if (split) {
      kernels::scalar::split_activations(a, static_cast<int64_t>(chunks),
                                         s.act_bytes.data() + static_cast<size_t>(t) * chunks);
    }
  }
  return s.act.data();
}

// Whether every matrix of ws is packed and read with int16 activations.
// A matrix packed in place has no rows left for the f32 path.
bool takes_packed(const WeightMatrix& w, Activations a) {
  return w.packed != nullptr && (a == Activations::kInt16 || w.data == nullptr);
}
bool all_take_packed(std::span<const WeightMatrix* const> ws, Activations a) {
  return std::all_of(ws.begin(), ws.end(), [&](const WeightMatrix* w) {
    return takes_packed(*w, a) && w->cols == ws[0]->cols;
  });
}

// Groups of 16 rows per kernel call in prefill: one dispatch per 64 rows.
constexpr int64_t kGroupsPerCall = 4;

// ys[m] = x·ws[m]ᵀ from the packed copies; one parallel region over all the
// matrices' calls, as MatmulInt16.
void matmul_packed(std::span<const WeightMatrix* const> ws, const float* x, int n_tokens,
                   std::span<float* const> ys, int n_threads, MatmulScratch& s) {
  const int64_t cols = ws[0]->cols;
  const size_t chunks = static_cast<size_t>(cols / kernels::kActChunk);
  quantized_input(x, n_tokens, cols, s, n_threads, /*split=*/true);
  const kernels::ActBytes* xb = s.act_bytes.data();
  // Decode: one group per call, so that small matrices (K and V, 192 rows
  // on SmolLM2) still split evenly over the threads; prefill: kGroupsPerCall
  // groups share each block of split activations.
  const bool decode = n_tokens <= kInt16MaxTokens;
  const int64_t kRows = (decode ? 1 : kGroupsPerCall) * kernels::kPackRows;
  const int64_t n_calls = count_row_calls(ws.data(), ws.size(), kRows);
  int64_t work = 0;
  for (const WeightMatrix* w : ws) work += w->rows * w->cols * n_tokens;
  // Calls are handed out as the threads ask (decode: 4 groups at a time), not
  // split in equal shares: a vCPU that the host slows (steal time) no longer
  // holds the others at the end of the region (docs/architecture.md, "Packed
  // weights", has the measurement).
  const int per_grab = decode ? 4 : 1;
#pragma omp parallel for num_threads(n_threads) \
    schedule(dynamic, per_grab) if (work >= kMinParallelWork)
  for (int64_t c = 0; c < n_calls; ++c) {
    const RowCall call = row_call(ws.data(), c, kRows);
    const int64_t r0 = call.r0;
    const WeightMatrix& w = *ws[call.m];
    const kernels::WeightFormat f = *block_format(w.type);
    const uint8_t* groups = w.packed + static_cast<size_t>(r0 / kernels::kPackRows) *
                                           kernels::packed_group_bytes(f, cols);
    // Tokens in blocks whose split activations stay in L2 while every
    // group of the call reads them.
    for (int t0 = 0; t0 < n_tokens; t0 += kPackedTokenBlock) {
      kernels::simd::dot_packed(f, groups, std::min(kRows, w.rows - r0), xb + t0 * chunks, chunks,
                                std::min(kPackedTokenBlock, n_tokens - t0), cols,
                                ys[call.m] + static_cast<size_t>(t0) * w.rows + r0,
                                static_cast<size_t>(w.rows));
    }
  }
}

}  // namespace

void reserve_matmul(const WeightMatrix& w, int n_tokens, int n_threads, Activations a,
                    MatmulScratch& s) {
  // reserve() first: resize alone may double a capacity. Every element is
  // written, so the pages are resident as a product's would be.
  const auto exactly = [](auto& buffer, size_t size) {
    if (buffer.size() >= size) return;
    buffer.reserve(size);
    buffer.resize(size);
  };
  const size_t n_chunks =
      static_cast<size_t>(n_tokens) * static_cast<size_t>(w.cols / kernels::kActChunk);
  if (takes_packed(w, a)) {  // matmul_packed: quantized_input with split
    exactly(s.act, n_chunks);
    exactly(s.act_bytes, n_chunks);
  } else if (takes_int16(w, n_tokens, a)) {
    exactly(s.act, n_chunks);
  } else if (n_tokens > 1) {
    exactly(s.tiles, static_cast<size_t>(std::max(n_threads, 1)) * kMatmulTileRows *
                         static_cast<size_t>(w.cols));
  }
}

void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads,
            MatmulScratch& s, Activations a) {
  const WeightMatrix* ws[] = {&w};
  float* ys[] = {y};
  matmul_group(ws, x, n_tokens, ys, n_threads, s, a);
}

void matmul_group(std::span<const WeightMatrix* const> ws, const float* x, int n_tokens,
                  std::span<float* const> ys, int n_threads, MatmulScratch& s, Activations a) {
  if (all_take_packed(ws, a)) return matmul_packed(ws, x, n_tokens, ys, n_threads, s);
  const bool int16 = std::all_of(ws.begin(), ws.end(), [&](const WeightMatrix* w) {
    return takes_int16(*w, n_tokens, a) && w->packed == nullptr && w->cols == ws[0]->cols;
  });
  if (int16) {
    const kernels::ActChunk* act =
        quantized_input(x, n_tokens, ws[0]->cols, s, n_threads, /*split=*/false);
    HWY_DYNAMIC_DISPATCH(MatmulInt16)
    (ws.data(), ys.data(), static_cast<int>(ws.size()), act, n_tokens, n_threads);
    return;
  }
  for (size_t i = 0; i < ws.size(); ++i) {
    const WeightMatrix& w = *ws[i];
    if (takes_packed(w, a)) {
      matmul_packed(ws.subspan(i, 1), x, n_tokens, ys.subspan(i, 1), n_threads, s);
      continue;
    }
    if (takes_int16(w, n_tokens, a)) {
      HWY_DYNAMIC_DISPATCH(MatmulInt16)
      (&ws[i], &ys[i], 1, quantized_input(x, n_tokens, w.cols, s, n_threads, /*split=*/false),
       n_tokens, n_threads);
      continue;
    }
    const size_t tile_floats =
        static_cast<size_t>(std::max(n_threads, 1)) * kMatmulTileRows * static_cast<size_t>(w.cols);
    if (n_tokens > 1 && s.tiles.size() < tile_floats) s.tiles.resize(tile_floats);
    HWY_DYNAMIC_DISPATCH(MatmulImpl)(w, x, n_tokens, ys[i], n_threads, s.tiles.data());
  }
}

bool packing_enabled() {
  const char* env = std::getenv("INNERQ_PACK");
  return kernels::simd::packed_dot_available() && !(env != nullptr && std::strcmp(env, "0") == 0);
}

PackedWeights::~PackedWeights() {
  if (mapped_) {
    unmap_pages(data_, bytes_);
  } else {
    delete[] data_;
  }
}

void PackedWeights::pack(std::span<WeightMatrix* const> ws, bool in_place, int n_threads) {
  if (packed_) throw Error("PackedWeights::pack: called twice");
  packed_ = true;
  if (!packing_enabled()) return;
  // One job per distinct data pointer: where its groups go (in place, or an
  // offset into the buffer, 64-byte aligned).
  struct Matrix {
    const WeightMatrix* w;
    kernels::WeightFormat f;
    bool in_place;
    size_t offset;
    uint8_t* out = nullptr;
  };
  std::map<const uint8_t*, size_t> index;
  std::vector<Matrix> ms;
  size_t total = 0;
  for (const WeightMatrix* w : ws) {
    const std::optional<kernels::WeightFormat> f = block_format(w->type);
    if (!f || !kernels::packed_supported(*f) || w->data == nullptr || index.count(w->data) != 0) {
      continue;
    }
    index[w->data] = ms.size();
    // In place where a group takes exactly its rows' bytes (the 32-value formats).
    const bool here = in_place && w->rows % kernels::kPackRows == 0 &&
                      kernels::packed_group_bytes(*f, w->cols) == kernels::kPackRows * w->row_bytes;
    ms.push_back({w, *f, here, total});
    if (!here) {
      total += (static_cast<size_t>(kernels::packed_groups(w->rows)) *
                    kernels::packed_group_bytes(*f, w->cols) +
                63) /
               64 * 64;
    }
  }
  // A copy beside the rows only where it takes at most half the memory left.
  if (total > 0 && total <= available_memory_bytes() / 2) {
    if (total >= kHugePageBytes && huge_pages_available()) {
      data_ = static_cast<uint8_t*>(map_huge_page_advised(total));
      mapped_ = data_ != nullptr;
    }
    if (data_ == nullptr) data_ = new (std::nothrow) uint8_t[total];
    if (data_ != nullptr) bytes_ = total;
  }
  size_t max_group = 0;
  struct Job {
    const Matrix* m;
    int64_t group;
  };
  std::vector<Job> jobs;
  for (Matrix& m : ms) {
    if (m.in_place) {
      m.out = const_cast<uint8_t*>(m.w->data);  // writable: the caller unsealed it
    } else if (data_ != nullptr) {
      m.out = data_ + m.offset;
    } else {
      continue;  // no room for a copy: this matrix stays unpacked
    }
    max_group = std::max(max_group, kernels::packed_group_bytes(m.f, m.w->cols));
    for (int64_t g = 0; g < kernels::packed_groups(m.w->rows); ++g) jobs.push_back({&m, g});
  }
  // In place, a group is packed into a per-thread buffer and copied over
  // its rows (it takes exactly their bytes).
  const int threads = std::max(n_threads, 1);
  std::vector<uint8_t> scratch(max_group * static_cast<size_t>(threads));
#pragma omp parallel for num_threads(threads) schedule(dynamic, 64)
  for (size_t j = 0; j < jobs.size(); ++j) {
    const Matrix& m = *jobs[j].m;
    const WeightMatrix& w = *m.w;
    const int64_t r0 = jobs[j].group * kernels::kPackRows;
    const size_t group_bytes = kernels::packed_group_bytes(m.f, w.cols);
    uint8_t* dst = m.out + static_cast<size_t>(jobs[j].group) * group_bytes;
    uint8_t* tmp =
        m.in_place ? scratch.data() + max_group * static_cast<size_t>(omp_get_thread_num()) : dst;
    kernels::scalar::pack_rows(m.f, w.row(r0), w.row_bytes,
                               std::min<int64_t>(kernels::kPackRows, w.rows - r0), w.cols, tmp);
    if (m.in_place) std::memcpy(dst, tmp, group_bytes);
  }
  if (mapped_) ::mprotect(data_, bytes_, PROT_READ);  // read-only from here on
  for (const Matrix& m : ms) {
    if (m.in_place) in_place_ += static_cast<size_t>(m.w->rows) * m.w->row_bytes;
  }
  for (WeightMatrix* w : ws) {
    const auto it = index.find(w->data);
    if (it == index.end() || ms[it->second].out == nullptr) continue;
    const Matrix& m = ms[it->second];
    w->packed = m.out;
    if (m.in_place) w->data = nullptr;  // its rows are gone: only the packed groups remain
  }
}

void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads) {
  MatmulScratch s;
  matmul(w, x, n_tokens, y, n_threads, s, Activations::kF32);
}

void matmul_reference(const WeightMatrix& w, const float* x, int n_tokens, float* y) {
  const std::optional<kernels::WeightFormat> format = block_format(w.type);
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    if (format) {
      kernels::scalar::dequantize_rows(*format, w.row(r), w.row_bytes, 1, w.cols, row.data(),
                                       row.size());
    } else {
      dequantize_row(w, r, row.data());
    }
    for (int t = 0; t < n_tokens; ++t) {
      double sum = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) sum += static_cast<double>(row[c]) * x[t * w.cols + c];
      y[static_cast<int64_t>(t) * w.rows + r] = static_cast<float>(sum);
    }
  }
}

}  // namespace innerq::model
#endif  // HWY_ONCE
