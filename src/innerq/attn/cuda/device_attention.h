// innerq/attn/cuda/device_attention.h — decode attention on a CUDA device over
// caches built on the CPU (kv::LayerCache) and uploaded byte for byte.
//
// DeviceLayerBatch holds one layer of n_seqs sequences (same kind, config and
// shape; token counts may differ) and runs the fused split kernels of
// kernels/cuda for all of them in one launch. CublasF16Batch is the
// two-GEMM baseline over the same f16 contents. Everything throws
// innerq::Error with the CUDA/cuBLAS message on failure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "innerq/base/fp16.h"
#include "innerq/kv/kv_cache.h"

namespace innerq::attn::cuda {

// True when a CUDA device is present and usable; otherwise false with the
// reason (no device, driver too old, ...) in *why.
bool device_available(std::string* why);

struct DeviceInfo {
  std::string name;
  int sm_count = 0;
  double memory_gib = 0.0;
};
DeviceInfo device_info();

// One device allocation (cudaMalloc / cudaFree), zeroed. The zeroing and
// upload() run on the legacy default stream and have completed when they
// return, so work on any stream, non-blocking ones too, sees them.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  DeviceBuffer(const void* host, size_t bytes);  // allocate and upload
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  void upload(const void* host, size_t bytes, size_t offset = 0);
  void download(void* host, size_t bytes) const;

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Decode on several streams: each stream gets its own split workspace
// (partial outputs and softmax statistics), allocated on the stream's first
// decode and kept until the batch is destroyed, so the same batch may be
// decoded on two streams at once. A stream's workspace is found by its
// handle: a stream destroyed while its decode still runs must not be
// followed by a new stream that reuses the handle before that decode ends.
class DeviceLayerBatch {
 public:
  // The split lengths the decode kernels are compiled for.
  static constexpr int kChunkChoices[] = {128, 256, 512};

  // seqs: one LayerCache per sequence, all f16, all kivi or all innerq with
  // the same config, n_kv_heads and head_dim, each holding ≥ 1 token.
  // chunk_tokens: tokens per split, 128, 256 or 512; 0 picks it from the
  // longest sequence and the device's SM count (choose_chunk_tokens).
  explicit DeviceLayerBatch(const std::vector<const kv::LayerCache*>& seqs, int chunk_tokens = 0);
  ~DeviceLayerBatch();
  DeviceLayerBatch(DeviceLayerBatch&&) noexcept;
  DeviceLayerBatch& operator=(DeviceLayerBatch&&) noexcept;

  kv::CacheKind kind() const;
  int n_seqs() const;
  int n_kv_heads() const;
  int head_dim() const;
  // Bytes of cache contents the decode reads (codes, metadata, windows, key
  // normalization factors) over all sequences.
  size_t kv_bytes() const;
  int chunk_tokens() const;

  // Enqueues decode attention on `stream` (nullptr: the default stream).
  // q, out: device [n_seqs][n_heads][head_dim] f32. Thread-safe.
  void decode(const float* q, int n_heads, float* out, void* stream = nullptr);

  // Host in / host out, synchronous: q [n_seqs][n_heads][head_dim].
  std::vector<float> decode_host(const std::vector<float>& q, int n_heads);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The cuBLAS baseline over f16 caches that all hold the same number of tokens:
// K and V re-laid as plain row-major [N][D] per KV head; scores, softmax
// statistics and the output in f32 (kernels/cuda/cublas_attention.h).
class CublasF16Batch {
 public:
  explicit CublasF16Batch(const std::vector<const kv::LayerCache*>& seqs);
  ~CublasF16Batch();
  CublasF16Batch(CublasF16Batch&&) noexcept;
  CublasF16Batch& operator=(CublasF16Batch&&) noexcept;

  // q: device f16 [n_seqs][n_heads][head_dim]; out: device f32, same shape.
  // One stream (the handle's); not thread-safe.
  void decode(const uint16_t* q, int n_heads, float* out);
  std::vector<float> decode_host(const std::vector<float>& q, int n_heads);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// GPU quantize-on-append into the InnerQ tile layout, for tests and tools.
// rows: f16 [n_kv_heads][n_rows][head_dim] keys as the recent window holds
// them (centered already when kcenter is on); key_norm: [n_kv_heads][head_dim].
// Returns [n_kv_heads][ceil(n_rows/16) tiles] (TileFormat{k_bits, kg,
// head_dim/kg, k has zero}, kg = config.key_group()), rows 0..n_rows−1 in
// slots 0..n_rows−1, unused rows zero.
std::vector<uint8_t> append_keys_on_device(const std::vector<f16_bits>& rows,
                                           const std::vector<float>& key_norm, int n_kv_heads,
                                           int n_rows, int head_dim, const kv::LayerConfig& config);
// rows: f16 [n_kv_heads][n_blocks·group][head_dim] → [n_kv_heads][n_blocks]
// [head_dim/16] V tiles (TileFormat{v_bits, group, 1, v has zero}).
std::vector<uint8_t> append_values_on_device(const std::vector<f16_bits>& rows, int n_kv_heads,
                                             int n_blocks, int head_dim,
                                             const kv::LayerConfig& config);

// Median time in milliseconds of `reps` runs of enqueue() (after one warm-up),
// each bracketed by CUDA events on the default stream. Before each run the L2
// cache is evicted by writing a buffer twice its size, so that every run
// reads its inputs from device memory (a quantized cache of a few MiB would
// otherwise be served by the 50 MB L2 of an H100 while f16 is not); the flush
// also keeps the GPU busy while the host enqueues, so launch latency on the
// host is not timed.
double median_time_ms(const std::function<void()>& enqueue, int reps);

// Device-to-device cudaMemcpy bandwidth over a `bytes` buffer, counting bytes
// read plus bytes written, in GB/s (1e9 bytes/s).
double copy_bandwidth_gbps(size_t bytes);

}  // namespace innerq::attn::cuda
