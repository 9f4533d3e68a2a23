// innerq/kernels/weight_packed_scalar.cc — packing of 16-row groups and the
// scalar reference of their product (layout and arithmetic in
// weight_packed.h): every code and factor read back from the packed bytes
// on its own, and each chunk summed as scalar::dot_rows_int16 sums it.
#include <cstring>

#include "innerq/kernels/weight_chunks.h"
#include "innerq/kernels/weight_packed.h"

namespace innerq::kernels::scalar {
namespace {

bool is_k_quant(WeightFormat f) {
  return f == WeightFormat::kQ4_K || f == WeightFormat::kQ5_K || f == WeightFormat::kQ6_K;
}
bool has_fifth_bit(WeightFormat f) {
  return f == WeightFormat::kQ5_0 || f == WeightFormat::kQ5_1 || f == WeightFormat::kQ5_K;
}
bool has_min(WeightFormat f) {
  return f == WeightFormat::kQ4_1 || f == WeightFormat::kQ5_1;
}
bool byte_codes(WeightFormat f) {
  return f == WeightFormat::kQ8_0 || f == WeightFormat::kQ6_K;
}
// What Q4_0, Q5_0 and Q8_0 (as stored, + 128) subtract from a code.
int zero_point(WeightFormat f) {
  return f == WeightFormat::kQ4_0 ? 8 : f == WeightFormat::kQ5_0 ? 16 : 128;
}

// Where chunk c's parts start inside a group of C chunks.
struct GroupParts {
  size_t codes, bits, factors;
};

GroupParts parts(WeightFormat f, int64_t chunks, int64_t c) {
  const size_t C = static_cast<size_t>(chunks), k = static_cast<size_t>(c);
  const size_t code_bytes = byte_codes(f) ? 512 : 256;
  const size_t bits_bytes = has_fifth_bit(f) ? 64 : 0;
  const size_t factor_bytes = packed_chunk_bytes(f) - code_bytes - bits_bytes;
  return {k * code_bytes, C * code_bytes + k * bits_bytes,
          C * (code_bytes + bits_bytes) + k * factor_bytes};
}

// Byte offset of value i of row r inside a chunk's codes, and whether it is
// the high nibble (nibble formats).
size_t code_byte(WeightFormat f, int r, int i, bool* high) {
  const int run = i / 4, j = i % 4;
  if (byte_codes(f)) {
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
  if (byte_codes(f)) return byte;
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

template <class T>
T read(const uint8_t* at, int r) {
  T v;
  std::memcpy(&v, at + sizeof(T) * static_cast<size_t>(r), sizeof(T));
  return v;
}

template <class T>
void write(uint8_t* at, int r, T v) {
  std::memcpy(at + sizeof(T) * static_cast<size_t>(r), &v, sizeof(T));
}

// Chunk c of row r: its codes as weight_int16.h's u_i, and W, B per half.
chunks::Chunk packed_chunk(WeightFormat f, const uint8_t* group, int64_t chunks, int64_t c, int r) {
  const GroupParts p = parts(f, chunks, c);
  const uint8_t* at = group + p.factors;
  chunks::Chunk ch;
  for (int i = 0; i < kActChunk; ++i) ch.u[i] = packed_code(f, group, chunks, c, r, i);
  switch (f) {
    case WeightFormat::kQ4_K:
    case WeightFormat::kQ5_K:
      ch = [&] {
        chunks::Chunk k = chunks::whole(read<float>(at, r), read<float>(at + 64, r));
        std::memcpy(k.u, ch.u, sizeof(k.u));
        return k;
      }();
      ch.per_half = true;
      break;
    case WeightFormat::kQ6_K:
      for (int h = 0; h < 2; ++h) {
        ch.w[h] = read<float>(at + 64 * h, r);
        ch.b[h] = -32.0f * ch.w[h];
      }
      ch.per_half = true;
      break;
    case WeightFormat::kQ4_1:
    case WeightFormat::kQ5_1: {
      const chunks::Chunk k =
          chunks::whole(f16_to_f32(read<f16_bits>(at, r)), f16_to_f32(read<f16_bits>(at + 32, r)));
      std::memcpy(ch.w, k.w, sizeof(ch.w));
      std::memcpy(ch.b, k.b, sizeof(ch.b));
      break;
    }
    default: {  // Q4_0, Q5_0, Q8_0: W = d, B = −zero·d (Q8_0: codes − 128, B = 0)
      const float d = f16_to_f32(read<f16_bits>(at, r));
      const bool q8 = f == WeightFormat::kQ8_0;
      if (q8) {
        for (int& u : ch.u) u -= 128;
      }
      const chunks::Chunk k = chunks::whole(d, q8 ? 0.0f : -static_cast<float>(zero_point(f)) * d);
      std::memcpy(ch.w, k.w, sizeof(ch.w));
      std::memcpy(ch.b, k.b, sizeof(ch.b));
      break;
    }
  }
  return ch;
}

// Activation q_i, d and ds of a chunk in either form (ActBytes rebuilds ds
// and the halves' ds as quantize_activations computed them).
int act_q(const ActChunk& a, int i) {
  return a.q[i];
}
int act_q(const ActBytes& a, int i) {
  return 256 * a.h[i] + a.l[i];
}
float act_ds(const ActChunk& a) {
  return a.ds;
}
float act_ds(const ActBytes& a) {
  return a.ds;
}
float act_ds_half(const ActChunk& a, int h) {
  return a.ds_half[h];
}
float act_ds_half(const ActBytes& a, int h) {
  return a.d * static_cast<float>(a.sum_half[h]);
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
        const chunks::Chunk ch = packed_chunk(f, group, chunks, c, r);
        int64_t j[2] = {0, 0};
        for (int i = 0; i < kActChunk; ++i) {
          j[i / 16] += static_cast<int64_t>(ch.u[i]) * act_q(xt[c], i);
        }
        // As scalar::dot_rows_int16 (weight_int16_scalar.cc), term for term.
        if (ch.per_half) {
          for (int h = 0; h < 2; ++h) {
            const double fh = ch.w[h] * xt[c].d;
            const double o = ch.b[h] * act_ds_half(xt[c], h);
            sum += fh * static_cast<double>(j[h]) + o;
          }
        } else {
          const double fj = ch.w[0] * xt[c].d;
          const double o = ch.b[0] * act_ds(xt[c]);
          sum += fj * static_cast<double>(j[0] + j[1]) + o;
        }
      }
      y[static_cast<size_t>(t) * y_stride + row] = static_cast<float>(sum);
    }
  }
}

}  // namespace

void pack_rows(WeightFormat f, const uint8_t* rows, size_t row_bytes, int64_t n_rows, int64_t n,
               uint8_t* out) {
  const int64_t chunks = n / kActChunk;
  const size_t group_bytes = packed_group_bytes(f, n);
  for (int64_t g = 0; g < packed_groups(n_rows); ++g) {
    uint8_t* group = out + static_cast<size_t>(g) * group_bytes;
    std::memset(group, 0, group_bytes);
    for (int r = 0; r < kPackRows && g * kPackRows + r < n_rows; ++r) {
      const uint8_t* row = rows + static_cast<size_t>(g * kPackRows + r) * row_bytes;
      with_block_type(
          f,
          [&]<class Block>() {
            constexpr int kPerBlock = kBlockValues<Block> / kActChunk;
            for (int64_t c = 0; c < chunks; ++c) {
              const Block b = chunks::load<Block>(row + (c / kPerBlock) * sizeof(Block));
              const chunks::Chunk ch = chunks::chunk(b, static_cast<int>(c % kPerBlock));
              const GroupParts p = parts(f, chunks, c);
              for (int i = 0; i < kActChunk; ++i) {
                const int u = f == WeightFormat::kQ8_0 ? ch.u[i] + 128 : ch.u[i];
                bool high = false;
                uint8_t& byte = group[p.codes + code_byte(f, r, i, &high)];
                if (byte_codes(f)) {
                  byte = static_cast<uint8_t>(u);
                  continue;
                }
                byte |= static_cast<uint8_t>((u & 15) << (high ? 4 : 0));
                if (has_fifth_bit(f) && (u & 16)) {
                  const int bit = 4 * r + i % 4;
                  group[p.bits + 8 * static_cast<size_t>(i / 4) + static_cast<size_t>(bit / 8)] |=
                      static_cast<uint8_t>(1u << (bit % 8));
                }
              }
              uint8_t* at = group + p.factors;
              if (is_k_quant(f)) {  // f32 products of the stored fields, as the table's
                write<float>(at, r, ch.w[0]);
                write<float>(at + 64, r, f == WeightFormat::kQ6_K ? ch.w[1] : ch.b[0]);
                continue;
              }
              // The block's own fp16 fields (exact in f32 and back).
              std::memcpy(at + 2 * r, &b, sizeof(f16_bits));  // d leads every 32-value block
              if (has_min(f))
                std::memcpy(at + 32 + 2 * r, reinterpret_cast<const uint8_t*>(&b) + 2, 2);
            }
          },
          [] {});  // BF16: not packed_supported; callers check
    }
  }
}

void dequantize_packed_row(WeightFormat f, const uint8_t* packed, int64_t r, int64_t n,
                           float* out) {
  const int64_t chunks = n / kActChunk;
  const uint8_t* group = packed + static_cast<size_t>(r / kPackRows) * packed_group_bytes(f, n);
  const int row = static_cast<int>(r % kPackRows);
  for (int64_t c = 0; c < chunks; ++c) {
    const uint8_t* at = group + parts(f, chunks, c).factors;
    const float d = f16_to_f32(read<f16_bits>(at, row));
    const float m = has_min(f) ? f16_to_f32(read<f16_bits>(at + 32, row)) : 0.0f;
    for (int i = 0; i < kActChunk; ++i) {
      const int u = packed_code(f, group, chunks, c, row, i);
      // As weight_blocks_scalar.cc: d·(q − zero), or d·q + m.
      out[c * kActChunk + i] =
          has_min(f) ? d * static_cast<float>(u) + m : d * static_cast<float>(u - zero_point(f));
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
      a.sum_half[i / 16] += q;
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
