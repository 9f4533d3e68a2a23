// Shared checks of the model tests against the independent python reference
// (tests/model/scripts/make_reference.py -> tests/model/fixtures/*.json).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
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

}  // namespace innerq::model::testing
