// GPU decode attention against the CPU's decode_attention_reference on the
// same caches (built on the CPU, uploaded byte for byte), for every kind the
// GPU reads (f16, kivi, innerq), with tolerances derived from the inputs; and
// the cuBLAS two-GEMM baseline against the same reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "innerq/attn/cuda/device_attention.h"
#include "innerq/attn/decode_attention.h"
#include "innerq/base/error.h"
#include "innerq/kernels/cuda/decode_kernels.h"
#include "innerq/kv/layer_caches.h"
#include "cuda_test_util.h"

namespace innerq::attn::cuda {
namespace {

struct Shape {
  int n_heads, n_kv_heads, head_dim;
};

// How the GPU path deviates from exact arithmetic on the dequantized cache.
struct ErrorModel {
  bool int8_query = false;  // InnerQ K middle: q·f to int8 per 32 channels
  bool u8_weights = false;  // InnerQ V middle: p to u8 per 32 tokens
  bool f16_io = false;      // cuBLAS: f16 query, scores, weights and output
};

// Worst-case |o_gpu − o_reference| per output element of one sequence:
//  - a score error Δ_t ≤ Δ moves each softmax weight by at most a factor
//    e^{±2Δ}, so o moves by at most expm1(2Δ)·max_t|v_t|;
//  - f32 accumulation: Δ gets 2·D·ε·Σ_c|q_c·k_c|/sqrt(D), the output
//    1024·ε·max_t|v_t| (a split sums up to 512 weighted values in order);
//  - int8 query: Δ gets Σ_chunks (a/2)·Σ_{i∈chunk}|k_i/f_i|, a = max|q_i·f_i|/(127·sqrt(D));
//  - u8 weights: per 32 tokens (aligned at the middle's start) an error of at
//    most max p/510 per weight, times e^{2Δ} for the perturbed p;
//  - f16 storage: Δ gets 2^-11·(Σ|q_c k_c|/sqrt(D) + |s_t|), each weight
//    2^-11·p + 2^-25, the output 2^-11·|o|.
std::vector<double> tolerance(const kv::LayerCache& cache, const float* q, int n_heads,
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
      std::vector<double> p(static_cast<size_t>(n));
      double delta = 0.0, max_s = -1e300;
      for (int t = 0; t < n; ++t) {
        double s = 0.0, mag = 0.0;
        for (int c = 0; c < D; ++c) {
          const double term = qh[c] * k[static_cast<size_t>(t) * D + c];
          s += term;
          mag += std::fabs(term);
        }
        s *= inv_sqrt_d;
        double d = 2.0 * D * eps * mag * inv_sqrt_d;
        if (model.int8_query && t >= k_begin && t < k_end) {
          for (int c0 = 0; c0 < D; c0 += kChunk) {
            double qmax = 0.0, kabs = 0.0;
            for (int c = c0; c < c0 + kChunk; ++c) {
              qmax = std::max(qmax, std::fabs(qh[c] * f[c] * inv_sqrt_d));
              kabs += std::fabs(k[static_cast<size_t>(t) * D + c] / f[c]);
            }
            d += qmax / 127.0 / 2.0 * kabs;
          }
        }
        if (model.f16_io) d += half_eps * (mag * inv_sqrt_d + std::fabs(s));
        delta = std::max(delta, d);
        p[static_cast<size_t>(t)] = s;
        max_s = std::max(max_s, s);
      }
      double sum = 0.0;
      for (double& x : p) sum += (x = std::exp(x - max_s));
      for (double& x : p) x /= sum;
      for (int c = 0; c < D; ++c) {
        double vmax = 0.0, o = 0.0, quant = 0.0, f16 = 0.0;
        for (int t = 0; t < n; ++t) {
          const double vt = v[static_cast<size_t>(t) * D + c];
          vmax = std::max(vmax, std::fabs(vt));
          o += p[static_cast<size_t>(t)] * vt;
          f16 += (half_eps * p[static_cast<size_t>(t)] + std::ldexp(1.0, -25)) * std::fabs(vt);
        }
        if (model.u8_weights) {
          for (int b = v_begin; b < v_end; b += kChunk) {
            double pmax = 0.0, vabs = 0.0;
            for (int t = b; t < std::min(b + kChunk, v_end); ++t) {
              pmax = std::max(pmax, p[static_cast<size_t>(t)]);
              vabs += std::fabs(v[static_cast<size_t>(t) * D + c]);
            }
            quant += pmax / 510.0 * vabs;
          }
          quant *= std::exp(2.0 * delta);
        }
        // 1024·ε: sequential f32 sums of up to 512 weighted values per split,
        // then the merge.
        double bound = (std::expm1(2.0 * delta) + 1024.0 * eps) * vmax + quant;
        if (model.f16_io) bound += f16 + half_eps * std::fabs(o);
        tol[static_cast<size_t>(h) * D + c] = bound * 1.01 + 1e-30;
      }
    }
  }
  return tol;
}

struct Case {
  const char* spec;
  Shape shape;
  std::vector<int> tokens;  // one sequence per entry
};

// Shown by gtest in place of the raw bytes of a parameter.
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.spec << " " << c.shape.n_heads << "/" << c.shape.n_kv_heads << "/" << c.shape.head_dim
      << " tokens";
  for (const int n : c.tokens) *os << " " << n;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.spec;
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name + "_" + std::to_string(info.param.shape.n_heads) + "x" +
         std::to_string(info.param.shape.n_kv_heads) + "x" +
         std::to_string(info.param.shape.head_dim) + "_" + std::to_string(info.index);
}

// One single-layer cache per sequence, filled with synthetic K/V.
std::vector<kv::KvCache> build_caches(const Case& c) {
  const kv::CacheSpec spec = kv::parse_cache_spec(c.spec);
  std::vector<kv::KvCache> caches;
  for (size_t s = 0; s < c.tokens.size(); ++s) {
    const int n = c.tokens[s];
    caches.emplace_back(kv::CacheShape{1, c.shape.n_kv_heads, c.shape.head_dim, n}, spec.layer);
    std::vector<float> k, v;
    test::synthetic_kv(n, c.shape.n_kv_heads, c.shape.head_dim, 1234u + static_cast<unsigned>(s), k,
                       v);
    caches.back().append(0, k.data(), v.data(), n);
  }
  return caches;
}

std::vector<const kv::LayerCache*> layers_of(const std::vector<kv::KvCache>& caches) {
  std::vector<const kv::LayerCache*> layers;
  for (const kv::KvCache& c : caches) layers.push_back(&c.layer(0));
  return layers;
}

// Compares sequence by sequence and prints what reproduces a failure.
void expect_matches_reference(const Case& c, const std::vector<kv::KvCache>& caches,
                              const std::vector<float>& q, const std::vector<float>& got,
                              const ErrorModel& model, const char* what) {
  const size_t per_seq = static_cast<size_t>(c.shape.n_heads) * c.shape.head_dim;
  for (size_t s = 0; s < caches.size(); ++s) {
    const kv::LayerCache& layer = caches[s].layer(0);
    std::vector<float> want(per_seq);
    decode_attention_reference(layer, q.data() + s * per_seq, c.shape.n_heads, want.data());
    const std::vector<double> tol =
        tolerance(layer, q.data() + s * per_seq, c.shape.n_heads, model);
    int failures = 0;
    for (size_t i = 0; i < per_seq && failures < 5; ++i) {
      const double err = std::fabs(static_cast<double>(got[s * per_seq + i]) - want[i]);
      if (!(err <= tol[i])) {
        ++failures;
        ADD_FAILURE() << what << " " << c.spec << " seq " << s << " (" << c.tokens[s]
                      << " tokens) head " << i / c.shape.head_dim << " channel "
                      << i % c.shape.head_dim << ": got " << got[s * per_seq + i] << " want "
                      << want[i] << " tolerance " << tol[i];
      }
    }
  }
}

class DecodeVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(DecodeVsReference, FusedKernelMatchesCpuReference) {
  INNERQ_REQUIRE_CUDA_DEVICE();
  const Case& c = GetParam();
  const std::vector<kv::KvCache> caches = build_caches(c);
  const std::vector<float> q = test::random_queries(
      caches.size() * static_cast<size_t>(c.shape.n_heads) * c.shape.head_dim, 99u);
  DeviceLayerBatch batch(layers_of(caches));
  const std::vector<float> got = batch.decode_host(q, c.shape.n_heads);
  const bool innerq = batch.kind() == kv::CacheKind::kInnerQ;
  expect_matches_reference(c, caches, q, got, {innerq, innerq, false}, "fused");
}

// GQA 4:1 (llama3-8b), 3:1 (smollm2), 8:1, 2:1 and MHA; head_dim 64 and 128;
// G = 32, 64, 128; sink/recent on and off; sequences of different lengths
// (one shorter than sink + recent, so that nothing is quantized).
INSTANTIATE_TEST_SUITE_P(
    Kinds, DecodeVsReference,
    ::testing::Values(
        Case{"f16", {32, 8, 128}, {1000, 333}}, Case{"f16", {8, 8, 64}, {517}},
        Case{"kivi", {32, 8, 128}, {1200, 700}}, Case{"kivi4", {8, 8, 64}, {900}},
        Case{"kivi:g=64,recent=64", {16, 2, 128}, {1100, 64}},
        Case{"innerq", {32, 8, 128}, {1500, 700, 100}},
        Case{"innerq:k=2,v=2", {8, 8, 128}, {1300, 900}},
        Case{"innerq:k=4,v=4,g=128", {32, 8, 128}, {1400}},
        Case{"innerq:k=3,v=2,g=64,sink=0,recent=0", {9, 3, 64}, {1000, 555}},
        Case{"innerq:k=8,v=8,sink=0,recent=0,knorm=off", {8, 8, 64}, {800}},
        Case{"innerq:k=3,v=3,kmode=hybrid,vmode=asym,g=32,sink=4,recent=40",
             {16, 2, 128},
             {1100, 257}},
        Case{"innerq:k=2,v=4,kmode=asym,vmode=sym,g=128,knorm=rms", {16, 8, 128}, {2000}}),
    case_name);

class CublasVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(CublasVsReference, TwoGemmBaselineMatchesCpuReference) {
  INNERQ_REQUIRE_CUDA_DEVICE();
  const Case& c = GetParam();
  const std::vector<kv::KvCache> caches = build_caches(c);
  const std::vector<float> q = test::random_queries(
      caches.size() * static_cast<size_t>(c.shape.n_heads) * c.shape.head_dim, 7u);
  CublasF16Batch batch(layers_of(caches));
  const std::vector<float> got = batch.decode_host(q, c.shape.n_heads);
  expect_matches_reference(c, caches, q, got, {false, false, true}, "cublas");
}

INSTANTIATE_TEST_SUITE_P(F16, CublasVsReference,
                         ::testing::Values(Case{"f16", {32, 8, 128}, {1024, 1024}},
                                           Case{"f16", {32, 32, 128}, {777}},
                                           Case{"f16", {9, 3, 64}, {300}}),
                         case_name);

// The launchers refuse unsupported shapes before touching the device, so
// these run (and must pass) without a GPU.
TEST(DecodeDispatch, UnsupportedShapesFailLoudly) {
  const innerq::cuda::DecodeWork work{nullptr, nullptr, nullptr, nullptr, 256, 1};
  const innerq::cuda::InnerQDecodeParams head_dim_96{nullptr, {1, 8, 32, 96}, work, 3, 2,
                                                     32,      false,          true};
  EXPECT_THROW(innerq::cuda::launch_decode_innerq(head_dim_96, nullptr), Error);
  const innerq::cuda::InnerQDecodeParams bits_5{nullptr, {1, 8, 32, 128}, work, 5, 2,
                                                32,      false,           true};
  EXPECT_THROW(innerq::cuda::launch_decode_innerq(bits_5, nullptr), Error);
  const innerq::cuda::KiviDecodeParams group_48{nullptr, {1, 8, 32, 128}, work, 2, 48};
  EXPECT_THROW(innerq::cuda::launch_decode_kivi(group_48, nullptr), Error);
  const innerq::cuda::F16DecodeParams gqa_16{nullptr, {1, 2, 32, 128}, work};
  EXPECT_THROW(innerq::cuda::launch_decode_f16(gqa_16, nullptr), Error);
  const innerq::cuda::DecodeWork chunk_100{nullptr, nullptr, nullptr, nullptr, 100, 1};
  const innerq::cuda::F16DecodeParams bad_chunk{nullptr, {1, 8, 32, 128}, chunk_100};
  EXPECT_THROW(innerq::cuda::launch_decode_f16(bad_chunk, nullptr), Error);
}

}  // namespace
}  // namespace innerq::attn::cuda
