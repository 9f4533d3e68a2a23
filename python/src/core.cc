// innerq._core — the Python binding of innerq's C ABI (include/innerq/innerq.h),
// with nanobind. Arrays come in as anything nanobind reads without a copy
// (numpy, or torch and others through DLPack) in float32, float16 or
// bfloat16 with any strides but a contiguous last axis; results come back as
// numpy arrays or go into an `out` array of the caller's. Compute runs with
// the GIL released; calls on one pool (its sequences) or one model take
// that object's lock, so threads sharing them queue instead of racing.
// The Python-facing API (innerq/__init__.py) builds on these classes.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include "innerq/innerq.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// ---------------------------------------------------------------------------
// Errors: a failed call raises, by status, ValueError (bad argument),
// PoolFullError, OSError (files), NotImplementedError, MemoryError or
// RuntimeError, with innerq_last_error()'s message.
// ---------------------------------------------------------------------------
struct StatusError : std::runtime_error {
  StatusError(innerq_status s, const std::string& m) : std::runtime_error(m), status(s) {}
  innerq_status status;
};

PyObject* pool_full_error = nullptr;  // innerq.PoolFullError, made at import

void check(innerq_status s) {
  if (s != INNERQ_OK) throw StatusError(s, innerq_last_error());
}

[[noreturn]] void value_error(const std::string& message) {
  throw nb::value_error(message.c_str());
}

void translate(const std::exception_ptr& p, void*) {
  try {
    std::rethrow_exception(p);
  } catch (const StatusError& e) {
    PyObject* type = PyExc_RuntimeError;
    switch (e.status) {
      case INNERQ_ERROR_INVALID_ARGUMENT:
      case INNERQ_ERROR_BUFFER_TOO_SMALL:
        type = PyExc_ValueError;
        break;
      case INNERQ_ERROR_POOL_FULL:
        type = pool_full_error;
        break;
      case INNERQ_ERROR_IO:
        type = PyExc_OSError;
        break;
      case INNERQ_ERROR_UNSUPPORTED:
        type = PyExc_NotImplementedError;
        break;
      case INNERQ_ERROR_OUT_OF_MEMORY:
        type = PyExc_MemoryError;
        break;
      default:
        break;
    }
    PyErr_SetString(type, e.what());
  }
}

// ---------------------------------------------------------------------------
// Arrays
// ---------------------------------------------------------------------------
using AnyArray = nb::ndarray<nb::ro>;  // read: any dtype, device, strides
using OutArray = nb::ndarray<>;        // written: must be writable
using F32Out = nb::ndarray<nb::numpy, float>;

const char* dtype_name(nb::dlpack::dtype d) {
  if (d == nb::dtype<float>()) return "float32";
  if (d == nb::dtype<double>()) return "float64";
  if (d.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float) && d.bits == 16)
    return "float16";
  if (d.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat)) return "bfloat16";
  if (d.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Int)) return "an integer type";
  if (d.code == static_cast<uint8_t>(nb::dlpack::dtype_code::UInt)) return "an unsigned type";
  return "an unsupported type";
}

std::string shape_string(const nb::ndarray<nb::ro>& a) {
  std::string s = "[";
  for (size_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + "]";
}

// `obj` as an array of `dims` (-1: any length), with dims' names for the
// message; the last axis contiguous. Returns the view of its first elements.
template <typename Array>
Array as_array(nb::handle obj, const char* name, std::initializer_list<int64_t> dims,
               std::initializer_list<const char*> dim_names) {
  Array a;
  if (!nb::try_cast(obj, a, false)) {
    const std::string type = nb::type_name(obj.type()).c_str();
    if constexpr (std::is_same_v<Array, OutArray>) {
      AnyArray ro;
      if (nb::try_cast(obj, ro, false)) value_error(std::string(name) + ": the array is read-only");
    }
    value_error(std::string(name) + ": expected an array (numpy, torch, or anything with " +
                "__dlpack__), got " + type);
  }
  if (a.device_type() != nb::device::cpu::value) {
    value_error(std::string(name) + ": the array is not in CPU memory (device type " +
                std::to_string(a.device_type()) + "); innerq's Python API reads CPU arrays");
  }
  std::string expected = "[";
  size_t i = 0;
  for (const char* n : dim_names) expected += (i++ ? ", " : "") + std::string(n);
  expected += "]";
  const AnyArray view(a);
  if (a.ndim() != dims.size()) {
    value_error(std::string(name) + ": shape " + shape_string(view) + " has " +
                std::to_string(a.ndim()) + " axes; expected " + expected);
  }
  i = 0;
  for (int64_t d : dims) {
    if (d >= 0 && static_cast<int64_t>(a.shape(i)) != d) {
      value_error(std::string(name) + ": shape " + shape_string(view) + " is not " + expected +
                  " (axis " + std::to_string(i) + " must be " + std::to_string(d) + ")");
    }
    ++i;
  }
  const nb::dlpack::dtype t = a.dtype();
  const bool f32 = t == nb::dtype<float>();
  const bool f16 =
      t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float) && t.bits == 16 && t.lanes == 1;
  const bool bf16 = t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat) &&
                    t.bits == 16 && t.lanes == 1;
  if (!f32 && !f16 && !bf16) {
    value_error(std::string(name) + ": dtype " + dtype_name(t) +
                " is not float32, float16 or bfloat16");
  }
  if (a.ndim() > 0 && a.shape(a.ndim() - 1) > 1 && a.stride(a.ndim() - 1) != 1) {
    value_error(std::string(name) + ": the last axis must be contiguous (stride " +
                std::to_string(a.stride(a.ndim() - 1)) +
                "); pass a contiguous copy (numpy.ascontiguousarray, tensor.contiguous())");
  }
  return a;
}

innerq_dtype c_dtype(nb::dlpack::dtype t) {
  if (t == nb::dtype<float>()) return INNERQ_DTYPE_F32;
  return t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat) ? INNERQ_DTYPE_BF16
                                                                        : INNERQ_DTYPE_F16;
}

// The C view of a 3-D array [i, j, c], or of a 4-D one at a[b] ([b, i, j, c]).
template <typename Array>
innerq_view c_view(const Array& a, int64_t b = -1) {
  const size_t off = b >= 0 ? 1 : 0;
  const size_t item = a.itemsize();
  innerq_view v;
  v.dtype = c_dtype(a.dtype());
  v.data = static_cast<uint8_t*>(const_cast<void*>(static_cast<const void*>(a.data()))) +
           (b >= 0 ? b * a.stride(0) * static_cast<int64_t>(item) : 0);
  v.stride[0] = a.stride(off);
  v.stride[1] = a.stride(off + 1);
  return v;
}

F32Out new_f32(std::vector<size_t> shape) {
  size_t n = 1;
  for (size_t d : shape) n *= d;
  float* data = new float[n == 0 ? 1 : n];
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  return F32Out(data, shape.size(), shape.data(), owner);
}

// ---------------------------------------------------------------------------
// Handles
// ---------------------------------------------------------------------------
struct PoolHandle {
  innerq_pool* pool = nullptr;
  innerq_shape shape{};
  std::vector<int32_t> window;
  std::string spec;
  std::mutex mu;  // one call at a time on the pool and its sequences
  ~PoolHandle() { innerq_pool_free(pool); }
};

struct Spec {
  std::shared_ptr<innerq_spec> spec;
  std::string text;
  explicit Spec(const std::string& t) : text(t) {
    innerq_spec* s = nullptr;
    check(innerq_spec_parse(t.c_str(), &s));
    spec.reset(s, innerq_spec_free);
  }
  std::string describe(std::optional<int> layer, std::optional<int> n_layers) const {
    if (layer.has_value() != n_layers.has_value()) {
      value_error("describe: give layer and n_layers together");
    }
    size_t len = 0;
    std::string buf(256, '\0');
    innerq_status s = innerq_spec_describe(spec.get(), layer.value_or(-1), n_layers.value_or(0),
                                           buf.data(), buf.size(), &len);
    if (s == INNERQ_ERROR_BUFFER_TOO_SMALL) {
      buf.resize(len + 1);
      s = innerq_spec_describe(spec.get(), layer.value_or(-1), n_layers.value_or(0), buf.data(),
                               buf.size(), &len);
    }
    check(s);
    buf.resize(len);
    return buf;
  }
};

Spec spec_of(nb::handle obj) {
  if (nb::isinstance<Spec>(obj)) return nb::cast<Spec>(obj);
  if (nb::isinstance<nb::str>(obj)) return Spec(nb::cast<std::string>(obj));
  value_error("kv: expected a spec string such as 'innerq' or an innerq.CacheSpec, got " +
              std::string(nb::type_name(obj.type()).c_str()));
}

innerq_shape shape_from(int n_layers, int kv_heads, int head_dim, int max_tokens,
                        const std::optional<std::vector<int32_t>>& windows,
                        std::vector<int32_t>& storage) {
  innerq_shape s{n_layers, kv_heads, head_dim, max_tokens, nullptr};
  if (windows) {
    if (static_cast<int>(windows->size()) != n_layers) {
      value_error("windows: " + std::to_string(windows->size()) + " entries for " +
                  std::to_string(n_layers) + " layers");
    }
    storage = *windows;
    s.window = storage.data();
  }
  return s;
}

nb::dict plan_dict(const innerq_plan& p) {
  nb::dict d;
  d["bytes"] = p.bytes;
  d["sequence_bytes"] = p.sequence_bytes;
  d["block_bytes"] = p.block_bytes;
  d["blocks"] = p.blocks;
  d["block_tokens"] = p.block_tokens;
  d["f16_bytes"] = p.f16_bytes;
  return d;
}

class Sequence;

class Pool {
 public:
  Pool(nb::handle kv, int n_layers, int kv_heads, int head_dim, int max_tokens, int max_seqs,
       uint64_t budget, std::optional<std::vector<int32_t>> windows)
      : h_(std::make_shared<PoolHandle>()) {
    const Spec spec = spec_of(kv);
    h_->spec = spec.text;
    h_->shape = shape_from(n_layers, kv_heads, head_dim, max_tokens, windows, h_->window);
    check(innerq_pool_create(spec.spec.get(), &h_->shape, max_seqs, budget, &h_->pool));
  }
  const std::shared_ptr<PoolHandle>& handle() const { return h_; }
  nb::dict stats() const {
    innerq_pool_stats s;
    {
      std::lock_guard<std::mutex> lock(h_->mu);
      check(innerq_pool_stats_get(h_->pool, &s));
    }
    nb::dict d;
    d["bytes"] = s.bytes;
    d["blocks"] = s.blocks;
    d["free_blocks"] = s.free_blocks;
    d["sequences"] = s.n_seqs;
    d["max_sequences"] = s.max_seqs;
    d["scratch_bytes"] = s.scratch_bytes;
    return d;
  }
  void release_scratch() {
    std::lock_guard<std::mutex> lock(h_->mu);
    innerq_pool_release_scratch(h_->pool);
  }

 private:
  std::shared_ptr<PoolHandle> h_;
};

class Sequence {
 public:
  Sequence(std::shared_ptr<PoolHandle> pool, innerq_seq* seq) : pool_(std::move(pool)), seq_(seq) {}
  explicit Sequence(const Pool& pool) : pool_(pool.handle()) {
    std::lock_guard<std::mutex> lock(pool_->mu);
    check(innerq_seq_create(pool_->pool, &seq_));
  }
  ~Sequence() {
    std::lock_guard<std::mutex> lock(pool_->mu);
    innerq_seq_free(seq_);
  }
  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;

  innerq_seq* get() const { return seq_; }
  const std::shared_ptr<PoolHandle>& pool() const { return pool_; }
  int64_t n_tokens() const { return innerq_seq_n_tokens(seq_); }

  void append(int layer, nb::handle k, nb::handle v) {
    const int H = pool_->shape.n_kv_heads, D = pool_->shape.head_dim;
    const auto ka = as_array<AnyArray>(k, "k", {-1, H, D}, {"tokens", "kv_heads", "head_dim"});
    const auto va = as_array<AnyArray>(v, "v", {-1, H, D}, {"tokens", "kv_heads", "head_dim"});
    if (ka.shape(0) != va.shape(0)) {
      value_error("k and v hold " + std::to_string(ka.shape(0)) + " and " +
                  std::to_string(va.shape(0)) + " tokens");
    }
    const innerq_view kv = c_view(ka), vv = c_view(va);
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(pool_->mu);
    check(innerq_append(&seq_, 1, layer, &kv, &vv, static_cast<int32_t>(ka.shape(0))));
  }

  nb::object attend(int layer, nb::handle q, float scale, nb::handle out) {
    const int D = pool_->shape.head_dim;
    const auto qa = as_array<AnyArray>(q, "q", {-1, D}, {"n_heads", "head_dim"});
    const int n_heads = static_cast<int>(qa.shape(0));
    return run_attention(out, {static_cast<size_t>(n_heads), static_cast<size_t>(D)},
                         [&](const innerq_view& ov) {
                           innerq_view qv = c_view(qa);
                           qv.stride[1] = qv.stride[0];
                           qv.stride[0] = 0;
                           innerq_view o = ov;
                           check(innerq_attend(&seq_, 1, layer, &qv, n_heads, scale, &o));
                         });
  }

  nb::object attend_chunk(int layer, nb::handle q, int64_t n_visible, float scale, nb::handle out) {
    const int D = pool_->shape.head_dim;
    const auto qa = as_array<AnyArray>(q, "q", {-1, -1, D}, {"n_q", "n_heads", "head_dim"});
    const int n_q = static_cast<int>(qa.shape(0)), n_heads = static_cast<int>(qa.shape(1));
    return run_attention(
        out, {static_cast<size_t>(n_q), static_cast<size_t>(n_heads), static_cast<size_t>(D)},
        [&](const innerq_view& ov) {
          const innerq_view qv = c_view(qa);
          check(innerq_attend_chunk(seq_, layer, &qv, n_q, n_heads, n_visible, scale, &ov));
        });
  }

  // out: None (a new float32 array) or the caller's array of `shape`.
  template <typename F>
  nb::object run_attention(nb::handle out, std::vector<size_t> shape, F&& call) {
    std::initializer_list<int64_t> dims2 = {static_cast<int64_t>(shape[0]),
                                            static_cast<int64_t>(shape.back())};
    nb::object result;
    OutArray oa;
    if (out.is_none()) {
      F32Out fresh = new_f32(shape);
      result = nb::cast(fresh);
      oa = nb::cast<OutArray>(result);
    } else {
      if (shape.size() == 2) {
        oa = as_array<OutArray>(out, "out", dims2, {"n_heads", "head_dim"});
      } else {
        oa = as_array<OutArray>(out, "out",
                                {static_cast<int64_t>(shape[0]), static_cast<int64_t>(shape[1]),
                                 static_cast<int64_t>(shape[2])},
                                {"n_q", "n_heads", "head_dim"});
      }
      result = nb::borrow(out);
    }
    innerq_view ov = c_view(oa);
    if (shape.size() == 2) {
      ov.stride[1] = ov.stride[0];
      ov.stride[0] = 0;
    }
    {
      nb::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(pool_->mu);
      call(ov);
    }
    return result;
  }

  std::unique_ptr<Sequence> fork() const {
    std::lock_guard<std::mutex> lock(pool_->mu);
    innerq_seq* s = nullptr;
    check(innerq_seq_fork(seq_, &s));
    return std::make_unique<Sequence>(pool_, s);
  }
  void truncate(int64_t n) {
    std::lock_guard<std::mutex> lock(pool_->mu);
    check(innerq_seq_truncate(seq_, n));
  }
  void save(const std::string& path) const {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(pool_->mu);
    check(innerq_seq_save(seq_, path.c_str()));
  }
  void load(const std::string& path) {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(pool_->mu);
    check(innerq_seq_load(seq_, path.c_str()));
  }
  void clear() {
    std::lock_guard<std::mutex> lock(pool_->mu);
    check(innerq_seq_clear(seq_));
  }
  nb::dict memory() const {
    innerq_memory m;
    {
      std::lock_guard<std::mutex> lock(pool_->mu);
      check(innerq_seq_memory(seq_, &m));
    }
    nb::dict d;
    d["codes"] = m.codes;
    d["metadata"] = m.metadata;
    d["windows"] = m.windows;
    d["norm"] = m.norm;
    d["total"] = m.total;
    d["reserved"] = m.reserved;
    d["f16_bytes"] = m.f16_bytes;
    return d;
  }
  std::tuple<F32Out, F32Out, int64_t> dequantize(int layer) const {
    std::lock_guard<std::mutex> lock(pool_->mu);
    int64_t n = 0, first = 0;
    check(innerq_seq_dequantize(seq_, layer, nullptr, nullptr, &n, &first));
    const size_t H = static_cast<size_t>(pool_->shape.n_kv_heads);
    const size_t D = static_cast<size_t>(pool_->shape.head_dim);
    F32Out k = new_f32({H, static_cast<size_t>(n), D}), v = new_f32({H, static_cast<size_t>(n), D});
    innerq_view kv = innerq_view_packed(k.data(), INNERQ_DTYPE_F32, n, static_cast<int64_t>(D));
    innerq_view vv = innerq_view_packed(v.data(), INNERQ_DTYPE_F32, n, static_cast<int64_t>(D));
    {
      nb::gil_scoped_release release;
      check(innerq_seq_dequantize(seq_, layer, &kv, &vv, &n, &first));
    }
    return {k, v, first};
  }

 private:
  std::shared_ptr<PoolHandle> pool_;
  innerq_seq* seq_ = nullptr;
};

// Sequences of one call: all in one pool (the C ABI checks it too).
std::vector<innerq_seq*> c_seqs(const std::vector<Sequence*>& seqs, PoolHandle*& pool) {
  if (seqs.empty()) value_error("seqs: the list is empty");
  std::vector<innerq_seq*> out;
  pool = seqs[0]->pool().get();
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (seqs[i] == nullptr) value_error("seqs[" + std::to_string(i) + "] is None");
    if (seqs[i]->pool().get() != pool) {
      value_error("seqs[" + std::to_string(i) + "] is in another pool than seqs[0]");
    }
    out.push_back(seqs[i]->get());
  }
  return out;
}

void append_batch(const std::vector<Sequence*>& seqs, int layer, nb::handle k, nb::handle v) {
  PoolHandle* pool = nullptr;
  std::vector<innerq_seq*> cs = c_seqs(seqs, pool);
  const int64_t B = static_cast<int64_t>(cs.size());
  const int H = pool->shape.n_kv_heads, D = pool->shape.head_dim;
  const auto ka =
      as_array<AnyArray>(k, "k", {B, -1, H, D}, {"batch", "tokens", "kv_heads", "head_dim"});
  const auto va =
      as_array<AnyArray>(v, "v", {B, -1, H, D}, {"batch", "tokens", "kv_heads", "head_dim"});
  if (ka.shape(1) != va.shape(1)) value_error("k and v hold different numbers of tokens");
  std::vector<innerq_view> kv(cs.size()), vv(cs.size());
  for (int64_t b = 0; b < B; ++b) {
    kv[static_cast<size_t>(b)] = c_view(ka, b);
    vv[static_cast<size_t>(b)] = c_view(va, b);
  }
  nb::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(pool->mu);
  check(innerq_append(cs.data(), static_cast<int32_t>(B), layer, kv.data(), vv.data(),
                      static_cast<int32_t>(ka.shape(1))));
}

nb::object attend_batch(const std::vector<Sequence*>& seqs, int layer, nb::handle q, float scale,
                        nb::handle out) {
  PoolHandle* pool = nullptr;
  std::vector<innerq_seq*> cs = c_seqs(seqs, pool);
  const int64_t B = static_cast<int64_t>(cs.size());
  const int D = pool->shape.head_dim;
  const auto qa = as_array<AnyArray>(q, "q", {B, -1, D}, {"batch", "n_heads", "head_dim"});
  const int n_heads = static_cast<int>(qa.shape(1));
  nb::object result;
  OutArray oa;
  if (out.is_none()) {
    result = nb::cast(
        new_f32({static_cast<size_t>(B), static_cast<size_t>(n_heads), static_cast<size_t>(D)}));
    oa = nb::cast<OutArray>(result);
  } else {
    oa = as_array<OutArray>(out, "out", {B, n_heads, D}, {"batch", "n_heads", "head_dim"});
    result = nb::borrow(out);
  }
  const innerq_view qv = c_view(qa), ov = c_view(oa);
  {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(pool->mu);
    check(innerq_attend(cs.data(), static_cast<int32_t>(B), layer, &qv, n_heads, scale, &ov));
  }
  return result;
}

// ---------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------
// A list of Sequence objects (any pools), none of them None.
std::vector<Sequence*> sequences(nb::handle seqs) {
  std::vector<Sequence*> out;
  if (!nb::try_cast(seqs, out, false)) {
    value_error("seqs: expected a list of innerq.Sequence, got " +
                std::string(nb::type_name(seqs.type()).c_str()));
  }
  if (out.empty()) value_error("seqs: the list is empty");
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == nullptr) value_error("seqs[" + std::to_string(i) + "] is None");
  }
  return out;
}

// The locks of every pool the sequences are in, taken in address order.
class PoolLocks {
 public:
  explicit PoolLocks(const std::vector<Sequence*>& seqs) {
    std::vector<PoolHandle*> pools;
    for (Sequence* s : seqs) pools.push_back(s->pool().get());
    std::sort(pools.begin(), pools.end());
    pools.erase(std::unique(pools.begin(), pools.end()), pools.end());
    for (PoolHandle* p : pools) locks_.emplace_back(p->mu);
  }

 private:
  std::vector<std::unique_lock<std::mutex>> locks_;
};

class Model {
 public:
  explicit Model(const std::string& path) {
    innerq_model* m = nullptr;
    {
      nb::gil_scoped_release release;
      check(innerq_model_load(path.c_str(), &m));
    }
    m_.reset(m, innerq_model_free);
    check(innerq_model_info_get(m, &info_));
    innerq_shape s;
    check(innerq_model_shape(m, 1, &s));
    if (s.window) window_.assign(s.window, s.window + s.n_layers);
  }
  const innerq_model_info& info() const { return info_; }
  const std::vector<int32_t>& window() const { return window_; }

  nb::ndarray<nb::numpy, int32_t> tokenize(nb::handle text, bool add_bos, bool special) const {
    std::string bytes;
    if (nb::isinstance<nb::bytes>(text)) {
      const nb::bytes b = nb::borrow<nb::bytes>(text);
      bytes.assign(b.c_str(), b.size());
    } else if (nb::isinstance<nb::str>(text)) {
      bytes = nb::cast<std::string>(text);
    } else {
      value_error("text: expected str or bytes, got " +
                  std::string(nb::type_name(text.type()).c_str()));
    }
    std::lock_guard<std::mutex> lock(mu_);
    int64_t n = 0;
    const innerq_status s =
        innerq_tokenize(m_.get(), bytes.data(), bytes.size(), add_bos, special, nullptr, 0, &n);
    if (s != INNERQ_ERROR_BUFFER_TOO_SMALL) check(s);
    int32_t* ids = new int32_t[n == 0 ? 1 : static_cast<size_t>(n)];
    nb::capsule owner(ids, [](void* p) noexcept { delete[] static_cast<int32_t*>(p); });
    check(innerq_tokenize(m_.get(), bytes.data(), bytes.size(), add_bos, special, ids, n, &n));
    const size_t shape[1] = {static_cast<size_t>(n)};
    return nb::ndarray<nb::numpy, int32_t>(ids, 1, shape, owner);
  }

  nb::bytes detokenize(const std::vector<int32_t>& tokens) const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t len = 0;
    innerq_status s = innerq_detokenize(m_.get(), tokens.data(),
                                        static_cast<int64_t>(tokens.size()), nullptr, 0, &len);
    if (s != INNERQ_ERROR_BUFFER_TOO_SMALL) check(s);
    std::string buf(len + 1, '\0');
    check(innerq_detokenize(m_.get(), tokens.data(), static_cast<int64_t>(tokens.size()),
                            buf.data(), buf.size(), &len));
    return nb::bytes(buf.data(), len);
  }

  std::string chat_turn(const std::string& user, const std::string& system, bool first) const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t len = 0;
    innerq_status s =
        innerq_chat_turn(m_.get(), user.c_str(), system.c_str(), first, nullptr, 0, &len);
    if (s != INNERQ_ERROR_BUFFER_TOO_SMALL) check(s);
    std::string buf(len + 1, '\0');
    check(innerq_chat_turn(m_.get(), user.c_str(), system.c_str(), first, buf.data(), buf.size(),
                           &len));
    buf.resize(len);
    return buf;
  }

  bool ends_generation(int32_t token) const {
    return innerq_token_ends_generation(m_.get(), token) != 0;
  }

  // seqs: one Sequence (logits [n, V] or [V]) or a list of them, in any
  // pools of the model's shape (logits [B, n, V] or [B, V]).
  F32Out extend(nb::handle seqs, const std::vector<int32_t>& tokens, bool all_logits) {
    const bool one = nb::isinstance<Sequence>(seqs);
    const std::vector<Sequence*> list =
        one ? std::vector<Sequence*>{nb::cast<Sequence*>(seqs)} : sequences(seqs);
    if (tokens.empty()) value_error("tokens: the list is empty");
    const size_t V = static_cast<size_t>(info_.n_vocab), B = list.size();
    std::vector<size_t> shape =
        all_logits ? std::vector<size_t>{B, tokens.size(), V} : std::vector<size_t>{B, V};
    if (one) shape.erase(shape.begin());
    F32Out logits = new_f32(shape);
    std::vector<innerq_seq*> cs;
    for (Sequence* s : list) cs.push_back(s->get());
    nb::gil_scoped_release release;
    const PoolLocks locks(list);
    std::lock_guard<std::mutex> lock(mu_);
    check(innerq_model_extend(m_.get(), cs.data(), static_cast<int32_t>(B), tokens.data(),
                              static_cast<int64_t>(tokens.size()), all_logits, logits.data()));
    return logits;
  }

  F32Out decode(nb::handle seqs, const std::vector<int32_t>& tokens) {
    const std::vector<Sequence*> list = sequences(seqs);
    if (tokens.size() != list.size()) {
      value_error("tokens: " + std::to_string(tokens.size()) + " tokens for " +
                  std::to_string(list.size()) + " sequences");
    }
    F32Out logits = new_f32({list.size(), static_cast<size_t>(info_.n_vocab)});
    std::vector<innerq_seq*> cs;
    for (Sequence* s : list) cs.push_back(s->get());
    nb::gil_scoped_release release;
    const PoolLocks locks(list);
    std::lock_guard<std::mutex> lock(mu_);
    check(innerq_model_decode(m_.get(), cs.data(), tokens.data(), static_cast<int32_t>(cs.size()),
                              logits.data()));
    return logits;
  }

  uint64_t scratch_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return innerq_model_scratch_bytes(m_.get());
  }
  void release_scratch() {
    std::lock_guard<std::mutex> lock(mu_);
    innerq_model_release_scratch(m_.get());
  }

 private:
  std::shared_ptr<innerq_model> m_;
  innerq_model_info info_{};
  std::vector<int32_t> window_;
  mutable std::mutex mu_;
};

class Sampler {
 public:
  Sampler(float temperature, int top_k, float top_p, uint64_t seed) {
    const innerq_sampler_params p{temperature, top_k, top_p, seed};
    innerq_sampler* s = nullptr;
    check(innerq_sampler_create(&p, &s));
    s_.reset(s, innerq_sampler_free);
  }
  int32_t sample(nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu> logits) {
    int32_t token = 0;
    check(innerq_sample(s_.get(), logits.data(), static_cast<int32_t>(logits.shape(0)), &token));
    return token;
  }

 private:
  std::shared_ptr<innerq_sampler> s_;
};

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "innerq's C ABI for Python (the public API is the innerq package)";
  pool_full_error = PyErr_NewExceptionWithDoc(
      "innerq.PoolFullError",
      "A fixed pool has no room for the tokens or the sequence asked for; nothing was stored.",
      PyExc_RuntimeError, nullptr);
  m.attr("PoolFullError") = nb::handle(pool_full_error);
  nb::register_exception_translator(translate);

  m.attr("__version__") = innerq_version();
  m.def("simd_target", &innerq_simd_target, "The SIMD target the CPU kernels dispatch to.");
  m.def(
      "cuda_compiled", [] { return innerq_cuda_compiled() != 0; },
      "Whether this build has the CUDA backend.");
  m.def(
      "kinds",
      [] {
        std::vector<std::string> k;
        for (int i = 0; i < innerq_kind_count(); ++i) k.emplace_back(innerq_kind_name(i));
        return k;
      },
      "The cache kinds a spec can name.");
  m.def("bit_widths", [] {
    std::vector<int> b(static_cast<size_t>(innerq_bit_widths(nullptr, 0)));
    innerq_bit_widths(b.data(), static_cast<int>(b.size()));
    return b;
  });
  m.def("group_sizes", [] {
    std::vector<int> g(static_cast<size_t>(innerq_group_sizes(nullptr, 0)));
    innerq_group_sizes(g.data(), static_cast<int>(g.size()));
    return g;
  });
  m.def(
      "set_threads", [](int n) { check(innerq_set_threads(n)); }, "n"_a,
      "Threads innerq computes on (0: every core).");
  m.def("threads", &innerq_threads);
  m.def("wait_policy", &innerq_wait_policy,
        "The OpenMP wait policy in effect (innerq sets GOMP_SPINCOUNT=1000 before it loads).");

  nb::class_<Spec>(m, "CacheSpec", "A KV-cache spec: the `--kv` strings of the innerq tool.")
      .def(nb::init<const std::string&>(), "text"_a)
      .def_ro("text", &Spec::text)
      .def("describe", &Spec::describe, "layer"_a = nb::none(), "n_layers"_a = nb::none(),
           "The spec as given, or one layer's config spelled out.")
      .def(
          "check_head_dim",
          [](const Spec& s, int head_dim, int n_layers) {
            check(innerq_spec_check_head_dim(s.spec.get(), n_layers, head_dim));
          },
          "head_dim"_a, "n_layers"_a = 1,
          "Raises ValueError unless every layer can store heads of head_dim channels.")
      .def("__repr__", [](const Spec& s) { return "innerq.CacheSpec('" + s.text + "')"; })
      .def("__str__", [](const Spec& s) { return s.text; });

  m.def(
      "plan_memory",
      [](nb::handle kv, int n_layers, int kv_heads, int head_dim, int64_t tokens, int seqs,
         std::optional<std::vector<int32_t>> windows, std::optional<int> max_tokens) {
        const Spec spec = spec_of(kv);
        std::vector<int32_t> storage;
        const int max_t = max_tokens.value_or(static_cast<int>(std::max<int64_t>(tokens, 1)));
        const innerq_shape s = shape_from(n_layers, kv_heads, head_dim, max_t, windows, storage);
        innerq_plan p;
        check(innerq_plan_memory(spec.spec.get(), &s, seqs, tokens, &p));
        return plan_dict(p);
      },
      "kv"_a, "n_layers"_a, "kv_heads"_a, "head_dim"_a, "tokens"_a, "seqs"_a = 1,
      "windows"_a = nb::none(), "max_tokens"_a = nb::none());
  m.def(
      "tokens_for_budget",
      [](nb::handle kv, int n_layers, int kv_heads, int head_dim, uint64_t budget, int seqs,
         std::optional<std::vector<int32_t>> windows) {
        const Spec spec = spec_of(kv);
        std::vector<int32_t> storage;
        const innerq_shape s = shape_from(n_layers, kv_heads, head_dim, 1 << 24, windows, storage);
        int64_t t = 0;
        check(innerq_plan_tokens(spec.spec.get(), &s, seqs, budget, &t));
        return t;
      },
      "kv"_a, "n_layers"_a, "kv_heads"_a, "head_dim"_a, "budget"_a, "seqs"_a = 1,
      "windows"_a = nb::none());

  nb::class_<Pool>(m, "Pool", "Cache blocks for sequences of one shape and spec.")
      .def(nb::init<nb::handle, int, int, int, int, int, uint64_t,
                    std::optional<std::vector<int32_t>>>(),
           "kv"_a, "n_layers"_a, "kv_heads"_a, "head_dim"_a, "max_tokens"_a, "max_seqs"_a = 0,
           "budget"_a = 0, "windows"_a = nb::none())
      .def("stats", &Pool::stats)
      .def("release_scratch", &Pool::release_scratch)
      .def_prop_ro("spec", [](const Pool& p) { return p.handle()->spec; })
      .def_prop_ro("n_layers", [](const Pool& p) { return p.handle()->shape.n_layers; })
      .def_prop_ro("kv_heads", [](const Pool& p) { return p.handle()->shape.n_kv_heads; })
      .def_prop_ro("head_dim", [](const Pool& p) { return p.handle()->shape.head_dim; })
      .def_prop_ro("max_tokens", [](const Pool& p) { return p.handle()->shape.max_tokens; })
      .def_prop_ro("windows", [](const Pool& p) { return p.handle()->window; });

  nb::class_<Sequence>(m, "Sequence", "One sequence's KV cache, all layers, in a pool.")
      .def(nb::init<const Pool&>(), "pool"_a)
      .def("__len__", &Sequence::n_tokens)
      .def_prop_ro("n_tokens", &Sequence::n_tokens)
      .def("append", &Sequence::append, "layer"_a, "k"_a, "v"_a,
           "Appends rows k, v [tokens, kv_heads, head_dim] (post-RoPE) to one layer.")
      .def("attend", &Sequence::attend, "layer"_a, "q"_a, "scale"_a = 0.0f, "out"_a = nb::none(),
           "Decode attention of q [n_heads, head_dim] over everything the layer holds.")
      .def("attend_chunk", &Sequence::attend_chunk, "layer"_a, "q"_a, "n_visible"_a,
           "scale"_a = 0.0f, "out"_a = nb::none(),
           "Attention of q [n_q, n_heads, head_dim]; query i sees positions [0, n_visible + i). "
           "Over exactly the rows of the last multi-row append (n_visible - 1 = its first "
           "position), each query sees the cache as token-by-token decode did.")
      .def("fork", &Sequence::fork, "A sequence with the same tokens (blocks shared).")
      .def("truncate", &Sequence::truncate, "n_tokens"_a, "Keeps the first n_tokens tokens.")
      .def("save", &Sequence::save, "path"_a)
      .def("load", &Sequence::load, "path"_a)
      .def("clear", &Sequence::clear)
      .def("memory", &Sequence::memory, "Bytes held, by purpose, and reserved.")
      .def("dequantize", &Sequence::dequantize, "layer"_a,
           "(k, v, first): the layer's rows [kv_heads, n, head_dim] in the model's "
           "coordinates; first is the position of row 0.");

  m.def("append", &append_batch, "seqs"_a, "layer"_a, "k"_a, "v"_a,
        "Appends k, v [batch, tokens, kv_heads, head_dim] to one layer of each sequence.");
  m.def("attend", &attend_batch, "seqs"_a, "layer"_a, "q"_a, "scale"_a = 0.0f, "out"_a = nb::none(),
        "Decode attention of q [batch, n_heads, head_dim].");

  nb::class_<Model>(m, "Model", "A GGUF model (llama, qwen2, qwen3, gemma3).")
      .def(nb::init<const std::string&>(), "path"_a)
      .def_prop_ro("arch", [](const Model& x) { return std::string(x.info().arch); })
      .def_prop_ro("n_layers", [](const Model& x) { return x.info().n_layers; })
      .def_prop_ro("n_heads", [](const Model& x) { return x.info().n_heads; })
      .def_prop_ro("n_kv_heads", [](const Model& x) { return x.info().n_kv_heads; })
      .def_prop_ro("head_dim", [](const Model& x) { return x.info().head_dim; })
      .def_prop_ro("n_embd", [](const Model& x) { return x.info().n_embd; })
      .def_prop_ro("n_vocab", [](const Model& x) { return x.info().n_vocab; })
      .def_prop_ro("n_ctx_train", [](const Model& x) { return x.info().n_ctx_train; })
      .def_prop_ro("n_params", [](const Model& x) { return x.info().n_params; })
      .def_prop_ro("bos", [](const Model& x) { return x.info().bos; })
      .def_prop_ro("eos", [](const Model& x) { return x.info().eos; })
      .def_prop_ro("adds_bos", [](const Model& x) { return x.info().adds_bos != 0; })
      .def_prop_ro("has_chat_template", [](const Model& x) { return x.info().chat_template != 0; })
      .def_prop_ro("windows", &Model::window)
      .def("tokenize", &Model::tokenize, "text"_a, "add_bos"_a = true, "special"_a = false)
      .def("detokenize", &Model::detokenize, "tokens"_a)
      .def("chat_turn", &Model::chat_turn, "user"_a, "system"_a = "", "first"_a = true)
      .def("ends_generation", &Model::ends_generation, "token"_a)
      .def("extend", &Model::extend, "seqs"_a, "tokens"_a, "all_logits"_a = false,
           "Sends the same tokens through one sequence or a list of them (prefill when empty).")
      .def("decode", &Model::decode, "seqs"_a, "tokens"_a)
      .def("scratch_bytes", &Model::scratch_bytes)
      .def("release_scratch", &Model::release_scratch);

  nb::class_<Sampler>(m, "Sampler", "Greedy (temperature 0) or top-k/top-p sampling.")
      .def(nb::init<float, int, float, uint64_t>(), "temperature"_a = 0.0f, "top_k"_a = 40,
           "top_p"_a = 0.95f, "seed"_a = 0)
      .def("sample", &Sampler::sample, "logits"_a);
}
