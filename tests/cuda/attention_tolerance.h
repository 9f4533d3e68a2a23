// tests/cuda/attention_tolerance.h — the input-derived bound on |o_gpu −
// o_reference| shared by the GPU decode test and its CPU emulation.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "innerq/attn/decode_attention.h"
#include "innerq/kernels/group_format.h"
#include "innerq/kv/layer_caches.h"

namespace innerq::attn::cuda {

// How the GPU path deviates from exact arithmetic on the dequantized cache.
struct ErrorModel {
  bool int8_query = false;  // InnerQ K middle: q·f to int8 per 32 channels
  bool u8_weights = false;  // InnerQ V middle: p to u8 per 32 tokens
  bool f16_io = false;      // cuBLAS: f16 query, scores, weights and output
};

// Worst-case |o_gpu − o_reference| per output element of one sequence:
//  - score errors |δ_t| ≤ d_t move weight t to p_t·e^{δ_t − L} with
//    |L| = |ln Σ_u p_u e^{δ_u}| ≤ d̄ = ln Σ_u p_u e^{d_u}, so by at most
//    p_t·expm1(d_t + d̄); as Σ_t (p̃_t − p_t) = 0, o_c moves by at most
//    Σ_t p_t·expm1(d_t + d̄)·|v_tc − o_c|;
//  - f32 accumulation: Δ gets 2·D·ε·Σ_c|q_c·k_c|/sqrt(D), the output
//    1024·ε·max_t|v_t| (a split sums up to 512 weighted values in order);
//  - int8 query: Δ gets Σ_chunks (a/2)·Σ_{i∈chunk}|k_i/f_i|, a = max|q_i·f_i|/(127·sqrt(D));
//  - u8 weights: per 32 tokens (aligned at the middle's start) an error of at
//    most max p̃/510 per weight (p̃ ≤ p·e^{d_t + d̄}, the perturbed weight);
//  - f16 storage: Δ gets 2^-11·(Σ|q_c k_c|/sqrt(D) + |s_t|), each weight
//    2^-11·p + 2^-25, the output 2^-11·|o|.
inline std::vector<double> tolerance(const kv::LayerCache& cache, const float* q, int n_heads,
                                     const ErrorModel& model) {
  const int n = cache.n_tokens(), D = cache.head_dim(), nq = n_heads / cache.n_kv_heads();
  const double eps = std::numeric_limits<float>::epsilon(), half_eps = std::ldexp(1.0, -11);
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(D));
  int k_begin = 0, k_end = 0, v_begin = 0, v_end = 0;
  if (cache.kind() == kv::CacheKind::kInnerQ) {
    const auto& c = static_cast<const kv::InnerQLayerCache&>(cache);
    k_begin = v_begin = c.sink_tokens();
    k_end = k_begin + c.k_middle_tokens();
    v_end = v_begin + c.v_middle_tokens();
  }
  std::vector<double> tol(static_cast<size_t>(n_heads) * D);
  for (int kv_head = 0; kv_head < cache.n_kv_heads(); ++kv_head) {
    const std::vector<double> k = dequantized_keys(cache, kv_head);
    const std::vector<double> v = dequantized_values(cache, kv_head);
    const float* f = cache.kind() == kv::CacheKind::kInnerQ
                         ? static_cast<const kv::InnerQLayerCache&>(cache).key_norm(kv_head)
                         : nullptr;
    for (int h = kv_head * nq; h < (kv_head + 1) * nq; ++h) {
      const float* qh = q + static_cast<size_t>(h) * D;
      std::vector<double> p(static_cast<size_t>(n)), d(static_cast<size_t>(n));
      double max_s = -1e300;
      for (int t = 0; t < n; ++t) {
        double s = 0.0, mag = 0.0;
        for (int c = 0; c < D; ++c) {
          const double term = qh[c] * k[static_cast<size_t>(t) * D + c];
          s += term;
          mag += std::fabs(term);
        }
        s *= inv_sqrt_d;
        double dt = 2.0 * D * eps * mag * inv_sqrt_d;
        if (model.int8_query && t >= k_begin && t < k_end) {
          for (int c0 = 0; c0 < D; c0 += kChunk) {
            double qmax = 0.0, kabs = 0.0;
            for (int c = c0; c < c0 + kChunk; ++c) {
              qmax = std::max(qmax, std::fabs(qh[c] * f[c] * inv_sqrt_d));
              kabs += std::fabs(k[static_cast<size_t>(t) * D + c] / f[c]);
            }
            dt += qmax / 127.0 / 2.0 * kabs;
          }
        }
        if (model.f16_io) dt += half_eps * (mag * inv_sqrt_d + std::fabs(s));
        d[static_cast<size_t>(t)] = dt;
        p[static_cast<size_t>(t)] = s;
        max_s = std::max(max_s, s);
      }
      double sum = 0.0;
      for (double& x : p) sum += (x = std::exp(x - max_s));
      for (double& x : p) x /= sum;
      double d_bar = 0.0;
      for (int t = 0; t < n; ++t)
        d_bar += p[static_cast<size_t>(t)] * std::exp(d[static_cast<size_t>(t)]);
      d_bar = std::log(d_bar);
      for (int c = 0; c < D; ++c) {
        double vmax = 0.0, o = 0.0;
        for (int t = 0; t < n; ++t) {
          const double vt = v[static_cast<size_t>(t) * D + c];
          vmax = std::max(vmax, std::fabs(vt));
          o += p[static_cast<size_t>(t)] * vt;
        }
        double scores = 0.0, quant = 0.0, f16 = 0.0;
        for (int t = 0; t < n; ++t) {
          const double vt = v[static_cast<size_t>(t) * D + c], pt = p[static_cast<size_t>(t)];
          scores += pt * std::expm1(d[static_cast<size_t>(t)] + d_bar) * std::fabs(vt - o);
          f16 += (half_eps * pt + std::ldexp(1.0, -25)) * std::fabs(vt);
        }
        if (model.u8_weights) {
          for (int b = v_begin; b < v_end; b += kChunk) {
            double pmax = 0.0, vabs = 0.0;
            for (int t = b; t < std::min(b + kChunk, v_end); ++t) {
              const size_t i = static_cast<size_t>(t);
              pmax = std::max(pmax, p[i] * std::exp(d[i] + d_bar));
              vabs += std::fabs(v[i * D + c]);
            }
            quant += pmax / 510.0 * vabs;
          }
        }
        // 1024·ε: sequential f32 sums of up to 512 weighted values per split,
        // then the merge.
        double bound = scores + 1024.0 * eps * vmax + quant;
        if (model.f16_io) bound += f16 + half_eps * std::fabs(o);
        tol[static_cast<size_t>(h) * D + c] = bound * 1.01 + 1e-30;
      }
    }
  }
  return tol;
}

}  // namespace innerq::attn::cuda
