// tests/kernels/test_groups.h — group contents the quantization tests share:
// gaussian, outlier-heavy and adversarial groups, and the formats to sweep.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "innerq/kernels/quant_kernels.h"

namespace innerq::kernels::testing {

inline std::vector<GroupSpec> all_specs() {
  std::vector<GroupSpec> specs;
  for (int bits : kSupportedBits) {
    for (int group : kSupportedGroups) {
      for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric, QuantMode::kHybrid}) {
        specs.push_back({bits, group, mode});
      }
    }
  }
  return specs;
}

inline std::string describe(const GroupSpec& spec) {
  const char* mode = spec.mode == QuantMode::kSymmetric    ? "sym"
                     : spec.mode == QuantMode::kAsymmetric ? "asym"
                                                           : "hybrid";
  return "bits=" + std::to_string(spec.bits) + " G=" + std::to_string(spec.group) + " mode=" + mode;
}

enum class Content { kGaussian, kOutliers, kAdversarial };

inline const char* content_name(Content c) {
  return c == Content::kGaussian   ? "gaussian"
         : c == Content::kOutliers ? "outliers"
                                   : "adversarial";
}

// One adversarial group of `group` values, variant chosen by `kind`.
inline void fill_adversarial(int kind, float* x, int group, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (int i = 0; i < group; ++i) {
    const float fi = static_cast<float>(i);
    switch (kind % 12) {
      case 0:
        x[i] = 0.0f;
        break;  // all zero
      case 1:
        x[i] = (i % 2) ? -0.0f : 0.0f;
        break;  // mixed signed zeros
      case 2:
        x[i] = 0.1f;
        break;  // all equal, positive
      case 3:
        x[i] = -3.7f;
        break;  // all equal, negative
      case 4:
        x[i] = 1e-40f * fi;
        break;  // f32 denormals
      case 5:
        x[i] = (i % 2 ? 1 : -1) * 65504.0f;
        break;  // fp16 limits
      case 6:
        x[i] = 1000.0f + 1e-3f * fi;
        break;  // tiny range, large offset
      case 7:
        x[i] = 0.5f * static_cast<float>(i % 7) - 1.5f;
        break;  // rounding ties
      case 8:
        x[i] = i == group / 2 ? 5.0f : 0.0f;
        break;  // one spike
      case 9:
        x[i] = 3e-6f * uniform(rng);
        break;  // below fp16 normal range
      case 10:
        x[i] = i == 0 ? -100.0f : uniform(rng);
        break;  // one negative outlier
      default:
        x[i] = static_cast<float>(i % 3) * 1e4f;
        break;  // three levels, large
    }
  }
}

// n_groups groups of `group` values back to back.
inline std::vector<float> make_groups(Content content, int group, size_t n_groups, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n_groups * static_cast<size_t>(group));
  for (size_t g = 0; g < n_groups; ++g) {
    float* gx = x.data() + g * static_cast<size_t>(group);
    if (content == Content::kAdversarial) {
      fill_adversarial(static_cast<int>(g + seed), gx, group, rng);
      continue;
    }
    for (int i = 0; i < group; ++i) gx[i] = normal(rng);
    if (content == Content::kOutliers) {
      std::uniform_int_distribution<int> position(0, group - 1);
      for (int k = 0; k < 3; ++k) gx[position(rng)] *= 20.0f;
    }
  }
  return x;
}

}  // namespace innerq::kernels::testing
