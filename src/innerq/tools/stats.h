// innerq/tools/stats.h — the small statistics of the evaluation tools: a
// binomial proportion's Wilson interval and the exact McNemar test of two
// configs scored on the same trials (docs/architecture.md, "Passkey
// retrieval").
#pragma once

#include <algorithm>
#include <cmath>

namespace innerq::tools {

struct Interval {
  double lo = 0.0, hi = 0.0;
};

// Wilson score interval of k successes in n trials at normal quantile z
// (1.96: 95 %). n == 0 gives [0, 1]: nothing is known.
inline Interval wilson_interval(int k, int n, double z = 1.959963984540054) {
  if (n <= 0) return {0.0, 1.0};
  const double p = static_cast<double>(k) / n, z2 = z * z, denom = 1.0 + z2 / n;
  const double center = (p + z2 / (2.0 * n)) / denom;
  const double half = z * std::sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom;
  return {std::max(0.0, center - half), std::min(1.0, center + half)};
}

// Two-sided exact McNemar test: of the trials where two configs disagree,
// `lost` went only to the first and `gained` only to the second. Under the
// null hypothesis (neither is better) each disagreement is a fair coin, so p
// is the two-sided binomial tail of min(lost, gained) in lost + gained
// flips, capped at 1. No disagreement gives 1.
inline double mcnemar_exact_p(int lost, int gained) {
  const int n = lost + gained, k = std::min(lost, gained);
  if (n == 0) return 1.0;
  // Σ_{i ≤ k} C(n, i) / 2^n in log space (n may be in the hundreds).
  double tail = 0.0;
  for (int i = 0; i <= k; ++i) {
    tail += std::exp(std::lgamma(n + 1.0) - std::lgamma(i + 1.0) - std::lgamma(n - i + 1.0) -
                     n * std::log(2.0));
  }
  return std::min(1.0, 2.0 * tail);
}

}  // namespace innerq::tools
