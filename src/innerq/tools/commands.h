// innerq/tools/commands.h — the subcommands of the `innerq` binary.
//
// Each subcommand lives in its own cmd_*.cc file and exposes one function that
// adds itself to the CLI11 app and sets the callback that runs it. Callbacks
// throw innerq::Error on bad input; main() turns that into one line on stderr
// and exit code 2.
#pragma once

#include <CLI/CLI.hpp>

namespace innerq::tools {

void add_quant_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_perplexity_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_tune_command(CLI::App& app);
void add_passkey_command(CLI::App& app);
void add_calibrate_command(CLI::App& app);

}  // namespace innerq::tools
