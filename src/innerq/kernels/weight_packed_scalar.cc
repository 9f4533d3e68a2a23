// innerq/kernels/weight_packed_scalar.cc — packing of 16-row groups and the
// scalar reference of their product (layout and arithmetic in
// weight_packed.h): every code read back from the packed bytes on its own.
#include <cstring>

#include "innerq/kernels/weight_packed.h"

namespace innerq::kernels::scalar {
namespace {

bool has_fifth_bit(WeightFormat f) {
  return f == WeightFormat::kQ5_0 || f == WeightFormat::kQ5_1;
}
bool has_min(WeightFormat f) {
  return f == WeightFormat::kQ4_1 || f == WeightFormat::kQ5_1;
}

// Where chunk c's parts start inside a group of C chunks.
struct GroupParts {
  size_t codes, bits, d, m;
};

GroupParts parts(WeightFormat f, int64_t chunks, int64_t c) {
  const size_t C = static_cast<size_t>(chunks), k = static_cast<size_t>(c);
  const size_t code_bytes = f == WeightFormat::kQ8_0 ? 512 : 256;
  const size_t bits_bytes = has_fifth_bit(f) ? 64 : 0;
  GroupParts p;
  p.codes = k * code_bytes;
  p.bits = C * code_bytes + k * bits_bytes;
  p.d = C * (code_bytes + bits_bytes) + k * 32;
  p.m = C * (code_bytes + bits_bytes + 32) + k * 32;
  return p;
}

// One block's codes u_i (Q8_0: q + 128) and fp16 fields.
struct BlockCodes {
  int u[kActChunk];
  f16_bits d{};
  f16_bits m{};
};

template <class Block>
Block load(const uint8_t* at) {
  Block b;
  std::memcpy(&b, at, sizeof(b));
  return b;
}

BlockCodes read_block(WeightFormat f, const uint8_t* at) {
  BlockCodes out;
  switch (f) {
    case WeightFormat::kQ4_0: {
      const auto b = load<BlockQ4_0>(at);
      out.d = b.d;
      for (int i = 0; i < kActChunk; ++i) out.u[i] = nibble32(b.qs, i);
      break;
    }
    case WeightFormat::kQ4_1: {
      const auto b = load<BlockQ4_1>(at);
      out.d = b.d;
      out.m = b.m;
      for (int i = 0; i < kActChunk; ++i) out.u[i] = nibble32(b.qs, i);
      break;
    }
    case WeightFormat::kQ5_0: {
      const auto b = load<BlockQ5_0>(at);
      out.d = b.d;
      for (int i = 0; i < kActChunk; ++i) out.u[i] = nibble32(b.qs, i) | fifth_bit32(b.qh, i) << 4;
      break;
    }
    case WeightFormat::kQ5_1: {
      const auto b = load<BlockQ5_1>(at);
      out.d = b.d;
      out.m = b.m;
      for (int i = 0; i < kActChunk; ++i) out.u[i] = nibble32(b.qs, i) | fifth_bit32(b.qh, i) << 4;
      break;
    }
    default: {  // kQ8_0 (packed_supported)
      const auto b = load<BlockQ8_0>(at);
      out.d = b.d;
      for (int i = 0; i < kActChunk; ++i) out.u[i] = b.qs[i] + 128;
      break;
    }
  }
  return out;
}

// Byte offset of value i of row r inside a chunk's codes, and whether it is
// the high nibble (nibble formats).
size_t code_byte(WeightFormat f, int r, int i, bool* high) {
  const int run = i / 4, j = i % 4;
  if (f == WeightFormat::kQ8_0) {
    *high = false;
    return static_cast<size_t>(64 * run + 4 * r + j);
  }
  *high = run % 2 != 0;
  return static_cast<size_t>(64 * (run / 2) + 4 * r + j);
}

// Code i of row r of chunk c in a group, as stored (Q8_0: q + 128).
int packed_code(WeightFormat f, const uint8_t* group, int64_t chunks, int64_t c, int r, int i) {
  const GroupParts p = parts(f, chunks, c);
  bool high = false;
  const uint8_t byte = group[p.codes + code_byte(f, r, i, &high)];
  if (f == WeightFormat::kQ8_0) return byte;
  int u = high ? byte >> 4 : byte & 15;
  if (has_fifth_bit(f)) {
    const int bit = 4 * r + i % 4;
    u |= ((group[p.bits + 8 * static_cast<size_t>(i / 4) + static_cast<size_t>(bit / 8)] >>
           (bit % 8)) &
          1)
         << 4;
  }
  return u;
}

f16_bits packed_f16(const uint8_t* at, int r) {
  f16_bits v;
  std::memcpy(&v, at + 2 * r, sizeof(v));
  return v;
}

// Activation q_i of a chunk in either form.
int act_q(const ActChunk& a, int i) {
  return a.q[i];
}
int act_q(const ActBytes& a, int i) {
  return 256 * a.h[i] + a.l[i];
}

template <class Act>
void dot_packed_of(WeightFormat f, const uint8_t* packed, int64_t n_rows, const Act* x,
                   size_t x_stride, int n_tokens, int64_t n, float* y, size_t y_stride) {
  const int64_t chunks = n / kActChunk;
  const size_t group_bytes = packed_group_bytes(f, n);
  for (int64_t row = 0; row < n_rows; ++row) {
    const uint8_t* group = packed + static_cast<size_t>(row / kPackRows) * group_bytes;
    const int r = static_cast<int>(row % kPackRows);
    for (int t = 0; t < n_tokens; ++t) {
      const Act* xt = x + static_cast<size_t>(t) * x_stride;
      double sum = 0.0;
      for (int64_t c = 0; c < chunks; ++c) {
        const GroupParts p = parts(f, chunks, c);
        const float d = f16_to_f32(packed_f16(group + p.d, r));
        float b = 0.0f;
        switch (f) {
          case WeightFormat::kQ4_0:
            b = -8.0f * d;
            break;
          case WeightFormat::kQ5_0:
            b = -16.0f * d;
            break;
          case WeightFormat::kQ4_1:
          case WeightFormat::kQ5_1:
            b = f16_to_f32(packed_f16(group + p.m, r));
            break;
          default:  // Q8_0: no offset, codes stored + 128
            break;
        }
        const int bias = f == WeightFormat::kQ8_0 ? 128 : 0;
        int64_t j = 0;
        for (int i = 0; i < kActChunk; ++i) {
          j +=
              static_cast<int64_t>(packed_code(f, group, chunks, c, r, i) - bias) * act_q(xt[c], i);
        }
        const double fj = d * xt[c].d;
        const double o = b * xt[c].ds;
        sum += fj * static_cast<double>(j) + o;
      }
      y[static_cast<size_t>(t) * y_stride + row] = static_cast<float>(sum);
    }
  }
}

}  // namespace

void pack_rows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows, int64_t n,
               uint8_t* out) {
  const int64_t chunks = n / kActChunk;
  const size_t block_bytes = weight_format_info(f).block_bytes;
  const size_t group_bytes = packed_group_bytes(f, n);
  for (int64_t g = 0; g < packed_groups(n_rows); ++g) {
    uint8_t* group = out + static_cast<size_t>(g) * group_bytes;
    std::memset(group, 0, group_bytes);
    for (int r = 0; r < kPackRows && g * kPackRows + r < n_rows; ++r) {
      const uint8_t* row = rows + static_cast<size_t>(g * kPackRows + r) * row_bytes;
      for (int64_t c = 0; c < chunks; ++c) {
        const BlockCodes b = read_block(f, row + static_cast<size_t>(c) * block_bytes);
        const GroupParts p = parts(f, chunks, c);
        for (int i = 0; i < kActChunk; ++i) {
          bool high = false;
          uint8_t& byte = group[p.codes + code_byte(f, r, i, &high)];
          if (f == WeightFormat::kQ8_0) {
            byte = static_cast<uint8_t>(b.u[i]);
            continue;
          }
          byte |= static_cast<uint8_t>((b.u[i] & 15) << (high ? 4 : 0));
          if (has_fifth_bit(f) && (b.u[i] & 16)) {
            const int bit = 4 * r + i % 4;
            group[p.bits + 8 * static_cast<size_t>(i / 4) + static_cast<size_t>(bit / 8)] |=
                static_cast<uint8_t>(1u << (bit % 8));
          }
        }
        std::memcpy(group + p.d + 2 * r, &b.d, sizeof(b.d));
        if (has_min(f)) std::memcpy(group + p.m + 2 * r, &b.m, sizeof(b.m));
      }
    }
  }
}

void dequantize_packed_row(WeightFormat f, const uint8_t* packed, int64_t r, int64_t n,
                           float* out) {
  const int64_t chunks = n / kActChunk;
  const uint8_t* group = packed + static_cast<size_t>(r / kPackRows) * packed_group_bytes(f, n);
  const int row = static_cast<int>(r % kPackRows);
  for (int64_t c = 0; c < chunks; ++c) {
    const GroupParts p = parts(f, chunks, c);
    const float d = f16_to_f32(packed_f16(group + p.d, row));
    const float m = has_min(f) ? f16_to_f32(packed_f16(group + p.m, row)) : 0.0f;
    const int zero = f == WeightFormat::kQ4_0   ? 8
                     : f == WeightFormat::kQ5_0 ? 16
                     : f == WeightFormat::kQ8_0 ? 128
                                                : 0;
    for (int i = 0; i < kActChunk; ++i) {
      const int u = packed_code(f, group, chunks, c, row, i);
      // As weight_blocks_scalar.cc: d·(q − zero), or d·q + m.
      out[c * kActChunk + i] =
          has_min(f) ? d * static_cast<float>(u) + m : d * static_cast<float>(u - zero);
    }
  }
}

void split_activations(const ActChunk* x, int64_t n_chunks, ActBytes* out) {
  for (int64_t c = 0; c < n_chunks; ++c) {
    ActBytes& a = out[c];
    a = ActBytes{};
    for (int i = 0; i < kActChunk; ++i) {
      const int q = x[c].q[i];
      const int h = (q + 128) >> 8;  // floor: |q| ≤ kActMax keeps h in [−127, 127]
      a.h[i] = static_cast<int8_t>(h);
      a.l[i] = static_cast<int8_t>(q - 256 * h);
      a.sum += q;
    }
    a.d = x[c].d;
    a.ds = x[c].ds;
  }
}

void dot_packed(WeightFormat f, const uint8_t* packed, int64_t n_rows, const ActChunk* x,
                size_t x_stride, int n_tokens, int64_t n, float* y, size_t y_stride) {
  dot_packed_of(f, packed, n_rows, x, x_stride, n_tokens, n, y, y_stride);
}

void dot_packed(WeightFormat f, const uint8_t* packed, int64_t n_rows, const ActBytes* x,
                size_t x_stride, int n_tokens, int64_t n, float* y, size_t y_stride) {
  dot_packed_of(f, packed, n_rows, x, x_stride, n_tokens, n, y, y_stride);
}

}  // namespace innerq::kernels::scalar
