// innerq/tools/cmd_quant.cc — `innerq quant`: quantizes N values drawn from a
// distribution (or read from a file) with one group format and reports the
// storage cost, the reconstruction error and the SIMD throughput.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "innerq/base/error.h"
#include "innerq/quant/group_quant.h"
#include "innerq/tools/cli_util.h"
#include "innerq/tools/commands.h"

namespace innerq::tools {
namespace {

struct QuantOptions {
  int bits = 3;
  std::string mode = "hybrid";
  int group = 32;
  std::string dist = "gaussian";
  size_t n = 0;  // 0: 1M values, or the whole file for file:PATH
  uint64_t seed = 1;
  bool json = false;
};

constexpr size_t kDefaultValues = size_t{1} << 20;
constexpr int kTimingReps = 5;

// `outliers`: the values are rows of kOutlierRowChannels channels, like keys
// of one head; these fixed channels are scaled by kOutlierScale.
constexpr size_t kOutlierRowChannels = 128;
constexpr size_t kOutlierChannels[] = {5, 37, 70, 101};
constexpr float kOutlierScale = 20.0f;

std::vector<float> read_f32_file(const std::string& path, size_t n) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    throw Error("cannot read '" + path + "': no such regular file");
  }
  const auto size = static_cast<size_t>(std::filesystem::file_size(path, error));
  std::ifstream file(path, std::ios::binary);
  if (error || !file) throw Error("cannot read '" + path + "'");
  if (size % sizeof(float) != 0) {
    throw Error("'" + path + "' holds " + std::to_string(size) +
                " bytes, not a whole number of little-endian f32 values");
  }
  const size_t available = size / sizeof(float);
  const size_t count = n == 0 ? available : n;
  if (count == 0 || count > available) {
    throw Error("'" + path + "' holds " + std::to_string(available) + " f32 values, " +
                std::to_string(count) + " requested");
  }
  std::vector<float> values(count);
  if (!file.read(reinterpret_cast<char*>(values.data()),
                 static_cast<std::streamsize>(count * sizeof(float)))) {
    throw Error("cannot read '" + path + "'");
  }
  return values;
}

std::vector<float> draw_values(const std::string& dist, size_t n, uint64_t seed) {
  const std::string file_prefix = "file:";
  if (dist.starts_with(file_prefix)) return read_f32_file(dist.substr(file_prefix.size()), n);
  if (n == 0) n = kDefaultValues;

  std::mt19937_64 rng(seed);
  std::vector<float> values(n);
  if (dist == "gaussian" || dist == "outliers") {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& v : values) v = normal(rng);
    if (dist == "outliers") {
      for (size_t row = 0; row < n; row += kOutlierRowChannels) {
        for (size_t channel : kOutlierChannels) {
          if (row + channel < n) values[row + channel] *= kOutlierScale;
        }
      }
    }
  } else if (dist == "laplace") {
    std::exponential_distribution<float> exponential(1.0f);
    for (float& v : values) v = exponential(rng) - exponential(rng);
  } else {
    throw Error("dist must be gaussian, laplace, outliers or file:PATH (got '" + dist + "')");
  }
  return values;
}

// Seconds of the fastest of kTimingReps runs of `work`.
template <class Work>
double best_seconds(Work&& work) {
  double best = std::numeric_limits<double>::infinity();
  for (int rep = 0; rep < kTimingReps; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    work();
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    best = std::min(best, elapsed.count());
  }
  return best;
}

void run_quant(const QuantOptions& options) {
  const quant::GroupFormat format =
      quant::GroupFormat::make(options.bits, options.group, quant::parse_quant_mode(options.mode));
  const std::vector<float> x = draw_values(options.dist, options.n, options.seed);

  std::vector<uint8_t> records = quant::quantize(format, x);
  std::vector<float> x_hat(x.size());
  quant::dequantize(format, records, x_hat);

  double error_sq = 0.0, norm_sq = 0.0, max_abs_err = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double err = static_cast<double>(x[i]) - static_cast<double>(x_hat[i]);
    error_sq += err * err;
    norm_sq += static_cast<double>(x[i]) * static_cast<double>(x[i]);
    max_abs_err = std::max(max_abs_err, std::fabs(err));
  }
  const double rel_rmse = norm_sq > 0.0 ? std::sqrt(error_sq / norm_sq) : 0.0;

  const double input_gb = static_cast<double>(x.size() * sizeof(float)) * 1e-9;
  const double quant_gbps = input_gb / best_seconds([&] { quant::quantize(format, x, records); });
  const double dequant_gbps =
      input_gb / best_seconds([&] { quant::dequantize(format, records, x_hat); });
  const double sym_fraction = quant::symmetric_fraction(format, records);

  if (options.json) {
    const nlohmann::json report = {{"bits_per_value", format.bits_per_value()},
                                   {"rel_rmse", rel_rmse},
                                   {"max_abs_err", max_abs_err},
                                   {"sym_fraction", sym_fraction},
                                   {"quant_gbps", quant_gbps},
                                   {"dequant_gbps", dequant_gbps}};
    print_json(report);
    return;
  }
  fmt::print("innerq quant: b={} mode={} G={} dist={} n={}\n", format.bits,
             quant::quant_mode_name(format.mode), format.group, options.dist, x.size());
  fmt::print("  {:<16}{:>12.4f}  bits/value (codes + fp16 metadata)\n", "bits_per_value",
             format.bits_per_value());
  fmt::print("  {:<16}{:>12.6f}  ‖x − x̂‖ / ‖x‖\n", "rel_rmse", rel_rmse);
  fmt::print("  {:<16}{:>12.6f}  max |x − x̂|\n", "max_abs_err", max_abs_err);
  fmt::print("  {:<16}{:>12.4f}  share of groups stored symmetric\n", "sym_fraction", sym_fraction);
  fmt::print("  {:<16}{:>12.2f}  GB/s of f32 input (SIMD, best of {})\n", "quant_gbps", quant_gbps,
             kTimingReps);
  fmt::print("  {:<16}{:>12.2f}  GB/s of f32 output (SIMD, best of {})\n", "dequant_gbps",
             dequant_gbps, kTimingReps);
}

}  // namespace

void add_quant_command(CLI::App& app) {
  auto options = std::make_shared<QuantOptions>();
  CLI::App* cmd = app.add_subcommand(
      "quant", "Quantize values with one group format; report storage, error and throughput");
  cmd->add_option("--bits,-b", options->bits, "bits per code: 2, 3, 4 or 8")->capture_default_str();
  cmd->add_option("--mode", options->mode, "sym, asym or hybrid")->capture_default_str();
  cmd->add_option("--group,-g", options->group, "group size G: 32, 64 or 128")
      ->capture_default_str();
  cmd->add_option("--dist", options->dist, "gaussian, laplace, outliers or file:PATH (raw f32 LE)")
      ->capture_default_str();
  cmd->add_option("--n,-n", options->n,
                  "number of values, a multiple of G (default 1048576, or the whole file)");
  cmd->add_option("--seed", options->seed, "random seed")->capture_default_str();
  cmd->add_flag("--json", options->json, "print one JSON object instead of the table");
  cmd->callback([options] { run_quant(*options); });
}

}  // namespace innerq::tools
