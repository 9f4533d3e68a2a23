// innerq/tools/cli_util.h — input and output rules every subcommand shares
// (docs/architecture.md, "Errors and limits").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "innerq/model/weights.h"

namespace CLI {
class App;
}

namespace innerq::tools {

// Text files given on the command line (-f prompts, evaluation texts, passkey
// fillers) are read whole; beyond this they are refused before reading.
inline constexpr std::uintmax_t kMaxTextFileBytes = std::uintmax_t{512} << 20;

// Reads a regular file of at most max_bytes. `what` names it in errors
// ("prompt file"): a missing path, a directory, a device or FIFO
// (/dev/zero, which would never end), an empty file and a larger one are each
// refused with their own message.
std::string read_text_file(const std::string& path, const char* what,
                           std::uintmax_t max_bytes = kMaxTextFileBytes);

// Prints j and a newline. JSON strings must be UTF-8; model text may not be
// (a byte-level token can end inside a character, a prompt can hold any
// bytes), so each invalid byte becomes U+FFFD in the JSON text. Commands that
// print model text also print its token ids, from which the exact bytes
// follow.
void print_json(const nlohmann::json& j, int indent = -1);

// a + b for token counts given by the user, refused past `limit` instead of
// wrapping: `what` names the sum in the error.
int checked_token_sum(int64_t a, int64_t b, int64_t limit, const char* what);

// Memory the system could give this process now (MemAvailable), for checks
// made before an argument-sized allocation; the physical memory if unknown.
uint64_t available_memory_bytes();

// Refuses `bytes` when it is more than `fraction` of available_memory_bytes():
// `what` says what would be allocated.
void check_allocation(uint64_t bytes, const std::string& what, double fraction = 0.8);

// The largest context (-c) any command accepts: a cache of this many tokens
// is planned before anything is allocated, and larger requests are refused.
inline constexpr int kMaxContextTokens = 1 << 24;

// --activations int16|f32 on a command that runs a model: how its weight
// products treat activations (model/weights.h; default int16).
void add_activations_option(CLI::App* cmd, std::string* value);
model::Activations parse_activations(const std::string& value);

}  // namespace innerq::tools
