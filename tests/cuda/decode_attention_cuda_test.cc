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
#include "attention_tolerance.h"
#include "cuda_test_util.h"

namespace innerq::attn::cuda {
namespace {

struct Shape {
  int n_heads, n_kv_heads, head_dim;
};

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
