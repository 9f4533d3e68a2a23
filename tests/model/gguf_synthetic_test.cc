// GGUF reader on small synthetic files: every metadata value type (nested
// arrays included), alignment, and each kind of malformed header.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/model/gguf.h"

namespace innerq::model {
namespace {

// Little-endian GGUF bytes, written field by field.
class GgufBytes {
 public:
  template <typename T>
  GgufBytes& put(T v) {
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
    return *this;
  }
  GgufBytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  GgufBytes& header(uint64_t n_tensors, uint64_t n_kv) {
    return put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  }
  GgufBytes& pad_to(size_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(0);
    return *this;
  }
  std::string write(const std::string& tag) const {
    // The pid keeps concurrent test processes (ctest -j) apart.
    const std::string path =
        ::testing::TempDir() + "innerq_synth_" + std::to_string(getpid()) + "_" + tag + ".gguf";
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes_.data()),
               static_cast<std::streamsize>(bytes_.size()));
    return path;
  }

 private:
  std::vector<uint8_t> bytes_;
};

// One F32 tensor "t" [4] at data offset 0, with 16 bytes of data.
GgufBytes& one_tensor(GgufBytes& b, uint32_t type = 0, uint64_t ne0 = 4, uint64_t offset = 0) {
  return b.str("t").put<uint32_t>(1).put<uint64_t>(ne0).put<uint32_t>(type).put<uint64_t>(offset);
}

TEST(GgufSynthetic, EveryValueType) {
  GgufBytes b;
  b.header(1, 14);
  b.str("u8").put<uint32_t>(0).put<uint8_t>(200);
  b.str("i8").put<uint32_t>(1).put<int8_t>(-5);
  b.str("u16").put<uint32_t>(2).put<uint16_t>(60000);
  b.str("i16").put<uint32_t>(3).put<int16_t>(-30000);
  b.str("u32").put<uint32_t>(4).put<uint32_t>(4000000000u);
  b.str("i32").put<uint32_t>(5).put<int32_t>(-7);
  b.str("f32").put<uint32_t>(6).put<float>(1.5f);
  b.str("bool").put<uint32_t>(7).put<uint8_t>(1);
  b.str("str").put<uint32_t>(8).str("héllo");
  b.str("u64").put<uint32_t>(10).put<uint64_t>(1ull << 40);
  b.str("i64").put<uint32_t>(11).put<int64_t>(-(1ll << 40));
  b.str("f64").put<uint32_t>(12).put<double>(0.25);
  b.str("arr")
      .put<uint32_t>(9)
      .put<uint32_t>(5)
      .put<uint64_t>(3)
      .put<int32_t>(1)
      .put<int32_t>(2)
      .put<int32_t>(3);
  // [[ "a" ], [ "b", "c" ]]
  b.str("nested").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(2);
  b.put<uint32_t>(8).put<uint64_t>(1).str("a");
  b.put<uint32_t>(8).put<uint64_t>(2).str("b").str("c");
  one_tensor(b).pad_to(32);
  for (int i = 0; i < 4; ++i) b.put<float>(static_cast<float>(i));

  const GgufFile f(b.write("types"));
  EXPECT_EQ(f.get_uint("u8"), 200u);
  EXPECT_EQ(f.find("i8")->i, -5);
  EXPECT_EQ(f.get_uint("u16"), 60000u);
  EXPECT_EQ(f.find("i16")->i, -30000);
  EXPECT_EQ(f.get_uint("u32"), 4000000000u);
  EXPECT_THROW(f.get_uint("i32"), Error);  // negative
  EXPECT_EQ(f.get_float("f32", 0), 1.5);
  EXPECT_TRUE(f.get_bool("bool", false));
  EXPECT_EQ(f.get_string("str"), "héllo");
  EXPECT_EQ(f.get_uint("u64"), 1ull << 40);
  EXPECT_EQ(f.find("i64")->i, -(1ll << 40));
  EXPECT_EQ(f.get_float("f64", 0), 0.25);
  const GgufValue& arr = f.get_array("arr", GgufType::kI32);
  ASSERT_EQ(arr.array.size(), 3u);
  EXPECT_EQ(arr.array[2].i, 3);
  const GgufValue& nested = f.get_array("nested", GgufType::kArray);
  ASSERT_EQ(nested.array.size(), 2u);
  EXPECT_EQ(nested.array[1].array[1].s, "c");
  EXPECT_THROW(f.get_array("arr", GgufType::kF32), Error);
  const GgufTensor& t = f.get_tensor("t");
  EXPECT_EQ(reinterpret_cast<const float*>(t.data)[3], 3.0f);
}

TEST(GgufSynthetic, CustomAlignment) {
  GgufBytes b;
  b.header(1, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(64);
  one_tensor(b).pad_to(64);
  for (int i = 0; i < 4; ++i) b.put<float>(1.0f);
  const GgufFile f(b.write("align"));
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.get_tensor("t").data) % 64, 0u);
}

// Each malformed header throws innerq::Error whose message names the problem.
TEST(GgufSynthetic, MalformedHeadersThrow) {
  struct Bad {
    const char* tag;
    GgufBytes bytes;
    const char* message;
  };
  std::vector<Bad> cases;
  {
    GgufBytes b;
    b.header(0, 1).str("k").put<uint32_t>(13).put<uint32_t>(0);
    cases.push_back({"value_type", b, "unknown value type 13"});
  }
  {
    GgufBytes b;
    b.header(0, 2)
        .str("k")
        .put<uint32_t>(4)
        .put<uint32_t>(1)
        .str("k")
        .put<uint32_t>(4)
        .put<uint32_t>(2);
    cases.push_back({"dup_key", b, "duplicate metadata key 'k'"});
  }
  {
    GgufBytes b;
    b.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(1ull << 60);
    cases.push_back({"huge_array", b, "truncated"});
  }
  {
    GgufBytes b;
    b.header(0, 1).str("k").put<uint32_t>(8).put<uint64_t>(~0ull);
    cases.push_back({"huge_string", b, "truncated"});
  }
  {
    GgufBytes b;
    b.header(0, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(48);
    cases.push_back({"bad_align", b, "power of two"});
  }
  {
    GgufBytes b;
    b.header(1, 0);
    one_tensor(b, 99).pad_to(32);
    cases.push_back({"tensor_type", b, "unknown ggml type 99"});
  }
  {
    GgufBytes b;
    b.header(1, 0).str("t").put<uint32_t>(2).put<uint64_t>(1ull << 40).put<uint64_t>(1ull << 40);
    b.put<uint32_t>(0).put<uint64_t>(0);
    cases.push_back({"overflow", b, "overflows"});
  }
  {
    GgufBytes b;
    b.header(1, 0).str("t").put<uint32_t>(5);
    for (int i = 0; i < 6; ++i) b.put<uint64_t>(1);
    cases.push_back({"dims", b, "5 dimensions"});
  }
  {
    GgufBytes b;
    b.header(1, 0);
    one_tensor(b, 8, 40).pad_to(32);  // Q8_0 needs multiples of 32
    cases.push_back({"block", b, "not a multiple"});
  }
  {
    GgufBytes b;
    b.header(1, 0);
    one_tensor(b, 0, 4, 7).pad_to(32);
    cases.push_back({"misaligned", b, "not aligned"});
  }
  {
    GgufBytes b;
    b.header(1, 0);
    one_tensor(b, 0, 4, 0).pad_to(32);
    b.put<float>(1.0f);  // 4 of 16 bytes
    cases.push_back({"short_data", b, "ends past the file"});
  }
  {
    GgufBytes b;
    b.header(2, 0);
    one_tensor(b);
    one_tensor(b).pad_to(32);
    for (int i = 0; i < 4; ++i) b.put<float>(1.0f);
    cases.push_back({"dup_tensor", b, "duplicate tensor 't'"});
  }
  {
    GgufBytes b;
    b.header(~0ull >> 1, 0);
    cases.push_back({"tensor_count", b, "more than the file can hold"});
  }
  for (const Bad& c : cases) {
    const std::string path = c.bytes.write(c.tag);
    try {
      GgufFile f(path);
      ADD_FAILURE() << c.tag << ": accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(c.message), std::string::npos) << c.tag << ": " << what;
      EXPECT_EQ(what.rfind(path, 0), 0u) << c.tag << ": " << what;
    }
    std::remove(path.c_str());
  }
}

}  // namespace
}  // namespace innerq::model
