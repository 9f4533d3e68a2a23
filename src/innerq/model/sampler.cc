// innerq/model/sampler.cc — greedy and top-k / top-p / temperature sampling.
#include "innerq/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <fmt/core.h>

#include "innerq/base/error.h"

namespace innerq::model {

int argmax(std::span<const float> logits) {
  return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(const SamplerOptions& options) : options_(options), rng_(options.seed) {
  if (!(options.temperature >= 0.0f)) {
    throw Error(fmt::format("temperature {} must be >= 0", options.temperature));
  }
  if (options.top_k < 0) throw Error(fmt::format("top-k {} must be >= 0", options.top_k));
  if (!(options.top_p > 0.0f && options.top_p <= 1.0f)) {
    throw Error(fmt::format("top-p {} must be in (0, 1]", options.top_p));
  }
}

int Sampler::sample(std::span<const float> logits) {
  if (options_.temperature == 0.0f) return argmax(logits);

  // Candidates by descending logit, cut to top-k.
  std::vector<int> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  const size_t k =
      options_.top_k > 0 ? std::min(ids.size(), static_cast<size_t>(options_.top_k)) : ids.size();
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                    [&](int a, int b) {
                      return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)];
                    });
  ids.resize(k);

  // Softmax at temperature T over the candidates.
  std::vector<double> p(k);
  const double top = logits[static_cast<size_t>(ids[0])];
  double sum = 0.0;
  for (size_t i = 0; i < k; ++i) {
    p[i] = std::exp((logits[static_cast<size_t>(ids[i])] - top) / options_.temperature);
    sum += p[i];
  }
  // Nucleus: the smallest prefix whose probability reaches top-p.
  size_t keep = k;
  double mass = 0.0;
  for (size_t i = 0; i < k; ++i) {
    mass += p[i] / sum;
    if (mass >= options_.top_p) {
      keep = i + 1;
      break;
    }
  }
  std::discrete_distribution<size_t> pick(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(keep));
  return ids[pick(rng_)];
}

}  // namespace innerq::model
