// innerq/kernels/weight_int16_scalar.cc — scalar reference of the int16-activation
// weight product: every code and factor computed on its own, straight from
// the tables in weight_int16.h and the layouts in weight_blocks.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "innerq/kernels/weight_chunks.h"
#include "innerq/kernels/weight_int16.h"

namespace innerq::kernels::scalar {
namespace {

using chunks::Chunk;
using chunks::chunk;
using chunks::load;

template <class Block>
void dot_rows_of(const uint8_t* rows, size_t row_bytes, int64_t n_rows, const ActChunk* x,
                 size_t x_stride, int n_tokens, int64_t n, float* y, size_t y_stride,
                 double* y_abs) {
  constexpr int kChunks = kBlockValues<Block> / kActChunk;
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* row = rows + static_cast<size_t>(r) * row_bytes;
    for (int t = 0; t < n_tokens; ++t) {
      const ActChunk* xt = x + static_cast<size_t>(t) * x_stride;
      double sum = 0.0, abs = 0.0;
      for (int64_t blk = 0; blk < n / kBlockValues<Block>; ++blk) {
        const Block b = load<Block>(row + blk * sizeof(Block));
        for (int k = 0; k < kChunks; ++k) {
          const ActChunk& a = xt[blk * kChunks + k];
          const Chunk ch = chunk(b, k);
          int64_t j[2] = {0, 0}, j_abs[2] = {0, 0};
          for (int i = 0; i < kActChunk; ++i) {
            const int64_t p = static_cast<int64_t>(ch.u[i]) * a.q[i];
            j[i / 16] += p;
            j_abs[i / 16] += p < 0 ? -p : p;
          }
          if (ch.per_half) {
            for (int h = 0; h < 2; ++h) {
              const double f = ch.w[h] * a.d;
              const double o = ch.b[h] * a.ds_half[h];
              sum += f * static_cast<double>(j[h]) + o;
              abs += std::fabs(f) * static_cast<double>(j_abs[h]) + std::fabs(o);
            }
          } else {
            const double f = ch.w[0] * a.d;
            const double o = ch.b[0] * a.ds;
            sum += f * static_cast<double>(j[0] + j[1]) + o;
            abs += std::fabs(f) * static_cast<double>(j_abs[0] + j_abs[1]) + std::fabs(o);
          }
        }
      }
      y[static_cast<size_t>(t) * y_stride + r] = static_cast<float>(sum);
      if (y_abs) y_abs[static_cast<size_t>(t) * y_stride + r] = abs;
    }
  }
}

}  // namespace

void quantize_activations(const float* x, int64_t n, ActChunk* out) {
  for (int64_t c = 0; c < n / kActChunk; ++c) {
    const float* xc = x + c * kActChunk;
    ActChunk& a = out[c];
    float amax = 0.0f;
    bool finite = true;
    for (int i = 0; i < kActChunk; ++i) {
      finite = finite && std::isfinite(xc[i]);
      amax = std::max(amax, std::fabs(xc[i]));
    }
    a = ActChunk{};
    if (!finite) {
      a.d = a.ds = a.ds_half[0] = a.ds_half[1] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    if (amax < 0x1p-90f) continue;
    a.d = amax / static_cast<float>(kActMax);
    const float id = 1.0f / a.d;
    int32_t sum[2] = {0, 0};
    for (int i = 0; i < kActChunk; ++i) {
      const float q = std::clamp(std::nearbyint(xc[i] * id), -static_cast<float>(kActMax),
                                 static_cast<float>(kActMax));
      a.q[i] = static_cast<int16_t>(q);
      sum[i / 16] += a.q[i];
    }
    a.ds = a.d * static_cast<float>(sum[0] + sum[1]);
    a.ds_half[0] = a.d * static_cast<float>(sum[0]);
    a.ds_half[1] = a.d * static_cast<float>(sum[1]);
  }
}

void dot_rows_int16(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows,
                    const ActChunk* x, size_t x_stride, int n_tokens, int64_t n, float* y,
                    size_t y_stride, double* y_abs) {
  with_block_type(
      f,
      [&]<class Block>() {
        dot_rows_of<Block>(rows, row_bytes, n_rows, x, x_stride, n_tokens, n, y, y_stride, y_abs);
      },
      [] {});  // BF16: not supported (int16_dot_supported); callers check
}

}  // namespace innerq::kernels::scalar
