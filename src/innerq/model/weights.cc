// innerq/model/weights.cc — matmul over ggml-format weights: scalar reference
// and Highway kernels (self-including foreach_target pattern; one dispatch per
// matmul call).
#include "innerq/model/weights.h"

#include <algorithm>
#include <vector>

#include <fmt/core.h>

#include "innerq/base/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "innerq/model/weights.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace innerq::model {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most 16 lanes, so one vector of codes never spans more than half a
// 32-value block (the two nibble halves of Q4_1 are 16 bytes each).
using DF = hn::CappedTag<float, 16>;

// Below this many multiply-adds a matmul runs on the calling thread: waking a
// thread team costs more than the work (and far more on a busy machine).
constexpr int64_t kMinParallelWork = 1 << 18;

// One fp16 block scale in f32 with the target's conversion instruction (F16C
// on x86), not the soft-float libgcc call that a scalar _Float16 cast becomes.
HWY_INLINE float ScaleF32(const f16_bits& h) {
  const hn::CappedTag<float, 1> d1;
  const hn::Rebind<hwy::float16_t, decltype(d1)> dh1;
  return hn::GetLane(
      hn::PromoteTo(d1, hn::LoadU(dh1, reinterpret_cast<const hwy::float16_t*>(&h))));
}

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

float DotQ8_0(DF df, const BlockQ8_0* blocks, const float* x, int64_t n_blocks) {
  const hn::Rebind<int8_t, DF> d8;
  const hn::Rebind<int32_t, DF> di;
  const size_t N = hn::Lanes(df);
  auto total = hn::Zero(df);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const BlockQ8_0& blk = blocks[b];
    const float* xb = x + b * kQuantBlock;
    auto acc = hn::Zero(df);
    for (size_t i = 0; i < kQuantBlock; i += N) {
      const auto q = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, blk.q + i)));
      acc = hn::MulAdd(q, hn::LoadU(df, xb + i), acc);
    }
    total = hn::MulAdd(hn::Set(df, ScaleF32(blk.d)), acc, total);
  }
  return hn::GetLane(hn::SumOfLanes(df, total));
}

// x_sums: [n_blocks] Σ of x over each block, shared by every row.
float DotQ4_1(DF df, const BlockQ4_1* blocks, const float* x, const float* x_sums,
              int64_t n_blocks) {
  const hn::Rebind<uint8_t, DF> d8;
  const hn::Rebind<int32_t, DF> di;
  const size_t N = hn::Lanes(df);
  const auto low_mask = hn::Set(di, 15);
  auto total = hn::Zero(df);
  float offset = 0.0f;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const BlockQ4_1& blk = blocks[b];
    const float* xb = x + b * kQuantBlock;
    auto acc = hn::Zero(df);
    for (size_t i = 0; i < kQuantBlock / 2; i += N) {
      const auto q = hn::PromoteTo(di, hn::LoadU(d8, blk.q + i));
      const auto lo = hn::ConvertTo(df, hn::And(q, low_mask));
      const auto hi = hn::ConvertTo(df, hn::ShiftRight<4>(q));
      acc = hn::MulAdd(lo, hn::LoadU(df, xb + i), acc);
      acc = hn::MulAdd(hi, hn::LoadU(df, xb + kQuantBlock / 2 + i), acc);
    }
    total = hn::MulAdd(hn::Set(df, ScaleF32(blk.d)), acc, total);
    offset += ScaleF32(blk.m) * x_sums[b];
  }
  return hn::GetLane(hn::SumOfLanes(df, total)) + offset;
}

void MatvecImpl(const WeightMatrix& w, const float* x, float* y, int n_threads) {
  const DF df;
  const int64_t n_blocks = w.cols / kQuantBlock;
  std::vector<float> x_sums;
  if (w.type == GgmlType::kQ4_1) {
    x_sums.resize(static_cast<size_t>(n_blocks));
    for (int64_t b = 0; b < n_blocks; ++b) {
      float s = 0.0f;
      for (int i = 0; i < kQuantBlock; ++i) s += x[b * kQuantBlock + i];
      x_sums[static_cast<size_t>(b)] = s;
    }
  }
  const bool parallel = w.rows * w.cols >= kMinParallelWork;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (parallel)
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* row = w.row(r);
    switch (w.type) {
      case GgmlType::kF32:
        y[r] = DotF32(df, reinterpret_cast<const float*>(row), x, w.cols);
        break;
      case GgmlType::kF16:
        y[r] = DotF16(df, reinterpret_cast<const f16_bits*>(row), x, w.cols);
        break;
      case GgmlType::kQ8_0:
        y[r] = DotQ8_0(df, reinterpret_cast<const BlockQ8_0*>(row), x, n_blocks);
        break;
      case GgmlType::kQ4_1:
        y[r] = DotQ4_1(df, reinterpret_cast<const BlockQ4_1*>(row), x, x_sums.data(), n_blocks);
        break;
      default:
        break;  // rejected by weight_matrix()
    }
  }
}

// ---------------------------------------------------------------------------
// Prefill: many tokens. kTileRows rows are expanded to f32 once per block of
// kTokenBlock tokens and reused by all of them (4 rows × 2 or 4 tokens of
// accumulators in registers).
// ---------------------------------------------------------------------------

constexpr int kTileRows = 4;
constexpr int kTokenBlock = 64;

void DequantizeRowInto(const WeightMatrix& w, int64_t r, float* out) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const uint8_t* row = w.row(r);
  switch (w.type) {
    case GgmlType::kQ8_0: {
      const hn::Rebind<int8_t, DF> d8;
      const hn::Rebind<int32_t, DF> di;
      const auto* blocks = reinterpret_cast<const BlockQ8_0*>(row);
      for (int64_t b = 0; b < w.cols / kQuantBlock; ++b) {
        const auto d = hn::Set(df, ScaleF32(blocks[b].d));
        for (size_t i = 0; i < kQuantBlock; i += N) {
          const auto q = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, blocks[b].q + i)));
          hn::StoreU(hn::Mul(q, d), df, out + b * kQuantBlock + static_cast<int64_t>(i));
        }
      }
      break;
    }
    case GgmlType::kQ4_1: {
      const hn::Rebind<uint8_t, DF> d8;
      const hn::Rebind<int32_t, DF> di;
      const auto low_mask = hn::Set(di, 15);
      const auto* blocks = reinterpret_cast<const BlockQ4_1*>(row);
      for (int64_t b = 0; b < w.cols / kQuantBlock; ++b) {
        const auto d = hn::Set(df, ScaleF32(blocks[b].d));
        const auto m = hn::Set(df, ScaleF32(blocks[b].m));
        float* ob = out + b * kQuantBlock;
        for (size_t i = 0; i < kQuantBlock / 2; i += N) {
          const auto q = hn::PromoteTo(di, hn::LoadU(d8, blocks[b].q + i));
          hn::StoreU(hn::MulAdd(hn::ConvertTo(df, hn::And(q, low_mask)), d, m), df, ob + i);
          hn::StoreU(hn::MulAdd(hn::ConvertTo(df, hn::ShiftRight<4>(q)), d, m), df,
                     ob + kQuantBlock / 2 + i);
        }
      }
      break;
    }
    default:
      dequantize_row(w, r, out);
      break;
  }
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

void MatmulTiledImpl(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads) {
  const DF df;
  const int64_t cols = w.cols;
  const int64_t n_tiles = (w.rows + kTileRows - 1) / kTileRows;
  const bool parallel = w.rows * w.cols * n_tokens >= kMinParallelWork;
#pragma omp parallel num_threads(n_threads) if (parallel)
  {
    std::vector<float> tile(static_cast<size_t>(kTileRows * cols));
    for (int t0 = 0; t0 < n_tokens; t0 += kTokenBlock) {
      const int t1 = std::min(n_tokens, t0 + kTokenBlock);
#pragma omp for schedule(static)
      for (int64_t tile_i = 0; tile_i < n_tiles; ++tile_i) {
        const int64_t r0 = tile_i * kTileRows;
        const int n_rows = static_cast<int>(std::min<int64_t>(kTileRows, w.rows - r0));
        const float* rows[kTileRows];
        for (int r = 0; r < kTileRows; ++r) {
          float* dst = tile.data() + r * cols;
          if (r >= n_rows) {
            std::fill(dst, dst + cols, 0.0f);
            rows[r] = dst;
          } else if (w.type == GgmlType::kF32) {
            rows[r] = reinterpret_cast<const float*>(w.row(r0 + r));
          } else {
            DequantizeRowInto(w, r0 + r, dst);
            rows[r] = dst;
          }
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

void MatmulImpl(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads) {
  if (n_tokens == 1) {
    MatvecImpl(w, x, y, n_threads);
  } else {
    MatmulTiledImpl(w, x, n_tokens, y, n_threads);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace innerq::model
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace innerq::model {

HWY_EXPORT(MatmulImpl);

bool weight_type_supported(GgmlType type) {
  return type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kQ8_0 ||
         type == GgmlType::kQ4_1;
}

WeightMatrix weight_matrix(const GgufTensor& tensor) {
  if (!weight_type_supported(tensor.type)) {
    throw Error(fmt::format("tensor '{}': weight type {} is not supported (F32, F16, Q8_0, Q4_1)",
                            tensor.name, ggml_type_name(tensor.type)));
  }
  if (tensor.ne.size() > 2) {
    throw Error(fmt::format("tensor '{}': expected a matrix, got {} dimensions", tensor.name,
                            tensor.ne.size()));
  }
  WeightMatrix w;
  w.name = tensor.name;
  w.type = tensor.type;
  w.cols = tensor.ne[0];
  w.rows = tensor.rows();
  w.row_bytes = tensor.n_bytes / static_cast<size_t>(w.rows);
  w.data = tensor.data;
  return w;
}

void dequantize_row(const WeightMatrix& w, int64_t r, float* out) {
  const uint8_t* row = w.row(r);
  switch (w.type) {
    case GgmlType::kF32:
      std::copy_n(reinterpret_cast<const float*>(row), w.cols, out);
      break;
    case GgmlType::kF16: {
      const auto* h = reinterpret_cast<const f16_bits*>(row);
      for (int64_t i = 0; i < w.cols; ++i) out[i] = f16_to_f32(h[i]);
      break;
    }
    case GgmlType::kQ8_0: {
      const auto* blocks = reinterpret_cast<const BlockQ8_0*>(row);
      for (int64_t b = 0; b < w.cols / kQuantBlock; ++b) {
        const float d = f16_to_f32(blocks[b].d);
        for (int i = 0; i < kQuantBlock; ++i) out[b * kQuantBlock + i] = d * blocks[b].q[i];
      }
      break;
    }
    case GgmlType::kQ4_1: {
      const auto* blocks = reinterpret_cast<const BlockQ4_1*>(row);
      for (int64_t b = 0; b < w.cols / kQuantBlock; ++b) {
        const float d = f16_to_f32(blocks[b].d);
        const float m = f16_to_f32(blocks[b].m);
        for (int i = 0; i < kQuantBlock / 2; ++i) {
          out[b * kQuantBlock + i] = d * static_cast<float>(blocks[b].q[i] & 15) + m;
          out[b * kQuantBlock + kQuantBlock / 2 + i] =
              d * static_cast<float>(blocks[b].q[i] >> 4) + m;
        }
      }
      break;
    }
    default:
      throw Error(fmt::format("tensor '{}': cannot dequantize {}", w.name, ggml_type_name(w.type)));
  }
}

void matmul(const WeightMatrix& w, const float* x, int n_tokens, float* y, int n_threads) {
  HWY_DYNAMIC_DISPATCH(MatmulImpl)(w, x, n_tokens, y, n_threads);
}

void matmul_reference(const WeightMatrix& w, const float* x, int n_tokens, float* y) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row(w, r, row.data());
    for (int t = 0; t < n_tokens; ++t) {
      double sum = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) sum += static_cast<double>(row[c]) * x[t * w.cols + c];
      y[static_cast<int64_t>(t) * w.rows + r] = static_cast<float>(sum);
    }
  }
}

}  // namespace innerq::model
#endif  // HWY_ONCE
