// Decode attention of every cache kind against (1) a double-precision
// reference on the cache's own dequantized contents, with a tolerance derived
// from the inputs, and (2) unquantized attention, with a bound per bit width.
#include "innerq/attn/decode_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "hwy/targets.h"
#include "innerq/base/error.h"
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
  int k_begin = 0, k_end = 0, v_begin = 0, v_end = 0, group = 32;
};
Int8Regions int8_regions(const kv::LayerCache& cache) {
  Int8Regions r;
  if (cache.kind() != kv::CacheKind::kInnerQ) return r;
  const auto& c = static_cast<const kv::InnerQLayerCache&>(cache);
  r.k_begin = r.v_begin = c.sink_tokens();
  r.k_end = r.k_begin + c.k_middle_tokens();
  r.v_end = r.v_begin + c.v_middle_tokens();
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
                              bool int8_paths) {
  const int n = cache.n_tokens(), D = cache.head_dim(), nq = n_heads / cache.n_kv_heads();
  const double eps = std::numeric_limits<float>::epsilon();
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(D));
  const Int8Regions r = int8_paths ? int8_regions(cache) : Int8Regions{};
  std::vector<double> tol(static_cast<size_t>(n_heads) * D);
  for (int kv_head = 0; kv_head < cache.n_kv_heads(); ++kv_head) {
    const std::vector<double> k = dequantized_keys(cache, kv_head);
    const std::vector<double> v = dequantized_values(cache, kv_head);
    const float* f = cache.kind() == kv::CacheKind::kInnerQ
                         ? static_cast<const kv::InnerQLayerCache&>(cache).key_norm(kv_head)
                         : nullptr;
    for (int h = kv_head * nq; h < (kv_head + 1) * nq; ++h) {
      const float* qh = q + static_cast<size_t>(h) * D;
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
          for (int g = 0; g < D / r.group; ++g) {
            double qmax = 0.0, kabs = 0.0;
            for (int c = g * r.group; c < (g + 1) * r.group; ++c) {
              qmax = std::max(qmax, std::fabs(qh[c] * f[c] * inv_sqrt_d));
              kabs += std::fabs(k[static_cast<size_t>(t) * D + c] / f[c]);
            }
            q8 += qmax / 127.0 / 2.0 * kabs;
          }
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
        for (int b = r.v_begin; b < r.v_end; b += r.group) {
          double pmax = 0.0, vabs = 0.0;
          for (int t = b; t < b + r.group; ++t) {
            pmax = std::max(pmax, p[static_cast<size_t>(t)]);
            vabs += std::fabs(v[static_cast<size_t>(t) * D + c]);
          }
          v8 += pmax / 254.0 * vabs;
        }
        tol[static_cast<size_t>(h) * D + c] =
            (std::expm1(2.0 * delta) + 64.0 * eps) * vmax * 1.01 + v8 * 1.01 + 1e-30;
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

  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE(::testing::Message() << c.spec << " n=" << c.n << " threads=" << threads);
    std::vector<float> got(out_size);
    decode_attention(layer, in.q.data(), c.shape.n_heads, got.data(), {threads, false});
    expect_within(got, want, tolerance(layer, in.q.data(), c.shape.n_heads, true), "simd");
    decode_attention(layer, in.q.data(), c.shape.n_heads, got.data(), {threads, true});
    expect_within(got, want, tolerance(layer, in.q.data(), c.shape.n_heads, false), "scalar");
  }
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
                         "innerq:k=4,v=4",
                         "innerq:k=2,v=2",
                         "innerq:k=8,v=8,kmode=asym,vmode=asym",
                         "innerq:k=3,v=3,kmode=hybrid,vmode=sym,g=64,knorm=rms",
                         "innerq:k=4,v=2,g=128,sink=5,recent=0",
                         "innerq:sink=0,recent=0,knorm=off"};
  for (const Shape& s : shapes) {
    for (const char* spec : specs) {
      const kv::LayerConfig config = kv::parse_cache_spec(spec).layer;
      if (s.head_dim % config.group != 0) continue;
      for (int n : {1, 40, 333, 1500}) cases.push_back({spec, s, n});
    }
  }
  cases.push_back({"f32", {8, 4, 8}, 300});  // stories260K's head_dim
  cases.push_back({"f16", {8, 4, 8}, 300});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllKinds, AgainstReference, ::testing::ValuesIn(reference_cases()));

// Every SIMD target this CPU runs (AVX-512 VNNI, AVX-512, AVX2 maddubs, SSE4,
// the portable fallback), not only the one dispatch would pick.
TEST(DecodeAttention, EverySupportedTargetMatchesTheReference) {
  const Shape s{8, 2, 128};
  const int n = 700;
  const Inputs in = make_inputs(s, n, 77);
  for (const char* spec : {"f16", "q8_0", "q4_0", "kivi", "kivi4", "innerq", "innerq:k=4,v=4",
                           "innerq:k=8,v=8,kmode=hybrid,vmode=asym", "innerq:k=3,v=3,g=64"}) {
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
  const std::pair<const char*, int> specs[] = {
      {"f16", 11},           {"q8_0", 8},           {"q4_0", 4},
      {"kivi", 2},           {"kivi4", 4},          {"innerq", 2},
      {"innerq:k=4,v=4", 4}, {"innerq:k=2,v=2", 2}, {"innerq:k=8,v=8", 8}};
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
  const kv::KvCache with = make_cache("innerq:k=8,v=8,knorm=sqrtmax", s, in, n);
  const kv::KvCache without = make_cache("innerq:k=8,v=8,knorm=off", s, in, n);
  const kv::KvCache f32 = make_cache("f32", s, in, n);
  ASSERT_TRUE(static_cast<const kv::InnerQLayerCache&>(with.layer(0)).has_key_norm());
  decode_attention(with.layer(0), in.q.data(), s.n_heads, with_f.data(), {1, false});
  decode_attention(without.layer(0), in.q.data(), s.n_heads, without_f.data(), {1, false});
  decode_attention(f32.layer(0), in.q.data(), s.n_heads, exact.data(), {1, false});
  EXPECT_LT(relative_error(with_f, without_f), 0.03);
  EXPECT_LE(relative_error(with_f, exact), relative_error(without_f, exact));
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
