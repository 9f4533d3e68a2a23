// innerq/model/gguf.cc — GGUF v3 parsing with every read bounds-checked.
#include "innerq/model/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/base/huge_pages.h"

namespace innerq::model {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr int kMaxDims = 4;                  // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 4;            // arrays of arrays of ... (GGUF allows nesting)

struct TypeLayout {
  int64_t block;  // elements per block
  size_t bytes;   // bytes per block
};

// Storage layout of the ggml types a GGUF may hold; false for unknown ids.
bool ggml_layout(uint32_t id, TypeLayout* layout) {
  switch (static_cast<GgmlType>(id)) {
    case GgmlType::kF32:
      *layout = {1, 4};
      return true;
    case GgmlType::kF16:
      *layout = {1, 2};
      return true;
    case GgmlType::kQ4_0:
      *layout = {32, 18};
      return true;
    case GgmlType::kQ4_1:
      *layout = {32, 20};
      return true;
    case GgmlType::kQ5_0:
      *layout = {32, 22};
      return true;
    case GgmlType::kQ5_1:
      *layout = {32, 24};
      return true;
    case GgmlType::kQ8_0:
      *layout = {32, 34};
      return true;
    case GgmlType::kQ8_1:
      *layout = {32, 36};
      return true;
    case GgmlType::kQ2_K:
      *layout = {256, 84};
      return true;
    case GgmlType::kQ3_K:
      *layout = {256, 110};
      return true;
    case GgmlType::kQ4_K:
      *layout = {256, 144};
      return true;
    case GgmlType::kQ5_K:
      *layout = {256, 176};
      return true;
    case GgmlType::kQ6_K:
      *layout = {256, 210};
      return true;
    case GgmlType::kQ8_K:
      *layout = {256, 292};
      return true;
    case GgmlType::kI8:
      *layout = {1, 1};
      return true;
    case GgmlType::kI16:
      *layout = {1, 2};
      return true;
    case GgmlType::kI32:
      *layout = {1, 4};
      return true;
    case GgmlType::kI64:
      *layout = {1, 8};
      return true;
    case GgmlType::kF64:
      *layout = {1, 8};
      return true;
    case GgmlType::kBF16:
      *layout = {1, 2};
      return true;
  }
  return false;
}

// Checked a·b and a+b on sizes; false on overflow.
bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}
bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_add_overflow(a, b, out);
}

// Sequential reader over [base, base + size) that throws instead of reading
// past the end.
class Cursor {
 public:
  Cursor(const GgufFile& file, const uint8_t* base, size_t size, size_t pos = 0)
      : file_(file), base_(base), size_(size), pos_(pos) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }
  const uint8_t* here() const { return base_ + pos_; }

  void skip(uint64_t n, std::string_view what) {
    need(n, what);
    pos_ += static_cast<size_t>(n);
  }

  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  std::string_view read_string(std::string_view what) {
    const uint64_t n = read<uint64_t>(what);
    need(n, what);
    std::string_view s(reinterpret_cast<const char*>(base_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }

  void need(uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      throw Error(file_.describe(fmt::format("truncated: {} needs {} bytes at offset {}, {} left",
                                             what, n, pos_, remaining())));
    }
  }

 private:
  const GgufFile& file_;
  const uint8_t* base_;
  size_t size_;
  size_t pos_;
};

// Smallest encoded size of one value of `type`, so an array count can be
// checked against the bytes left before anything is allocated.
size_t min_encoded_size(GgufType type) {
  switch (type) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kString:
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
      return 8;
    case GgufType::kArray:
      return 12;
  }
  return 1;
}

// Encoded size of every value of a scalar type; 0 for strings and arrays,
// whose values differ in length.
size_t fixed_size(GgufType type) {
  return type == GgufType::kString || type == GgufType::kArray ? 0 : min_encoded_size(type);
}

bool valid_type(uint32_t t) {
  return t <= static_cast<uint32_t>(GgufType::kF64);
}

bool is_signed(GgufType type) {
  return type == GgufType::kI8 || type == GgufType::kI16 || type == GgufType::kI32 ||
         type == GgufType::kI64;
}

// Reads one value of `type` at the cursor and moves past it. An array is
// checked element by element (nested ones recursively) but not copied: the
// value keeps a view of its bytes, so a hostile count costs no memory.

GgufValue read_value(Cursor& cur, const GgufFile& file, GgufType type, std::string_view key,
                     int depth) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufType::kU8:
      v.u = cur.read<uint8_t>(key);
      break;
    case GgufType::kI8:
      v.i = cur.read<int8_t>(key);
      break;
    case GgufType::kU16:
      v.u = cur.read<uint16_t>(key);
      break;
    case GgufType::kI16:
      v.i = cur.read<int16_t>(key);
      break;
    case GgufType::kU32:
      v.u = cur.read<uint32_t>(key);
      break;
    case GgufType::kI32:
      v.i = cur.read<int32_t>(key);
      break;
    case GgufType::kU64:
      v.u = cur.read<uint64_t>(key);
      break;
    case GgufType::kI64:
      v.i = cur.read<int64_t>(key);
      break;
    case GgufType::kF32:
      v.f = cur.read<float>(key);
      break;
    case GgufType::kF64:
      v.f = cur.read<double>(key);
      break;
    case GgufType::kBool: {
      const uint8_t b = cur.read<uint8_t>(key);
      if (b > 1)
        throw Error(file.describe(fmt::format("key '{}': bool value {} is not 0 or 1", key, b)));
      v.u = b;
      break;
    }
    case GgufType::kString:
      v.s = cur.read_string(key);
      break;
    case GgufType::kArray: {
      if (depth >= kMaxArrayDepth) {
        throw Error(file.describe(
            fmt::format("key '{}': arrays nested deeper than {}", key, kMaxArrayDepth)));
      }
      const uint32_t et = cur.read<uint32_t>(key);
      if (!valid_type(et)) {
        throw Error(file.describe(fmt::format("key '{}': unknown array element type {}", key, et)));
      }
      const GgufType elem = static_cast<GgufType>(et);
      const uint64_t n = cur.read<uint64_t>(key);
      uint64_t min_bytes = 0;
      if (mul_overflows(n, min_encoded_size(elem), &min_bytes)) min_bytes = UINT64_MAX;
      const std::string what = fmt::format("array '{}' of {} elements", key, n);
      cur.need(min_bytes, what);
      const uint8_t* start = cur.here();
      const size_t start_pos = cur.pos();
      if (elem == GgufType::kBool || fixed_size(elem) == 0) {
        for (uint64_t j = 0; j < n; ++j) read_value(cur, file, elem, key, depth + 1);
      } else {
        cur.skip(min_bytes, what);
      }
      v.array = GgufArray(&file, start, cur.pos() - start_pos, n, elem);
      break;
    }
  }
  return v;
}

}  // namespace

const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::kU8:
      return "u8";
    case GgufType::kI8:
      return "i8";
    case GgufType::kU16:
      return "u16";
    case GgufType::kI16:
      return "i16";
    case GgufType::kU32:
      return "u32";
    case GgufType::kI32:
      return "i32";
    case GgufType::kF32:
      return "f32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kU64:
      return "u64";
    case GgufType::kI64:
      return "i64";
    case GgufType::kF64:
      return "f64";
  }
  return "?";
}

const char* ggml_type_name(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return "F32";
    case GgmlType::kF16:
      return "F16";
    case GgmlType::kQ4_0:
      return "Q4_0";
    case GgmlType::kQ4_1:
      return "Q4_1";
    case GgmlType::kQ5_0:
      return "Q5_0";
    case GgmlType::kQ5_1:
      return "Q5_1";
    case GgmlType::kQ8_0:
      return "Q8_0";
    case GgmlType::kQ8_1:
      return "Q8_1";
    case GgmlType::kQ2_K:
      return "Q2_K";
    case GgmlType::kQ3_K:
      return "Q3_K";
    case GgmlType::kQ4_K:
      return "Q4_K";
    case GgmlType::kQ5_K:
      return "Q5_K";
    case GgmlType::kQ6_K:
      return "Q6_K";
    case GgmlType::kQ8_K:
      return "Q8_K";
    case GgmlType::kI8:
      return "I8";
    case GgmlType::kI16:
      return "I16";
    case GgmlType::kI32:
      return "I32";
    case GgmlType::kI64:
      return "I64";
    case GgmlType::kF64:
      return "F64";
    case GgmlType::kBF16:
      return "BF16";
  }
  return "?";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kU16:
    case GgufType::kI16:
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kU64:
    case GgufType::kI64:
      return true;
    default:
      return false;
  }
}

GgufValue GgufArray::decode(size_t pos, size_t* next) const {
  Cursor cur(*file_, data_, n_bytes_, pos);
  GgufValue v = read_value(cur, *file_, elem_type_, "array element", 1);
  *next = cur.pos();
  return v;
}

GgufValue GgufArray::operator[](size_t i) const {
  if (i >= count_) {
    const std::string what = fmt::format("array index {} is out of range (size {})", i, count_);
    throw Error(file_ != nullptr ? file_->describe(what) : what);
  }
  size_t pos = 0;
  if (const size_t stride = fixed_size(elem_type_); stride != 0) {
    pos = i * stride;
  } else {
    for (size_t j = 0; j < i; ++j) decode(pos, &pos);
  }
  return decode(pos, &pos);
}

GgufValue GgufArray::Iterator::operator*() const {
  size_t next = 0;
  return array_.decode(pos_, &next);
}

GgufArray::Iterator& GgufArray::Iterator::operator++() {
  array_.decode(pos_, &pos_);
  ++index_;
  return *this;
}

int64_t GgufTensor::rows() const {
  int64_t r = 1;
  for (size_t d = 1; d < ne.size(); ++d) r *= ne[d];
  return r;
}

GgufFile::GgufFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(describe(fmt::format("cannot open: {}", std::strerror(errno))));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(describe("not a regular file"));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ == 0) {
    ::close(fd);
    throw Error(describe("empty file, not a GGUF model"));
  }
  void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED)
    throw Error(describe(fmt::format("mmap failed: {}", std::strerror(errno))));
  base_ = static_cast<const uint8_t*>(map);
  mapped_ = true;
  try {
    parse();
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(base_), size_);
    throw;
  }
  move_to_huge_pages();
}

// The file was parsed from its mapping, so a malformed file never costs a
// copy. The copy is parsed again (every GgufValue and tensor points into the
// bytes it was parsed from); a copy that cannot be made leaves the mapping.
void GgufFile::move_to_huge_pages() {
  // A file beyond half the memory available stays mapped: its pages can
  // still be evicted and read again, a copy's cannot.
  const char* keep = std::getenv("INNERQ_MMAP");
  if (size_ < kHugePageBytes || !huge_pages_available() ||
      (keep != nullptr && std::strcmp(keep, "1") == 0) || size_ > available_memory_bytes() / 2) {
    return;
  }
  void* copy = map_huge_page_advised(size_);
  if (copy == nullptr) return;
  std::memcpy(copy, base_, size_);
  ::mprotect(copy, size_, PROT_READ);
  ::munmap(const_cast<uint8_t*>(base_), size_);
  base_ = static_cast<const uint8_t*>(copy);
  mapped_ = false;
  huge_ = true;
  metadata_.clear();
  tensors_.clear();
  tensor_index_.clear();
  try {
    parse();  // the same bytes: it succeeded on the mapping
  } catch (...) {
    unmap_pages(copy, size_);  // the constructor throws: ~GgufFile does not run
    throw;
  }
}

// The copy is 16-byte aligned (operator new), and tensor offsets are multiples
// of the alignment (at least 8), so F32 data is aligned as in a mapping.
GgufFile::GgufFile(std::string name, std::span<const uint8_t> bytes)
    : path_(std::move(name)), owned_(bytes.begin(), bytes.end()) {
  if (owned_.empty()) throw Error(describe("empty file, not a GGUF model"));
  base_ = owned_.data();
  size_ = owned_.size();
  parse();
}

uint8_t* GgufFile::unseal() {
  auto* bytes = const_cast<uint8_t*>(base_);
  if (huge_) return ::mprotect(bytes, size_, PROT_READ | PROT_WRITE) == 0 ? bytes : nullptr;
  return mapped_ ? nullptr : owned_.data();
}

void GgufFile::seal() {
  if (huge_) ::mprotect(const_cast<uint8_t*>(base_), size_, PROT_READ);
}

GgufFile::~GgufFile() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(base_), size_);
  if (huge_) unmap_pages(const_cast<uint8_t*>(base_), size_);
}

std::string GgufFile::describe(std::string_view what) const {
  return fmt::format("{}: {}", path_, what);
}

void GgufFile::parse() {
  Cursor cur(*this, base_, size_);
  if (cur.read<uint32_t>("magic") != kGgufMagic)
    throw Error(describe("not a GGUF file (bad magic)"));
  version_ = cur.read<uint32_t>("version");
  if (version_ != 3)
    throw Error(describe(fmt::format("GGUF version {} is not supported (need 3)", version_)));
  const uint64_t n_tensors = cur.read<uint64_t>("tensor count");
  const uint64_t n_kv = cur.read<uint64_t>("metadata count");
  // Each key-value pair takes at least 12 bytes, each tensor record at least 24.
  if (n_kv > cur.remaining() / 12 || n_tensors > cur.remaining() / 24) {
    throw Error(describe(
        fmt::format("header claims {} metadata keys and {} tensors, more than the file can hold",
                    n_kv, n_tensors)));
  }

  // ---- metadata ----
  for (uint64_t j = 0; j < n_kv; ++j) {
    const std::string_view key = cur.read_string("metadata key");
    const uint32_t t = cur.read<uint32_t>(key);
    if (!valid_type(t))
      throw Error(describe(fmt::format("key '{}': unknown value type {}", key, t)));
    GgufValue v = read_value(cur, *this, static_cast<GgufType>(t), key, 0);
    if (!metadata_.emplace(std::string(key), std::move(v)).second) {
      throw Error(describe(fmt::format("duplicate metadata key '{}'", key)));
    }
  }
  // GGUF asks for a multiple of 8, which keeps F32 and F64 data aligned.
  alignment_ = static_cast<size_t>(get_int("general.alignment", 8, 1 << 20, 32));
  if ((alignment_ & (alignment_ - 1)) != 0) {
    throw Error(describe(
        fmt::format("general.alignment {} must be a power of two from 8 to 1 MiB", alignment_)));
  }

  // ---- tensor table ----
  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t j = 0; j < n_tensors; ++j) {
    GgufTensor t;
    t.name = std::string(cur.read_string("tensor name"));
    const uint32_t n_dims = cur.read<uint32_t>(t.name);
    if (n_dims == 0 || n_dims > kMaxDims) {
      throw Error(describe(
          fmt::format("tensor '{}': {} dimensions (allowed 1..{})", t.name, n_dims, kMaxDims)));
    }
    uint64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = cur.read<uint64_t>(t.name);
      if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          mul_overflows(n_el, ne, &n_el) ||
          n_el > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        throw Error(describe(
            fmt::format("tensor '{}': dimension {} = {} is zero or overflows", t.name, d, ne)));
      }
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    t.n_elements = static_cast<int64_t>(n_el);
    const uint32_t type = cur.read<uint32_t>(t.name);
    TypeLayout layout{};
    if (!ggml_layout(type, &layout)) {
      throw Error(describe(fmt::format("tensor '{}': unknown ggml type {}", t.name, type)));
    }
    t.type = static_cast<GgmlType>(type);
    if (t.ne[0] % layout.block != 0) {
      throw Error(describe(
          fmt::format("tensor '{}': row length {} is not a multiple of the {} block size {}",
                      t.name, t.ne[0], ggml_type_name(t.type), layout.block)));
    }
    uint64_t bytes = 0;
    if (mul_overflows(n_el / static_cast<uint64_t>(layout.block), layout.bytes, &bytes)) {
      throw Error(describe(fmt::format("tensor '{}': byte size overflows", t.name)));
    }
    t.n_bytes = static_cast<size_t>(bytes);
    t.offset = static_cast<size_t>(cur.read<uint64_t>(t.name));
    if (t.offset % alignment_ != 0) {
      throw Error(describe(fmt::format("tensor '{}': offset {} is not aligned to {}", t.name,
                                       t.offset, alignment_)));
    }
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) {
      throw Error(describe(fmt::format("duplicate tensor '{}'", t.name)));
    }
    tensors_.push_back(std::move(t));
  }

  // ---- data section ----
  uint64_t data_start = 0;
  if (add_overflows(cur.pos(), alignment_ - 1, &data_start))
    throw Error(describe("data offset overflows"));
  data_start -= data_start % alignment_;
  if (data_start > size_) throw Error(describe("truncated: no room for the tensor data section"));
  const uint64_t data_size = size_ - data_start;
  for (GgufTensor& t : tensors_) {
    uint64_t end = 0;
    if (add_overflows(t.offset, t.n_bytes, &end) || end > data_size) {
      throw Error(describe(
          fmt::format("truncated: tensor '{}' ({} bytes at data offset {}) ends past the file "
                      "({} data bytes)",
                      t.name, t.n_bytes, t.offset, data_size)));
    }
    t.data = base_ + data_start + t.offset;
  }
  // No two tensors may share bytes (a writer never does that; a crafted file
  // would make one tensor's edit change another's values).
  std::vector<const GgufTensor*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const GgufTensor& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (size_t j = 1; j < by_offset.size(); ++j) {
    const GgufTensor& a = *by_offset[j - 1];
    const GgufTensor& b = *by_offset[j];
    if (a.offset + a.n_bytes > b.offset) {
      throw Error(
          describe(fmt::format("tensors '{}' (data bytes {}..{}) and '{}' (from byte {}) overlap",
                               a.name, a.offset, a.offset + a.n_bytes, b.name, b.offset)));
    }
  }
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::string_view GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) throw Error(describe(fmt::format("missing metadata key '{}'", key)));
  if (v->type != GgufType::kString) {
    throw Error(describe(
        fmt::format("metadata key '{}' is {}, expected string", key, gguf_type_name(v->type))));
  }
  return v->s;
}

std::string GgufFile::get_string(std::string_view key, std::string_view fallback) const {
  return std::string(find(key) == nullptr ? fallback : get_string(key));
}

uint64_t GgufFile::get_uint(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) throw Error(describe(fmt::format("missing metadata key '{}'", key)));
  if (!v->is_integer() || v->i < 0) {
    throw Error(describe(fmt::format("metadata key '{}' is not a non-negative integer", key)));
  }
  return v->u != 0 ? v->u : static_cast<uint64_t>(v->i);
}

uint64_t GgufFile::get_uint(std::string_view key, uint64_t fallback) const {
  return find(key) == nullptr ? fallback : get_uint(key);
}

int64_t GgufFile::get_int(std::string_view key, int64_t lo, int64_t hi) const {
  const GgufValue* v = find(key);
  if (v == nullptr) throw Error(describe(fmt::format("missing metadata key '{}'", key)));
  if (!v->is_integer()) {
    throw Error(describe(
        fmt::format("metadata key '{}' is {}, expected an integer", key, gguf_type_name(v->type))));
  }
  if (is_signed(v->type)) {
    if (v->i >= lo && v->i <= hi) return v->i;
    throw Error(describe(
        fmt::format("metadata key '{}' = {} is out of range [{}, {}]", key, v->i, lo, hi)));
  }
  const bool above_lo = lo <= 0 || v->u >= static_cast<uint64_t>(lo);
  const bool below_hi = hi >= 0 && v->u <= static_cast<uint64_t>(hi);
  if (above_lo && below_hi) return static_cast<int64_t>(v->u);
  throw Error(
      describe(fmt::format("metadata key '{}' = {} is out of range [{}, {}]", key, v->u, lo, hi)));
}

int64_t GgufFile::get_int(std::string_view key, int64_t lo, int64_t hi, int64_t fallback) const {
  return find(key) == nullptr ? fallback : get_int(key, lo, hi);
}

double GgufFile::get_float(std::string_view key, double fallback) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return fallback;
  if (v->is_float()) return v->f;
  throw Error(describe(
      fmt::format("metadata key '{}' is {}, expected a float", key, gguf_type_name(v->type))));
}

bool GgufFile::get_bool(std::string_view key, bool fallback) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return fallback;
  if (v->type != GgufType::kBool) {
    throw Error(describe(
        fmt::format("metadata key '{}' is {}, expected bool", key, gguf_type_name(v->type))));
  }
  return v->u != 0;
}

const GgufValue& GgufFile::get_array(std::string_view key, GgufType elem_type) const {
  const GgufValue* v = find(key);
  if (v == nullptr) throw Error(describe(fmt::format("missing metadata key '{}'", key)));
  if (v->type != GgufType::kArray || v->array.elem_type() != elem_type) {
    throw Error(describe(
        fmt::format("metadata key '{}' is not an array of {}", key, gguf_type_name(elem_type))));
  }
  return *v;
}

const GgufTensor& GgufFile::get_tensor(std::string_view name) const {
  const GgufTensor* t = find_tensor(name);
  if (t == nullptr) throw Error(describe(fmt::format("missing tensor '{}'", name)));
  return *t;
}

}  // namespace innerq::model
