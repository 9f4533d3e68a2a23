// Decode attention of every cache kind against (1) a double-precision
// reference on the cache's own dequantized contents, with a tolerance derived
// from the inputs, and (2) unquantized attention, with a bound per bit width.
#include "innerq/attn/decode_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "innerq/attn/window_attention.h"
#include "innerq/base/error.h"
#include "innerq/kernels/attn_kernels.h"
#include "innerq/kernels/channel_order.h"
#include "innerq/kernels/hadamard.h"
#include "innerq/kv/layer_caches.h"

namespace innerq::attn {
namespace {

struct Shape {
  int n_heads, n_kv_heads, head_dim;
};

// Keys: gaussian with two outlier channels ×20 (as real post-RoPE keys) and a
// loud first token (an attention sink); values gaussian. [n][n_kv][D].
struct Inputs {
  std::vector<float> k, v, q;
};
Inputs make_inputs(const Shape& s, int n, unsigned seed, bool outliers = true) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Inputs in;
  in.k.resize(static_cast<size_t>(n) * s.n_kv_heads * s.head_dim);
  in.v.resize(in.k.size());
  for (size_t i = 0; i < in.k.size(); ++i) {
    const int c = static_cast<int>(i % s.head_dim);
    const bool sink = i < static_cast<size_t>(s.n_kv_heads * s.head_dim);
    const bool outlier = outliers && (c == 3 || c == 17 % s.head_dim);
    in.k[i] = normal(rng) * (outlier ? 20.0f : 1.0f) * (sink && outliers ? 4.0f : 1.0f);
    in.v[i] = normal(rng);
  }
  in.q.resize(static_cast<size_t>(s.n_heads) * s.head_dim);
  for (float& x : in.q) x = normal(rng) * 0.5f;
  return in;
}

kv::KvCache make_cache(const char* spec, const Shape& s, const Inputs& in, int n) {
  kv::KvCache cache(kv::CacheShape{1, s.n_kv_heads, s.head_dim, n},
                    kv::parse_cache_spec(spec).layer);
  // Prefill a third, then decode-style appends, so every flush path runs.
  const int prefill = n / 3;
  const size_t row = static_cast<size_t>(s.n_kv_heads) * s.head_dim;
  cache.append(0, in.k.data(), in.v.data(), prefill);
  for (int t = prefill; t < n; ++t) cache.append(0, &in.k[t * row], &in.v[t * row], 1);
  return cache;
}

// Tokens whose K (resp. V) the SIMD kernels read through an int8 query (resp.
// int8 softmax weights): InnerQ's quantized middle.
struct Int8Regions {
  int k_begin = 0, k_end = 0, v_begin = 0, v_end = 0;
  int k_group = 32, group = 32;  // K channel groups, V token groups
};
Int8Regions int8_regions(const kv::LayerCache& cache) {
  Int8Regions r;
  if (cache.kind() != kv::CacheKind::kInnerQ) return r;
  const auto& c = static_cast<const kv::InnerQLayerCache&>(cache);
  r.k_begin = r.v_begin = c.sink_tokens();
  r.k_end = r.k_begin + c.k_middle_tokens();
  r.v_end = r.v_begin + c.v_middle_tokens();
  r.k_group = c.config().key_group();
  r.group = c.config().group;
  return r;
}

// Worst-case |o_simd − o_reference| per output element, from the inputs:
//  - scores: f32 accumulation, D·ε·Σ|q_c·k_c|, plus for int8 queries
//    Σ_g (σ_g/2)·Σ_{i∈g}|k'_i| with σ_g = max|q'_g|/127 (q' = q·f/√D, k' = k/f);
//    a score error Δ moves each softmax weight by at most a factor e^{±2Δ};
//  - values: f32 accumulation, plus for int8 weights per G-token block
//    (max_b p/254)·Σ_{t∈b}|v_t|.
std::vector<double> tolerance(const kv::LayerCache& cache, const float* q, int n_heads,
                              bool int8_paths, int n_visible = 0) {
  const int n = n_visible > 0 ? n_visible : cache.n_tokens(), D = cache.head_dim(),
            nq = n_heads / cache.n_kv_heads();
  const double eps = std::numeric_limits<float>::epsilon();
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(D));
  const Int8Regions r = int8_paths ? int8_regions(cache) : Int8Regions{};
  std::vector<double> tol(static_cast<size_t>(n_heads) * D);
  // Rotated layers: the kernels see R q, R k and R v (kernels/hadamard.h), so
  // the bounds are taken there; the f32 rotation of q adds its own rounding,
  // and an output error e' in rotated space is at most Σ_j |R_cj|·e'_j = the
  // block sum of e' over √B after rotating back.
  const kv::LayerConfig& config = cache.config();
  const int B = kernels::hadamard_block(D);
  const double rot_eps = (std::log2(B) + 2) * eps;
  for (int kv_head = 0; kv_head < cache.n_kv_heads(); ++kv_head) {
    std::vector<double> k = dequantized_keys(cache, kv_head);
    std::vector<double> v = dequantized_values(cache, kv_head);
    // Permuted keys: back to the channel order the kernels read.
    const auto permute = [&](std::vector<double>& rows) {
      const std::vector<double> model_order(rows);
      for (size_t at = 0; at < rows.size(); at += static_cast<size_t>(D))
        kernels::permute_channels(model_order.data() + at, rows.data() + at, D, config.kperm);
    };
    permute(k);
    if (config.rot_k) kernels::scalar::hadamard_rotate(k.data(), n, D, false);
    if (config.rot_v) kernels::scalar::hadamard_rotate(v.data(), n, D, false);
    const float* f = cache.kind() == kv::CacheKind::kInnerQ
                         ? static_cast<const kv::InnerQLayerCache&>(cache).key_norm(kv_head)
                         : nullptr;
    const float* mu = cache.kind() == kv::CacheKind::kInnerQ
                          ? static_cast<const kv::InnerQLayerCache&>(cache).key_mean(kv_head)
                          : nullptr;
    // Sorted channels (ksort): the int8 query's groups hold channels perm[j].
    const uint16_t* perm = cache.kind() == kv::CacheKind::kInnerQ
                               ? static_cast<const kv::InnerQLayerCache&>(cache).key_perm(kv_head)
                               : nullptr;
    if (mu != nullptr) {  // the kernels read the centered keys K − μ
      for (size_t i = 0; i < k.size(); ++i) k[i] -= mu[i % D];
    }
    for (int h = kv_head * nq; h < (kv_head + 1) * nq; ++h) {
      std::vector<double> qd(q + static_cast<size_t>(h) * D, q + static_cast<size_t>(h + 1) * D);
      double q_abs = 0.0;
      for (double x : qd) q_abs += std::fabs(x);
      permute(qd);
      if (config.rot_k) kernels::scalar::hadamard_rotate(qd.data(), 1, D, false);
      const double* qh = qd.data();
      double delta = 0.0;
      std::vector<double> p(static_cast<size_t>(n));
      double max_s = -1e300;
      for (int t = 0; t < n; ++t) {
        double s = 0.0, mag = 0.0, q8 = 0.0;
        for (int c = 0; c < D; ++c) {
          const double term = qh[c] * k[static_cast<size_t>(t) * D + c];
          s += term;
          mag += std::fabs(term);
        }
        if (t >= r.k_begin && t < r.k_end) {
          for (int g = 0; g < D / r.k_group; ++g) {
            double qmax = 0.0, kabs = 0.0;
            for (int j = g * r.k_group; j < (g + 1) * r.k_group; ++j) {
              const int c = perm != nullptr ? perm[j] : j;
              qmax = std::max(qmax, std::fabs(qh[c] * f[c] * inv_sqrt_d));
              kabs += std::fabs(k[static_cast<size_t>(t) * D + c] / f[c]);
            }
            q8 += qmax / 127.0 / 2.0 * kabs;
          }
        }
        if (config.rot_k) {
          double k_abs = 0.0;
          for (int c = 0; c < D; ++c) k_abs += std::fabs(k[static_cast<size_t>(t) * D + c]);
          mag += rot_eps * q_abs / std::sqrt(static_cast<double>(B)) * k_abs;
        }
        delta = std::max(delta, (2.0 * D * eps * mag) * inv_sqrt_d + q8);
        p[static_cast<size_t>(t)] = s * inv_sqrt_d;
        max_s = std::max(max_s, p[static_cast<size_t>(t)]);
      }
      double sum = 0.0;
      for (double& x : p) sum += (x = std::exp(x - max_s));
      for (double& x : p) x /= sum;
      for (int c = 0; c < D; ++c) {
        double vmax = 0.0, v8 = 0.0;
        for (int t = 0; t < n; ++t)
          vmax = std::max(vmax, std::fabs(v[static_cast<size_t>(t) * D + c]));
        // (A visible prefix cuts the last group: past n the weights are 0.)
        for (int b = r.v_begin; b < std::min(r.v_end, n); b += r.group) {
          double pmax = 0.0, vabs = 0.0;
          for (int t = b; t < std::min(b + r.group, n); ++t) {
            pmax = std::max(pmax, p[static_cast<size_t>(t)]);
            vabs += std::fabs(v[static_cast<size_t>(t) * D + c]);
          }
          v8 += pmax / 254.0 * vabs;
        }
        tol[static_cast<size_t>(h) * D + c] =
            (std::expm1(2.0 * delta) + 64.0 * eps) * vmax * 1.01 + v8 * 1.01 + 1e-30;
      }
      if (config.rot_v) {
        double* th = &tol[static_cast<size_t>(h) * D];
        std::vector<double> vmax(static_cast<size_t>(D), 0.0);
        for (int t = 0; t < n; ++t)
          for (int c = 0; c < D; ++c)
            vmax[c] = std::max(vmax[c], std::fabs(v[static_cast<size_t>(t) * D + c]));
        for (int b0 = 0; b0 < D; b0 += B) {
          double sum = 0.0, vsum = 0.0;
          for (int c = b0; c < b0 + B; ++c) sum += th[c], vsum += vmax[c];
          for (int c = b0; c < b0 + B; ++c)
            th[c] = (sum + rot_eps * vsum) / std::sqrt(static_cast<double>(B)) * 1.01;
        }
      }
    }
  }
  return tol;
}

void expect_within(const std::vector<float>& got, const std::vector<float>& want,
                   const std::vector<double>& tol, const char* what) {
  int failures = 0;
  for (size_t i = 0; i < got.size() && failures < 5; ++i) {
    if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= tol[i])) {
      ++failures;
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i]
                    << " tolerance " << tol[i];
    }
  }
}

struct Case {
  const char* spec;
  Shape shape;
  int n;
};

class AgainstReference : public ::testing::TestWithParam<Case> {};

TEST_P(AgainstReference, SimdScalarAndThreadsMatchTheDoubleReference) {
  const Case& c = GetParam();
  const Inputs in = make_inputs(c.shape, c.n, 1234 + c.n);
  const kv::KvCache cache = make_cache(c.spec, c.shape, in, c.n);
  const kv::LayerCache& layer = cache.layer(0);
  const size_t out_size = static_cast<size_t>(c.shape.n_heads) * c.shape.head_dim;
  std::vector<float> want(out_size);
  decode_attention_reference(layer, in.q.data(), c.shape.n_heads, want.data());

  // The bounds depend on the inputs only, not on the thread count.
  const std::vector<double> tol_simd = tolerance(layer, in.q.data(), c.shape.n_heads, true);
  const std::vector<double> tol_scalar = tolerance(layer, in.q.data(), c.shape.n_heads, false);
  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE(::testing::Message() << c.spec << " n=" << c.n << " threads=" << threads);
    std::vector<float> got(out_size);
    decode_attention(layer, in.q.data(), c.shape.n_heads, got.data(), {threads, false});
    expect_within(got, want, tol_simd, "simd");
    decode_attention(layer, in.q.data(), c.shape.n_heads, got.data(), {threads, true});
    expect_within(got, want, tol_scalar, "scalar");
  }
}

// A query that sees only the first n_visible positions (chunked prefill)
// matches the reference over the same positions, wherever the cut falls:
// inside a 16-token tile, a G-token K group (KIVI) or V group (InnerQ), a
// pool block, a window.
TEST(DecodeAttention, VisiblePrefixMatchesTheReferenceForEveryKind) {
  const Shape s{8, 2, 128};
  const int n = 300;
  const Inputs in = make_inputs(s, n, 77);
  for (const char* spec : {"f32", "f16", "q8_0", "q4_0", "kivi", "kivi4", "innerq", "innerq-paper",
                           "innerq:rot=kv", "kivi:rot=kv", "innerq:kcenter=on",
                           "q4_0:kperm=evenodd", "innerq:kperm=pairs", "innerq-paper:ksort=on"}) {
    const kv::KvCache cache = make_cache(spec, s, in, n);
    const kv::LayerCache& layer = cache.layer(0);
    const size_t out_size = static_cast<size_t>(s.n_heads) * s.head_dim;
    for (int visible : {1, 20, 33, 64, 82, 100, 130, 161, 257, 299, 300}) {
      SCOPED_TRACE(::testing::Message() << spec << " n_visible=" << visible);
      std::vector<float> want(out_size), got(out_size);
      decode_attention_reference(layer, in.q.data(), s.n_heads, want.data(), visible);
      for (const bool scalar : {false, true}) {
        attn::DecodeOptions options{2, scalar};
        options.n_visible = visible;
        decode_attention(layer, in.q.data(), s.n_heads, got.data(), options);
        expect_within(got, want, tolerance(layer, in.q.data(), s.n_heads, !scalar, visible),
                      scalar ? "scalar" : "simd");
      }
    }
  }
  EXPECT_THROW(decode_attention(make_cache("f16", s, in, 10).layer(0), in.q.data(), s.n_heads,
                                std::vector<float>(1024).data(), {1, false, 11}),
               Error);
}

std::vector<Case> reference_cases() {
  std::vector<Case> cases;
  const Shape shapes[] = {{8, 2, 128}, {9, 3, 64}, {4, 4, 64}};
  const char* specs[] = {"f32",
                         "f16",
                         "q8_0",
                         "q4_0",
                         "kivi",
                         "kivi4",
                         "kivi:g=64,recent=64",
                         "innerq",
                         "innerq-paper:k=4,v=4",
                         "innerq-paper:k=2,v=2",
                         "innerq-paper:k=8,v=8,kmode=asym,vmode=asym",
                         "innerq-paper:k=3,v=3,kmode=hybrid,vmode=sym,g=64,knorm=rms",
                         "innerq-paper:k=4,v=2,g=128,sink=5,recent=0",
                         "innerq-paper:sink=0,recent=0,knorm=off",
                         "innerq-paper",
                         "innerq-paper:rot=k",
                         "innerq:k=4,v=4,rot=kv",
                         "innerq:k=3,v=2,kmode=asym,knorm=off,rot=kv",
                         "innerq:k=3,v=2,kmode=asym,kcenter=on,rot=k",
                         "innerq:k=2,v=2,kmode=sym,kcenter=on,knorm=rms,sink=3,recent=17",
                         "innerq-paper:kg=64,g=128,kcenter=on,rot=k",
                         "innerq-paper:k=2,kg=32,g=64,kmode=hybrid",
                         "q8_0:rot=kv",
                         "q4_0:rot=kv",
                         "kivi:rot=kv",
                         "f16:rot=v",
                         "q4_0:kperm=evenodd",
                         "q8_0:kperm=pairs,rot=kv",
                         "innerq:kperm=pairs,rot=k,kcenter=on,knorm=sqrtmax",
                         "innerq:klevels=normal",
                         "innerq-paper:k=2,kg=32,klevels=normal,knorm=rms",
                         "innerq:k=3,v=3,kg=32,kcenter=on,ksort=on,klevels=normal,rot=off"};
  for (const Shape& s : shapes) {
    for (const char* spec : specs) {
      const kv::LayerConfig config = kv::parse_cache_spec(spec).layer;
      if (s.head_dim % config.key_group() != 0) continue;  // V groups run along tokens
      for (int n : {1, 40, 333, 1500}) cases.push_back({spec, s, n});
    }
  }
  // Every head_dim that is a multiple of 32 up to 256 (Gemma 3: 256 with one
  // KV head), each kind whose groups fit it, at two lengths.
  for (const int head_dim : {32, 96, 160, 192, 224, 256}) {
    const Shape s{head_dim == 256 ? 4 : 2, 1, head_dim};
    for (const char* spec : specs) {
      const kv::LayerConfig config = kv::parse_cache_spec(spec).layer;
      if (head_dim % config.key_group() != 0) continue;
      for (int n : {333, 1500}) cases.push_back({spec, s, n});
    }
  }
  cases.push_back({"f32", {8, 4, 8}, 300});  // stories260K's head_dim
  cases.push_back({"f16", {8, 4, 8}, 300});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllKinds, AgainstReference, ::testing::ValuesIn(reference_cases()));

// Every SIMD target this CPU runs (AVX-512 VNNI, AVX-512, AVX2 maddubs, SSE4,
// the portable fallback), not only the one dispatch would pick. Also 12
// query heads per KV head: the InnerQ kernels' passes of 8 heads (AVX-512)
// and 4 (a remainder, and narrower targets).
TEST(DecodeAttention, EverySupportedTargetMatchesTheReference) {
  for (const Shape s : {Shape{8, 2, 128}, Shape{24, 2, 64}}) {
    const int n = 700;
    const Inputs in = make_inputs(s, n, 77);
    for (const char* spec :
         {"f16", "q8_0", "q4_0", "kivi", "kivi4", "innerq", "innerq-paper:k=4,v=4",
          "innerq-paper:k=8,v=8,kmode=hybrid,vmode=asym", "innerq-paper:k=3,v=3,g=64",
          "innerq-paper:rot=kv", "q4_0:rot=kv", "innerq:klevels=normal",
          "innerq-paper:k=2,v=2,klevels=normal", "innerq-paper:k=4,v=4,klevels=normal",
          "innerq-paper:ksort=on,kcenter=on"}) {
      const kv::KvCache cache = make_cache(spec, s, in, n);
      std::vector<float> want(static_cast<size_t>(s.n_heads) * s.head_dim), got(want.size());
      decode_attention_reference(cache.layer(0), in.q.data(), s.n_heads, want.data());
      const std::vector<double> tol = tolerance(cache.layer(0), in.q.data(), s.n_heads, true);
      for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
        SCOPED_TRACE(::testing::Message() << spec << " on " << hwy::TargetName(target));
        hwy::SetSupportedTargetsForTest(target);
        decode_attention(cache.layer(0), in.q.data(), s.n_heads, got.data(), {2, false});
        expect_within(got, want, tol, "simd");
      }
      hwy::SetSupportedTargetsForTest(0);
    }
  }
}

// The chunk softmax on every SIMD target against its scalar reference (one
// std::exp per element, summed in order): the same maxima, each weight within
// 4 ulp (the vector exp's error, a few ulp, plus one rounding) or below
// FLT_MIN where the true value underflows, and each sum within (n + 4) ulp
// (the weights' errors plus float summation in another order).
TEST(DecodeAttention, SoftmaxMatchesTheScalarReferenceOnEveryTarget) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const double ulp = std::ldexp(1.0, -23);
  for (const int n : {1, 7, 16, 17, 100, 1000, 4099}) {
    for (const int nq : {1, 3, 5}) {
      const size_t stride = static_cast<size_t>(n) + 9;
      std::vector<float> scores(stride * nq);
      for (size_t i = 0; i < scores.size(); ++i) {
        // Scores of several scales: softmax sharp enough to underflow some.
        scores[i] = normal(rng) * (i % 3 == 0 ? 40.0f : 4.0f);
      }
      std::vector<float> want = scores;
      std::vector<float> want_m(nq), want_l(nq), m(nq), l(nq);
      kernels::scalar::softmax_partial({want.data(), stride}, n, nq, want_m.data(), want_l.data());
      for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
        SCOPED_TRACE(::testing::Message()
                     << "n=" << n << " nq=" << nq << " on " << hwy::TargetName(target));
        hwy::SetSupportedTargetsForTest(target);
        std::vector<float> got = scores;
        kernels::simd::softmax_partial({got.data(), stride}, n, nq, m.data(), l.data());
        for (int h = 0; h < nq; ++h) {
          ASSERT_EQ(m[h], want_m[h]);
          EXPECT_NEAR(l[h], want_l[h], want_l[h] * (n + 4) * ulp);
          int failures = 0;
          for (int t = 0; t < n && failures < 3; ++t) {
            const double w = want[h * stride + t], g = got[h * stride + t];
            if (!(std::fabs(g - w) <= std::max(4 * ulp * w, 1.2e-38))) {
              ++failures;
              ADD_FAILURE() << "head " << h << " t " << t << ": " << g << " vs " << w;
            }
          }
          // The padding past n is left as it was.
          for (size_t t = static_cast<size_t>(n); t < stride; ++t)
            ASSERT_EQ(got[h * stride + t], scores[h * stride + t]);
        }
      }
      hwy::SetSupportedTargetsForTest(0);
    }
  }
}

double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::sqrt(diff / norm);
}

// Unquantized (f32) attention on the same gaussian inputs: relative error of
// the output bounded per bit width. b-bit groups of gaussian data have a
// relative RMS error near 1.24/(2^b − 1); keys and values each add theirs, so
// the bound is 3·1.24/(2^b − 1) at the smaller of the two widths.
TEST(DecodeAttention, ErrorAgainstUnquantizedIsBoundedPerBitWidth) {
  const Shape s{8, 2, 128};
  const int n = 2000;
  const Inputs in = make_inputs(s, n, 99, /*outliers=*/false);
  const kv::KvCache exact = make_cache("f32", s, in, n);
  std::vector<float> want(static_cast<size_t>(s.n_heads) * s.head_dim), got(want.size());
  decode_attention(exact.layer(0), in.q.data(), s.n_heads, want.data(), {2, false});
  const std::pair<const char*, int> specs[] = {{"f16", 11},
                                               {"q8_0", 8},
                                               {"q4_0", 4},
                                               {"kivi", 2},
                                               {"kivi4", 4},
                                               {"innerq", 3},
                                               {"innerq-paper:k=4,v=4", 4},
                                               {"innerq-paper:k=2,v=2", 2},
                                               {"innerq-paper:k=8,v=8", 8},
                                               {"innerq:k=8,v=8,rot=kv", 8},
                                               {"q4_0:rot=kv", 4},
                                               {"innerq-paper", 2}};
  for (const auto& [spec, bits] : specs) {
    const kv::KvCache cache = make_cache(spec, s, in, n);
    decode_attention(cache.layer(0), in.q.data(), s.n_heads, got.data(), {2, false});
    const double rel = relative_error(got, want), bound = 3.0 * 1.24 / ((1 << bits) - 1);
    EXPECT_LT(rel, bound) << spec;
    EXPECT_GT(rel, 0.0) << spec << ": a quantized cache cannot be exact on gaussian data";
  }
}

// Key normalization is an identity in exact arithmetic: with 8-bit groups,
// attention with and without it agrees to 8-bit accuracy on outlier-heavy
// keys (measured ≈ 2% here, where a ×20 channel sets every group's scale),
// and normalizing makes the cache no less accurate. Applying f to the keys
// but not to the query would move scores by up to ×4.5 and fail both.
TEST(DecodeAttention, KeyNormalizationIsAnIdentity) {
  const Shape s{8, 2, 128};
  const int n = 1000;
  const Inputs in = make_inputs(s, n, 5);
  std::vector<float> with_f(static_cast<size_t>(s.n_heads) * s.head_dim), without_f(with_f.size()),
      exact(with_f.size());
  const kv::KvCache with = make_cache("innerq-paper:k=8,v=8,knorm=sqrtmax", s, in, n);
  const kv::KvCache without = make_cache("innerq-paper:k=8,v=8,knorm=off", s, in, n);
  const kv::KvCache f32 = make_cache("f32", s, in, n);
  ASSERT_TRUE(static_cast<const kv::InnerQLayerCache&>(with.layer(0)).has_key_norm());
  decode_attention(with.layer(0), in.q.data(), s.n_heads, with_f.data(), {1, false});
  decode_attention(without.layer(0), in.q.data(), s.n_heads, without_f.data(), {1, false});
  decode_attention(f32.layer(0), in.q.data(), s.n_heads, exact.data(), {1, false});
  EXPECT_LT(relative_error(with_f, without_f), 0.03);
  EXPECT_LE(relative_error(with_f, exact), relative_error(without_f, exact));
}

// Rotation is an identity in exact arithmetic. With 8-bit groups (sink and
// recent windows off, so every token is quantized) the rotated cache's
// double-precision attention equals f32 attention on the raw inputs within a
// tolerance derived from the inputs: each group's reconstruction error is at
// most its step, absmax/127 of the *rotated* group (sym or asym, with fp16
// metadata rounding folded in by the factor 1.01); a score moves by at most
// Δ = Σ_c |q'_c|·step_c/√D, each softmax weight by e^{±2Δ}; a value error
// vector in rotated space, rotated back, is at most its L2 norm.
TEST(DecodeAttention, RotatedEightBitEqualsUnquantizedWithinDerivedTolerance) {
  for (const Shape s : {Shape{8, 2, 128}, Shape{9, 3, 64}}) {
    const int n = 600, D = s.head_dim, nq = s.n_heads / s.n_kv_heads;
    const Inputs in = make_inputs(s, n, 321);
    const kv::KvCache f32 = make_cache("f32", s, in, n);
    std::vector<float> want(static_cast<size_t>(s.n_heads) * D), got(want.size());
    decode_attention_reference(f32.layer(0), in.q.data(), s.n_heads, want.data());
    for (const char* spec :
         {"innerq-paper:k=8,v=8,sink=0,recent=0,knorm=off,rot=kv",
          "innerq-paper:k=8,v=8,kmode=asym,vmode=hybrid,sink=0,recent=0,knorm=off,rot=kv",
          "q8_0:rot=kv"}) {
      SCOPED_TRACE(::testing::Message() << spec << " head_dim " << D);
      const kv::KvCache cache = make_cache(spec, s, in, n);
      const kv::LayerConfig& c = cache.layer(0).config();
      const bool innerq = c.kind == kv::CacheKind::kInnerQ;
      const int G = innerq ? c.group : 32;
      decode_attention_reference(cache.layer(0), in.q.data(), s.n_heads, got.data());
      for (int kvh = 0; kvh < s.n_kv_heads; ++kvh) {
        // Raw rows, rotated as the cache stored them.
        std::vector<double> k(static_cast<size_t>(n) * D), v(k.size());
        for (int t = 0; t < n; ++t)
          for (int ch = 0; ch < D; ++ch) {
            const size_t src = (static_cast<size_t>(t) * s.n_kv_heads + kvh) * D + ch;
            k[static_cast<size_t>(t) * D + ch] = in.k[src];
            v[static_cast<size_t>(t) * D + ch] = in.v[src];
          }
        std::vector<double> vmax(static_cast<size_t>(D), 0.0);
        for (int t = 0; t < n; ++t)
          for (int ch = 0; ch < D; ++ch)
            vmax[ch] = std::max(vmax[ch], std::fabs(v[static_cast<size_t>(t) * D + ch]));
        kernels::scalar::hadamard_rotate(k.data(), n, D, false);
        kernels::scalar::hadamard_rotate(v.data(), n, D, false);
        // Steps: K groups along channels of a token (both kinds); V groups
        // along channels (q8_0) or along G tokens of a channel (innerq).
        std::vector<double> k_step(k.size()), v_step(v.size());
        for (int t = 0; t < n; ++t)
          for (int g = 0; g < D; g += 32) {
            double mk = 0.0, mv = 0.0;
            for (int ch = g; ch < g + 32; ++ch) {
              mk = std::max(mk, std::fabs(k[static_cast<size_t>(t) * D + ch]));
              mv = std::max(mv, std::fabs(v[static_cast<size_t>(t) * D + ch]));
            }
            for (int ch = g; ch < g + 32; ++ch) {
              k_step[static_cast<size_t>(t) * D + ch] = mk / 127.0 * 1.01;
              v_step[static_cast<size_t>(t) * D + ch] = mv / 127.0 * 1.01;
            }
          }
        if (innerq) {
          for (int ch = 0; ch < D; ++ch)
            for (int b = 0; b < n / G * G; b += G) {
              double mv = 0.0;
              for (int t = b; t < b + G; ++t)
                mv = std::max(mv, std::fabs(v[static_cast<size_t>(t) * D + ch]));
              for (int t = b; t < b + G; ++t)
                v_step[static_cast<size_t>(t) * D + ch] = mv / 127.0 * 1.01;
            }
          // The last partial V group stays in f16 (the recent window of 0
          // tokens still holds up to G − 1): its error is fp16 rounding.
          for (int t = n / G * G; t < n; ++t)
            for (int ch = 0; ch < D; ++ch)
              v_step[static_cast<size_t>(t) * D + ch] =
                  std::fabs(v[static_cast<size_t>(t) * D + ch]) * 1e-3;
        }
        for (int h = kvh * nq; h < (kvh + 1) * nq; ++h) {
          std::vector<double> qd(in.q.begin() + h * D, in.q.begin() + (h + 1) * D);
          kernels::scalar::hadamard_rotate(qd.data(), 1, D, false);
          double delta = 0.0;
          std::vector<double> p(static_cast<size_t>(n));
          double mx = -1e300;
          for (int t = 0; t < n; ++t) {
            double dt = 0.0, sc = 0.0;
            for (int ch = 0; ch < D; ++ch) {
              dt += std::fabs(qd[ch]) * k_step[static_cast<size_t>(t) * D + ch];
              sc += qd[ch] * k[static_cast<size_t>(t) * D + ch];
            }
            delta = std::max(delta, dt / std::sqrt(static_cast<double>(D)));
            p[t] = sc / std::sqrt(static_cast<double>(D));
            mx = std::max(mx, p[t]);
          }
          double sum = 0.0;
          for (double& x : p) sum += (x = std::exp(x - mx));
          double v_err2 = 0.0;  // ‖Σ_t p_t·step_t‖₂ over channels
          for (int ch = 0; ch < D; ++ch) {
            double e = 0.0;
            for (int t = 0; t < n; ++t) e += p[t] / sum * v_step[static_cast<size_t>(t) * D + ch];
            v_err2 += e * e;
          }
          for (int ch = 0; ch < D; ++ch) {
            const size_t i = static_cast<size_t>(h) * D + ch;
            const double tol = std::expm1(2.0 * delta) * vmax[ch] * 1.01 + std::sqrt(v_err2) + 1e-6;
            ASSERT_NEAR(got[i], want[i], tol) << "head " << h << " channel " << ch;
          }
        }
      }
      EXPECT_GT(relative_error(got, want), 0.0) << "8-bit groups cannot be exact here";
    }
  }
}

// Outlier channels in every 32-channel group (×20 on channels 3, 17, 40, 77,
// 110): each per-token group's scale is set by its outlier and its ordinary
// channels round to zero. Rotating K first spreads the outliers over all
// channels, so 3-bit keys lose far less.
TEST(DecodeAttention, RotationHelpsOutlierKeys) {
  const Shape s{8, 2, 128};
  const int n = 1000;
  Inputs in = make_inputs(s, n, 11);
  for (size_t i = 0; i < in.k.size(); ++i) {
    const int c = static_cast<int>(i % s.head_dim);
    if (c == 40 || c == 77 || c == 110) in.k[i] *= 20.0f;
  }
  std::vector<float> exact(static_cast<size_t>(s.n_heads) * s.head_dim), plain(exact.size()),
      rotated(exact.size());
  const kv::KvCache f32 = make_cache("f32", s, in, n);
  const kv::KvCache a = make_cache("innerq-paper:k=3,v=8,knorm=off,sink=0,recent=0", s, in, n);
  const kv::KvCache b =
      make_cache("innerq-paper:k=3,v=8,knorm=off,sink=0,recent=0,rot=k", s, in, n);
  decode_attention(f32.layer(0), in.q.data(), s.n_heads, exact.data(), {1, false});
  decode_attention(a.layer(0), in.q.data(), s.n_heads, plain.data(), {1, false});
  decode_attention(b.layer(0), in.q.data(), s.n_heads, rotated.data(), {1, false});
  EXPECT_LT(relative_error(rotated, exact), 0.7 * relative_error(plain, exact));
}

// A channel order (kernels/channel_order.h) is a relabeling: a cache given
// keys k with kperm stores exactly the bytes a cache without it stores when
// given P k, reads back as P⁻¹ of them, and attends to a query q exactly as
// the other attends to P q — bit for bit, rotated and centered or not, on the
// SIMD and the scalar path.
TEST(DecodeAttention, ChannelOrderIsARelabeling) {
  const Shape s{8, 2, 128};
  const int n = 400;
  const Inputs in = make_inputs(s, n, 21);
  for (const kernels::ChannelOrder order :
       {kernels::ChannelOrder::kEvenOdd, kernels::ChannelOrder::kPairs}) {
    Inputs moved = in;
    for (size_t at = 0; at < in.k.size(); at += s.head_dim)
      kernels::permute_channels(&in.k[at], &moved.k[at], s.head_dim, order);
    for (size_t at = 0; at < in.q.size(); at += s.head_dim)
      kernels::permute_channels(&in.q[at], &moved.q[at], s.head_dim, order);
    for (const std::string base : {"q4_0", "kivi4", "innerq-paper", "innerq:rot=k,kcenter=on"}) {
      const std::string spec = base + (base.find(':') == std::string::npos ? ":" : ",") +
                               "kperm=" + kv::channel_order_name(order);
      SCOPED_TRACE(spec);
      const kv::KvCache a = make_cache(spec.c_str(), s, in, n);
      const kv::KvCache b = make_cache(base.c_str(), s, moved, n);
      for (int h = 0; h < s.n_kv_heads; ++h) {
        const std::vector<double> got = dequantized_keys(a.layer(0), h);
        const std::vector<double> stored = dequantized_keys(b.layer(0), h);
        std::vector<double> want(stored.size());
        for (size_t at = 0; at < stored.size(); at += s.head_dim) {
          kernels::permute_channels(&stored[at], &want[at], s.head_dim, order, true);
        }
        ASSERT_EQ(got, want) << "KV head " << h;
      }
      for (const bool scalar : {false, true}) {
        std::vector<float> got(in.q.size()), want(in.q.size());
        decode_attention(a.layer(0), in.q.data(), s.n_heads, got.data(), {2, scalar});
        decode_attention(b.layer(0), moved.q.data(), s.n_heads, want.data(), {2, scalar});
        EXPECT_EQ(got, want) << (scalar ? "scalar" : "simd");
      }
    }
  }
  // The two orders undo each other; an odd head_dim has no pairs.
  const float x[6] = {0, 1, 2, 3, 4, 5};
  float y[6], z[6];
  kernels::permute_channels(x, y, 6, kernels::ChannelOrder::kEvenOdd);
  EXPECT_EQ(std::vector<float>(y, y + 6), (std::vector<float>{0, 2, 4, 1, 3, 5}));
  kernels::permute_channels(y, z, 6, kernels::ChannelOrder::kPairs);
  EXPECT_EQ(std::vector<float>(z, z + 6), std::vector<float>(x, x + 6));
  kernels::permute_channels(x, y, 6, kernels::ChannelOrder::kEvenOdd, true);
  EXPECT_EQ(std::vector<float>(y, y + 6), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_THROW(kv::make_layer_cache(kv::parse_cache_spec("f16:kperm=evenodd").layer, 1, 5, nullptr,
                                    kv::kDefaultBlockTokens),
               Error);
}

// Sorting the channels (ksort=on) is a relabeling too: the cache picks an
// order per KV head at its first flush, channels by decreasing max |K/f|,
// and its quantized keys are then exactly the bytes that a cache without
// ksort stores for keys given in that order; attention agrees with it (the
// windows keep the model's order, so not bit for bit) and with the
// reference.
TEST(DecodeAttention, ChannelSortIsARelabeling) {
  const Shape s{8, 2, 128};
  const int n = 400;
  Inputs in = make_inputs(s, n, 23, /*outliers=*/false);
  // Loud channels spread over the 32-channel groups, a different set per head.
  for (size_t i = 0; i < in.k.size(); ++i) {
    const int c = static_cast<int>(i % s.head_dim);
    const int h = static_cast<int>(i / s.head_dim % s.n_kv_heads);
    if ((c + 7 * h) % 13 == 0) in.k[i] *= 8.0f;
  }
  for (const std::string base : {"innerq-paper", "innerq-paper:knorm=off,kcenter=on",
                                 "innerq:k=3,v=3,kg=32,rot=off,knorm=rms,klevels=normal"}) {
    const std::string spec = base + (base.find(':') == std::string::npos ? ":" : ",") + "ksort=on";
    SCOPED_TRACE(spec);
    const kv::KvCache a = make_cache(spec.c_str(), s, in, n);
    const auto& layer = static_cast<const kv::InnerQLayerCache&>(a.layer(0));
    Inputs moved = in;
    for (int h = 0; h < s.n_kv_heads; ++h) {
      const uint16_t* perm = layer.key_perm(h);
      ASSERT_NE(perm, nullptr);
      // A permutation, loud channels first.
      std::vector<uint16_t> sorted(perm, perm + s.head_dim);
      std::sort(sorted.begin(), sorted.end());
      for (int c = 0; c < s.head_dim; ++c) ASSERT_EQ(sorted[c], c);
      int loud = 0;  // channels with (c + 7h) % 13 == 0
      for (int c = 0; c < s.head_dim; ++c) loud += (c + 7 * h) % 13 == 0 ? 1 : 0;
      for (int j = 0; j < s.head_dim; ++j) {
        EXPECT_EQ((perm[j] + 7 * h) % 13 == 0, j < loud) << "head " << h << " position " << j;
      }
      for (int t = 0; t < n; ++t) {
        const size_t at = (static_cast<size_t>(t) * s.n_kv_heads + h) * s.head_dim;
        for (int j = 0; j < s.head_dim; ++j) moved.k[at + j] = in.k[at + perm[j]];
      }
    }
    const kv::KvCache b = make_cache(base.c_str(), s, moved, n);
    const auto& plain = static_cast<const kv::InnerQLayerCache&>(b.layer(0));
    for (int h = 0; h < s.n_kv_heads; ++h) {
      EXPECT_EQ(layer.k_tiles(h), plain.k_tiles(h)) << "KV head " << h;
      // Read back in the model's order: the same keys, relabeled.
      const std::vector<double> got = dequantized_keys(layer, h);
      const std::vector<double> stored = dequantized_keys(plain, h);
      const uint16_t* perm = layer.key_perm(h);
      for (int t = layer.sink_tokens(); t < layer.sink_tokens() + layer.k_middle_tokens(); ++t) {
        for (int j = 0; j < s.head_dim; ++j) {
          ASSERT_EQ(got[static_cast<size_t>(t) * s.head_dim + perm[j]],
                    stored[static_cast<size_t>(t) * s.head_dim + j])
              << "token " << t << " position " << j;
        }
      }
    }
    std::vector<float> want(in.q.size()), got(in.q.size());
    decode_attention_reference(layer, in.q.data(), s.n_heads, want.data());
    for (const bool scalar : {false, true}) {
      decode_attention(layer, in.q.data(), s.n_heads, got.data(), {2, scalar});
      expect_within(got, want, tolerance(layer, in.q.data(), s.n_heads, !scalar),
                    scalar ? "scalar" : "simd");
    }
  }
}

// What the sort is for: channels of very different sizes in every group
// (no key normalization), 3-bit keys. Sorted, each group holds channels of
// one size: the quiet channels are no longer rounded to zero by a loud
// one's scale, and the keys' squared error falls (by a quarter here: the
// loud channels lose some, as a group of loud ones has a larger maximum).
// Whether attention gains depends on the query; docs/quality.md, "Channel
// order", has what real models measure.
TEST(DecodeAttention, ChannelSortLowersKeyErrorOfMixedChannelSizes) {
  const Shape s{8, 2, 128};
  const int n = 1000;
  Inputs in = make_inputs(s, n, 13, /*outliers=*/false);
  for (size_t i = 0; i < in.k.size(); ++i) {
    if (i % s.head_dim % 4 == 0) in.k[i] *= 10.0f;
  }
  const auto squared_error = [&](const char* spec) {
    const kv::KvCache c = make_cache(spec, s, in, n);
    double e = 0.0;
    for (int h = 0; h < s.n_kv_heads; ++h) {
      const std::vector<double> k = dequantized_keys(c.layer(0), h);
      for (int t = 0; t < n; ++t) {
        for (int d = 0; d < s.head_dim; ++d) {
          const double x = k[static_cast<size_t>(t) * s.head_dim + d] -
                           in.k[(static_cast<size_t>(t) * s.n_kv_heads + h) * s.head_dim + d];
          e += x * x;
        }
      }
    }
    return e;
  };
  const double plain = squared_error("innerq-paper:k=3,v=8,knorm=off,sink=0,recent=0");
  const double sorted = squared_error("innerq-paper:k=3,v=8,knorm=off,sink=0,recent=0,ksort=on");
  EXPECT_LT(sorted, 0.85 * plain);
}

// Key centering is an identity in exact arithmetic (every stored key is
// K − μ, and softmax cancels the common shift q·μ): with 8-bit groups it
// agrees with the uncentered cache to 8-bit accuracy, on keys with a large
// per-channel offset (as Qwen-style key biases give), where it is also more
// accurate than not centering with 3-bit keys.
TEST(DecodeAttention, KeyCenteringIsAnIdentity) {
  const Shape s{8, 2, 128};
  const int n = 1000;
  Inputs in = make_inputs(s, n, 6, /*outliers=*/false);
  for (size_t i = 0; i < in.k.size(); ++i) in.k[i] += 0.1f * static_cast<float>(i % s.head_dim);
  std::vector<float> exact(static_cast<size_t>(s.n_heads) * s.head_dim), a(exact.size()),
      b(exact.size()), c3(exact.size()), u3(exact.size());
  const kv::KvCache f32 = make_cache("f32", s, in, n);
  const kv::KvCache centered = make_cache("innerq-paper:k=8,v=8,kcenter=on", s, in, n);
  const kv::KvCache plain = make_cache("innerq-paper:k=8,v=8,kcenter=off", s, in, n);
  ASSERT_NE(static_cast<const kv::InnerQLayerCache&>(centered.layer(0)).key_mean(0), nullptr);
  decode_attention(f32.layer(0), in.q.data(), s.n_heads, exact.data(), {1, false});
  decode_attention(centered.layer(0), in.q.data(), s.n_heads, a.data(), {1, false});
  decode_attention(plain.layer(0), in.q.data(), s.n_heads, b.data(), {1, false});
  EXPECT_LT(relative_error(a, b), 0.03);
  EXPECT_LT(relative_error(a, exact), 0.03);
  const kv::KvCache c3c =
      make_cache("innerq-paper:k=3,v=8,kmode=sym,knorm=off,kcenter=on", s, in, n);
  const kv::KvCache u3c =
      make_cache("innerq-paper:k=3,v=8,kmode=sym,knorm=off,kcenter=off", s, in, n);
  decode_attention(c3c.layer(0), in.q.data(), s.n_heads, c3.data(), {1, false});
  decode_attention(u3c.layer(0), in.q.data(), s.n_heads, u3.data(), {1, false});
  EXPECT_LT(relative_error(c3, exact), relative_error(u3, exact));
}

// The caller-owned scratch: decode attention through it equals the call
// with a scratch of its own, bit for bit, over every kind, thread count and
// visible prefix (cuts inside groups included); what it holds stays within
// the bound attention_scratch.h documents, computed here from that formula;
// release() gives everything back and the next call sizes it again.
TEST(AttentionScratch, BytesStayWithinTheDocumentedBoundAndReleaseFreesThem) {
  const Shape s{8, 2, 64};
  const int n = 2100, nq = s.n_heads / s.n_kv_heads;
  const Inputs in = make_inputs(s, n, 23);
  for (const char* spec : {"f32", "f16", "q8_0", "kivi", "innerq", "innerq:rot=kv"}) {
    SCOPED_TRACE(spec);
    const kv::KvCache cache = make_cache(spec, s, in, n);
    const kv::LayerCache& layer = cache.layer(0);
    AttentionScratch scratch;
    std::vector<float> got(in.q.size()), want(in.q.size());
    for (const int threads : {1, 2, 3}) {
      for (const int visible : {0, 1, 37, 700, 1029, n}) {
        DecodeOptions options;
        options.n_threads = threads;
        options.n_visible = visible;
        decode_attention(layer, in.q.data(), s.n_heads, got.data(), options, scratch);
        decode_attention(layer, in.q.data(), s.n_heads, want.data(), options);
        ASSERT_EQ(got, want) << threads << " threads, " << visible << " visible";
      }
    }
    // The formula of AttentionScratch::bound_bytes, for up to 3 threads.
    const int T = 3, K = s.n_kv_heads, D = s.head_dim;
    const int64_t N = std::max<int64_t>(layer.capacity_tokens(), layer.n_tokens());
    const kv::LayerConfig& c = layer.config();
    const bool innerq = c.kind == kv::CacheKind::kInnerQ;
    const size_t W = static_cast<size_t>(std::max(1, (4 * T + K - 1) / K)) + 1;
    const size_t J = static_cast<size_t>(N / layer.block_tokens());
    size_t threads = 0;
    for (int t = 1; t <= T; ++t) {
      const size_t C = static_cast<size_t>((innerq ? c.sink : 0) + decode_chunk_tokens(N, K, t));
      threads += nq * C * 4;
      if (innerq || c.kind == kv::CacheKind::kKivi) threads += nq * (C + 128) * 4;
      if (innerq) {
        const auto& q = static_cast<const kv::InnerQLayerCache&>(layer);
        threads += std::max(kernels::innerq_k_scratch_bytes(q.k_format(), D),
                            kernels::innerq_v_scratch_bytes(q.v_format()));
      }
    }
    const size_t formula = 2 * K * (J + 3) * sizeof(kv::Segment) + (W + 1) * 4 +
                           3 * s.n_heads * D * 4 + K * W * nq * (D + 2) * 4 + threads +
                           K * sizeof(kv::HeadSegments) + T * 3 * sizeof(std::vector<float>);
    EXPECT_EQ(AttentionScratch::bound_bytes(layer, s.n_heads, T), formula);
    EXPECT_GT(scratch.bytes(), 0u);
    EXPECT_LE(scratch.bytes(), formula);
    // Bounded by the cache, not by the calls: fifty more change nothing.
    const size_t held = scratch.bytes();
    for (int i = 0; i < 50; ++i) {
      decode_attention(layer, in.q.data(), s.n_heads, got.data(), {T, false}, scratch);
    }
    EXPECT_EQ(scratch.bytes(), held);
    scratch.release();
    EXPECT_EQ(scratch.bytes(), 0u);
    decode_attention(layer, in.q.data(), s.n_heads, got.data(), {T, false}, scratch);
    decode_attention(layer, in.q.data(), s.n_heads, want.data(), {T, false});
    EXPECT_EQ(got, want);
    scratch.release();
    scratch.reserve(layer, s.n_heads, T);  // sized up front: exactly the bound
    EXPECT_EQ(scratch.bytes(), formula);
  }
  // A sliding-window ring: queries, scores of window + spare + 16 slots,
  // the softmax's maximum and sum, for one thread.
  kv::WindowLayerCache ring(100, s.n_kv_heads, s.head_dim);
  ring.append(in.k.data(), in.v.data(), 300);
  AttentionScratch scratch;
  std::vector<float> out(in.q.size());
  window_attention(ring, in.q.data(), s.n_heads, out.data(), scratch);
  const size_t ring_formula = static_cast<size_t>(nq) * s.head_dim * 4 +
                              static_cast<size_t>(nq) * (100 + kv::kWindowSpare + 16) * 4 +
                              2 * nq * 4 + 3 * sizeof(std::vector<float>);
  EXPECT_EQ(AttentionScratch::bound_bytes(ring, s.n_heads, 1), ring_formula);
  EXPECT_LE(scratch.bytes(), ring_formula);
  scratch.release();
  EXPECT_EQ(scratch.bytes(), 0u);
}

// Chunk lengths grow with the tokens (the scratch is sized by the chunk of
// the capacity, so a shorter call must never cut a longer one), are aligned
// and at least kMinChunk, and their count stays within the W = max(1,
// ⌈4T/K⌉) that sizes the partial results.
TEST(AttentionScratch, ChunksGrowWithTheTokensAndTheirCountStaysWithinTheBound) {
  for (const int K : {1, 2, 3, 8}) {
    for (const int T : {1, 2, 3, 16}) {
      const int64_t W = std::max(1, (4 * T + K - 1) / K);
      int last = 0;
      for (int64_t n = 1; n <= 200000; n += 1 + n / 64) {
        const int size = decode_chunk_tokens(n, K, T);
        ASSERT_GE(size, last) << "n=" << n << " K=" << K << " T=" << T;
        ASSERT_GE(size, kMinChunk);
        ASSERT_EQ(size % kChunkAlign, 0);
        ASSERT_LE((n + size - 1) / size, W) << "n=" << n << " K=" << K << " T=" << T;
        last = size;
      }
    }
  }
}

// A cache of several thousand tokens per chunk (the chunks of a long
// context) matches the reference on 1 and 2 threads.
TEST(DecodeAttention, LongCachesMatchTheReference) {
  const Shape s{8, 2, 64};
  const int n = 8969;
  const Inputs in = make_inputs(s, n, 41);
  for (const char* spec : {"f16", "innerq"}) {
    SCOPED_TRACE(spec);
    const kv::KvCache cache = make_cache(spec, s, in, n);
    const kv::LayerCache& layer = cache.layer(0);
    std::vector<float> want(in.q.size()), got(in.q.size());
    decode_attention_reference(layer, in.q.data(), s.n_heads, want.data());
    const std::vector<double> tol = tolerance(layer, in.q.data(), s.n_heads, true);
    for (const int threads : {1, 2}) {
      decode_attention(layer, in.q.data(), s.n_heads, got.data(), {threads, false});
      expect_within(got, want, tol, "simd");
    }
  }
}

TEST(DecodeAttention, RejectsHeadCountsThatDoNotShareKvHeads) {
  const Shape s{4, 2, 64};
  const Inputs in = make_inputs(s, 10, 1);
  const kv::KvCache cache = make_cache("f16", s, in, 10);
  std::vector<float> out(5 * 64);
  EXPECT_THROW(decode_attention(cache.layer(0), in.q.data(), 5, out.data()), Error);
}

}  // namespace
}  // namespace innerq::attn
