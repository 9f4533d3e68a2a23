// Decode attention of a sliding-window layer against a double-precision
// softmax over the last `window` positions of the rows that were appended
// (f16-rounded, as the ring stores them), at GQA shapes up to Gemma 3's
// head_dim 256 with one KV head, before and after the ring wraps; and
// decode_attention refuses a ring instead of misreading it.
#include "innerq/attn/window_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "innerq/attn/decode_attention.h"
#include "innerq/base/error.h"
#include "innerq/base/fp16.h"
#include "innerq/kv/kv_cache.h"

namespace innerq::attn {
namespace {

struct Shape {
  int heads, kv_heads, head_dim, window;
};

float f16_round(float x) {
  return f16_to_f32(f32_to_f16(x));
}

// o[h] = softmax over positions max(0, n − w)..n−1 of q_h·k_p / sqrt(D), in
// double, from the appended rows (k, v: [n, kv_heads, D]).
std::vector<double> expected(const Shape& s, int n, const std::vector<float>& q,
                             const std::vector<float>& k, const std::vector<float>& v) {
  const int D = s.head_dim, group = s.heads / s.kv_heads;
  std::vector<double> out(static_cast<size_t>(s.heads) * D);
  const int first = std::max(0, n - s.window);
  for (int h = 0; h < s.heads; ++h) {
    const int g = h / group;
    std::vector<double> p;
    double mx = -INFINITY;
    for (int t = first; t < n; ++t) {
      double dot = 0.0;
      for (int c = 0; c < D; ++c)
        dot += double{q[static_cast<size_t>(h) * D + c]} *
               f16_round(k[(static_cast<size_t>(t) * s.kv_heads + g) * D + c]);
      p.push_back(dot / std::sqrt(double(D)));
      mx = std::max(mx, p.back());
    }
    double sum = 0.0;
    for (double& x : p) sum += (x = std::exp(x - mx));
    for (int c = 0; c < D; ++c) {
      double o = 0.0;
      for (int t = first; t < n; ++t)
        o += p[static_cast<size_t>(t - first)] *
             f16_round(v[(static_cast<size_t>(t) * s.kv_heads + g) * D + c]);
      out[static_cast<size_t>(h) * D + c] = o / sum;
    }
  }
  return out;
}

TEST(WindowAttention, MatchesDoublePrecisionOverTheLastWindow) {
  for (const Shape& s : {Shape{4, 1, 256, 20}, Shape{2, 1, 256, 512}, Shape{8, 2, 64, 7},
                         Shape{6, 3, 128, 16}, Shape{4, 4, 32, 1}}) {
    std::mt19937_64 rng(static_cast<uint64_t>(s.head_dim * 131 + s.window));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const size_t kv_dim = static_cast<size_t>(s.kv_heads) * s.head_dim;
    const int n_max = 2 * s.window + 19;
    std::vector<float> k(static_cast<size_t>(n_max) * kv_dim), v(k.size());
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    std::vector<float> q(static_cast<size_t>(s.heads) * s.head_dim);
    std::vector<float> out(q.size()), out_ref(q.size());
    kv::WindowLayerCache cache(s.window, s.kv_heads, s.head_dim);
    for (int n = 1; n <= n_max; ++n) {
      cache.append(&k[static_cast<size_t>(n - 1) * kv_dim], &v[static_cast<size_t>(n - 1) * kv_dim],
                   1);
      if (n % 5 != 0 && n != n_max && n != s.window && n != s.window + 1) continue;
      for (float& x : q) x = 2.0f * normal(rng);
      window_attention(cache, q.data(), s.heads, out.data());
      window_attention_reference(cache, q.data(), s.heads, out_ref.data());
      const std::vector<double> want = expected(s, n, q, k, v);
      double q_norm = 0.0;
      for (float x : q) q_norm = std::max(q_norm, double{std::fabs(x)});
      // Scores carry f32 rounding of D products (≈ D·ε·|q|·|k|), which moves
      // each weight relatively by as much; outputs are weighted sums of |v| ≲ 5.
      const double tol = s.head_dim * std::ldexp(1.0, -24) * q_norm * 5.0 * 5.0 * 8.0 + 1e-6;
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_NEAR(out[i], want[i], tol) << "heads " << s.heads << "/" << s.kv_heads << " D "
                                          << s.head_dim << " window " << s.window << " n " << n;
        ASSERT_NEAR(out_ref[i], want[i], 1e-6) << "reference, n " << n;
      }
    }
  }
}

// A chunk of new positions (WindowChunk, copied from the ring before the
// chunk is appended): position N + i attends to the last `window` positions
// up to its own, as decode would after appending it alone. Chunks shorter
// and longer than the window, from an empty ring, a partly filled one and a
// wrapped one; the same tolerance as decode above.
TEST(WindowAttention, ChunkSeesTheLastWindowUpToEachPosition) {
  for (const Shape& s :
       {Shape{4, 1, 256, 20}, Shape{8, 2, 64, 7}, Shape{6, 3, 128, 16}, Shape{4, 4, 32, 1}}) {
    std::mt19937_64 rng(static_cast<uint64_t>(s.head_dim * 17 + s.window));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const size_t kv_dim = static_cast<size_t>(s.kv_heads) * s.head_dim;
    const size_t q_dim = static_cast<size_t>(s.heads) * s.head_dim;
    for (const int held : {0, 3, s.window - 1, s.window + 5, 3 * s.window + 2}) {
      for (const int n_chunk : {1, 2, s.window, s.window + 9}) {
        const int n = held + n_chunk;
        std::vector<float> k(static_cast<size_t>(n) * kv_dim), v(k.size());
        for (float& x : k) x = normal(rng);
        for (float& x : v) x = normal(rng);
        std::vector<float> q(static_cast<size_t>(n_chunk) * q_dim);
        for (float& x : q) x = 2.0f * normal(rng);
        kv::WindowLayerCache ring(s.window, s.kv_heads, s.head_dim);
        if (held > 0) ring.append(k.data(), v.data(), held);
        WindowChunk chunk;
        chunk.begin(ring, n_chunk);
        ring.append(&k[static_cast<size_t>(held) * kv_dim], &v[static_cast<size_t>(held) * kv_dim],
                    n_chunk);
        chunk.add_chunk(&k[static_cast<size_t>(held) * kv_dim],
                        &v[static_cast<size_t>(held) * kv_dim]);
        EXPECT_EQ(chunk.n_past(), std::min(held, s.window - 1));
        std::vector<float> out(q_dim), out_ref(q_dim);
        for (int i = 0; i < n_chunk; ++i) {
          const std::vector<float> qi(q.begin() + static_cast<long>(i * q_dim),
                                      q.begin() + static_cast<long>((i + 1) * q_dim));
          window_chunk_attention(chunk, i, qi.data(), s.heads, out.data());
          window_chunk_attention_reference(chunk, i, qi.data(), s.heads, out_ref.data());
          const std::vector<double> want = expected(s, held + i + 1, qi, k, v);
          double q_norm = 0.0;
          for (float x : qi) q_norm = std::max(q_norm, double{std::fabs(x)});
          const double tol = s.head_dim * std::ldexp(1.0, -24) * q_norm * 5.0 * 5.0 * 8.0 + 1e-6;
          for (size_t j = 0; j < out.size(); ++j) {
            ASSERT_NEAR(out[j], want[j], tol) << "window " << s.window << " held " << held
                                              << " chunk " << n_chunk << " position " << i;
            ASSERT_NEAR(out_ref[j], want[j], 1e-6) << "reference, position " << i;
          }
        }
        EXPECT_THROW(window_chunk_attention(chunk, n_chunk, q.data(), s.heads, out.data()), Error);
      }
    }
  }
}

// A ring that wrapped, dropped its newest positions (up to its spare) and
// took others attends to the last `window` positions of the sequence it now
// holds: the new rows, never the dropped ones, and never the older
// positions still in its spare slots. One scratch serves every call.
TEST(WindowAttention, AfterARollbackReadsTheLastWindowOfTheNewSequence) {
  for (const Shape& s : {Shape{4, 1, 256, 20}, Shape{8, 2, 64, 7}, Shape{4, 4, 32, 1}}) {
    std::mt19937_64 rng(static_cast<uint64_t>(s.head_dim * 7 + s.window));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const size_t kv_dim = static_cast<size_t>(s.kv_heads) * s.head_dim;
    const int n = 3 * (s.window + kv::kWindowSpare) + 4;
    std::vector<float> k(static_cast<size_t>(n) * kv_dim), v(k.size());
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    std::vector<float> q(static_cast<size_t>(s.heads) * s.head_dim);
    std::vector<float> out(q.size()), out_ref(q.size());
    AttentionScratch scratch;
    for (const int drop : {1, 5, kv::kWindowSpare}) {
      kv::WindowLayerCache ring(s.window, s.kv_heads, s.head_dim);
      for (int t = 0; t < n; ++t) {
        ring.append(&k[static_cast<size_t>(t) * kv_dim], &v[static_cast<size_t>(t) * kv_dim], 1);
      }
      ring.check_truncate(n - drop);
      ring.truncate(n - drop);
      // The new sequence: the first n − drop rows, then `drop` others.
      std::vector<float> k2(k.begin(), k.end() - static_cast<long>(drop * kv_dim)), v2 = v;
      v2.resize(k2.size());
      for (int t = 0; t < drop; ++t) {
        std::vector<float> kr(kv_dim), vr(kv_dim);
        for (float& x : kr) x = normal(rng);
        for (float& x : vr) x = normal(rng);
        ring.append(kr.data(), vr.data(), 1);
        k2.insert(k2.end(), kr.begin(), kr.end());
        v2.insert(v2.end(), vr.begin(), vr.end());
        for (float& x : q) x = 2.0f * normal(rng);
        window_attention(ring, q.data(), s.heads, out.data(), scratch);
        window_attention_reference(ring, q.data(), s.heads, out_ref.data());
        const std::vector<double> want = expected(s, n - drop + t + 1, q, k2, v2);
        double q_norm = 0.0;
        for (float x : q) q_norm = std::max(q_norm, double{std::fabs(x)});
        // The tolerance of the decode test above.
        const double tol = s.head_dim * std::ldexp(1.0, -24) * q_norm * 5.0 * 5.0 * 8.0 + 1e-6;
        for (size_t j = 0; j < out.size(); ++j) {
          ASSERT_NEAR(out[j], want[j], tol) << "window " << s.window << " dropped " << drop;
          ASSERT_NEAR(out_ref[j], want[j], 1e-6) << "reference, dropped " << drop;
        }
      }
    }
  }
}

TEST(WindowAttention, RefusesWhatItCannotRead) {
  kv::WindowLayerCache cache(8, 2, 32);
  std::vector<float> row(64, 0.5f), q(128, 1.0f), out(128);
  EXPECT_THROW(window_attention(cache, q.data(), 2, out.data()), Error);  // empty
  cache.append(row.data(), row.data(), 1);
  EXPECT_THROW(window_attention(cache, q.data(), 3, out.data()), Error);  // 3 heads on 2
  // A ring is not in position order and holds fewer than n_tokens() rows.
  EXPECT_THROW(decode_attention(cache, q.data(), 2, out.data()), Error);
  window_attention(cache, q.data(), 4, out.data());
  for (float x : out) EXPECT_FLOAT_EQ(x, 0.5f);
}

}  // namespace
}  // namespace innerq::attn
