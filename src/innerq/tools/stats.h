// innerq/tools/stats.h — the small statistics of the evaluation tools: a
// binomial proportion's Wilson interval, the exact McNemar test of two
// configs scored on the same trials, and a mean's normal interval (paired
// differences) (docs/architecture.md, "Passkey
// retrieval").
#pragma once

#include <algorithm>
#include <cmath>
#include <span>

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

struct MeanInterval {
  double mean = 0.0, half_width = 0.0;
};

// Mean of x and the half width of its 95 % normal interval,
// 1.96 · s / sqrt(n) with the sample standard deviation s (n − 1); one value
// gives a half width of 0, none a mean of 0.
inline MeanInterval mean_interval(std::span<const double> x) {
  MeanInterval m;
  if (x.empty()) return m;
  for (double v : x) m.mean += v;
  m.mean /= static_cast<double>(x.size());
  if (x.size() < 2) return m;
  double ss = 0.0;
  for (double v : x) ss += (v - m.mean) * (v - m.mean);
  m.half_width = 1.959963984540054 *
                 std::sqrt(ss / static_cast<double>(x.size() - 1) / static_cast<double>(x.size()));
  return m;
}

}  // namespace innerq::tools
