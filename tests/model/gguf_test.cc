// GGUF reader: the real stories260K file parses to what its header dump says,
// and truncated or corrupted copies of it give innerq::Error, never a crash.
#include "innerq/model/gguf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/base/huge_pages.h"
#include "innerq/model/llama.h"
#include "innerq/model/model_path.h"
#include "gguf_writer.h"
#include "proc_maps.h"

namespace innerq::model {
namespace {

std::vector<char> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A file under the test temp dir, removed when it goes out of scope. The pid
// keeps concurrent test processes (ctest -j) apart.
struct TempFile {
  std::string path;
  TempFile(const std::vector<char>& bytes, const std::string& tag)
      : path(::testing::TempDir() + "innerq_gguf_" + std::to_string(getpid()) + "_" + tag +
             ".gguf") {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() { std::remove(path.c_str()); }
};

TEST(Gguf, ReadsStories260K) {
  const GgufFile f(resolve_model_path("stories260K"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.metadata().size(), 19u);
  EXPECT_EQ(f.tensors().size(), 48u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_uint("llama.block_count"), 5u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.seperator_token_id"), 4294967295u);
  EXPECT_NEAR(f.get_float("llama.attention.layer_norm_rms_epsilon", 0), 1e-5, 1e-12);
  EXPECT_EQ(f.get_array("tokenizer.ggml.tokens", GgufType::kString).array.size(), 512u);
  EXPECT_EQ(f.get_array("tokenizer.ggml.scores", GgufType::kF32).array.size(), 512u);
  const GgufTensor& t = f.get_tensor("blk.0.ffn_down.weight");
  EXPECT_EQ(t.type, GgmlType::kF32);
  EXPECT_EQ(t.ne, (std::vector<int64_t>{172, 64}));
  EXPECT_EQ(t.offset, 355840u);
  EXPECT_EQ(t.n_bytes, 44032u);
  int64_t params = 0;
  for (const GgufTensor& x : f.tensors()) params += x.n_elements;
  EXPECT_EQ(params, 292800);
  EXPECT_THROW(f.get_string("no.such.key"), Error);
  EXPECT_THROW(f.get_uint("general.architecture"), Error);
  EXPECT_THROW(f.get_tensor("no.such.tensor"), Error);
}

// A file of at least one 2 MiB page moves to huge-page memory (where the
// kernel offers it) and reads exactly as its mapping does; INNERQ_MMAP=1
// keeps the mapping; a smaller file stays mapped.
TEST(Gguf, LargeFilesMoveToHugePagesAndReadTheSame) {
  testing::GgufWriter w;
  w.set_string("general.architecture", "llama").set_u32("test.value", 7);
  std::vector<uint8_t> big(size_t{3} << 20), small(4096);
  std::mt19937 rng(5);
  for (uint8_t& b : big) b = static_cast<uint8_t>(rng());
  w.tensor("big", GgmlType::kF16, {big.size() / 2}, big);
  w.tensor("small", GgmlType::kF32, {small.size() / 4}, small);
  const std::string path = w.write("huge");
  const auto check = [&](const GgufFile& f) {
    EXPECT_EQ(f.get_uint("test.value"), 7u);
    const GgufTensor& t = f.get_tensor("big");
    ASSERT_EQ(t.n_bytes, big.size());
    EXPECT_EQ(std::memcmp(t.data, big.data(), big.size()), 0);
    EXPECT_EQ(f.get_tensor("small").n_bytes, small.size());
  };
  ASSERT_EQ(::unsetenv("INNERQ_MMAP"), 0);
  {
    const GgufFile f(path);
    check(f);
    EXPECT_EQ(f.in_huge_pages(), huge_pages_available());
    const auto [header, flags] = testing_env::mapping_of(f.get_tensor("big").data);
    if (f.in_huge_pages()) {  // anonymous, advised for huge pages
      EXPECT_EQ(header.find(path), std::string::npos) << header;
      EXPECT_NE(flags.find(" hg "), std::string::npos) << flags;
    }
  }
  ASSERT_EQ(::setenv("INNERQ_MMAP", "1", 1), 0);
  {
    const GgufFile f(path);
    check(f);
    EXPECT_FALSE(f.in_huge_pages());
    EXPECT_NE(testing_env::mapping_of(f.get_tensor("big").data).first.find(path),
              std::string::npos);
  }
  ASSERT_EQ(::unsetenv("INNERQ_MMAP"), 0);
  std::remove(path.c_str());
  // Under one huge page: nothing to gain, the mapping stays.
  testing::GgufWriter tiny;
  tiny.set_string("general.architecture", "llama").tensor("small", GgmlType::kF32, {1024}, small);
  const std::string tiny_path = tiny.write("tiny");
  EXPECT_FALSE(GgufFile(tiny_path).in_huge_pages());
  std::remove(tiny_path.c_str());
}

TEST(Gguf, MissingAndEmptyFilesAreErrors) {
  EXPECT_THROW(GgufFile("/nonexistent/model.gguf"), Error);
  EXPECT_THROW(GgufFile(TempFile({}, "empty").path), Error);
  EXPECT_THROW(GgufFile(TempFile({'G', 'G', 'U', 'F'}, "magic_only").path), Error);
  std::vector<char> not_gguf(64, 'x');
  EXPECT_THROW(GgufFile(TempFile(not_gguf, "garbage").path), Error);
}

TEST(Gguf, ErrorNamesTheFile) {
  const TempFile file({'G', 'G', 'U', 'F', 2, 0, 0, 0}, "v2");
  const std::string& path = file.path;
  try {
    GgufFile f(path);
    FAIL() << "version 2 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("version 2"), std::string::npos) << e.what();
  }
}

// Every truncation point inside the header and a spread of points in the data
// section: the reader or the model loader must throw innerq::Error.
TEST(Gguf, TruncatedCopiesThrow) {
  const std::vector<char> bytes = read_all(resolve_model_path("stories260K"));
  ASSERT_EQ(bytes.size(), 1185376u);
  std::vector<size_t> cuts;
  for (size_t n = 0; n < 14176; n += 23) cuts.push_back(n);
  for (size_t n = 14176; n < bytes.size(); n += 117203) cuts.push_back(n);
  cuts.push_back(bytes.size() - 1);
  for (size_t n : cuts) {
    const TempFile file(std::vector<char>(bytes.begin(), bytes.begin() + static_cast<long>(n)),
                        "trunc");
    EXPECT_THROW(LlamaModel{file.path}, Error) << "truncated to " << n << " bytes";
  }
}

// Random byte corruption of the header: loading either succeeds (a harmless
// byte, e.g. inside a token string) or throws innerq::Error.
TEST(Gguf, CorruptedHeadersNeverCrash) {
  const std::vector<char> bytes = read_all(resolve_model_path("stories260K"));
  std::mt19937_64 rng(1234);
  std::uniform_int_distribution<size_t> where(0, 14175);
  std::uniform_int_distribution<int> value(0, 255);
  int errors = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<char> copy = bytes;
    for (int k = 0; k < 1 + trial % 4; ++k) copy[where(rng)] = static_cast<char>(value(rng));
    // Also hit the fields that hold counts, lengths, dims, types and offsets.
    if (trial % 3 == 0) copy[8 + trial % 16] = static_cast<char>(0xFF);
    const TempFile file(copy, "corrupt");
    try {
      LlamaModel model(file.path);
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 100);
}

TEST(Gguf, UnsupportedArchitectureAndTypes) {
  std::vector<char> bytes = read_all(resolve_model_path("stories260K"));
  // general.architecture = "llama" -> "lla.a"
  const std::string key = "general.architecture";
  auto it = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  ASSERT_NE(it, bytes.end());
  std::vector<char> arch = bytes;
  arch[static_cast<size_t>(it - bytes.begin()) + key.size() + 4 + 8 + 3] = '.';
  try {
    LlamaModel m(TempFile(arch, "arch").path);
    FAIL() << "unknown architecture accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("architecture 'lla.a'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace innerq::model
