// innerq/kernels/cuda/device_format.cuh — device-side readers of the canonical
// group layout (group_format.h): whole-word unpacking of a 32-code chunk,
// scalar code access, metadata decoding, and the integer dot products the
// fused kernels run on raw codes. Everything is also a host function (the
// intrinsics with plain fallbacks), so tests/cuda/device_format_test checks
// the readers against the CPU definitions (read_code, pack_chunk,
// tile_store_row, decode_meta) and tests/cuda/emulated_decode_test runs the
// decode kernels on the CPU, without a GPU.
#pragma once

#include <cstdint>

#include <cuda_fp16.h>

#include "innerq/kernels/group_format.h"
#include "innerq/kernels/tile_format.h"

namespace innerq::cuda {

// Four bytes of a 32-bit word, each masked to the low `width` bits.
__host__ __device__ __forceinline__ constexpr uint32_t byte_mask(int width) {
  return 0x01010101u * ((1u << width) - 1u);
}

// One 32-code chunk of a b-bit group, as its b 32-bit words (group_format.h:
// bit planes, low bits first) → quads[m] = codes 4m..4m+3, one per byte.
// Quad m of a w-bit plane is word (m mod w) shifted right by w·⌊m / w⌋.
// (The loops have constant trip counts and are fully unrolled by nvcc; no
// pragma, since the host compiler sees this function too.)
template <int B>
__host__ __device__ __forceinline__ void unpack_chunk(const uint32_t (&words)[B],
                                                      uint32_t (&quads)[8]) {
  if constexpr (B == 3) {
    for (int m = 0; m < 8; ++m) {
      const uint32_t low = (words[m % 2] >> (2 * (m / 2))) & byte_mask(2);
      const uint32_t high = (words[2] >> m) & byte_mask(1);
      quads[m] = low | (high << 2);
    }
  } else {
    for (int m = 0; m < 8; ++m) quads[m] = (words[m % B] >> (B * (m / B))) & byte_mask(B);
  }
}

// Quad m (codes 4m..4m+3) of a chunk whose b words start at `words`.
template <int B>
__host__ __device__ __forceinline__ uint32_t chunk_quad(const uint32_t* words, int m) {
  if constexpr (B == 3) {
    const uint32_t low = (words[m % 2] >> (2 * (m / 2))) & byte_mask(2);
    return low | (((words[2] >> m) & byte_mask(1)) << 2);
  } else {
    return (words[m % B] >> (B * (m / B))) & byte_mask(B);
  }
}

// Code i of a group whose code bytes start at `codes` (read_code on device).
__host__ __device__ __forceinline__ int device_read_code(const uint8_t* codes, int bits, int i) {
  const PlaneSplit p = planes_of(bits);
  const uint8_t* chunk = codes + (i / kChunk) * (bits * kChunk / 8);
  const int j = i % kChunk;
  int code = 0, shift = 0;
  for (int k = 0; k < p.n; ++k) {
    const int w = p.width[k];
    const int bytes = 4 * w;
    code |= ((chunk[j % bytes] >> (w * (j / bytes))) & ((1 << w) - 1)) << shift;
    chunk += bytes;
    shift += w;
  }
  return code;
}

// Code i (0..G−1) of row `row` of a tile with one group per row (n_groups = 1
// or the group index already folded into `words`): the row's chunk j lives in
// words [(j·b + w)·16 + row], w < b (tile_format.h).
__host__ __device__ __forceinline__ int tile_read_code(const uint32_t* words, int bits, int row,
                                                       int i) {
  const PlaneSplit p = planes_of(bits);
  const int j = i / kChunk, pos = i % kChunk;
  int code = 0, shift = 0, plane_word = j * bits;
  for (int k = 0; k < p.n; ++k) {
    const int w = p.width[k];
    const int byte = pos % (4 * w);
    const uint32_t word = words[(plane_word + byte / 4) * kTileRows + row];
    code |= ((word >> (8 * (byte % 4) + w * (pos / (4 * w)))) & ((1u << w) - 1u)) << shift;
    plane_word += w;
    shift += w;
  }
  return code;
}

__host__ __device__ __forceinline__ float half_bits_to_float(uint16_t h) {
  return __half2float(__ushort_as_half(h));
}

// decode_meta: the sign bit of the scale marks a symmetric group, whose zero
// is −2^(b−1)·s; otherwise the stored zero (when the mode stores one).
struct DeviceMeta {
  float scale;
  float zero;
};

__host__ __device__ __forceinline__ DeviceMeta decode_meta_device(uint16_t scale_bits,
                                                                  uint16_t zero_bits, bool has_zero,
                                                                  int bits) {
  const bool sym = (scale_bits & kSymFlag) != 0;
  const float s = half_bits_to_float(static_cast<uint16_t>(scale_bits & ~kSymFlag));
  const float z =
      sym || !has_zero ? -static_cast<float>(sym_offset(bits)) * s : half_bits_to_float(zero_bits);
  return {s, z};
}

// Metadata of one group record (codes, then scale, then zero).
__host__ __device__ __forceinline__ DeviceMeta record_meta_device(const uint8_t* record, int bits,
                                                                  int group, bool has_zero) {
  const uint8_t* meta = record + group * bits / 8;
  const uint16_t scale = static_cast<uint16_t>(meta[0] | (meta[1] << 8));
  const uint16_t zero = has_zero ? static_cast<uint16_t>(meta[2] | (meta[3] << 8)) : 0;
  return decode_meta_device(scale, zero, has_zero, bits);
}

// Σ_e a_e·b_e over the four bytes: a signed (int8 query), b unsigned (codes).
__host__ __device__ __forceinline__ int dot4_s8u8(uint32_t a, uint32_t b, int acc) {
#if defined(__CUDA_ARCH__)
  int d;
  asm("dp4a.s32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(acc));
  return d;
#else
  for (int e = 0; e < 4; ++e) {
    acc += static_cast<int8_t>((a >> (8 * e)) & 0xffu) * static_cast<int>((b >> (8 * e)) & 0xffu);
  }
  return acc;
#endif
}

// Σ_e a_e·b_e over the four bytes, both unsigned (codes, u8 weights).
__host__ __device__ __forceinline__ unsigned dot4_u8u8(uint32_t a, uint32_t b, unsigned acc) {
#if defined(__CUDA_ARCH__)
  return __dp4a(a, b, acc);
#else
  for (int e = 0; e < 4; ++e) acc += ((a >> (8 * e)) & 0xffu) * ((b >> (8 * e)) & 0xffu);
  return acc;
#endif
}

// Byte e of `quad` as a float (exact), without an integer conversion: the
// byte is placed in the mantissa of 2^23 and 2^23 is subtracted.
__host__ __device__ __forceinline__ float quad_byte_to_float(uint32_t quad, int e) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(__byte_perm(quad, 0x4B000000u, 0x7440u | static_cast<uint32_t>(e))) -
         8388608.0f;
#else
  return static_cast<float>((quad >> (8 * e)) & 0xffu);
#endif
}

}  // namespace innerq::cuda
