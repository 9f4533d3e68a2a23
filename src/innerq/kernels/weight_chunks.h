// innerq/kernels/weight_chunks.h — one 32-value chunk of a weight block as
// weight_int16.h's table defines it (integer codes u, and W, B per 16-value
// half), computed on its own from the layouts in weight_blocks.h. Shared by
// the scalar references of the int16 product and of packing
// (weight_int16_scalar.cc, weight_packed_scalar.cc); not a public header.
#pragma once

#include <cstring>

#include "innerq/kernels/weight_int16.h"

namespace innerq::kernels::chunks {

// One 32-value chunk of a weight row, as weight_int16.h defines it: codes,
// and W, B per half (equal halves for the 32-value formats, which use ds).
struct Chunk {
  int u[kActChunk];
  float w[2] = {0.0f, 0.0f};
  float b[2] = {0.0f, 0.0f};
  bool per_half = false;  // K-quants: F_h and O_h per half
};

template <class Block>
Block load(const uint8_t* at) {
  Block b;
  std::memcpy(&b, at, sizeof(b));  // rows need not be aligned for Block
  return b;
}

inline Chunk whole(float w, float b) {
  Chunk ch;
  ch.w[0] = ch.w[1] = w;
  ch.b[0] = ch.b[1] = b;
  return ch;
}

// Chunk k of a block (k < kBlockValues<Block> / 32).
inline Chunk chunk(const BlockQ4_0& b, int) {
  const float d = f16_to_f32(b.d);
  Chunk ch = whole(d, -8.0f * d);
  for (int i = 0; i < kActChunk; ++i) ch.u[i] = nibble32(b.qs, i);
  return ch;
}

inline Chunk chunk(const BlockQ4_1& b, int) {
  Chunk ch = whole(f16_to_f32(b.d), f16_to_f32(b.m));
  for (int i = 0; i < kActChunk; ++i) ch.u[i] = nibble32(b.qs, i);
  return ch;
}

inline Chunk chunk(const BlockQ5_0& b, int) {
  const float d = f16_to_f32(b.d);
  Chunk ch = whole(d, -16.0f * d);
  for (int i = 0; i < kActChunk; ++i) ch.u[i] = nibble32(b.qs, i) | fifth_bit32(b.qh, i) << 4;
  return ch;
}

inline Chunk chunk(const BlockQ5_1& b, int) {
  Chunk ch = whole(f16_to_f32(b.d), f16_to_f32(b.m));
  for (int i = 0; i < kActChunk; ++i) ch.u[i] = nibble32(b.qs, i) | fifth_bit32(b.qh, i) << 4;
  return ch;
}

inline Chunk chunk(const BlockQ8_0& b, int) {
  Chunk ch = whole(f16_to_f32(b.d), 0.0f);
  for (int i = 0; i < kActChunk; ++i) ch.u[i] = b.qs[i];
  return ch;
}

// Value 32k + i of the super-block.
inline Chunk chunk(const BlockQ2_K& b, int k) {
  Chunk ch;
  ch.per_half = true;
  const int h = k / 4, j = k % 4;
  for (int i = 0; i < kActChunk; ++i) ch.u[i] = (b.qs[32 * h + i] >> (2 * j)) & 3;
  for (int half = 0; half < 2; ++half) {
    const int sc = b.scales[2 * k + half];
    ch.w[half] = f16_to_f32(b.d) * static_cast<float>(sc & 15);
    ch.b[half] = -(f16_to_f32(b.dmin) * static_cast<float>(sc >> 4));
  }
  return ch;
}

inline Chunk chunk(const BlockQ3_K& b, int k) {
  Chunk ch;
  ch.per_half = true;
  const int h = k / 4, j = k % 4;
  for (int i = 0; i < kActChunk; ++i) {
    ch.u[i] = ((b.qs[32 * h + i] >> (2 * j)) & 3) | ((b.hmask[i] >> (4 * h + j)) & 1) << 2;
  }
  for (int half = 0; half < 2; ++half) {
    ch.w[half] = f16_to_f32(b.d) * static_cast<float>(q3k_scale(b.scales, 2 * k + half));
    ch.b[half] = -4.0f * ch.w[half];
  }
  return ch;
}

template <class Block>  // BlockQ4_K or BlockQ5_K
Chunk k_chunk(const Block& b, int k) {
  int sc = 0, m = 0;
  k_scale_min(b.scales, k, &sc, &m);
  Chunk ch = whole(f16_to_f32(b.d) * static_cast<float>(sc),
                   -(f16_to_f32(b.dmin) * static_cast<float>(m)));
  ch.per_half = true;
  return ch;
}

inline Chunk chunk(const BlockQ4_K& b, int k) {
  Chunk ch = k_chunk(b, k);
  for (int i = 0; i < kActChunk; ++i) ch.u[i] = (b.qs[32 * (k / 2) + i] >> (4 * (k % 2))) & 15;
  return ch;
}

inline Chunk chunk(const BlockQ5_K& b, int k) {
  Chunk ch = k_chunk(b, k);
  for (int i = 0; i < kActChunk; ++i) {
    ch.u[i] = ((b.qs[32 * (k / 2) + i] >> (4 * (k % 2))) & 15) | ((b.qh[i] >> k) & 1) << 4;
  }
  return ch;
}

inline Chunk chunk(const BlockQ6_K& b, int k) {
  Chunk ch;
  ch.per_half = true;
  const int h = k / 4, s = k % 4;
  for (int i = 0; i < kActChunk; ++i) {
    const int low = (b.ql[64 * h + 32 * (s % 2) + i] >> (4 * (s / 2))) & 15;
    ch.u[i] = low | ((b.qh[32 * h + i] >> (2 * s)) & 3) << 4;
  }
  for (int half = 0; half < 2; ++half) {
    ch.w[half] = f16_to_f32(b.d) * static_cast<float>(b.scales[2 * k + half]);
    ch.b[half] = -32.0f * ch.w[half];
  }
  return ch;
}

}  // namespace innerq::kernels::chunks
