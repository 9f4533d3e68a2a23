// GGUF reader on small synthetic files: every metadata value type (nested
// arrays included), alignment, each kind of malformed header, and the memory
// a hostile file can make the reader allocate.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/model/gguf.h"

// Every byte this test binary allocates through operator new is counted, so a
// test can measure what parsing a file costs in memory without timing or RSS.
namespace {
std::atomic<uint64_t> g_allocated_bytes{0};
}  // namespace

// GCC pairs the inlined operator new with free() and warns; the pair is right.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(size_t n) {
  g_allocated_bytes.fetch_add(n, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
// The nothrow forms too (std::stable_sort's buffer uses them): every form
// must come from the same malloc/free pair, or AddressSanitizer reports an
// alloc-dealloc mismatch between its own operator new and this delete.
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  g_allocated_bytes.fetch_add(n, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace innerq::model {
namespace {

// Bytes allocated while `f` runs.
template <typename F>
uint64_t bytes_allocated_by(F&& f) {
  const uint64_t before = g_allocated_bytes.load();
  f();
  return g_allocated_bytes.load() - before;
}

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
  const std::vector<uint8_t>& data() const { return bytes_; }
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

  const std::string path = b.write("types");
  const GgufFile f(path);
  std::remove(path.c_str());  // the parsed file keeps its bytes
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
  EXPECT_THROW(arr.array[3], Error);
  EXPECT_THROW(GgufArray()[0], Error);
  const GgufValue& nested = f.get_array("nested", GgufType::kArray);
  ASSERT_EQ(nested.array.size(), 2u);
  EXPECT_EQ(nested.array[1].array[1].s, "c");
  std::string joined;
  for (const GgufValue& inner : nested.array) {
    for (const GgufValue& s : inner.array) joined += std::string(s.s) + ",";
  }
  EXPECT_EQ(joined, "a,b,c,");
  EXPECT_THROW(f.get_array("arr", GgufType::kF32), Error);
  const GgufTensor& t = f.get_tensor("t");
  EXPECT_EQ(reinterpret_cast<const float*>(t.data)[3], 3.0f);
}

TEST(GgufSynthetic, CustomAlignment) {
  GgufBytes b;
  b.header(1, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(64);
  one_tensor(b).pad_to(64);
  for (int i = 0; i < 4; ++i) b.put<float>(1.0f);
  const std::string path = b.write("align");
  const GgufFile f(path);
  std::remove(path.c_str());  // the parsed file keeps its bytes
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
    // F32 data at 4-byte offsets would be misaligned; GGUF asks for multiples of 8.
    GgufBytes b;
    b.header(0, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(4).pad_to(32);
    cases.push_back({"small_align", b, "general.alignment"});
  }
  {
    GgufBytes b;
    b.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(7).put<uint64_t>(2).put<uint8_t>(1);
    b.put<uint8_t>(2);
    cases.push_back({"bool_array", b, "bool value 2"});
  }
  {
    // Two tensors whose data ranges share bytes: [0, 16) and [0, 16).
    GgufBytes b;
    b.header(2, 0);
    one_tensor(b);
    b.str("u").put<uint32_t>(1).put<uint64_t>(4).put<uint32_t>(0).put<uint64_t>(0).pad_to(32);
    for (int i = 0; i < 4; ++i) b.put<float>(1.0f);
    cases.push_back({"overlap", b, "overlap"});
  }
  {
    // [0, 64) and [32, 48): the second starts inside the first.
    GgufBytes b;
    b.header(2, 0);
    one_tensor(b, 0, 16, 0);
    b.str("u").put<uint32_t>(1).put<uint64_t>(4).put<uint32_t>(0).put<uint64_t>(32).pad_to(32);
    for (int i = 0; i < 16; ++i) b.put<float>(1.0f);
    cases.push_back({"overlap_inside", b, "overlap"});
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

// The same bytes parse the same from memory (the fuzz target's path) as from
// the mapped file, and errors name what stands for the path.
TEST(GgufSynthetic, ParsesFromMemory) {
  GgufBytes b;
  b.header(1, 1).str("k").put<uint32_t>(8).str("v");
  one_tensor(b).pad_to(32);
  for (int i = 0; i < 4; ++i) b.put<float>(static_cast<float>(i));
  const std::vector<uint8_t>& bytes = b.data();
  const GgufFile f("in-memory", bytes);
  EXPECT_EQ(f.path(), "in-memory");
  EXPECT_EQ(f.get_string("k"), "v");
  EXPECT_EQ(reinterpret_cast<const float*>(f.get_tensor("t").data)[2], 2.0f);
  const std::vector<uint8_t> cut(bytes.begin(), bytes.end() - 4);
  try {
    GgufFile g("cut-in-memory", cut);
    FAIL() << "truncated bytes accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("cut-in-memory: truncated", 0), 0u) << e.what();
  }
}

// An array that claims 2^40 elements in a file of a few dozen bytes is refused
// by the count check, before anything the size of the claim is allocated.
TEST(GgufSynthetic, HugeArrayCountIsRefusedBeforeAllocating) {
  for (uint32_t elem : {0u, 6u, 8u, 9u}) {  // u8, f32, string, array
    GgufBytes b;
    b.header(0, 1).str("big").put<uint32_t>(9).put<uint32_t>(elem).put<uint64_t>(1ull << 40);
    b.put<uint64_t>(0).put<uint64_t>(0);
    const std::string path = b.write("huge_count");
    const uint64_t used = bytes_allocated_by([&] {
      try {
        GgufFile f(path);
        ADD_FAILURE() << "accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("array 'big' of 1099511627776 elements"),
                  std::string::npos)
            << e.what();
      }
    });
    EXPECT_LT(used, 64u << 10) << "element type " << elem;
    std::remove(path.c_str());
  }
}

// Arrays stay in the file: parsing 100k strings (800 KB) or 1M bytes
// allocates a few KB, not ~80 bytes per element, and the elements read back
// by iteration and index.
TEST(GgufSynthetic, ArraysCostNoMemoryPerElement) {
  constexpr uint64_t kStrings = 100000;
  constexpr uint64_t kBytes = 1000000;
  GgufBytes b;
  b.header(0, 2).str("strings").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(kStrings);
  for (uint64_t j = 0; j < kStrings; ++j) {
    b.put<uint64_t>(j % 2);  // "" and "x" in turn
    if (j % 2 == 1) b.put<uint8_t>('x');
  }
  b.str("bytes").put<uint32_t>(9).put<uint32_t>(0).put<uint64_t>(kBytes);
  for (uint64_t j = 0; j < kBytes; ++j) b.put<uint8_t>(static_cast<uint8_t>(j));
  b.pad_to(32);
  const std::string path = b.write("many");
  std::unique_ptr<GgufFile> f;
  const uint64_t used = bytes_allocated_by([&] { f = std::make_unique<GgufFile>(path); });
  EXPECT_LT(used, 16u << 10);
  const GgufArray& strings = f->get_array("strings", GgufType::kString).array;
  ASSERT_EQ(strings.size(), kStrings);
  uint64_t n_x = 0;
  const uint64_t read_cost = bytes_allocated_by([&] {
    for (const GgufValue& s : strings) n_x += s.s == "x";
  });
  EXPECT_EQ(n_x, kStrings / 2);
  EXPECT_EQ(read_cost, 0u);
  EXPECT_EQ(strings[kStrings - 1].s, "x");
  const GgufArray& bytes = f->get_array("bytes", GgufType::kU8).array;
  ASSERT_EQ(bytes.size(), kBytes);
  EXPECT_EQ(bytes[999999].u, 999999u % 256);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace innerq::model
