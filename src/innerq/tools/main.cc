// innerq — command-line entry point. Parses the subcommand, runs it, and maps
// every error to one line on stderr with a non-zero exit code.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/tools/commands.h"

namespace {

// Exit codes: 0 success, 1 internal failure, 2 bad input (arguments, files,
// specs). CLI11's own codes are folded into 2 so scripts see one convention.
constexpr int kExitInternal = 1;
constexpr int kExitBadInput = 2;

// OpenMP threads that wait at a barrier spin before they sleep; libgomp's
// default is long (300000 spins). Beside other busy processes a spinning
// thread burns the time slice its team mate needs: a perplexity run took
// 21.7 s instead of 2.4 s beside a two-job build. No fixed policy fits both
// cases (scripts/bench-contention.sh; docs/architecture.md, "Threads under
// contention"): passive waiting (sleep at once) costs 2.5x on an idle machine,
// short spinning keeps the idle speed but still loses 3x beside one busy
// process. So innerq looks before it starts: it samples how busy the CPUs are
// over kProbeMs, then spins briefly (GOMP_SPINCOUNT=1000) on an idle machine
// and waits passively on a busy one. libgomp reads its settings when it
// loads, before main, so the program sets them and re-executes itself once.
// A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone.
constexpr int kProbeMs = 30;
constexpr double kBusyCpus = 0.5;  // other work using more than half a CPU

// CPUs' worth of time spent outside idle over `ms` milliseconds (all CPUs
// together), or a negative value when /proc/stat cannot be read.
double busy_cpus(int ms) {
  const auto sample = [](uint64_t* busy, uint64_t* total) {
    std::FILE* f = std::fopen("/proc/stat", "r");
    if (f == nullptr) return false;
    unsigned long long v[8] = {};
    const int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                              &v[3], &v[4], &v[5], &v[6], &v[7]);
    std::fclose(f);
    if (n < 5) return false;
    *total = 0;
    for (unsigned long long x : v) *total += x;
    *busy = *total - v[3] - v[4];  // minus idle and iowait
    return true;
  };
  uint64_t b0 = 0, t0 = 0, b1 = 0, t1 = 0;
  if (!sample(&b0, &t0)) return -1.0;
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  if (!sample(&b1, &t1) || t1 <= t0) return -1.0;
  const long n_cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  return static_cast<double>(b1 - b0) / static_cast<double>(t1 - t0) *
         static_cast<double>(n_cpus > 0 ? n_cpus : 1);
}

void choose_openmp_waiting(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  const bool busy = busy_cpus(kProbeMs) > kBusyCpus;
  if (::setenv(busy ? "OMP_WAIT_POLICY" : "GOMP_SPINCOUNT", busy ? "passive" : "1000", 1) != 0) {
    return;
  }
  ::execv("/proc/self/exe", argv);
  // execv returned: carry on with libgomp's defaults rather than fail.
  ::unsetenv(busy ? "OMP_WAIT_POLICY" : "GOMP_SPINCOUNT");
}

}  // namespace

int main(int argc, char** argv) {
  choose_openmp_waiting(argv);
  CLI::App app{
      "innerq — 2-4 bit KV caches with inner-dimension group quantization (InnerQ),\n"
      "fused decode attention, and side-by-side baselines (f16, KIVI, q8_0/q4_0)."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "innerq 0.1.0");

  innerq::tools::add_quant_command(app);
  innerq::tools::add_generate_command(app);
  innerq::tools::add_perplexity_command(app);
  innerq::tools::add_info_command(app);
  innerq::tools::add_bench_command(app);
  innerq::tools::add_tune_command(app);
  innerq::tools::add_passkey_command(app);

  // CLI11 reports an unknown first word as "A subcommand is required"; name
  // the word and the choices instead.
  if (argc >= 2 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
      known = known || sub->check_name(argv[1]);
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      fmt::print(stderr,
                 "innerq: unknown subcommand '{}' (expected one of: {}; see innerq --help)\n",
                 argv[1], names);
      return kExitBadInput;
    }
  } else if (argc < 2) {
    fmt::print(stderr, "innerq: give a subcommand (see innerq --help)\n");
    return kExitBadInput;
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::RuntimeError& e) {  // a subcommand that printed its own reason
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "innerq: {}\n", e.what());
    return kExitBadInput;
  } catch (const innerq::Error& e) {
    fmt::print(stderr, "innerq: error: {}\n", e.what());
    return kExitBadInput;
  } catch (const std::exception& e) {
    fmt::print(stderr, "innerq: internal error: {}\n", e.what());
    return kExitInternal;
  }
  return 0;
}
