// Highway versions of the decode-attention region kernels (attn_kernels.h).
//
// Layout decides speed on a CPU (docs/architecture.md, "Tile format"): K kernels put SIMD lanes
// across *tokens* (plain tiles, InnerQ tiles) so a score never ends in a
// horizontal reduction, V kernels put lanes across channels. The InnerQ
// kernels multiply raw codes by an int8 query (or int8 softmax weights) four
// codes per 32-bit lane, and dequantize once per group and row.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "innerq/kernels/attn_kernels_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/cache_control.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "innerq/kernels/exp_nonpositive-inl.h"
#include "innerq/base/error.h"
#include "innerq/kernels/attn_kernels.h"
#include "innerq/kernels/quantize_rules.h"

HWY_BEFORE_NAMESPACE();
#if HWY_TARGET == HWY_AVX3_DL
// Highway 1.0.3's AVX3_DL target string lacks avx512vnni (it names only the
// VEX avxvnni) and gfni, which vpdpbusd on zmm registers and gf2p8affineqb
// need; the CPUs of that target (Ice Lake and later, Zen 4) have both.
#pragma GCC target("avx512vnni,gfni")
#endif
namespace innerq::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using DU = hn::RebindToUnsigned<DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;
using VU = hn::Vec<DU>;

// Query heads are processed in groups of at most this many, each group's
// accumulators held in registers.
constexpr int kHeadsPerPass = 4;
// The InnerQ kernels take kWidePass heads per pass while that many are left
// (a chunk's query rows, wide GQA groups): each tile's codes are unpacked
// once per pass, so wider passes unpack less. AVX-512's 32 registers hold
// eight heads' accumulators; narrower targets stay at four.
#if HWY_TARGET <= HWY_AVX3
constexpr int kWidePass = 8;
#else
constexpr int kWidePass = kHeadsPerPass;
#endif
static_assert(kWidePass <= kInnerQHeadsPerPass, "the InnerQ scratch is sized for a pass");

// Software prefetch for the InnerQ kernels (docs/architecture.md, "Prefetching
// tiles"): they read few bytes per instruction, so the hardware prefetcher
// keeps too few misses in flight (K) or none (V walks one tile per block,
// blocks a page or more apart). Each kernel asks for the tile about
// kPrefetchBytes ahead of the one it reads: one request per cache line,
// inside the caller's range only.
constexpr size_t kPrefetchBytes = 4096;
HWY_INLINE int prefetch_distance(size_t tile_bytes) {
  return static_cast<int>(std::max<size_t>(1, (kPrefetchBytes + tile_bytes / 2) / tile_bytes));
}
HWY_INLINE void prefetch_tile(const uint8_t* tile, size_t bytes) {
  for (size_t i = 0; i < bytes; i += 64) hwy::Prefetch(tile + i);
}

// Calls f(std::integral_constant<int, V>()) for the V of kValues equal to
// `value`, turning a runtime head count or bit width into a template
// argument. Callers pass only listed values (heads ≤ kHeadsPerPass, bits
// validated by the cache).
template <int... kValues, class F>
HWY_INLINE void with_constant(int value, F&& f) {
  const bool matched =
      ((value == kValues ? (f(std::integral_constant<int, kValues>()), true) : false) || ...);
  HWY_DASSERT(matched);
  (void)matched;
}

// Calls f(h0, nh) for passes over heads [h0, h0 + nh) covering [0, nq), nh
// an integral_constant: kWidePass while that many are left, then up to
// kHeadsPerPass (nh ∈ {1, 2, 3, 4, kWidePass}).
template <class F>
HWY_INLINE void for_wide_head_passes(int nq, F&& f) {
  int h0 = 0;
  if constexpr (kWidePass > kHeadsPerPass) {
    for (; h0 + kWidePass <= nq; h0 += kWidePass) f(h0, std::integral_constant<int, kWidePass>());
  }
  for (; h0 < nq; h0 += kHeadsPerPass) {
    with_constant<1, 2, 3, 4>(std::min(kHeadsPerPass, nq - h0), [&](auto nh) { f(h0, nh); });
  }
}

// Stores the first `count` lanes of v (count ≤ Lanes).
HWY_INLINE void store_first(VF v, float* out, size_t count) {
  const DF df;
  if (count == hn::Lanes(df)) {
    hn::StoreU(v, df, out);
    return;
  }
  HWY_ALIGN float buf[hn::MaxLanes(df)];
  hn::Store(v, df, buf);
  std::memcpy(out, buf, count * sizeof(float));
}

HWY_INLINE VF load_f32(const float* p) {
  return hn::LoadU(DF(), p);
}
HWY_INLINE VF load_f32(const f16_bits* p) {
  const hn::Rebind<hwy::float16_t, DF> dh;
  return hn::PromoteTo(DF(), hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p)));
}

// Scale and zero of Lanes rows of a tile group (tile_format.h):
// x̂ = s·u + z, z = −2^(b−1)·s for symmetric rows.
struct TileMeta {
  VF s, z;
};
HWY_INLINE TileMeta load_tile_meta(const TileFormat& f, const uint8_t* tile, int g, int row) {
  const DF df;
  const DU du;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const size_t index = static_cast<size_t>(g) * kTileRows + row;
  const auto* scales = reinterpret_cast<const hwy::float16_t*>(tile + f.scales_offset()) + index;
  const VF signed_s = hn::PromoteTo(df, hn::LoadU(dh, scales));  // exact; sign = symmetric row
  const VF s = hn::Abs(signed_s);
  const VF sym_zero = hn::Mul(s, hn::Set(df, -static_cast<float>(level_offset(f.levels, f.bits))));
  if (!f.has_zero) return {s, sym_zero};
  const auto* zeros = reinterpret_cast<const hwy::float16_t*>(tile + f.zeros_offset()) + index;
  const VF zero = hn::PromoteTo(df, hn::LoadU(dh, zeros));
  const auto sym =
      hn::RebindMask(df, hn::TestBit(hn::BitCast(du, signed_s), hn::Set(du, 0x80000000u)));
  return {s, hn::IfThenElse(sym, sym_zero, zero)};
}

// ---------------------------------------------------------------------------
// u8 × i8 dot products, four bytes per 32-bit lane: acc += Σ_j u_j·q_j.
// `codes` holds unsigned codes < 2^kBits in each byte; `q4` four int8 values.
// AVX2 / AVX-512BW use maddubs (u8×i8 → i16 pairs, exact while 2·(2^b−1)·127
// fits i16, i.e. b ≤ 4), AVX-512 VNNI uses vpdpbusd, others widen.
// ---------------------------------------------------------------------------
template <int kBits>
HWY_INLINE VI dot_quad(VU codes, VI q4, VI acc) {
  const DI di;
#if HWY_TARGET == HWY_AVX3_DL
  return VI{_mm512_dpbusd_epi32(acc.raw, codes.raw, q4.raw)};
#elif HWY_TARGET == HWY_AVX3
  if constexpr (kBits <= 4) {
    const __m512i pairs = _mm512_maddubs_epi16(codes.raw, q4.raw);
    return hn::Add(acc, VI{_mm512_madd_epi16(pairs, _mm512_set1_epi16(1))});
  }
#elif HWY_TARGET == HWY_AVX2
  if constexpr (kBits <= 4) {
    const __m256i pairs = _mm256_maddubs_epi16(codes.raw, q4.raw);
    return hn::Add(acc, VI{_mm256_madd_epi16(pairs, _mm256_set1_epi16(1))});
  }
#elif HWY_TARGET == HWY_SSE4
  if constexpr (kBits <= 4) {
    const __m128i pairs = _mm_maddubs_epi16(codes.raw, q4.raw);
    return hn::Add(acc, VI{_mm_madd_epi16(pairs, _mm_set1_epi16(1))});
  }
#endif
  const DU du;
  const VI c = hn::BitCast(di, codes);
  const VI byte = hn::BitCast(di, hn::Set(du, 0xFFu));
  acc = hn::Add(acc, hn::Mul(hn::And(c, byte), hn::ShiftRight<24>(hn::ShiftLeft<24>(q4))));
  acc = hn::Add(
      acc, hn::Mul(hn::And(hn::ShiftRight<8>(c), byte), hn::ShiftRight<24>(hn::ShiftLeft<16>(q4))));
  acc = hn::Add(
      acc, hn::Mul(hn::And(hn::ShiftRight<16>(c), byte), hn::ShiftRight<24>(hn::ShiftLeft<8>(q4))));
  return hn::Add(acc, hn::Mul(hn::BitCast(di, hn::ShiftRight<24>(codes)), hn::ShiftRight<24>(q4)));
}

// 3-bit codes of quad m: (shifted_low & 0x03 per byte) | (bit m of each high
// plane byte, moved to bit 2). AVX-512 (GFNI) moves the bit with one affine
// byte transform and merges with one ternary-logic op; elsewhere shifts/masks.
HWY_INLINE VU merge_high_bit(VU shifted_low, VU high, int m) {
  const DU du;
#if HWY_TARGET == HWY_AVX3_DL
  // Affine matrix row for output bit 2 (byte 7 − 2) selects input bit m.
  const __m512i select = _mm512_set1_epi64(static_cast<long long>((1ull << m) << 40));
  const __m512i bit2 = _mm512_gf2p8affine_epi64_epi8(high.raw, select, 0);
  // 0xEA: (a & b) | c with a = shifted low, b = 0x03 mask, c = the moved bit.
  return VU{_mm512_ternarylogic_epi32(shifted_low.raw, hn::Set(du, low_bits_per_byte(2)).raw, bit2,
                                      0xEA)};
#else
  return hn::Or(
      hn::And(shifted_low, hn::Set(du, low_bits_per_byte(2))),
      hn::ShiftLeft<2>(hn::And(hn::ShiftRightSame(high, m), hn::Set(du, low_bits_per_byte(1)))));
#endif
}

// Codebook levels (group_format.h): `levels` (16 bytes) in every 128-bit
// block of a vector, and each code byte u of `codes` replaced by levels[u].
// The scalar target has no byte shuffle; it looks the four bytes up.
HWY_INLINE VU level_table(const uint8_t* levels) {
#if HWY_TARGET == HWY_SCALAR
  (void)levels;
  return hn::Zero(DU());
#else
  const hn::Repartition<uint8_t, DU> d8;
  HWY_ALIGN uint8_t bytes[16];
  for (int i = 0; i < 16; ++i) bytes[i] = levels[i];
  return hn::BitCast(DU(), hn::LoadDup128(d8, bytes));
#endif
}
HWY_INLINE VU lookup_levels(VU table, const uint8_t* levels, VU codes) {
#if HWY_TARGET == HWY_SCALAR
  (void)table;
  const uint32_t c = hn::GetLane(codes);
  uint32_t out = 0;
  for (int i = 0; i < 4; ++i) out |= uint32_t{levels[(c >> (8 * i)) & 0xFFu]} << (8 * i);
  return hn::Set(DU(), out);
#else
  (void)levels;
  return hn::TableLookupBytes(table, codes);
#endif
}

// Integer dot of one group of Lanes tile rows against NH int8 vectors.
// words: the tile's word (g, 0, row) — consecutive words of the group are
// kTileRows apart. q4[j]: [G/4] int32, four int8 of head j per entry.
// Quad m of a chunk (codes 4m..4m+3) comes from plane word (m mod w) shifted
// right by w·⌊m/w⌋ (group_format.h), one whole vector at a time. With
// kTable, each code byte u becomes T[u] (codebook levels: `levels` = T,
// `table` = level_table(T)) by one byte shuffle before the dot product.
template <int kBits, int NH, bool kTable = false>
HWY_INLINE void dot_group_rows(const uint32_t* words, int group, const int32_t* const* q4, VI* acc,
                               VU table = hn::Zero(DU()), const uint8_t* levels = nullptr) {
  const DU du;
  const DI di;
  for (int chunk = 0; chunk < group / kChunk; ++chunk) {
    const uint32_t* w0 = words + static_cast<size_t>(chunk) * kBits * kTileRows;
    const int32_t* qc[NH];
    for (int j = 0; j < NH; ++j) qc[j] = q4[j] + chunk * (kChunk / 4);
    HWY_UNROLL(8)
    for (int m = 0; m < kChunk / 4; ++m) {
      VU codes;
      if constexpr (kBits == 8) {
        codes = hn::LoadU(du, w0 + m * kTileRows);
      } else {
        constexpr int w = kBits == 3 ? 2 : kBits;
        const VU low = hn::LoadU(du, w0 + (m % w) * kTileRows);
        if constexpr (kBits == 3) {
          const VU high = hn::LoadU(du, w0 + 2 * kTileRows);
          codes = merge_high_bit(hn::ShiftRightSame(low, w * (m / w)), high, m);
        } else {
          codes = hn::And(hn::ShiftRightSame(low, w * (m / w)), hn::Set(du, low_bits_per_byte(w)));
        }
      }
      if constexpr (kTable) codes = lookup_levels(table, levels, codes);
      for (int j = 0; j < NH; ++j) acc[j] = dot_quad<kBits>(codes, hn::Set(di, qc[j][m]), acc[j]);
    }
  }
}

// Quantizes x [n] (n a multiple of Lanes, here a group: 32, 64 or 128) to
// int8 with one scale, x ≈ scale·x8, written as bytes into `quads` (four per
// int32). Returns the scale; `sum` gets Σ scale·x8 (the rounded values' sum).
HWY_INLINE float quantize_int8(const float* x, int n, int32_t* quads, float* sum) {
  const DF df;
  const DI di;
  const hn::Rebind<int8_t, DI> d8;
  const int N = static_cast<int>(hn::Lanes(df));
  VF vmax = hn::Zero(df);
  for (int i = 0; i < n; i += N) vmax = hn::Max(vmax, hn::Abs(hn::LoadU(df, x + i)));
  const float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
  const float scale = amax / 127.0f;
  const VF inv = hn::Set(df, amax > 0.0f ? 127.0f / amax : 0.0f);
  VI total = hn::Zero(di);
  auto* bytes = reinterpret_cast<int8_t*>(quads);
  for (int i = 0; i < n; i += N) {
    const VI v = hn::NearestInt(hn::Mul(hn::LoadU(df, x + i), inv));
    total = hn::Add(total, v);
    hn::StoreU(hn::DemoteTo(d8, v), d8, bytes + i);
  }
  *sum = scale * static_cast<float>(hn::GetLane(hn::SumOfLanes(di, total)));
  return scale;
}

// ---------------------------------------------------------------------------
// InnerQ K: scores of tokens (tile rows) against the int8 query.
// ---------------------------------------------------------------------------
template <int kBits, int NH, bool kTable>
void k_scores_innerq_heads(const TileFormat& f, const uint8_t* tiles, int n, const float* q,
                           int head_dim, float* const* scores, KernelScratch scratch) {
  const DF df;
  const DI di;
  const uint8_t* levels = nullptr;
  if constexpr (kTable) levels = normal_level_table(kBits);
  const VU table = kTable ? level_table(levels) : hn::Zero(DU());
  const size_t N = hn::Lanes(df);
  const int G = f.group, ng = f.n_groups;
  // From the caller's scratch (innerq_k_scratch_bytes): q8[j]: [head_dim/4]
  // quads; per group scale and Σ.
  auto* const q8 = reinterpret_cast<int32_t*>(scratch.data);
  float* const q_scale =
      reinterpret_cast<float*>(scratch.data + static_cast<size_t>(NH) * head_dim);
  float* const q_sum = q_scale + static_cast<size_t>(NH) * ng;
  const int32_t* q4[NH];
  for (int j = 0; j < NH; ++j) {
    for (int g = 0; g < ng; ++g) {
      q_scale[j * ng + g] = quantize_int8(q + j * head_dim + g * G, G,
                                          &q8[(j * head_dim + g * G) / 4], &q_sum[j * ng + g]);
    }
  }
  const int ahead = prefetch_distance(f.bytes());
  for (int t0 = 0; t0 < n; t0 += kTileRows) {
    const uint8_t* tile = tiles + static_cast<size_t>(t0 / kTileRows) * f.bytes();
    if (t0 + ahead * kTileRows < n) prefetch_tile(tile + ahead * f.bytes(), f.bytes());
    const auto* words = reinterpret_cast<const uint32_t*>(tile);
    for (int r = 0; r < kTileRows && t0 + r < n; r += static_cast<int>(N)) {
      VF score[NH];
      for (int j = 0; j < NH; ++j) score[j] = hn::Zero(df);
      for (int g = 0; g < ng; ++g) {
        VI acc[NH];
        for (int j = 0; j < NH; ++j) {
          acc[j] = hn::Zero(di);
          q4[j] = &q8[(j * head_dim + g * G) / 4];
        }
        dot_group_rows<kBits, NH, kTable>(words + f.word_index(g, 0, r), G, q4, acc, table, levels);
        const TileMeta meta = load_tile_meta(f, tile, g, r);
        for (int j = 0; j < NH; ++j) {
          const VF sq = hn::Mul(meta.s, hn::Set(df, q_scale[j * ng + g]));
          score[j] = hn::MulAdd(sq, hn::ConvertTo(df, acc[j]), score[j]);
          score[j] = hn::MulAdd(meta.z, hn::Set(df, q_sum[j * ng + g]), score[j]);
        }
      }
      const size_t count = std::min(N, static_cast<size_t>(n - t0 - r));
      for (int j = 0; j < NH; ++j) store_first(score[j], scores[j] + t0 + r, count);
    }
  }
}

void KScoresInnerQ(const TileFormat& f, const uint8_t* tiles, int n, const QueryHeads& q,
                   HeadRows s, KernelScratch scratch) {
  for_wide_head_passes(q.nq, [&](int h0, auto nh) {
    constexpr int NH = decltype(nh)::value;
    float* out[NH];
    for (int j = 0; j < NH; ++j) out[j] = s.x + (h0 + j) * s.stride;
    if (f.levels == Levels::kUniform) {
      with_constant<2, 3, 4, 8>(f.bits, [&](auto bits) {
        k_scores_innerq_heads<decltype(bits)::value, NH, false>(f, tiles, n, q.q + h0 * q.head_dim,
                                                                q.head_dim, out, scratch);
      });
    } else {
      with_constant<2, 3, 4>(f.bits, [&](auto bits) {
        k_scores_innerq_heads<decltype(bits)::value, NH, true>(f, tiles, n, q.q + h0 * q.head_dim,
                                                               q.head_dim, out, scratch);
      });
    }
  });
}

// ---------------------------------------------------------------------------
// InnerQ V: o[c] += Σ_t p_t·v̂_{t,c} over G-token blocks, lanes over channels.
// ---------------------------------------------------------------------------
// n_blocks ≤ kInnerQBlocksPerPass blocks (the caller splits longer runs).
template <int kBits, int NH>
void v_accumulate_innerq_heads(const TileFormat& f, const uint8_t* blocks, int n_blocks,
                               int head_dim, const float* const* p, float* const* o,
                               KernelScratch scratch) {
  const DF df;
  const DI di;
  const size_t N = hn::Lanes(df);
  const int G = f.group;
  const size_t block_bytes = static_cast<size_t>(head_dim / kTileRows) * f.bytes();
  // p of every block rounded to int8 once: [NH][n_blocks][G] bytes, and per
  // (head, block) the scale and the sum of the rounded weights, in the
  // caller's scratch (innerq_v_scratch_bytes).
  const size_t n_scales = static_cast<size_t>(NH) * n_blocks;
  auto* const p8 = reinterpret_cast<int32_t*>(scratch.data);
  float* const p_scale = reinterpret_cast<float*>(
      scratch.data + static_cast<size_t>(kInnerQHeadsPerPass) * kInnerQBlocksPerPass * G);
  float* const p_sum = p_scale + n_scales;
  for (size_t i = 0; i < n_scales; ++i) {
    const int j = static_cast<int>(i) / n_blocks, b = static_cast<int>(i) % n_blocks;
    p_scale[i] = quantize_int8(p[j] + b * G, G, &p8[i * G / 4], &p_sum[i]);
  }
  // Channel tiles outer, blocks inner: the outputs of a tile stay in registers.
  const int ahead = prefetch_distance(f.bytes());
  for (int c0 = 0; c0 < head_dim; c0 += kTileRows) {
    for (int r = 0; r < kTileRows; r += static_cast<int>(N)) {
      VF out[NH];
      for (int j = 0; j < NH; ++j) out[j] = hn::LoadU(df, o[j] + c0 + r);
      for (int b = 0; b < n_blocks; ++b) {
        const uint8_t* tile = blocks + b * block_bytes + (c0 / kTileRows) * f.bytes();
        if (b + ahead < n_blocks) prefetch_tile(tile + ahead * block_bytes, f.bytes());
        VI acc[NH];
        const int32_t* p4[NH];
        for (int j = 0; j < NH; ++j) {
          acc[j] = hn::Zero(di);
          p4[j] = &p8[(static_cast<size_t>(j) * n_blocks + b) * G / 4];
        }
        dot_group_rows<kBits, NH>(reinterpret_cast<const uint32_t*>(tile) + f.word_index(0, 0, r),
                                  G, p4, acc);
        const TileMeta meta = load_tile_meta(f, tile, 0, r);
        for (int j = 0; j < NH; ++j) {
          const size_t i = static_cast<size_t>(j) * n_blocks + b;
          out[j] = hn::MulAdd(hn::Mul(meta.s, hn::Set(df, p_scale[i])), hn::ConvertTo(df, acc[j]),
                              out[j]);
          out[j] = hn::MulAdd(meta.z, hn::Set(df, p_sum[i]), out[j]);
        }
      }
      for (int j = 0; j < NH; ++j) hn::StoreU(out[j], df, o[j] + c0 + r);
    }
  }
}

void VAccumulateInnerQ(const TileFormat& f, const uint8_t* blocks, int n_blocks, int nq,
                       int head_dim, ConstHeadRows p, float* o, KernelScratch scratch) {
  const size_t block_bytes = static_cast<size_t>(head_dim / kTileRows) * f.bytes();
  // kInnerQBlocksPerPass blocks at a time, which bounds the scratch. Each
  // output is stored and loaded again between passes (exactly, in f32), and
  // its blocks are summed in the same order: the passes change no bit.
  for (int b0 = 0; b0 < n_blocks; b0 += kInnerQBlocksPerPass) {
    const int nb = std::min(kInnerQBlocksPerPass, n_blocks - b0);
    for_wide_head_passes(nq, [&](int h0, auto nh) {
      constexpr int NH = decltype(nh)::value;
      const float* w[NH];
      float* out[NH];
      for (int j = 0; j < NH; ++j) {
        w[j] = p.x + (h0 + j) * p.stride + static_cast<size_t>(b0) * f.group;
        out[j] = o + (h0 + j) * head_dim;
      }
      with_constant<2, 3, 4, 8>(f.bits, [&](auto bits) {
        v_accumulate_innerq_heads<decltype(bits)::value, NH>(
            f, blocks + static_cast<size_t>(b0) * block_bytes, nb, head_dim, w, out, scratch);
      });
    });
  }
}

// ---------------------------------------------------------------------------
// Plain K tiles [tile][D][16]: lanes over tokens, one FMA per channel.
// ---------------------------------------------------------------------------
template <typename T, int NH>
void k_scores_tiles_heads(const T* tiles, int n, const float* q, int head_dim,
                          float* const* scores) {
  const DF df;
  const size_t N = hn::Lanes(df);
  for (int t0 = 0; t0 < n; t0 += kTileRows) {
    const T* tile = tiles + static_cast<size_t>(t0 / kTileRows) * head_dim * kTileRows;
    for (int r = 0; r < kTileRows && t0 + r < n; r += static_cast<int>(N)) {
      VF acc[NH];
      for (int j = 0; j < NH; ++j) acc[j] = hn::Zero(df);
      for (int c = 0; c < head_dim; ++c) {
        const VF k = load_f32(tile + c * kTileRows + r);
        for (int j = 0; j < NH; ++j)
          acc[j] = hn::MulAdd(k, hn::Set(df, q[j * head_dim + c]), acc[j]);
      }
      const size_t count = std::min(N, static_cast<size_t>(n - t0 - r));
      for (int j = 0; j < NH; ++j) store_first(acc[j], scores[j] + t0 + r, count);
    }
  }
}

template <typename T>
void k_scores_tiles_impl(const T* tiles, int n, const QueryHeads& q, HeadRows s) {
  for (int h0 = 0; h0 < q.nq; h0 += kHeadsPerPass) {
    with_constant<1, 2, 3, 4>(std::min(kHeadsPerPass, q.nq - h0), [&](auto nh) {
      constexpr int NH = decltype(nh)::value;
      float* out[NH];
      for (int j = 0; j < NH; ++j) out[j] = s.x + (h0 + j) * s.stride;
      k_scores_tiles_heads<T, NH>(tiles, n, q.q + h0 * q.head_dim, q.head_dim, out);
    });
  }
}

void KScoresTilesF32(const float* tiles, int n, const QueryHeads& q, HeadRows s) {
  k_scores_tiles_impl(tiles, n, q, s);
}
void KScoresTilesF16(const f16_bits* tiles, int n, const QueryHeads& q, HeadRows s) {
  k_scores_tiles_impl(tiles, n, q, s);
}

// ---------------------------------------------------------------------------
// Row-wise kernels: a decoder yields Lanes values of one token's row at a time.
//   K: per token a dot product (one horizontal sum per token and head) — used
//      for the short f16 windows and the llama.cpp blocks.
//   V: o += p_t·row, lanes over channels, accumulators in registers.
// decode(t, c, VF& x) loads channels [c, c + Lanes) of token t.
// ---------------------------------------------------------------------------
template <int NH, class Decode>
void k_scores_rows_heads(int n, int head_dim, const float* q, float* const* scores,
                         const Decode& decode) {
  const DF df;
  const size_t N = hn::Lanes(df);
  for (int t = 0; t < n; ++t) {
    VF acc[NH];
    for (int j = 0; j < NH; ++j) acc[j] = hn::Zero(df);
    for (int c = 0; c < head_dim; c += static_cast<int>(N)) {
      VF x;
      decode(t, c, x);
      for (int j = 0; j < NH; ++j) acc[j] = hn::MulAdd(x, load_f32(q + j * head_dim + c), acc[j]);
    }
    for (int j = 0; j < NH; ++j) scores[j][t] = hn::GetLane(hn::SumOfLanes(df, acc[j]));
  }
}

template <class Decode>
void k_scores_rows_impl(int n, const QueryHeads& q, HeadRows s, const Decode& decode) {
  for (int h0 = 0; h0 < q.nq; h0 += kHeadsPerPass) {
    with_constant<1, 2, 3, 4>(std::min(kHeadsPerPass, q.nq - h0), [&](auto nh) {
      constexpr int NH = decltype(nh)::value;
      float* out[NH];
      for (int j = 0; j < NH; ++j) out[j] = s.x + (h0 + j) * s.stride;
      k_scores_rows_heads<NH>(n, q.head_dim, q.q + h0 * q.head_dim, out, decode);
    });
  }
}

// Channels are taken kVecs vectors at a time so the accumulators of NH heads
// stay in registers across all tokens.
template <int NH, int kVecs, class Decode>
void v_accumulate_rows_heads(int n, int head_dim, const float* const* p, float* const* o,
                             const Decode& decode) {
  const DF df;
  const int N = static_cast<int>(hn::Lanes(df));
  for (int c0 = 0; c0 < head_dim; c0 += kVecs * N) {
    VF acc[NH][kVecs];
    for (int j = 0; j < NH; ++j) {
      for (int v = 0; v < kVecs; ++v) acc[j][v] = hn::LoadU(df, o[j] + c0 + v * N);
    }
    for (int t = 0; t < n; ++t) {
      VF x[kVecs];
      for (int v = 0; v < kVecs; ++v) decode(t, c0 + v * N, x[v]);
      for (int j = 0; j < NH; ++j) {
        const VF w = hn::Set(df, p[j][t]);
        for (int v = 0; v < kVecs; ++v) acc[j][v] = hn::MulAdd(w, x[v], acc[j][v]);
      }
    }
    for (int j = 0; j < NH; ++j) {
      for (int v = 0; v < kVecs; ++v) hn::StoreU(acc[j][v], df, o[j] + c0 + v * N);
    }
  }
}

template <class Decode>
void v_accumulate_rows_impl(int n, int nq, int head_dim, ConstHeadRows p, float* o,
                            const Decode& decode) {
  const int N = static_cast<int>(hn::Lanes(DF()));
  for (int h0 = 0; h0 < nq; h0 += kHeadsPerPass) {
    with_constant<1, 2, 3, 4>(std::min(kHeadsPerPass, nq - h0), [&](auto nh) {
      constexpr int NH = decltype(nh)::value;
      const float* w[NH];
      float* out[NH];
      for (int j = 0; j < NH; ++j) {
        w[j] = p.x + (h0 + j) * p.stride;
        out[j] = o + (h0 + j) * head_dim;
      }
      if (head_dim % (4 * N) == 0) {
        v_accumulate_rows_heads<NH, 4>(n, head_dim, w, out, decode);
      } else if (head_dim % (2 * N) == 0) {
        v_accumulate_rows_heads<NH, 2>(n, head_dim, w, out, decode);
      } else {
        v_accumulate_rows_heads<NH, 1>(n, head_dim, w, out, decode);
      }
    });
  }
}

bool lanes_divide(int head_dim) {
  return head_dim % static_cast<int>(hn::Lanes(DF())) == 0;
}

void KScoresRowsF16(const f16_bits* rows, int n, const QueryHeads& q, HeadRows s) {
  if (!lanes_divide(q.head_dim)) return scalar::k_scores_rows(rows, n, q, s);
  const int D = q.head_dim;
  k_scores_rows_impl(
      n, q, s, [&](int t, int c, VF& x) { x = load_f32(rows + static_cast<size_t>(t) * D + c); });
}

template <typename T>
void v_accumulate_plain(const T* rows, int n, int nq, int head_dim, ConstHeadRows p, float* o) {
  v_accumulate_rows_impl(n, nq, head_dim, p, o, [&](int t, int c, VF& x) {
    x = load_f32(rows + static_cast<size_t>(t) * head_dim + c);
  });
}

void VAccumulateRowsF32(const float* rows, int n, int nq, int head_dim, ConstHeadRows p, float* o) {
  if (!lanes_divide(head_dim)) return scalar::v_accumulate_rows(rows, n, nq, head_dim, p, o);
  v_accumulate_plain(rows, n, nq, head_dim, p, o);
}
void VAccumulateRowsF16(const f16_bits* rows, int n, int nq, int head_dim, ConstHeadRows p,
                        float* o) {
  if (!lanes_divide(head_dim)) return scalar::v_accumulate_rows(rows, n, nq, head_dim, p, o);
  v_accumulate_plain(rows, n, nq, head_dim, p, o);
}

// ---------------------------------------------------------------------------
// llama.cpp blocks: Lanes values of a block, already multiplied by d.
// ---------------------------------------------------------------------------
HWY_INLINE VF decode_block_lanes(const BlockQ8_0* blocks, int head_dim, int t, int c) {
  const DF df;
  const DI di;
  const hn::Rebind<int8_t, DI> d8;
  const BlockQ8_0& b = blocks[static_cast<size_t>(t) * (head_dim / kLlamaBlock) + c / kLlamaBlock];
  const VF x = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, b.qs + c % kLlamaBlock)));
  return hn::Mul(x, hn::Set(df, f16_to_f32_finite(b.d)));
}

HWY_INLINE VF decode_block_lanes(const BlockQ4_0* blocks, int head_dim, int t, int c) {
  const DF df;
  const DI di;
  const hn::Rebind<uint8_t, DI> d8;
  const BlockQ4_0& b = blocks[static_cast<size_t>(t) * (head_dim / kLlamaBlock) + c / kLlamaBlock];
  const int e = c % kLlamaBlock;  // element 0..31: low nibbles hold 0..15
  const VI bytes = hn::BitCast(di, hn::PromoteTo(DU(), hn::LoadU(d8, b.qs + e % 16)));
  const VI nibble = e < 16 ? hn::And(bytes, hn::Set(di, 0x0F)) : hn::ShiftRight<4>(bytes);
  const VF x = hn::ConvertTo(df, hn::Sub(nibble, hn::Set(di, 8)));
  return hn::Mul(x, hn::Set(df, f16_to_f32_finite(b.d)));
}

template <typename Block>
bool blocks_fit_lanes(int head_dim) {
  const int N = static_cast<int>(hn::Lanes(DF()));
  const int per_block = std::is_same_v<Block, BlockQ4_0> ? kLlamaBlock / 2 : kLlamaBlock;
  return per_block % N == 0 && head_dim % N == 0;
}

void KScoresBlocksQ8_0(const BlockQ8_0* blocks, int n, const QueryHeads& q, HeadRows s) {
  if (!blocks_fit_lanes<BlockQ8_0>(q.head_dim)) return scalar::k_scores_blocks(blocks, n, q, s);
  k_scores_rows_impl(
      n, q, s, [&](int t, int c, VF& x) { x = decode_block_lanes(blocks, q.head_dim, t, c); });
}
void KScoresBlocksQ4_0(const BlockQ4_0* blocks, int n, const QueryHeads& q, HeadRows s) {
  if (!blocks_fit_lanes<BlockQ4_0>(q.head_dim)) return scalar::k_scores_blocks(blocks, n, q, s);
  k_scores_rows_impl(
      n, q, s, [&](int t, int c, VF& x) { x = decode_block_lanes(blocks, q.head_dim, t, c); });
}
void VAccumulateBlocksQ8_0(const BlockQ8_0* blocks, int n, int nq, int head_dim, ConstHeadRows p,
                           float* o) {
  if (!blocks_fit_lanes<BlockQ8_0>(head_dim)) {
    return scalar::v_accumulate_blocks(blocks, n, nq, head_dim, p, o);
  }
  v_accumulate_rows_impl(n, nq, head_dim, p, o, [&](int t, int c, VF& x) {
    x = decode_block_lanes(blocks, head_dim, t, c);
  });
}
void VAccumulateBlocksQ4_0(const BlockQ4_0* blocks, int n, int nq, int head_dim, ConstHeadRows p,
                           float* o) {
  if (!blocks_fit_lanes<BlockQ4_0>(head_dim)) {
    return scalar::v_accumulate_blocks(blocks, n, nq, head_dim, p, o);
  }
  v_accumulate_rows_impl(n, nq, head_dim, p, o, [&](int t, int c, VF& x) {
    x = decode_block_lanes(blocks, head_dim, t, c);
  });
}

// ---------------------------------------------------------------------------
// KIVI (outer grouping): every element of a dot product has its own scale, so
// dequantization stays inside the loop. Lanes take consecutive codes of one
// 32-code chunk, unpacked in registers: a byte shuffle brings each code's
// plane byte into its lane, a per-lane shift and a mask isolate it. The
// record's scale folds into the coefficient the codes are multiplied by.
// Reads 16 bytes from each chunk start: the KIVI buffers carry kRecordTailPad
// bytes after their last record.
// ---------------------------------------------------------------------------
struct ChunkLanes {
  uint32_t index[kChunk];  // shuffle index of the low-plane byte, other bytes → 0
  uint32_t shift[kChunk];
  uint32_t high_index[kChunk];  // b = 3: byte of the high bit plane
  uint32_t high_shift[kChunk];
};

constexpr ChunkLanes make_chunk_lanes(int bits) {
  ChunkLanes l{};
  const int w = bits == 3 ? 2 : bits;
  for (int c = 0; c < kChunk; ++c) {
    l.index[c] = static_cast<uint32_t>(c % (4 * w)) | 0x80808000u;
    l.shift[c] = static_cast<uint32_t>(w * (c / (4 * w)));
    l.high_index[c] = static_cast<uint32_t>(8 + c % 4) | 0x80808000u;
    l.high_shift[c] = static_cast<uint32_t>(c / 4);
  }
  return l;
}

template <int kBits>
HWY_INLINE VF unpack_lanes(const uint8_t* chunk, int first) {
  const DF df;
  const DU du;
  const DI di;
#if HWY_TARGET == HWY_SCALAR
  (void)du;
  (void)di;
  return hn::Set(df, static_cast<float>(read_code(chunk, kBits, first)));
#else
  if constexpr (kBits == 8) {
    const hn::Rebind<uint8_t, DU> d8;
    return hn::ConvertTo(df, hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d8, chunk + first))));
  } else {
    alignas(64) static constexpr ChunkLanes kLanes = make_chunk_lanes(kBits);
    const hn::Repartition<uint8_t, DU> d8;
    const auto table = hn::LoadDup128(d8, chunk);
    constexpr int w = kBits == 3 ? 2 : kBits;
    const VU low = hn::BitCast(
        du, hn::TableLookupBytesOr0(table, hn::BitCast(d8, hn::LoadU(du, kLanes.index + first))));
    VU codes = hn::And(hn::operator>>(low, hn::LoadU(du, kLanes.shift + first)),
                       hn::Set(du, (1u << w) - 1));
    if constexpr (kBits == 3) {
      const VU high =
          hn::BitCast(du, hn::TableLookupBytesOr0(
                              table, hn::BitCast(d8, hn::LoadU(du, kLanes.high_index + first))));
      codes = hn::Or(codes, hn::ShiftLeft<2>(hn::And(
                                hn::operator>>(high, hn::LoadU(du, kLanes.high_shift + first)),
                                hn::Set(du, 1u))));
    }
    return hn::ConvertTo(df, hn::BitCast(di, codes));
  }
#endif
}

// K: per G-token block, record c holds channel c over the block's tokens.
// score_t = Σ_c (q_c·s_c)·u_{c,t} + Σ_c q_c·z_c, lanes over tokens.
template <int kBits, int NH>
void k_scores_kivi_heads(int group, const uint8_t* blocks, int n, const float* q, int head_dim,
                         float* const* scores) {
  const DF df;
  const int N = static_cast<int>(hn::Lanes(df));
  const size_t code_bytes = group_code_bytes(kBits, group);
  const size_t record_bytes = code_bytes + 4;
  const size_t chunk_bytes = static_cast<size_t>(kBits) * kChunk / 8;
  for (int b = 0; b < n / group; ++b) {
    const uint8_t* records = blocks + static_cast<size_t>(b) * head_dim * record_bytes;
    for (int chunk = 0; chunk < group / kChunk; ++chunk) {
      VF acc[NH][kChunk / HWY_LANES(float)];
      for (int j = 0; j < NH; ++j) {
        for (int v = 0; v < kChunk / N; ++v) acc[j][v] = hn::Zero(df);
      }
      float bias[NH] = {};
      for (int c = 0; c < head_dim; ++c) {
        const uint8_t* record = records + c * record_bytes;
        const GroupMeta m = read_meta_finite(record, code_bytes, true, kBits);
        VF coeff[NH];
        for (int j = 0; j < NH; ++j) {
          coeff[j] = hn::Set(df, q[j * head_dim + c] * m.scale);
          bias[j] += q[j * head_dim + c] * m.zero;
        }
        for (int v = 0; v < kChunk / N; ++v) {
          const VF x = unpack_lanes<kBits>(record + chunk * chunk_bytes, v * N);
          for (int j = 0; j < NH; ++j) acc[j][v] = hn::MulAdd(coeff[j], x, acc[j][v]);
        }
      }
      for (int j = 0; j < NH; ++j) {
        for (int v = 0; v < kChunk / N; ++v) {
          const int t = b * group + chunk * kChunk + v * N;
          hn::StoreU(hn::Add(acc[j][v], hn::Set(df, bias[j])), df, scores[j] + t);
        }
      }
    }
  }
}

void KScoresKivi(int bits, int group, const uint8_t* blocks, int n, const QueryHeads& q,
                 HeadRows s) {
  if (kChunk % hn::Lanes(DF()) != 0) return scalar::k_scores_kivi(bits, group, blocks, n, q, s);
  for (int h0 = 0; h0 < q.nq; h0 += kHeadsPerPass) {
    with_constant<1, 2, 3, 4>(std::min(kHeadsPerPass, q.nq - h0), [&](auto nh) {
      constexpr int NH = decltype(nh)::value;
      float* out[NH];
      for (int j = 0; j < NH; ++j) out[j] = s.x + (h0 + j) * s.stride;
      with_constant<2, 3, 4, 8>(bits, [&](auto b) {
        k_scores_kivi_heads<decltype(b)::value, NH>(group, blocks, n, q.q + h0 * q.head_dim,
                                                    q.head_dim, out);
      });
    });
  }
}

// V: per token D/G records along channels. o_c += (p_t·s_{t,g})·u_{t,c}, and
// Σ_t p_t·z_{t,g} is added once per group at the end.
template <int kBits, int NH>
void v_accumulate_kivi_heads(int group, const uint8_t* rows, int n, int head_dim,
                             const float* const* p, float* const* o) {
  const DF df;
  const int N = static_cast<int>(hn::Lanes(df));
  const size_t code_bytes = group_code_bytes(kBits, group);
  const size_t record_bytes = code_bytes + 4;
  const size_t chunk_bytes = static_cast<size_t>(kBits) * kChunk / 8;
  const int ng = head_dim / group;
  for (int g = 0; g < ng; ++g) {
    float bias[NH] = {};
    for (int chunk = 0; chunk < group / kChunk; ++chunk) {
      const int c0 = g * group + chunk * kChunk;
      VF acc[NH][kChunk / HWY_LANES(float)];
      for (int j = 0; j < NH; ++j) {
        for (int v = 0; v < kChunk / N; ++v) acc[j][v] = hn::LoadU(df, o[j] + c0 + v * N);
      }
      for (int t = 0; t < n; ++t) {
        const uint8_t* record = rows + (static_cast<size_t>(t) * ng + g) * record_bytes;
        const GroupMeta m = read_meta_finite(record, code_bytes, true, kBits);
        VF coeff[NH];
        for (int j = 0; j < NH; ++j) {
          coeff[j] = hn::Set(df, p[j][t] * m.scale);
          if (chunk == 0) bias[j] += p[j][t] * m.zero;
        }
        for (int v = 0; v < kChunk / N; ++v) {
          const VF x = unpack_lanes<kBits>(record + chunk * chunk_bytes, v * N);
          for (int j = 0; j < NH; ++j) acc[j][v] = hn::MulAdd(coeff[j], x, acc[j][v]);
        }
      }
      for (int j = 0; j < NH; ++j) {
        for (int v = 0; v < kChunk / N; ++v) hn::StoreU(acc[j][v], df, o[j] + c0 + v * N);
      }
    }
    for (int j = 0; j < NH; ++j) {
      for (int c = g * group; c < (g + 1) * group; ++c) o[j][c] += bias[j];
    }
  }
}

void VAccumulateKivi(int bits, int group, const uint8_t* rows, int n, int nq, int head_dim,
                     ConstHeadRows p, float* o) {
  if (kChunk % hn::Lanes(DF()) != 0) {
    return scalar::v_accumulate_kivi(bits, group, rows, n, nq, head_dim, p, o);
  }
  for (int h0 = 0; h0 < nq; h0 += kHeadsPerPass) {
    with_constant<1, 2, 3, 4>(std::min(kHeadsPerPass, nq - h0), [&](auto nh) {
      constexpr int NH = decltype(nh)::value;
      const float* w[NH];
      float* out[NH];
      for (int j = 0; j < NH; ++j) {
        w[j] = p.x + (h0 + j) * p.stride;
        out[j] = o + (h0 + j) * head_dim;
      }
      with_constant<2, 3, 4, 8>(bits, [&](auto b) {
        v_accumulate_kivi_heads<decltype(b)::value, NH>(group, rows, n, head_dim, w, out);
      });
    });
  }
}

// ---------------------------------------------------------------------------
// Softmax of one chunk: s ← exp(s − max), with the max and the sum returned.
// ---------------------------------------------------------------------------
void SoftmaxPartial(HeadRows s, int n, int nq, float* m, float* l) {
  const DF df;
  const int N = static_cast<int>(hn::Lanes(df));
  for (int h = 0; h < nq; ++h) {
    float* x = s.x + h * s.stride;
    VF vmax = hn::Set(df, -INFINITY);
    int t = 0;
    for (; t + N <= n; t += N) vmax = hn::Max(vmax, hn::LoadU(df, x + t));
    float max = hn::GetLane(hn::MaxOfLanes(df, vmax));
    for (; t < n; ++t) max = std::max(max, x[t]);
    VF vsum = hn::Zero(df);
    const VF vm = hn::Set(df, max);
    for (t = 0; t + N <= n; t += N) {
      const VF e = ExpOfNonPositive(df, hn::Sub(hn::LoadU(df, x + t), vm));
      hn::StoreU(e, df, x + t);
      vsum = hn::Add(vsum, e);
    }
    float sum = hn::GetLane(hn::SumOfLanes(df, vsum));
    for (; t < n; ++t) {
      x[t] = exp_of_nonpositive(x[t] - max);
      sum += x[t];
    }
    m[h] = max;
    l[h] = sum;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace innerq::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace innerq::kernels::simd {

HWY_EXPORT(KScoresTilesF32);
HWY_EXPORT(KScoresTilesF16);
HWY_EXPORT(KScoresRowsF16);
HWY_EXPORT(KScoresBlocksQ8_0);
HWY_EXPORT(KScoresBlocksQ4_0);
HWY_EXPORT(KScoresInnerQ);
HWY_EXPORT(KScoresKivi);
HWY_EXPORT(VAccumulateRowsF32);
HWY_EXPORT(VAccumulateRowsF16);
HWY_EXPORT(VAccumulateBlocksQ8_0);
HWY_EXPORT(VAccumulateBlocksQ4_0);
HWY_EXPORT(VAccumulateInnerQ);
HWY_EXPORT(VAccumulateKivi);
HWY_EXPORT(SoftmaxPartial);

void k_scores_tiles(const float* tiles, int n, const QueryHeads& q, HeadRows s) {
  HWY_DYNAMIC_DISPATCH(KScoresTilesF32)(tiles, n, q, s);
}
void k_scores_tiles(const f16_bits* tiles, int n, const QueryHeads& q, HeadRows s) {
  HWY_DYNAMIC_DISPATCH(KScoresTilesF16)(tiles, n, q, s);
}
void k_scores_rows(const f16_bits* rows, int n, const QueryHeads& q, HeadRows s) {
  HWY_DYNAMIC_DISPATCH(KScoresRowsF16)(rows, n, q, s);
}
void k_scores_blocks(const BlockQ8_0* blocks, int n, const QueryHeads& q, HeadRows s) {
  HWY_DYNAMIC_DISPATCH(KScoresBlocksQ8_0)(blocks, n, q, s);
}
void k_scores_blocks(const BlockQ4_0* blocks, int n, const QueryHeads& q, HeadRows s) {
  HWY_DYNAMIC_DISPATCH(KScoresBlocksQ4_0)(blocks, n, q, s);
}
void k_scores_innerq(const TileFormat& f, const uint8_t* tiles, int n, const QueryHeads& q,
                     HeadRows s, KernelScratch scratch) {
  if (scratch.bytes < innerq_k_scratch_bytes(f, q.head_dim)) {
    throw Error("k_scores_innerq: " + std::to_string(scratch.bytes) + " bytes of scratch, " +
                std::to_string(innerq_k_scratch_bytes(f, q.head_dim)) + " needed");
  }
  if (!levels_support_bits(f.levels, f.bits)) {
    throw Error("k_scores_innerq: codebook levels need 2-4 bit codes, not " +
                std::to_string(f.bits));
  }
  HWY_DYNAMIC_DISPATCH(KScoresInnerQ)(f, tiles, n, q, s, scratch);
}
void k_scores_kivi(int bits, int group, const uint8_t* blocks, int n, const QueryHeads& q,
                   HeadRows s) {
  HWY_DYNAMIC_DISPATCH(KScoresKivi)(bits, group, blocks, n, q, s);
}
void v_accumulate_rows(const float* rows, int n, int nq, int head_dim, ConstHeadRows p, float* o) {
  HWY_DYNAMIC_DISPATCH(VAccumulateRowsF32)(rows, n, nq, head_dim, p, o);
}
void v_accumulate_rows(const f16_bits* rows, int n, int nq, int head_dim, ConstHeadRows p,
                       float* o) {
  HWY_DYNAMIC_DISPATCH(VAccumulateRowsF16)(rows, n, nq, head_dim, p, o);
}
void v_accumulate_blocks(const BlockQ8_0* blocks, int n, int nq, int head_dim, ConstHeadRows p,
                         float* o) {
  HWY_DYNAMIC_DISPATCH(VAccumulateBlocksQ8_0)(blocks, n, nq, head_dim, p, o);
}
void v_accumulate_blocks(const BlockQ4_0* blocks, int n, int nq, int head_dim, ConstHeadRows p,
                         float* o) {
  HWY_DYNAMIC_DISPATCH(VAccumulateBlocksQ4_0)(blocks, n, nq, head_dim, p, o);
}
void v_accumulate_innerq(const TileFormat& f, const uint8_t* blocks, int n_blocks, int nq,
                         int head_dim, ConstHeadRows p, float* o, KernelScratch scratch) {
  if (f.levels != Levels::kUniform) {
    throw Error("v_accumulate_innerq: codebook levels are a key format");
  }
  if (scratch.bytes < innerq_v_scratch_bytes(f)) {
    throw Error("v_accumulate_innerq: " + std::to_string(scratch.bytes) + " bytes of scratch, " +
                std::to_string(innerq_v_scratch_bytes(f)) + " needed");
  }
  HWY_DYNAMIC_DISPATCH(VAccumulateInnerQ)(f, blocks, n_blocks, nq, head_dim, p, o, scratch);
}
void v_accumulate_kivi(int bits, int group, const uint8_t* rows, int n, int nq, int head_dim,
                       ConstHeadRows p, float* o) {
  HWY_DYNAMIC_DISPATCH(VAccumulateKivi)(bits, group, rows, n, nq, head_dim, p, o);
}
void softmax_partial(HeadRows s, int n, int nq, float* m, float* l) {
  HWY_DYNAMIC_DISPATCH(SoftmaxPartial)(s, n, nq, m, l);
}

}  // namespace innerq::kernels::simd
#endif  // HWY_ONCE
