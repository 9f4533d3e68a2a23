// Scalar references of the decode-attention region kernels (attn_kernels.h),
// written straight from the layout definitions: every group is decoded by the
// quantizer's scalar reference and multiplied in f32, one token at a time.
// The plain and llama.cpp kernels read elements in place (the SIMD kernels
// fall back to them for head_dims their lanes do not divide, so they must
// not allocate); the InnerQ and KIVI ones are references only, with plain
// local buffers, and leave the caller's InnerQ scratch unused.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/kernels/attn_kernels.h"
#include "innerq/kernels/quant_kernels.h"

namespace innerq::kernels::scalar {
namespace {

float element(const float* p) {
  return *p;
}
float element(const f16_bits* p) {
  return f16_to_f32(*p);
}

// Decodes one group record into x [G] with the quantizer's scalar reference.
// Records with a zero slot decode alike for asym and hybrid (the scale's sign
// bit marks symmetric groups), so has_zero alone picks the layout.
void decode_group(int bits, int group, bool has_zero, const uint8_t* record, float* x,
                  Levels levels = Levels::kUniform) {
  const GroupSpec spec{bits, group, has_zero ? QuantMode::kHybrid : QuantMode::kSymmetric, levels};
  dequantize_row(spec, record, 1, x);
}

size_t tile_row_record_bytes(const TileFormat& f) {
  return static_cast<size_t>(f.n_groups) *
         (group_code_bytes(f.bits, f.group) + (f.has_zero ? 4 : 2));
}

// Decodes row `row` of a tile into x [n_groups·G]; records:
// [tile_row_record_bytes(f)] scratch.
void decode_tile_row(const TileFormat& f, const uint8_t* tile, int row, float* x,
                     std::vector<uint8_t>& records) {
  const size_t record_bytes = group_code_bytes(f.bits, f.group) + (f.has_zero ? 4 : 2);
  tile_load_row(f, tile, row, records.data());
  for (int g = 0; g < f.n_groups; ++g) {
    decode_group(f.bits, f.group, f.has_zero, records.data() + g * record_bytes, x + g * f.group,
                 f.levels);
  }
}

// s[h][t] = Σ_c q_h[c]·k(c), summed in channel order in f32; k(c) is the
// token's element c (read in place: the plain kernels need no buffer, and
// the SIMD kernels fall back to them for head_dims their lanes do not divide).
template <class Element>
void score_token(Element k, const QueryHeads& q, HeadRows s, int t) {
  for (int h = 0; h < q.nq; ++h) {
    const float* qh = q.q + static_cast<size_t>(h) * q.head_dim;
    float acc = 0.0f;
    for (int c = 0; c < q.head_dim; ++c) acc += qh[c] * k(c);
    s.x[h * s.stride + t] = acc;
  }
}

// o[h][c] += p[h][t]·v(c).
template <class Element>
void accumulate_token(Element v, int t, int nq, int head_dim, ConstHeadRows p, float* o) {
  for (int h = 0; h < nq; ++h) {
    const float w = p.x[h * p.stride + t];
    for (int c = 0; c < head_dim; ++c) o[h * head_dim + c] += w * v(c);
  }
}

void score_row(const float* k, const QueryHeads& q, HeadRows s, int t) {
  score_token([&](int c) { return k[c]; }, q, s, t);
}

void accumulate_row(const float* v, int t, int nq, int head_dim, ConstHeadRows p, float* o) {
  accumulate_token([&](int c) { return v[c]; }, t, nq, head_dim, p, o);
}

template <typename T>
void k_scores_tiles_impl(const T* tiles, int n, const QueryHeads& q, HeadRows s) {
  for (int t = 0; t < n; ++t) {
    const T* tile = tiles + static_cast<size_t>(t / kTileRows) * q.head_dim * kTileRows;
    score_token([&](int c) { return element(tile + c * kTileRows + t % kTileRows); }, q, s, t);
  }
}

template <typename T>
void v_accumulate_rows_impl(const T* rows, int n, int nq, int head_dim, ConstHeadRows p, float* o) {
  for (int t = 0; t < n; ++t) {
    const T* row = rows + static_cast<size_t>(t) * head_dim;
    accumulate_token([&](int c) { return element(row + c); }, t, nq, head_dim, p, o);
  }
}

// llama.cpp rows a block of 32 at a time: each block decoded once per token
// into x, the sums kept in channel order (in s, then in o).
template <typename Block>
void k_scores_blocks_impl(const Block* blocks, int n, const QueryHeads& q, HeadRows s) {
  const int nb = q.head_dim / kLlamaBlock;
  float x[kLlamaBlock];
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < q.nq; ++h) s.x[h * s.stride + t] = 0.0f;
    for (int b = 0; b < nb; ++b) {
      dequantize_block(blocks[static_cast<size_t>(t) * nb + b], x);
      for (int h = 0; h < q.nq; ++h) {
        const float* qh = q.q + static_cast<size_t>(h) * q.head_dim + b * kLlamaBlock;
        float acc = s.x[h * s.stride + t];
        for (int e = 0; e < kLlamaBlock; ++e) acc += qh[e] * x[e];
        s.x[h * s.stride + t] = acc;
      }
    }
  }
}

template <typename Block>
void v_accumulate_blocks_impl(const Block* blocks, int n, int nq, int head_dim, ConstHeadRows p,
                              float* o) {
  const int nb = head_dim / kLlamaBlock;
  float x[kLlamaBlock];
  for (int t = 0; t < n; ++t) {
    for (int b = 0; b < nb; ++b) {
      dequantize_block(blocks[static_cast<size_t>(t) * nb + b], x);
      for (int h = 0; h < nq; ++h) {
        const float w = p.x[h * p.stride + t];
        float* oh = o + h * head_dim + b * kLlamaBlock;
        for (int e = 0; e < kLlamaBlock; ++e) oh[e] += w * x[e];
      }
    }
  }
}

}  // namespace

void k_scores_tiles(const float* tiles, int n, const QueryHeads& q, HeadRows s) {
  k_scores_tiles_impl(tiles, n, q, s);
}
void k_scores_tiles(const f16_bits* tiles, int n, const QueryHeads& q, HeadRows s) {
  k_scores_tiles_impl(tiles, n, q, s);
}

void k_scores_rows(const f16_bits* rows, int n, const QueryHeads& q, HeadRows s) {
  for (int t = 0; t < n; ++t) {
    const f16_bits* row = rows + static_cast<size_t>(t) * q.head_dim;
    score_token([&](int c) { return f16_to_f32(row[c]); }, q, s, t);
  }
}

void k_scores_blocks(const BlockQ8_0* blocks, int n, const QueryHeads& q, HeadRows s) {
  k_scores_blocks_impl(blocks, n, q, s);
}

void k_scores_blocks(const BlockQ4_0* blocks, int n, const QueryHeads& q, HeadRows s) {
  k_scores_blocks_impl(blocks, n, q, s);
}

void k_scores_innerq(const TileFormat& f, const uint8_t* tiles, int n, const QueryHeads& q,
                     HeadRows s, KernelScratch) {
  std::vector<float> k(static_cast<size_t>(q.head_dim));
  std::vector<uint8_t> records(tile_row_record_bytes(f));
  for (int t = 0; t < n; ++t) {
    decode_tile_row(f, tiles + static_cast<size_t>(t / kTileRows) * f.bytes(), t % kTileRows,
                    k.data(), records);
    score_row(k.data(), q, s, t);
  }
}

void k_scores_kivi(int bits, int group, const uint8_t* blocks, int n, const QueryHeads& q,
                   HeadRows s) {
  const int D = q.head_dim;
  const size_t record_bytes = group_record_bytes(bits, group, QuantMode::kAsymmetric);
  std::vector<float> block(static_cast<size_t>(group) * D);
  std::vector<float> channel(static_cast<size_t>(group));
  std::vector<float> k(static_cast<size_t>(D));
  for (int b = 0; b < n / group; ++b) {
    const uint8_t* records = blocks + static_cast<size_t>(b) * D * record_bytes;
    for (int c = 0; c < D; ++c) {
      decode_group(bits, group, true, records + c * record_bytes, channel.data());
      for (int t = 0; t < group; ++t) block[static_cast<size_t>(t) * D + c] = channel[t];
    }
    for (int t = 0; t < group; ++t)
      score_row(&block[static_cast<size_t>(t) * D], q, s, b * group + t);
  }
}

void v_accumulate_rows(const float* rows, int n, int nq, int head_dim, ConstHeadRows p, float* o) {
  v_accumulate_rows_impl(rows, n, nq, head_dim, p, o);
}
void v_accumulate_rows(const f16_bits* rows, int n, int nq, int head_dim, ConstHeadRows p,
                       float* o) {
  v_accumulate_rows_impl(rows, n, nq, head_dim, p, o);
}

void v_accumulate_blocks(const BlockQ8_0* blocks, int n, int nq, int head_dim, ConstHeadRows p,
                         float* o) {
  v_accumulate_blocks_impl(blocks, n, nq, head_dim, p, o);
}

void v_accumulate_blocks(const BlockQ4_0* blocks, int n, int nq, int head_dim, ConstHeadRows p,
                         float* o) {
  v_accumulate_blocks_impl(blocks, n, nq, head_dim, p, o);
}

void v_accumulate_innerq(const TileFormat& f, const uint8_t* blocks, int n_blocks, int nq,
                         int head_dim, ConstHeadRows p, float* o, KernelScratch) {
  if (f.levels != Levels::kUniform) {
    throw Error("v_accumulate_innerq: codebook levels are a key format");
  }
  const int G = f.group;
  const size_t block_bytes = static_cast<size_t>(head_dim / kTileRows) * f.bytes();
  std::vector<float> channel(static_cast<size_t>(G));
  std::vector<float> v(static_cast<size_t>(G) * head_dim);
  std::vector<uint8_t> records(tile_row_record_bytes(f));
  for (int b = 0; b < n_blocks; ++b) {
    const uint8_t* block = blocks + b * block_bytes;
    for (int c = 0; c < head_dim; ++c) {
      decode_tile_row(f, block + (c / kTileRows) * f.bytes(), c % kTileRows, channel.data(),
                      records);
      for (int t = 0; t < G; ++t) v[static_cast<size_t>(t) * head_dim + c] = channel[t];
    }
    for (int t = 0; t < G; ++t) {
      accumulate_row(&v[static_cast<size_t>(t) * head_dim], b * G + t, nq, head_dim, p, o);
    }
  }
}

void v_accumulate_kivi(int bits, int group, const uint8_t* rows, int n, int nq, int head_dim,
                       ConstHeadRows p, float* o) {
  const size_t record_bytes = group_record_bytes(bits, group, QuantMode::kAsymmetric);
  const int ng = head_dim / group;
  std::vector<float> v(static_cast<size_t>(head_dim));
  for (int t = 0; t < n; ++t) {
    for (int g = 0; g < ng; ++g) {
      decode_group(bits, group, true, rows + (static_cast<size_t>(t) * ng + g) * record_bytes,
                   v.data() + g * group);
    }
    accumulate_row(v.data(), t, nq, head_dim, p, o);
  }
}

// One element at a time, in order: the reference of the SIMD version,
// which takes vectors and a vector exp. Weights below e^kExpFloor are 0.
void softmax_partial(HeadRows s, int n, int nq, float* m, float* l) {
  for (int h = 0; h < nq; ++h) {
    float* x = s.x + h * s.stride;
    float max = -std::numeric_limits<float>::infinity();
    for (int t = 0; t < n; ++t) max = std::max(max, x[t]);
    float sum = 0.0f;
    for (int t = 0; t < n; ++t) {
      x[t] = exp_of_nonpositive(x[t] - max);
      sum += x[t];
    }
    m[h] = max;
    l[h] = sum;
  }
}

}  // namespace innerq::kernels::scalar
