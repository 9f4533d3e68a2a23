// tests/fuzz/replay_main.cc — runs a libFuzzer target over files without
// libFuzzer: each argument is a file or a folder of files, and every file is
// passed once to LLVMFuzzerTestOneInput. Linked with every fuzz target in the
// default (g++) build, so the committed seed corpora are regression tests
// there; the clang build links the real fuzzer instead (docs/architecture.md,
// "Testing").
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool run_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "replay: cannot read %s\n", path.c_str());
    return false;
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
    return 2;
  }
  int n_files = 0;
  for (int a = 1; a < argc; ++a) {
    const std::filesystem::path arg(argv[a]);
    std::error_code ec;
    if (std::filesystem::is_directory(arg, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(arg)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
      std::sort(files.begin(), files.end());
      for (const auto& f : files) {
        if (!run_file(f)) return 1;
        ++n_files;
      }
    } else {
      if (!run_file(arg)) return 1;
      ++n_files;
    }
  }
  if (n_files == 0) {
    std::fprintf(stderr, "replay: no input files found in the arguments\n");
    return 1;
  }
  std::printf("replay: %d inputs ran without a crash or a failed check\n", n_files);
  return 0;
}
