// innerq/model/sampler.h — next-token selection from logits: greedy, or
// temperature + top-k + top-p sampling with a seeded std::mt19937_64.
#pragma once

#include <cstdint>
#include <random>
#include <span>

namespace innerq::model {

struct SamplerOptions {
  float temperature = 0.0f;  // 0: greedy (argmax)
  int top_k = 40;            // 0: no top-k cut
  float top_p = 0.95f;       // 1: no nucleus cut
  uint64_t seed = 0;
};

// Index of the largest logit (the first one on ties).
int argmax(std::span<const float> logits);

class Sampler {
 public:
  // Throws innerq::Error on a negative temperature or top-k, or top-p outside (0, 1].
  explicit Sampler(const SamplerOptions& options);

  int sample(std::span<const float> logits);

 private:
  SamplerOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace innerq::model
