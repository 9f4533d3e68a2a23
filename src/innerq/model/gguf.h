// innerq/model/gguf.h — a read-only GGUF v3 file over mmap: metadata, tensor
// table and tensor data.
//
// Layout (all little-endian):
//   "GGUF" u32 version u64 n_tensors u64 n_kv
//   n_kv     × { string key, u32 type, value }
//   n_tensors × { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   padding to `general.alignment` (default 32), then the tensor data; each
//   tensor's offset is relative to the data start and aligned.
// A string is u64 length + bytes; an array is u32 element type + u64 count +
// elements. Every length, count, offset and size is checked against the file
// before use, tensor data ranges may not overlap, and anything malformed
// throws innerq::Error naming the file. Nothing is allocated per array
// element: arrays stay views into the file (docs/architecture.md, "GGUF
// files").
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace innerq::model {

enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

const char* gguf_type_name(GgufType type);

struct GgufValue;
class GgufFile;

// A metadata array, kept as a view of its encoded elements inside the file:
// each element is decoded when it is read, so an array costs a few words of
// memory whatever its length (docs/architecture.md, "GGUF files"). The parser
// has already checked every element, so reading one never fails.
class GgufArray {
 public:
  class Iterator;

  GgufArray() = default;
  // `count` elements of `elem_type` encoded in [data, data + n_bytes) of
  // `file`, every one already checked by the parser.
  GgufArray(const GgufFile* file, const uint8_t* data, size_t n_bytes, uint64_t count,
            GgufType elem_type)
      : file_(file), data_(data), n_bytes_(n_bytes), count_(count), elem_type_(elem_type) {}

  GgufType elem_type() const { return elem_type_; }
  size_t size() const { return static_cast<size_t>(count_); }
  bool empty() const { return count_ == 0; }
  // Forward iteration in file order; each element is decoded on dereference.
  Iterator begin() const;
  Iterator end() const;

  // Element i, in O(1) for fixed-size elements (numbers, bools). Strings and
  // nested arrays have no fixed stride, so element i is found by stepping over
  // the i before it: read those arrays by iterating.
  GgufValue operator[](size_t i) const;

 private:
  // The element at byte offset pos; *next is set past it.
  GgufValue decode(size_t pos, size_t* next) const;

  const GgufFile* file_ = nullptr;  // names the file if a read ever fails
  const uint8_t* data_ = nullptr;   // the first element's encoding
  size_t n_bytes_ = 0;              // encoded size of all elements
  uint64_t count_ = 0;
  GgufType elem_type_ = GgufType::kU8;
};

// Holds a copy of the view (not a pointer to it), so it stays valid when the
// GgufValue it came from was a temporary.
class GgufArray::Iterator {
 public:
  using iterator_category = std::forward_iterator_tag;
  using value_type = GgufValue;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = GgufValue;

  Iterator() = default;
  Iterator(const GgufArray& array, size_t pos, uint64_t index)
      : array_(array), pos_(pos), index_(index) {}
  GgufValue operator*() const;
  Iterator& operator++();
  Iterator operator++(int) {
    Iterator before = *this;
    ++*this;
    return before;
  }
  bool operator==(const Iterator& other) const { return index_ == other.index_; }

 private:
  GgufArray array_;
  size_t pos_ = 0;  // byte offset of element index_ from the array's first
  uint64_t index_ = 0;
};

inline GgufArray::Iterator GgufArray::begin() const {
  return Iterator(*this, 0, 0);
}
inline GgufArray::Iterator GgufArray::end() const {
  return Iterator(*this, n_bytes_, count_);
}

// One metadata value. Scalars keep their value in the widest field of their
// kind (u for unsigned and bool, i for signed, f for floats); strings and
// arrays point into the file.
struct GgufValue {
  GgufType type = GgufType::kU8;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  std::string_view s;
  GgufArray array;  // arrays only

  bool is_integer() const;
  bool is_float() const { return type == GgufType::kF32 || type == GgufType::kF64; }
};

// ggml tensor storage types (the ids are ggml's).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

const char* ggml_type_name(GgmlType type);

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the contiguous (row) dimension
  int64_t n_elements = 0;
  size_t offset = 0;  // from the start of the data section
  size_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the mapping

  int64_t rows() const;  // product of ne[1..]
};

class GgufFile {
 public:
  // Maps the file read-only and parses it. Then, when the file holds at
  // least one 2 MiB page, takes at most half the available memory and the
  // kernel offers transparent huge pages (unless INNERQ_MMAP=1), its bytes
  // move to anonymous memory in 2 MiB pages and the copy is parsed again: a decode step reads every
  // weight, and with 4 KiB pages each page costs a TLB miss (docs/architecture.md, "Weight
  // memory").
  explicit GgufFile(const std::string& path);
  // Parses a copy of `bytes` (tests and the fuzz target); `name` stands for
  // the path in messages. The same parser as for a mapped file.
  GgufFile(std::string name, std::span<const uint8_t> bytes);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  size_t file_size() const { return size_; }
  // Where the bytes live: huge-page-advised anonymous memory, or the file's
  // mapping (or a from-memory copy).
  bool in_huge_pages() const { return huge_; }

  // The bytes as writable memory where they are this process's own copy (in
  // huge pages, or parsed from memory), so that a model can rewrite its
  // weights in place (model/weights.h, PackedWeights); nullptr for a mapping
  // of the file, which stays read-only. seal() makes a huge-page copy
  // read-only again.
  uint8_t* unseal();
  void seal();

  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return metadata_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }

  // nullptr when absent.
  const GgufValue* find(std::string_view key) const;
  const GgufTensor* find_tensor(std::string_view name) const;

  // Typed accessors; they throw innerq::Error naming the file and the key when
  // the key is missing (unless a default is given) or has the wrong type.
  std::string_view get_string(std::string_view key) const;
  std::string get_string(std::string_view key, std::string_view fallback) const;
  uint64_t get_uint(std::string_view key) const;
  uint64_t get_uint(std::string_view key, uint64_t fallback) const;
  // An integer in [lo, hi], checked in the type it is stored as (a u64 of
  // 2^32 + 2 is out of range, never 2); the error names the key and range.
  int64_t get_int(std::string_view key, int64_t lo, int64_t hi) const;
  int64_t get_int(std::string_view key, int64_t lo, int64_t hi, int64_t fallback) const;
  double get_float(std::string_view key, double fallback) const;
  bool get_bool(std::string_view key, bool fallback) const;
  const GgufValue& get_array(std::string_view key, GgufType elem_type) const;
  const GgufTensor& get_tensor(std::string_view name) const;

  // "<path>: <what>" — the prefix every error about this file carries.
  std::string describe(std::string_view what) const;

 private:
  void parse();
  void move_to_huge_pages();

  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;         // base_ is an mmap of the file, else owned_
  bool huge_ = false;           // base_ is an anonymous copy of size_ bytes
  std::vector<uint8_t> owned_;  // the copy a from-memory file parses
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace innerq::model
