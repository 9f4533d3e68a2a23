// innerq — command-line entry point. Parses the subcommand, runs it, and maps
// every error to one line on stderr with a non-zero exit code.
#include <unistd.h>

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
// thread burns the time slice its team mate needs: teacher-forced perplexity
// took 21x its idle time beside two busy processes. 1000 spins (a few
// microseconds) still cover the gap between back-to-back regions on an idle
// machine, and bring that case to 2.8x (scripts/bench-contention.sh;
// docs/architecture.md, "Threads under contention"). Passive waiting does
// better beside busy work but costs 2-2.7x on an idle machine, and choosing
// it by sampling the load at start proved fragile (a process starting beside
// innerq, such as the other end of a pipe, looks like load). libgomp reads
// its settings when it loads, before main, so the program sets
// GOMP_SPINCOUNT and re-executes itself once; a user's own OMP_WAIT_POLICY
// or GOMP_SPINCOUNT is left alone.
constexpr const char* kSpinCount = "1000";

void bound_openmp_spinning(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  if (::setenv("GOMP_SPINCOUNT", kSpinCount, 1) != 0) return;
  ::execv("/proc/self/exe", argv);
  // execv returned: carry on with libgomp's defaults rather than fail.
  ::unsetenv("GOMP_SPINCOUNT");
}

}  // namespace

int main(int argc, char** argv) {
  bound_openmp_spinning(argv);
  CLI::App app{
      "innerq — 2-4 bit KV caches with inner-dimension group quantization (InnerQ),\n"
      "fused decode attention, and side-by-side baselines (f16, KIVI, q8_0/q4_0)."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "innerq 0.1.0");

  innerq::tools::add_quant_command(app);
  innerq::tools::add_generate_command(app);
  innerq::tools::add_chat_command(app);
  innerq::tools::add_perplexity_command(app);
  innerq::tools::add_info_command(app);
  innerq::tools::add_bench_command(app);
  innerq::tools::add_tune_command(app);
  innerq::tools::add_passkey_command(app);
  innerq::tools::add_calibrate_command(app);

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
