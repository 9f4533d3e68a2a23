// Chunked extend through the cache (attn::chunk_attention with the steps an
// append records, kv::ChunkSteps): for every kind, a chunk appended at once
// leaves the cache that appending its tokens one at a time leaves, bit for
// bit, and each of its tokens gets the attention output token-by-token
// decode gave it — the windows as they were at its position, not as the
// chunk left them (docs/architecture.md, "Chunked extend").
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "innerq/attn/attention_scratch.h"
#include "innerq/attn/decode_attention.h"
#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/kv/layer_caches.h"
#include "sanitized.h"

namespace innerq::attn {
namespace {

constexpr int kHeads = 2, kDim = 64, kQHeads = 4, kMax = 4096;
constexpr size_t kRow = static_cast<size_t>(kHeads) * kDim;
constexpr size_t kQRow = static_cast<size_t>(kQHeads) * kDim;

// Kinds and window sizes: small windows and groups so that chunks cross
// flushes of K and of V, and the defaults.
const char* const kSpecs[] = {"f16",
                              "q8_0",
                              "q4_0:rot=kv",
                              "kivi",
                              "kivi4:rot=kv,recent=64",
                              "innerq-paper",
                              "innerq",
                              "innerq:sink=8,recent=40,g=32",
                              "innerq:kcenter=off,knorm=sqrtmax,rot=kv",
                              "innerq:kperm=evenodd",
                              "q4_0:kperm=pairs",
                              "innerq-paper:k=4,klevels=normal"};

// K/V rows of positions [first, first + n), [n][heads][D]: a per-channel
// offset (what key centering removes), an outlier channel, and values in
// [−1, 1].
void kv_rows(int first, int n, std::vector<float>& k, std::vector<float>& v) {
  k.resize(static_cast<size_t>(n) * kRow);
  v.resize(k.size());
  for (int t = 0; t < n; ++t) {
    for (size_t i = 0; i < kRow; ++i) {
      const double x = (first + t) * 0.37 + static_cast<double>(i) * 1.3;
      const size_t at = static_cast<size_t>(t) * kRow + i;
      const double offset = 0.5 * std::cos(static_cast<double>(i));
      k[at] = static_cast<float>(offset + std::sin(x) * (i % kDim == 3 ? 6.0 : 1.5));
      v[at] = static_cast<float>(std::cos(1.7 * x));
    }
  }
}

// Queries of positions [first, first + n), [n][q heads][D].
std::vector<float> queries(int first, int n) {
  std::vector<float> q(static_cast<size_t>(n) * kQRow);
  for (size_t i = 0; i < q.size(); ++i) {
    const double x = static_cast<double>(first) * kQRow + static_cast<double>(i);
    q[i] = static_cast<float>(2.0 * std::sin(0.61 * x) * std::cos(0.013 * x));
  }
  return q;
}

kv::KvCache make(const char* spec) {
  return kv::KvCache(kv::CacheShape{1, kHeads, kDim, kMax}, kv::parse_cache_spec(spec).layer);
}

bool has_windows(const kv::LayerCache& c) {
  return c.kind() == kv::CacheKind::kKivi || c.kind() == kv::CacheKind::kInnerQ;
}

const float* key_mean(const kv::LayerCache& c, int head) {
  kv::HeadSegments s;
  c.segments(head, s);
  return s.key_mean;
}

// Largest |q_h · (a_t − b_t)| / sqrt(D) over the query heads and positions
// t < n of two caches' keys (model coordinates): how far apart their scores
// can be.
double score_gap(const kv::LayerCache& a, const kv::LayerCache& b, const float* q, int n) {
  double gap = 0.0;
  for (int kh = 0; kh < kHeads; ++kh) {
    const std::vector<double> ka = dequantized_keys(a, kh), kb = dequantized_keys(b, kh);
    for (int h = kh * (kQHeads / kHeads); h < (kh + 1) * (kQHeads / kHeads); ++h) {
      for (int t = 0; t < n; ++t) {
        double s = 0.0;
        for (int c = 0; c < kDim; ++c) {
          const size_t x = static_cast<size_t>(t) * kDim + c;
          s += static_cast<double>(q[h * kDim + c]) * (ka[x] - kb[x]);
        }
        gap = std::max(gap, std::fabs(s) / std::sqrt(double{kDim}));
      }
    }
  }
  return gap;
}

struct Outcome {
  double worst = 0.0;      // largest |chunk − token by token| beyond the allowance
  double old_way = 0.0;    // largest |n_visible read of the chunked cache − token by token|
  int centered_steps = 0;  // steps before InnerQ's first flush, inside that chunk
};

// A prefix appended at once (a prompt) to two caches; then the chunks to
// one with steps and token by token to the other, comparing after each
// chunk the caches (bit for bit) and every token's attention output.
Outcome run(const char* spec, int prefix, const std::vector<int>& chunks, bool scalar) {
  kv::KvCache chunked = make(spec), stepped = make(spec);
  std::vector<float> k, v;
  kv_rows(0, prefix, k, v);
  chunked.append(0, k.data(), v.data(), prefix);
  stepped.append(0, k.data(), v.data(), prefix);
  // Two threads for the chunk (each thread's running results are merged);
  // the token-by-token reference on one.
  DecodeOptions options;
  options.scalar_kernels = scalar;
  options.n_threads = 1;
  DecodeOptions chunk_options = options;
  chunk_options.n_threads = 2;
  ChunkScratch scratch;
  kv::ChunkSteps steps;
  Outcome r;
  // Scalar kernels: f32 reordering only — outputs are convex combinations
  // of |v| ≤ 1 rows whose weights are summed in other orders (other chunk
  // cuts). The SIMD kernels also round the softmax weights of each G-token
  // V group to int8 with a scale taken from the exponentials relative to the
  // maximum of the chunk being read, and the chunks differ, so a code can
  // flip: one flip moves an output by at most 1/127 of the normalized weight
  // of its group's largest token, here spread over hundreds of tokens. 1e-3
  // leaves room for a few flips (measured: below 4e-5); a token that sees a
  // wrong position or misses one moves by far more (old_way below).
  const double tol = scalar ? 1e-5 : 1e-3;
  for (int n : chunks) {
    const int first = chunked.n_tokens();
    kv_rows(first, n, k, v);
    const std::vector<float> q = queries(first, n);
    const bool mean_before = key_mean(chunked.layer(0), 0) != nullptr;
    chunked.append(0, k.data(), v.data(), n, &steps);
    EXPECT_EQ(steps.first, first);
    EXPECT_EQ(steps.n, n);
    EXPECT_EQ(steps.has_rows, has_windows(chunked.layer(0)));
    std::vector<float> got(static_cast<size_t>(n) * kQRow);
    chunk_attention(chunked.layer(0), steps, q.data(), kQHeads, got.data(), chunk_options, scratch);
    const bool centered_in_chunk = !mean_before && key_mean(chunked.layer(0), 0) != nullptr;
    std::vector<float> want(kQRow), old(kQRow);
    for (int i = 0; i < n; ++i) {
      stepped.append(0, &k[static_cast<size_t>(i) * kRow], &v[static_cast<size_t>(i) * kRow], 1);
      const float* qi = &q[static_cast<size_t>(i) * kQRow];
      decode_attention(stepped.layer(0), qi, kQHeads, want.data(), options);
      DecodeOptions visible = options;
      visible.n_visible = first + i + 1;
      decode_attention(chunked.layer(0), qi, kQHeads, old.data(), visible);
      // Before InnerQ's first flush, inside the chunk that flushes first, a
      // token sees its window's keys centered (f16(f16(K) − μ), as the
      // window holds them after that flush) where decode saw f16(K): the
      // same scores but for f16 rounding, which moves softmax weights by at
      // most a factor e^{±2δ}, δ the largest score gap.
      double allowance = tol;
      if (centered_in_chunk && stepped.layer(0).n_tokens() > 0 &&
          key_mean(stepped.layer(0), 0) == nullptr) {
        const double delta = score_gap(stepped.layer(0), chunked.layer(0), qi, first + i + 1);
        allowance += std::expm1(2.0 * delta);
        ++r.centered_steps;
      }
      for (size_t x = 0; x < kQRow; ++x) {
        const double d = std::fabs(double{got[static_cast<size_t>(i) * kQRow + x]} - want[x]);
        r.worst = std::max(r.worst, d - allowance);
        r.old_way = std::max(r.old_way, std::fabs(double{old[x]} - want[x]));
      }
    }
    // The same cache as token by token, bit for bit.
    for (int h = 0; h < kHeads; ++h) {
      EXPECT_EQ(dequantized_keys(chunked.layer(0), h), dequantized_keys(stepped.layer(0), h))
          << spec << ", head " << h << ", after the chunk at " << first;
      EXPECT_EQ(dequantized_values(chunked.layer(0), h), dequantized_values(stepped.layer(0), h))
          << spec << ", head " << h << ", after the chunk at " << first;
    }
    EXPECT_EQ(chunked.memory().total(), stepped.memory().total()) << spec;
  }
  return r;
}

const std::vector<int> kChunks = {7, 1, 33, 64, 300};

TEST(ChunkAttention, EqualsTokenByTokenDecodeForEveryKind) {
  for (const char* spec : kSpecs) {
    // A 3-token prompt: the first flushes (and InnerQ's statistics) happen
    // inside chunks. A 1100-token prompt (one kind of each layout): the
    // stored part is read in several shared chunks, and the 300-token chunk
    // takes two passes.
    // (Under the sanitizer, which repeats this for memory errors, the two
    // windowed layouts only.)
    const std::string s = spec;
    const bool long_prompt =
        s == "kivi" || s == "innerq" ||
        (!testing_env::kSanitized && (s == "q4_0:rot=kv" || s == "innerq:sink=8,recent=40,g=32"));
    for (int prefix : {3, 1100}) {
      if (prefix > 3 && !long_prompt) continue;
      const Outcome r = run(spec, prefix, kChunks, /*scalar=*/true);
      EXPECT_LE(r.worst, 0.0) << spec << ", prompt " << prefix;
      if (has_windows(make(spec).layer(0))) {
        // Reading the chunked cache as it stands (what extend did before)
        // is measurably wrong on these inputs, so the comparison above can
        // fail.
        EXPECT_GT(r.old_way, 1e-4) << spec << ", prompt " << prefix;
      } else {
        EXPECT_LE(r.old_way, 1e-5) << spec << ", prompt " << prefix;
      }
      const kv::LayerConfig c = kv::parse_cache_spec(spec).layer;
      const bool first_flush_in_chunk =
          prefix == 3 && c.kind == kv::CacheKind::kInnerQ && c.kcenter;
      EXPECT_EQ(r.centered_steps > 0, first_flush_in_chunk) << spec << ", prompt " << prefix;
    }
  }
}

TEST(ChunkAttention, SimdKernelsAgreeWithTokenByTokenDecode) {
  for (const char* spec : kSpecs) {
    const Outcome r = run(spec, 200, kChunks, /*scalar=*/false);
    EXPECT_LE(r.worst, 0.0) << spec;
  }
}

TEST(ChunkAttention, RefusesStepsOfAnotherAppend) {
  kv::KvCache c = make("innerq");
  std::vector<float> k, v;
  kv_rows(0, 60, k, v);
  kv::ChunkSteps steps;
  c.append(0, k.data(), v.data(), 20, &steps);
  c.append(0, k.data() + 20 * kRow, v.data() + 20 * kRow, 20);  // steps now stale
  const std::vector<float> q = queries(0, 20);
  std::vector<float> out(q.size());
  ChunkScratch scratch;
  kv::ChunkSteps fresh;
  c.append(0, k.data(), v.data(), 20, &fresh);
  chunk_attention(c.layer(0), fresh, q.data(), kQHeads, out.data(), {}, scratch);
  EXPECT_GT(scratch.bytes(), 0u);
  try {
    chunk_attention(c.layer(0), steps, q.data(), kQHeads, out.data(), {}, scratch);
    FAIL() << "stale steps were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not those of the cache's last append"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(chunk_attention(c.layer(0), fresh, q.data(), 3, out.data(), {}, scratch), Error);
  scratch.release();
  EXPECT_EQ(scratch.bytes(), 0u);
}

}  // namespace
}  // namespace innerq::attn
