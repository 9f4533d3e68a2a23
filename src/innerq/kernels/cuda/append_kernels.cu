// innerq/kernels/cuda/append_kernels.cu — quantize-on-append, one thread per
// group. The arithmetic is quantize_rules.h step by step with explicitly
// rounded intrinsics (__fadd_rn, __fmul_rn, __fdiv_rn: nothing is contracted
// into a fused multiply-add, as the CPU builds with -ffp-contract=off), fp16
// rounding by __float2half_rn (round to nearest even, as f32_to_f16) and
// rintf for round_half_even, so codes and metadata equal the CPU's bit for bit.
#include "innerq/kernels/cuda/append_kernels.h"

#include <string>

#include <cuda_fp16.h>

#include "innerq/base/error.h"
#include "innerq/kernels/cuda/device_format.cuh"
#include "innerq/kernels/tile_format.h"

namespace innerq::cuda {
namespace {

constexpr int kAppendThreads = 128;
constexpr int kMaxGroupSize = 128;
constexpr int kErrorPartials = 16;  // quantize_rules.h: the canonical error order

// ---- fp16 rounding helpers (quantize_rules.h) -------------------------------
__device__ uint16_t f16_rn(float x) {
  return __half_as_ushort(__float2half_rn(x));
}
__device__ uint16_t f16_next_down(uint16_t h) {
  if (h == 0x0000) return 0x8001;
  return (h & 0x8000) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h - 1);
}
__device__ uint16_t f16_next_up(uint16_t h) {
  if (h == 0x8000) return 0x0001;
  return (h & 0x8000) ? static_cast<uint16_t>(h - 1) : static_cast<uint16_t>(h + 1);
}
__device__ uint16_t f16_round_down(float x) {
  const uint16_t h = f16_rn(x);
  return half_bits_to_float(h) > x ? f16_next_down(h) : h;
}
__device__ uint16_t f16_round_up(float x) {
  const uint16_t h = f16_rn(x);
  return half_bits_to_float(h) < x ? f16_next_up(h) : h;
}
__device__ float inverse_or_zero(float s) {
  return s > 0.0f ? __fdiv_rn(1.0f, s) : 0.0f;
}

// ModeParams of quantize_rules.h.
struct Mode {
  uint16_t scale_bits, zero_bits;
  float scale, zero, shift, inv_scale, min_level, max_level, offset;
};

__device__ Mode asymmetric_mode(float lo, float hi, int bits) {
  const uint16_t zero_bits = f16_round_down(lo);
  const float zero = half_bits_to_float(zero_bits);
  const uint16_t scale_bits =
      f16_round_up(__fdiv_rn(__fsub_rn(hi, zero), static_cast<float>(max_code(bits))));
  const float scale = half_bits_to_float(scale_bits);
  return {scale_bits, zero_bits,
          scale,      zero,
          zero,       inverse_or_zero(scale),
          0.0f,       static_cast<float>(max_code(bits)),
          0.0f};
}

__device__ Mode symmetric_mode(float absmax, int bits) {
  const float offset = static_cast<float>(sym_offset(bits));
  const uint16_t magnitude_bits = f16_rn(__fdiv_rn(absmax, offset));
  const float scale = half_bits_to_float(magnitude_bits);
  return {static_cast<uint16_t>(magnitude_bits | kSymFlag),
          0,
          scale,
          __fmul_rn(-offset, scale),
          0.0f,
          inverse_or_zero(scale),
          -offset,
          offset - 1.0f,
          offset};
}

// Codes of one group under one mode; returns the canonical L2 error.
__device__ float encode_group(const Mode& m, const float* x, int n, uint8_t* codes) {
  float partial[kErrorPartials] = {};
  for (int i = 0; i < n; ++i) {
    const float level = rintf(__fmul_rn(__fsub_rn(x[i], m.shift), m.inv_scale));
    const float u = __fadd_rn(fminf(fmaxf(level, m.min_level), m.max_level), m.offset);
    codes[i] = static_cast<uint8_t>(u);
    const float err = __fsub_rn(x[i], __fadd_rn(__fmul_rn(m.scale, u), m.zero));
    partial[i % kErrorPartials] = __fadd_rn(partial[i % kErrorPartials], __fmul_rn(err, err));
  }
  for (int width = kErrorPartials / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) partial[j] = __fadd_rn(partial[j], partial[j + width]);
  }
  return partial[0];
}

struct QuantizedGroup {
  uint8_t codes[kMaxGroupSize];
  uint16_t scale_bits, zero_bits;
};

// quantize_group of the scalar reference; false if the group is invalid.
__device__ bool quantize_group(const float* x, int n, int bits, QuantMode mode,
                               QuantizedGroup& out) {
  float lo = x[0], hi = x[0];
  for (int i = 0; i < n; ++i) {
    if (!isfinite(x[i]) || fabsf(x[i]) > 65504.0f) return false;
    lo = fminf(lo, x[i]);
    hi = fmaxf(hi, x[i]);
  }
  // canonical_range: −0 folds into +0.
  lo = __fadd_rn(lo, 0.0f);
  hi = __fadd_rn(hi, 0.0f);
  const float absmax = __fadd_rn(-lo > hi ? -lo : hi, 0.0f);
  const Mode asym = asymmetric_mode(lo, hi, bits);
  const Mode sym = symmetric_mode(absmax, bits);
  bool use_sym = mode == QuantMode::kSymmetric;
  if (mode == QuantMode::kHybrid) {
    uint8_t sym_codes[kMaxGroupSize];
    const float asym_error = encode_group(asym, x, n, out.codes);
    const float sym_error = encode_group(sym, x, n, sym_codes);
    use_sym = sym_error <= asym_error;
    if (use_sym) {
      for (int i = 0; i < n; ++i) out.codes[i] = sym_codes[i];
    }
  } else {
    encode_group(use_sym ? sym : asym, x, n, out.codes);
  }
  out.scale_bits = use_sym ? sym.scale_bits : asym.scale_bits;
  out.zero_bits = use_sym ? sym.zero_bits : asym.zero_bits;
  return true;
}

// Writes a group into row `row`, group g of a tile (tile_format.h): the
// record's words (pack_chunk of quantize_rules.h, chunk by chunk) go to
// [g][w][16], the metadata to the SoA arrays.
__device__ void store_group_in_tile(const QuantizedGroup& q, const TileFormat& f, uint8_t* tile,
                                    int g, int row) {
  auto* words = reinterpret_cast<uint32_t*>(tile);
  const PlaneSplit planes = planes_of(f.bits);
  int w_index = 0;
  for (int chunk = 0; chunk < f.group / kChunk; ++chunk) {
    const uint8_t* codes = q.codes + chunk * kChunk;
    int low_bit = 0;
    for (int k = 0; k < planes.n; ++k) {
      const int w = planes.width[k];
      for (int j = 0; j < w; ++j) {
        uint32_t word = 0;
        for (int stripe = 0; stripe < 8 / w; ++stripe) {
          for (int e = 0; e < 4; ++e) {
            const uint32_t code = codes[4 * (j + w * stripe) + e];
            word |= ((code >> low_bit) & ((1u << w) - 1u)) << (8 * e + w * stripe);
          }
        }
        words[f.word_index(g, w_index++, row)] = word;
      }
      low_bit += w;
    }
  }
  auto* scales = reinterpret_cast<uint16_t*>(tile + f.scales_offset());
  scales[g * kTileRows + row] = q.scale_bits;
  if (f.has_zero) {
    reinterpret_cast<uint16_t*>(tile + f.zeros_offset())[g * kTileRows + row] = q.zero_bits;
  }
}

// Thread (head, row r, group g).
__global__ void __launch_bounds__(kAppendThreads) append_keys_kernel(const AppendKeysParams p) {
  const int groups_per_row = p.head_dim / p.group;
  const long long index = static_cast<long long>(blockIdx.x) * kAppendThreads + threadIdx.x;
  if (index >= static_cast<long long>(p.n_kv_heads) * p.n_rows * groups_per_row) return;
  const int g = static_cast<int>(index % groups_per_row);
  const int r = static_cast<int>(index / groups_per_row % p.n_rows);
  const int h = static_cast<int>(index / groups_per_row / p.n_rows);

  const uint16_t* row = p.rows + h * p.rows_stride + static_cast<size_t>(r) * p.head_dim;
  const float* f = p.key_norm + static_cast<size_t>(h) * p.head_dim;
  float x[kMaxGroupSize];
  for (int i = 0; i < p.group; ++i) {
    const int c = g * p.group + i;
    x[i] = __fdiv_rn(half_bits_to_float(row[c]), f[c]);
  }
  QuantizedGroup q;
  if (!quantize_group(x, p.group, p.bits, p.mode, q)) {
    atomicMin(p.bad_group, static_cast<int>(index));
    return;
  }
  const TileFormat fmt{p.bits, p.group, groups_per_row, mode_has_zero(p.mode)};
  const int slot = p.first_slot + r;
  uint8_t* tile =
      p.tiles + h * p.tiles_stride + static_cast<size_t>(slot / kTileRows) * fmt.bytes();
  store_group_in_tile(q, fmt, tile, g, slot % kTileRows);
}

// Thread (head, block b, channel c).
__global__ void __launch_bounds__(kAppendThreads) append_values_kernel(const AppendValuesParams p) {
  const long long index = static_cast<long long>(blockIdx.x) * kAppendThreads + threadIdx.x;
  if (index >= static_cast<long long>(p.n_kv_heads) * p.n_blocks * p.head_dim) return;
  const int c = static_cast<int>(index % p.head_dim);
  const int b = static_cast<int>(index / p.head_dim % p.n_blocks);
  const int h = static_cast<int>(index / p.head_dim / p.n_blocks);

  const uint16_t* rows = p.rows + h * p.rows_stride + static_cast<size_t>(b) * p.group * p.head_dim;
  float x[kMaxGroupSize];
  for (int t = 0; t < p.group; ++t) x[t] = half_bits_to_float(rows[t * p.head_dim + c]);
  QuantizedGroup q;
  if (!quantize_group(x, p.group, p.bits, p.mode, q)) {
    atomicMin(p.bad_group, static_cast<int>(index));
    return;
  }
  const TileFormat fmt{p.bits, p.group, 1, mode_has_zero(p.mode)};
  const size_t block = static_cast<size_t>(p.first_block + b);
  uint8_t* tile = p.blocks + h * p.blocks_stride +
                  (block * (p.head_dim / kTileRows) + c / kTileRows) * fmt.bytes();
  store_group_in_tile(q, fmt, tile, 0, c % kTileRows);
}

void check_format(const char* what, int bits, int group, int head_dim) {
  if (!is_supported_bits(bits)) {
    throw Error(std::string(what) + ": bits " + std::to_string(bits) + " is not one of 2, 3, 4, 8");
  }
  if (!is_supported_group(group) || head_dim % group != 0 || head_dim % kTileRows != 0) {
    throw Error(std::string(what) + ": group " + std::to_string(group) +
                " must be 32, 64 or 128 and divide head_dim " + std::to_string(head_dim) +
                " (a multiple of 16)");
  }
}

unsigned blocks_for(long long threads) {
  return static_cast<unsigned>((threads + kAppendThreads - 1) / kAppendThreads);
}

}  // namespace

cudaError_t launch_append_keys(const AppendKeysParams& p, cudaStream_t stream) {
  check_format("cuda append keys", p.bits, p.group, p.head_dim);
  const long long n = static_cast<long long>(p.n_kv_heads) * p.n_rows * (p.head_dim / p.group);
  if (n == 0) return cudaSuccess;
  append_keys_kernel<<<blocks_for(n), kAppendThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_append_values(const AppendValuesParams& p, cudaStream_t stream) {
  check_format("cuda append values", p.bits, p.group, p.head_dim);
  const long long n = static_cast<long long>(p.n_kv_heads) * p.n_blocks * p.head_dim;
  if (n == 0) return cudaSuccess;
  append_values_kernel<<<blocks_for(n), kAppendThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace innerq::cuda
