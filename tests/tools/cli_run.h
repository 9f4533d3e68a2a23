// tests/tools/cli_run.h — running the `innerq` binary from a test (every
// CLI test: tools/, and quant/quant_cli_test.cc).
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

namespace innerq::test {

struct CliRun {
  int exit_code;
  std::string output;
};

// stderr is folded into the output unless `stdout_only`.
inline CliRun run_innerq(const std::string& args, bool stdout_only = false) {
  const std::string command =
      std::string(INNERQ_BINARY) + " " + args + (stdout_only ? " 2>/dev/null" : " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

inline std::string temp_path(const std::string& name) {
  // The pid keeps concurrent test processes (ctest -j) apart.
  return ::testing::TempDir() + std::to_string(getpid()) + "_" + name;
}

// A file of `text` at temp_path(name); returns its path.
inline std::string write_temp_file(const std::string& name, const std::string& text) {
  const std::string path = temp_path(name);
  std::ofstream(path) << text;
  return path;
}

// A calibration text of a few thousand tokens for stories260K.
inline std::string story_text() {
  const std::string path = temp_path("calibration.txt");
  std::ofstream out(path);
  for (int i = 0; i < 60; ++i) {
    out << "Once upon a time there was a little girl named Lily. She liked to play in the park "
           "with her dog. One day the sun was hot and they sat under a big tree. ";
  }
  return path;
}

}  // namespace innerq::test
