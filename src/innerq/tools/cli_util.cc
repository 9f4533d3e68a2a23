#include "innerq/tools/cli_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "innerq/base/error.h"

namespace innerq::tools {

std::string read_text_file(const std::string& path, const char* what, std::uintmax_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw Error(fmt::format("{} '{}': {}", what, path, std::strerror(errno)));
  }
  if (S_ISDIR(st.st_mode)) {
    throw Error(fmt::format("{} '{}' is a directory, expected a text file", what, path));
  }
  if (!S_ISREG(st.st_mode)) {
    throw Error(fmt::format(
        "{} '{}' is not a regular file (a device, pipe or socket has no end to read to)", what,
        path));
  }
  const auto size = static_cast<std::uintmax_t>(st.st_size);
  if (size == 0) throw Error(fmt::format("{} '{}' is empty", what, path));
  if (size > max_bytes) {
    throw Error(fmt::format("{} '{}' holds {} bytes, more than the limit of {} MiB", what, path,
                            size, max_bytes >> 20));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot open {} '{}'", what, path));
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (static_cast<std::uintmax_t>(in.gcount()) != size) {
    throw Error(fmt::format("{} '{}': read {} of {} bytes", what, path, in.gcount(), size));
  }
  return text;
}

void print_json(const nlohmann::json& j, int indent) {
  fmt::print("{}\n", j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace));
}

uint64_t available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

void check_allocation(uint64_t bytes, const std::string& what, double fraction) {
  const uint64_t available = available_memory_bytes();
  if (available > 0 && static_cast<double>(bytes) > fraction * static_cast<double>(available)) {
    throw Error(
        fmt::format("{} needs {:.2f} GiB, more than {:.0f}% of the {:.2f} GiB this machine "
                    "has available",
                    what, static_cast<double>(bytes) / (1 << 30), 100 * fraction,
                    static_cast<double>(available) / (1 << 30)));
  }
}

int checked_token_sum(int64_t a, int64_t b, int64_t limit, const char* what) {
  const int64_t sum = a + b;  // both come from ints: no int64 overflow
  if (a < 0 || b < 0 || sum > limit) {
    throw Error(
        fmt::format("{} = {} + {} tokens exceeds the limit of {} tokens", what, a, b, limit));
  }
  return static_cast<int>(sum);
}

void add_activations_option(CLI::App* cmd, std::string* value) {
  cmd->add_option("--activations", *value,
                  "int16: quantize activations per 32 values for the weight products "
                  "(fast, within about 2^-16 of f32); f32: multiply them as they are")
      ->check(CLI::IsMember({"int16", "f32"}))
      ->capture_default_str();
}

model::Activations parse_activations(const std::string& value) {
  if (value == "int16") return model::Activations::kInt16;
  if (value == "f32") return model::Activations::kF32;
  throw Error(fmt::format("--activations {}: expected int16 or f32", value));
}

}  // namespace innerq::tools
