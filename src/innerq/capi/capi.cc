// The C ABI (include/innerq/innerq.h): errors, version, capabilities,
// settings and views. Caches are in capi_cache.cc, models in capi_model.cc.
#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include <hwy/targets.h>

#include "innerq/base/fp16.h"
#include "innerq/capi/capi_internal.h"
#include "innerq/kernels/f16_convert.h"

namespace innerq::capi {
namespace {

thread_local std::string last_error;  // a C string must outlive the call
std::atomic<int> threads_setting{0};

// The cache kinds a spec names (kv/cache_spec.h), and the quantized formats.
constexpr const char* kKinds[] = {"f32",  "f16",   "q8_0",   "q4_0",
                                  "kivi", "kivi4", "innerq", "innerq-paper"};
constexpr int kBitWidths[] = {2, 3, 4, 8};
constexpr int kGroupSizes[] = {32, 64, 128};

int copy_ints(const int* from, int n, int* out, int cap) {
  for (int i = 0; i < n && i < cap && out != nullptr; ++i) out[i] = from[i];
  return n;
}

float bf16_to_f32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round to nearest even; NaN stays NaN.
uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

size_t dtype_bytes(innerq_dtype t) {
  return t == INNERQ_DTYPE_F32 ? 4 : 2;
}

}  // namespace

void set_last_error(const char* function, const char* message) {
  last_error = fmt::format("{}: {}", function, message);
}

int n_threads() {
  const int n = threads_setting.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_num_procs();
}

void check_view(const innerq_view* v, const std::string& name) {
  require(v != nullptr, fmt::format("{} is NULL", name));
  require(v->data != nullptr, fmt::format("{}.data is NULL", name));
  const int dtype = enum_value(v->dtype);
  require(dtype == INNERQ_DTYPE_F32 || dtype == INNERQ_DTYPE_F16 || dtype == INNERQ_DTYPE_BF16,
          fmt::format("{}.dtype {} is not INNERQ_DTYPE_F32, _F16 or _BF16", name, dtype));
}

innerq_view view_at(const innerq_view& v, int64_t i) {
  innerq_view r = v;
  r.data =
      static_cast<char*>(v.data) + i * v.stride[0] * static_cast<int64_t>(dtype_bytes(v.dtype));
  return r;
}

void read_view(const innerq_view& v, int64_t dim0, int64_t dim1, int64_t D, float* out) {
  const size_t Dz = static_cast<size_t>(D);
  for (int64_t i = 0; i < dim0; ++i) {
    for (int64_t j = 0; j < dim1; ++j) {
      const int64_t at = i * v.stride[0] + j * v.stride[1];
      float* o = out + static_cast<size_t>(i * dim1 + j) * Dz;
      switch (v.dtype) {
        case INNERQ_DTYPE_F32:
          std::memcpy(o, static_cast<const float*>(v.data) + at, Dz * sizeof(float));
          break;
        case INNERQ_DTYPE_F16:
          kernels::f16_to_f32(static_cast<const f16_bits*>(v.data) + at, Dz, o);
          break;
        case INNERQ_DTYPE_BF16: {
          const uint16_t* b = static_cast<const uint16_t*>(v.data) + at;
          for (size_t c = 0; c < Dz; ++c) o[c] = bf16_to_f32(b[c]);
          break;
        }
      }
    }
  }
}

void write_view(const innerq_view& v, int64_t dim0, int64_t dim1, int64_t D, const float* in) {
  const size_t Dz = static_cast<size_t>(D);
  for (int64_t i = 0; i < dim0; ++i) {
    for (int64_t j = 0; j < dim1; ++j) {
      const int64_t at = i * v.stride[0] + j * v.stride[1];
      const float* x = in + static_cast<size_t>(i * dim1 + j) * Dz;
      switch (v.dtype) {
        case INNERQ_DTYPE_F32:
          std::memcpy(static_cast<float*>(v.data) + at, x, Dz * sizeof(float));
          break;
        case INNERQ_DTYPE_F16:
          kernels::f32_to_f16(x, Dz, static_cast<f16_bits*>(v.data) + at);
          break;
        case INNERQ_DTYPE_BF16: {
          uint16_t* b = static_cast<uint16_t*>(v.data) + at;
          for (size_t c = 0; c < Dz; ++c) b[c] = f32_to_bf16(x[c]);
          break;
        }
      }
    }
  }
}

}  // namespace innerq::capi

using innerq::capi::guard;
using innerq::capi::require;

extern "C" {

const char* innerq_last_error(void) {
  return innerq::capi::last_error.c_str();
}

const char* innerq_status_name(innerq_status status) {
  switch (innerq::capi::enum_value(status)) {
    case INNERQ_OK:
      return "ok";
    case INNERQ_ERROR_INVALID_ARGUMENT:
      return "invalid argument";
    case INNERQ_ERROR_POOL_FULL:
      return "pool full";
    case INNERQ_ERROR_IO:
      return "i/o error";
    case INNERQ_ERROR_BUFFER_TOO_SMALL:
      return "buffer too small";
    case INNERQ_ERROR_UNSUPPORTED:
      return "unsupported";
    case INNERQ_ERROR_OUT_OF_MEMORY:
      return "out of memory";
    case INNERQ_ERROR_INTERNAL:
      return "internal error";
  }
  return "unknown status";
}

const char* innerq_version(void) {
  return INNERQ_VERSION_STRING;
}

int innerq_version_number(void) {
  return INNERQ_VERSION_MAJOR * 10000 + INNERQ_VERSION_MINOR * 100 + INNERQ_VERSION_PATCH;
}

int innerq_kind_count(void) {
  return static_cast<int>(std::size(innerq::capi::kKinds));
}

const char* innerq_kind_name(int i) {
  return i >= 0 && i < innerq_kind_count() ? innerq::capi::kKinds[i] : nullptr;
}

int innerq_bit_widths(int* out, int cap) {
  return innerq::capi::copy_ints(innerq::capi::kBitWidths,
                                 static_cast<int>(std::size(innerq::capi::kBitWidths)), out, cap);
}

int innerq_group_sizes(int* out, int cap) {
  return innerq::capi::copy_ints(innerq::capi::kGroupSizes,
                                 static_cast<int>(std::size(innerq::capi::kGroupSizes)), out, cap);
}

const char* innerq_simd_target(void) {
  // The best target that was compiled in and that this CPU runs: the one
  // Highway's dispatch picks.
  const int64_t usable = static_cast<int64_t>(HWY_TARGETS) & hwy::SupportedTargets();
  return hwy::TargetName(usable & -usable);
}

int innerq_cuda_compiled(void) {
#ifdef INNERQ_HAVE_CUDA
  return 1;
#else
  return 0;
#endif
}

innerq_status innerq_set_threads(int n_threads) {
  return guard("innerq_set_threads", [&] {
    require(n_threads >= 0 && n_threads <= 4096,
            fmt::format("n_threads {} is not in 0..4096 (0 = every core)", n_threads));
    innerq::capi::threads_setting.store(n_threads, std::memory_order_relaxed);
  });
}

int innerq_threads(void) {
  return innerq::capi::n_threads();
}

const char* innerq_wait_policy(void) {
  // What libgomp read from the environment when it loaded.
  static const std::string policy = [] {
    if (const char* p = std::getenv("OMP_WAIT_POLICY")) return fmt::format("OMP_WAIT_POLICY={}", p);
    if (const char* s = std::getenv("GOMP_SPINCOUNT")) return fmt::format("GOMP_SPINCOUNT={}", s);
    return std::string("libgomp default (spins 300000 times at barriers)");
  }();
  return policy.c_str();
}

innerq_view innerq_view_packed(void* data, innerq_dtype dtype, int64_t dim1, int64_t dim2) {
  innerq_view v;
  v.data = data;
  v.dtype = dtype;
  v.stride[0] = dim1 * dim2;
  v.stride[1] = dim2;
  return v;
}

}  // extern "C"
