// innerq/capi/capi_internal.h — what the C ABI's translation units share:
// turning C++ exceptions into status codes, reading and writing innerq_view
// arrays, and the handle structs behind the opaque C types
// (docs/architecture.md, "The C ABI").
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "innerq/attn/attention_scratch.h"
#include "innerq/attn/decode_attention.h"
#include "innerq/base/error.h"
#include "innerq/innerq.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/kv/layer_caches.h"

namespace innerq::capi {

// An error the C ABI raises itself, with the status it maps to.
class ApiError : public Error {
 public:
  ApiError(innerq_status status, const std::string& message) : Error(message), status_(status) {}
  innerq_status status() const { return status_; }

 private:
  innerq_status status_;
};

[[noreturn]] inline void fail(innerq_status status, const std::string& message) {
  throw ApiError(status, message);
}
// INNERQ_ERROR_INVALID_ARGUMENT unless `ok`.
inline void require(bool ok, const std::string& message) {
  if (!ok) fail(INNERQ_ERROR_INVALID_ARGUMENT, message);
}
template <typename T>
void require_not_null(const T* p, const char* name) {
  require(p != nullptr, fmt::format("{} is NULL", name));
}

// The value of an enum a C caller passed: any int is legal C, but loading an
// out-of-range value as a C++ enum is not, so the bytes are read as an int.
template <typename E>
int enum_value(const E& e) {
  static_assert(sizeof(E) == sizeof(int), "C enums here are int-sized");
  int v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

// Records the message for innerq_last_error() on this thread.
void set_last_error(const char* function, const char* message);

// Runs f; maps what it throws to a status and records the message. Errors of
// the library's own (innerq::Error) become `error_status`: invalid argument
// for most calls, INNERQ_ERROR_IO for those that read or write files.
template <typename F>
innerq_status guard(const char* function, F&& f,
                    innerq_status error_status = INNERQ_ERROR_INVALID_ARGUMENT) noexcept {
  try {
    f();
    return INNERQ_OK;
  } catch (const ApiError& e) {
    set_last_error(function, e.what());
    return e.status();
  } catch (const PoolFullError& e) {
    set_last_error(function, e.what());
    return INNERQ_ERROR_POOL_FULL;
  } catch (const Error& e) {
    set_last_error(function, e.what());
    return error_status;
  } catch (const std::bad_alloc&) {
    set_last_error(function, "out of memory");
    return INNERQ_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(function, e.what());
    return INNERQ_ERROR_INTERNAL;
  } catch (...) {
    set_last_error(function, "unknown exception");
    return INNERQ_ERROR_INTERNAL;
  }
}

// The threads compute runs on (innerq_set_threads; 0 = every core).
int n_threads();

// ---------------------------------------------------------------------------
// Views: element (i, j, c) at data + i·stride[0] + j·stride[1] + c.
// ---------------------------------------------------------------------------
// Checks a view argument (not NULL, data not NULL, a known dtype).
void check_view(const innerq_view* v, const std::string& name);
// Rows [dim0][dim1][D] of a view, as f32 into out (packed).
void read_view(const innerq_view& v, int64_t dim0, int64_t dim1, int64_t D, float* out);
// The same, from f32 `in` (packed) into the view, rounding to its dtype.
void write_view(const innerq_view& v, int64_t dim0, int64_t dim1, int64_t D, const float* in);
// The view offset by i along dim 0.
innerq_view view_at(const innerq_view& v, int64_t i);

// ---------------------------------------------------------------------------
// Handles
// ---------------------------------------------------------------------------
// A pool's state: shared by its handle and its sequences, so the memory
// goes with the last of them.
struct PoolState {
  kv::CacheSpec spec;
  std::vector<kv::LayerConfig> configs;
  kv::CacheShape shape;
  std::vector<int32_t> window;  // shape.windows as the C struct points to it
  std::shared_ptr<kv::KvPool> pool;
  int max_seqs = 0;  // 0 = no limit
  int n_seqs = 0;
  bool growable = false;
  attn::AttentionScratch scratch;   // innerq_attend*: sized once per layer shape
  attn::ChunkScratch chunk;         // innerq_attend_chunk over a recorded append
  std::vector<float> k, v, q, out;  // f32 staging of views, kept between calls
};

}  // namespace innerq::capi

struct innerq_spec {
  innerq::kv::CacheSpec spec;
};

struct innerq_pool {
  std::shared_ptr<innerq::capi::PoolState> state;
};

struct innerq_seq {
  std::shared_ptr<innerq::capi::PoolState> state;
  std::unique_ptr<innerq::kv::KvCache> cache;
  // What each row of the last multi-row innerq_append to a sequence that
  // held tokens saw (kv::ChunkSteps), for innerq_attend_chunk over exactly
  // those rows; steps_layer is its layer, −1 when nothing valid is recorded
  // (any other change to that layer clears it).
  innerq::kv::ChunkSteps steps;
  int32_t steps_layer = -1;
};
