// GPU decode attention against the CPU's decode_attention_reference on the
// same caches (built on the CPU, uploaded byte for byte), for every kind the
// GPU reads (f16, kivi, innerq), with tolerances derived from the inputs; and
// the cuBLAS two-GEMM baseline against the same reference.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

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
#include "innerq/kernels/cuda/smem_opt_in.h"
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
  int chunk = 0;            // tokens per split; 0 = the launcher's choice
};

// Shown by gtest in place of the raw bytes of a parameter.
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.spec << " " << c.shape.n_heads << "/" << c.shape.n_kv_heads << "/" << c.shape.head_dim
      << " chunk " << c.chunk << " tokens";
  for (const int n : c.tokens) *os << " " << n;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.spec;
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name + "_" + std::to_string(info.param.shape.n_heads) + "x" +
         std::to_string(info.param.shape.n_kv_heads) + "x" +
         std::to_string(info.param.shape.head_dim) + "_chunk" + std::to_string(info.param.chunk) +
         "_" + std::to_string(info.index);
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
  DeviceLayerBatch batch(layers_of(caches), c.chunk);
  if (c.chunk != 0) {
    EXPECT_EQ(batch.chunk_tokens(), c.chunk);
  }
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
        Case{"innerq-paper", {32, 8, 128}, {1500, 700, 100}},
        Case{"innerq-paper:k=2,v=2", {8, 8, 128}, {1300, 900}},
        Case{"innerq-paper:k=4,v=4,g=128", {32, 8, 128}, {1400}},
        Case{"innerq-paper:k=3,v=2,g=64,sink=0,recent=0", {9, 3, 64}, {1000, 555}},
        Case{"innerq-paper:k=8,v=8,sink=0,recent=0,knorm=off", {8, 8, 64}, {800}},
        Case{"innerq-paper:k=3,v=3,kmode=hybrid,vmode=asym,g=32,sink=4,recent=40",
             {16, 2, 128},
             {1100, 257}},
        Case{"innerq-paper:k=2,v=4,kmode=asym,vmode=sym,g=128,knorm=rms", {16, 8, 128}, {2000}}),
    case_name);

// Every layout at every split length (the launcher's choice reaches only
// one for a given context), a ragged batch of one long sequence beside short
// ones (splits the short ones leave unused), and one 64k-token sequence.
// kivi4 at 8 query heads per KV head and chunk 512 needs 64 KB of shared
// memory: the opt-in above 48 KB.
INSTANTIATE_TEST_SUITE_P(Chunks, DecodeVsReference,
                         ::testing::Values(Case{"innerq-paper", {32, 8, 128}, {1500, 700}, 128},
                                           Case{"innerq-paper", {32, 8, 128}, {1500, 700}, 256},
                                           Case{"innerq-paper", {32, 8, 128}, {1500, 700}, 512},
                                           Case{"kivi", {32, 8, 128}, {1500, 700}, 128},
                                           Case{"kivi", {32, 8, 128}, {1500, 700}, 256},
                                           Case{"kivi", {32, 8, 128}, {1500, 700}, 512},
                                           Case{"f16", {32, 8, 128}, {1500, 700}, 128},
                                           Case{"f16", {32, 8, 128}, {1500, 700}, 256},
                                           Case{"f16", {32, 8, 128}, {1500, 700}, 512},
                                           Case{"innerq-paper:k=2,v=2", {32, 32, 128}, {1300}, 512},
                                           Case{"kivi4", {64, 8, 128}, {1500}, 512},
                                           Case{"kivi", {64, 8, 128}, {1500}, 512}),
                         case_name);

INSTANTIATE_TEST_SUITE_P(Ragged, DecodeVsReference,
                         ::testing::Values(Case{"innerq-paper", {32, 8, 128}, {9000, 100, 700, 33}},
                                           Case{"kivi", {32, 8, 128}, {9000, 100, 700, 33}},
                                           Case{"f16", {32, 8, 128}, {9000, 100, 700, 33}},
                                           Case{"innerq-paper", {32, 8, 128}, {9000, 129, 5}, 128}),
                         case_name);

// The project's default without its rotation (refused on CUDA): K 3-bit sym
// in 64-channel groups, centered; V 3-bit hybrid, G = 128.
INSTANTIATE_TEST_SUITE_P(Default, DecodeVsReference,
                         ::testing::Values(Case{"innerq:rot=off", {32, 8, 128}, {3000, 700}},
                                           Case{"innerq:rot=off", {32, 32, 128}, {1500}, 128}),
                         case_name);

INSTANTIATE_TEST_SUITE_P(Long, DecodeVsReference,
                         ::testing::Values(Case{"innerq-paper", {32, 8, 128}, {65536}}), case_name);

// The same batch decoded on two streams at once, with different queries:
// each stream has its own split workspace, so each result equals the
// batch's synchronous decode of its query bit for bit.
TEST(DecodeStreams, TwoStreamsShareOneBatch) {
  INNERQ_REQUIRE_CUDA_DEVICE();
  const Case c{"innerq-paper", {32, 8, 128}, {3000, 2000}};
  const std::vector<kv::KvCache> caches = build_caches(c);
  DeviceLayerBatch batch(layers_of(caches));
  const size_t n = caches.size() * static_cast<size_t>(c.shape.n_heads) * c.shape.head_dim;
  const std::vector<float> q_a = test::random_queries(n, 1u), q_b = test::random_queries(n, 2u);
  const std::vector<float> want_a = batch.decode_host(q_a, c.shape.n_heads);
  const std::vector<float> want_b = batch.decode_host(q_b, c.shape.n_heads);

  cudaStream_t a = nullptr, b = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
  DeviceBuffer qa(q_a.data(), n * sizeof(float)), qb(q_b.data(), n * sizeof(float));
  DeviceBuffer out_a(n * sizeof(float)), out_b(n * sizeof(float));
  // The first decode on a stream allocates its workspace (cudaMalloc waits
  // for nothing in flight); repeat so that later rounds overlap.
  for (int round = 0; round < 20; ++round) {
    batch.decode(qa.as<const float>(), c.shape.n_heads, out_a.as<float>(), a);
    batch.decode(qb.as<const float>(), c.shape.n_heads, out_b.as<float>(), b);
  }
  ASSERT_EQ(cudaStreamSynchronize(a), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(b), cudaSuccess);
  std::vector<float> got_a(n), got_b(n);
  out_a.download(got_a.data(), n * sizeof(float));
  out_b.download(got_b.data(), n * sizeof(float));
  EXPECT_EQ(got_a, want_a);
  EXPECT_EQ(got_b, want_b);
  cudaStreamDestroy(a);
  cudaStreamDestroy(b);
}

// Refused before anything touches the device: runs without a GPU.
TEST(DecodeChunk, UnsupportedChunkIsRejected) {
  const Case c{"f16", {8, 8, 64}, {100}};
  const std::vector<kv::KvCache> caches = build_caches(c);
  EXPECT_THROW(DeviceLayerBatch(layers_of(caches), 64), Error);
}

// Rotated caches would need the query rotated and the output rotated back;
// refused before anything touches the device: runs without a GPU.
TEST(DecodeRotation, RotatedCachesAreRejected) {
  for (const char* spec : {"innerq:rot=k", "kivi:rot=v", "f16:rot=kv"}) {
    const Case c{spec, {8, 8, 64}, {100}};
    const std::vector<kv::KvCache> caches = build_caches(c);
    EXPECT_THROW(DeviceLayerBatch{layers_of(caches)}, Error) << spec;
  }
}

// A shared-memory request over the device's opt-in limit fails with a
// message naming both sizes, and fails again on the next call (nothing is
// remembered after a failure). ensure() checks the limit before it touches
// the kernel, so any address stands in for one.
TEST(SmemOptIn, OverTheDeviceLimitIsAReadableError) {
  INNERQ_REQUIRE_CUDA_DEVICE();
  innerq::cuda::SmemOptIn opt_in;
  const void* kernel = &opt_in;
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      opt_in.ensure(kernel, size_t{1} << 30, "test", 128, 8, 512);
      ADD_FAILURE() << "1 GiB of shared memory was accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("1073741824 bytes"), std::string::npos) << what;
      EXPECT_NE(what.find("allows"), std::string::npos) << what;
    }
  }
  EXPECT_EQ(opt_in.ensure(kernel, 1024, "test", 128, 8, 512), cudaSuccess);
}

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
