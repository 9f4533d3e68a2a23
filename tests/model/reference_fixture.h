// Shared checks of the model tests against the independent python reference
// (tests/model/scripts/make_reference.py -> tests/model/fixtures/*.json).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/llama.h"

namespace innerq::model::testing {

inline nlohmann::json load_fixture(const std::string& name) {
  std::ifstream in("tests/model/fixtures/" + name + ".json");
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  return nlohmann::json::parse(in);
}

// Token ids equal the reference tokenizer's for every stored string; decode
// gives the text back.
inline void expect_tokenizer_matches(const LlamaModel& model, const nlohmann::json& fixture,
                                     bool parse_special) {
  const Tokenizer& tok = model.tokenizer();
  for (const auto& c : fixture["tokenizer_cases"]) {
    const std::string text = c["text"];
    const std::vector<int> want = c["ids"];
    const std::vector<int> got = tok.tokenize(text, tok.adds_bos(), parse_special);
    EXPECT_EQ(got, want) << "text: \"" << text << "\"";
    if (!parse_special) {
      EXPECT_EQ(tok.decode(got), text) << "round trip of \"" << text << "\"";
    }
    if (c.contains("chat_user")) {
      EXPECT_EQ(tok.chat_prompt(c["chat_user"].get<std::string>()), text);
    }
  }
}

// Rounding bound for f32 logits against the float64 reference: each of the
// 2·n_layers+1 residual updates is a sum of at most max(n_ff, n_embd) products
// accumulated in f32 (γ_n ≈ n·ε), growing by the activations' size, which the
// logits' RMS stands in for; sqrt(n) for the random-walk nature of rounding.
inline double logit_tolerance(const ModelDesc& c, const std::vector<double>& ref_row) {
  double ss = 0.0, max_abs = 0.0;
  for (double v : ref_row) {
    ss += v * v;
    max_abs = std::max(max_abs, std::fabs(v));
  }
  const double rms = std::sqrt(ss / static_cast<double>(ref_row.size()));
  const double eps = std::ldexp(1.0, -24);
  const double n = std::max(c.n_ff, c.n_embd);
  return (2.0 * c.n_layers + 1) * std::sqrt(n) * eps * (rms + max_abs) * 32.0;
}

// Prefill logits at every position equal the reference's (stored entries).
inline void expect_logits_match(const LlamaModel& model, const nlohmann::json& fixture,
                                int n_threads) {
  for (const auto& c : fixture["logit_cases"]) {
    const std::vector<int> tokens = c["tokens"];
    const std::vector<int> indices = c["indices"];
    const std::vector<int> argmax_ref = c["argmax"];
    kv::KvCache cache(model.cache_shape(static_cast<int>(tokens.size())),
                      kv::parse_cache_spec("f32").layer);
    kv::KvCache* caches[] = {&cache};
    std::vector<float> logits;
    model.prefill(tokens, caches, /*all_logits=*/true, logits, n_threads);
    const int V = model.config().n_vocab;
    for (size_t t = 0; t < tokens.size(); ++t) {
      const std::vector<double> ref = c["logits"][t];
      const double tol = logit_tolerance(model.config(), ref);
      for (size_t j = 0; j < indices.size(); ++j) {
        ASSERT_NEAR(logits[t * V + static_cast<size_t>(indices[j])], ref[j], tol)
            << "position " << t << " vocab entry " << indices[j];
      }
      const float* row = &logits[t * V];
      const int got = static_cast<int>(std::max_element(row, row + V) - row);
      // An argmax may differ only between near-ties.
      if (got != argmax_ref[t]) {
        EXPECT_NEAR(row[got], row[argmax_ref[t]], 2 * tol) << "argmax at position " << t;
      }
    }
  }
}

// Model b against model a on the same tokens (prefill, every position):
// mean KL divergence of the next-token distributions and top-1 agreement.
inline void expect_logits_track(const LlamaModel& a_model, const LlamaModel& b_model,
                                const std::vector<int>& tokens, double max_mean_kld,
                                double min_top1) {
  const int V = a_model.config().n_vocab;
  std::vector<float> logits[2];
  for (int i = 0; i < 2; ++i) {
    const LlamaModel& m = i == 0 ? a_model : b_model;
    kv::KvCache cache(m.cache_shape(static_cast<int>(tokens.size())),
                      kv::parse_cache_spec("f32").layer);
    kv::KvCache* caches[] = {&cache};
    m.prefill(tokens, caches, /*all_logits=*/true, logits[i], 2);
  }
  double kld = 0.0;
  int agree = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const float* a = &logits[0][t * V];
    const float* b = &logits[1][t * V];
    double ma = a[0], mb = b[0];
    for (int j = 1; j < V; ++j) ma = std::max(ma, double{a[j]}), mb = std::max(mb, double{b[j]});
    double za = 0.0, zb = 0.0;
    for (int j = 0; j < V; ++j) za += std::exp(a[j] - ma), zb += std::exp(b[j] - mb);
    double k = 0.0;
    for (int j = 0; j < V; ++j) {
      const double la = a[j] - ma - std::log(za), lb = b[j] - mb - std::log(zb);
      k += std::exp(la) * (la - lb);
    }
    kld += k;
    agree += std::max_element(a, a + V) - a == std::max_element(b, b + V) - b;
  }
  const double n = static_cast<double>(tokens.size());
  ::testing::Test::RecordProperty("mean_kld", std::to_string(kld / n));
  ::testing::Test::RecordProperty("top1", std::to_string(agree / n));
  EXPECT_LE(kld / n, max_mean_kld) << "top-1 agreement " << agree / n;
  EXPECT_GE(agree / n, min_top1) << "mean KLD " << kld / n;
  std::printf("over %zu positions: mean KLD %.3e, top-1 %.4f\n", tokens.size(), kld / n, agree / n);
}

// Int16 activations (model/weights.h) against the f32 model on the same
// tokens: the mean KL divergence of the next-token distributions and the
// top-1 agreement over every position stay within bounds measured on these
// models with margin (the int16 rounding is a change of about 2⁻¹⁶ of each
// product: a wrong scale, code order or offset would move the logits by
// whole units).
inline void expect_int16_tracks_f32(const LlamaModel& f32_model, const LlamaModel& int16_model,
                                    const std::vector<int>& tokens, double max_mean_kld,
                                    double min_top1) {
  ASSERT_EQ(f32_model.activations(), Activations::kF32);
  ASSERT_EQ(int16_model.activations(), Activations::kInt16);
  expect_logits_track(f32_model, int16_model, tokens, max_mean_kld, min_top1);
}

}  // namespace innerq::model::testing
