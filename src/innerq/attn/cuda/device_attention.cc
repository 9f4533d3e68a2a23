// innerq/attn/cuda/device_attention.cc — upload of CPU caches into the views
// of kernels/cuda/decode_kernels.h, and the host side of the decode calls.
#include "innerq/attn/cuda/device_attention.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "innerq/base/error.h"
#include "innerq/kernels/cuda/append_kernels.h"
#include "innerq/kernels/cuda/cublas_attention.h"
#include "innerq/kernels/cuda/decode_kernels.h"
#include "innerq/kernels/tile_format.h"
#include "innerq/kv/layer_caches.h"

namespace innerq::attn::cuda {
namespace kc = innerq::cuda;

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw Error(std::string("cuda: ") + what + ": " + cudaGetErrorString(status));
  }
}

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw Error(std::string("cublas: ") + what + ": " + cublasGetStatusString(status));
  }
}

int current_sm_count() {
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "SM count");
  return sms;
}

// Rotated caches (rot=k|v|kv) store H·k and H·v, permuted ones (kperm) P·k:
// decoding them needs the query rotated or permuted alike and the output
// rotated back, which no CUDA kernel does.
void reject_key_transforms(const kv::LayerConfig& c, const char* what) {
  if (c.rot_k || c.rot_v) {
    throw Error(std::string(what) + ": rotated caches (rot=" +
                (c.rot_k && c.rot_v ? "kv"
                 : c.rot_k          ? "k"
                                    : "v") +
                ") are not supported on CUDA (the query would need the rotation and the output "
                "its inverse); use an unrotated spec");
  }
  if (c.kperm != kernels::ChannelOrder::kAsIs) {
    throw Error(std::string(what) + ": kperm=" + kv::channel_order_name(c.kperm) +
                " is not supported on CUDA (the query would need the same channel order); "
                "use kperm=off");
  }
  if (c.kind == kv::CacheKind::kInnerQ && c.ksort) {
    throw Error(std::string(what) +
                ": ksort=on is not supported on CUDA (the query would need each head's channel "
                "order); use ksort=off");
  }
  if (c.kind == kv::CacheKind::kInnerQ && c.k_levels != Levels::kUniform) {
    throw Error(std::string(what) +
                ": klevels=normal (codebook key levels) is not supported on CUDA (its kernels "
                "multiply raw codes); use klevels=uniform");
  }
}

// All KV heads of one region in one allocation: head h at h·stride elements.
// stride is the longest head rounded up to 16 bytes (at least 16 bytes, so
// that an empty region still has a valid pointer). Each head is copied
// straight from the cache; the allocation is zeroed, so the padding is too.
template <typename T>
struct Region {
  const T* data;
  size_t stride;
};

template <typename T, typename HeadSpan>
Region<T> upload_region(std::vector<DeviceBuffer>& buffers, int n_heads, HeadSpan head_span) {
  constexpr size_t kAlign = 16 / sizeof(T);
  size_t stride = kAlign;
  for (int h = 0; h < n_heads; ++h) stride = std::max(stride, head_span(h).second);
  stride = (stride + kAlign - 1) / kAlign * kAlign;
  DeviceBuffer& buffer = buffers.emplace_back(stride * static_cast<size_t>(n_heads) * sizeof(T));
  for (int h = 0; h < n_heads; ++h) {
    const auto [ptr, count] = head_span(h);
    if (count > 0) buffer.upload(ptr, count * sizeof(T), stride * h * sizeof(T));
  }
  return {buffer.as<const T>(), stride};
}

std::pair<const f16_bits*, size_t> rows_span(const kv::F16Rows& rows, int head_dim) {
  return {rows.size() > 0 ? rows.row(0) : nullptr, static_cast<size_t>(rows.size()) * head_dim};
}

}  // namespace

// ---------------------------------------------------------------------------
// Device queries and buffers.
// ---------------------------------------------------------------------------
bool device_available(std::string* why) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    if (why) *why = cudaGetErrorString(status);
    cudaGetLastError();  // reset the runtime's last-error state
    return false;
  }
  if (count == 0) {
    if (why) *why = "the CUDA runtime reports 0 devices";
    return false;
  }
  return true;
}

DeviceInfo device_info() {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return {prop.name, prop.multiProcessorCount,
          static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0)};
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  const size_t allocated = std::max<size_t>(bytes, 16);
  check(cudaMalloc(&ptr_, allocated),
        ("cudaMalloc of " + std::to_string(allocated) + " bytes").c_str());
  // A constructor that throws runs no destructor: free here.
  cudaError_t status = cudaMemset(ptr_, 0, allocated);
  if (status == cudaSuccess) status = cudaStreamSynchronize(nullptr);
  if (status != cudaSuccess) {
    cudaFree(std::exchange(ptr_, nullptr));
    check(status, "cudaMemset");
  }
}

DeviceBuffer::DeviceBuffer(const void* host, size_t bytes) : DeviceBuffer(bytes) {
  upload(host, bytes);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

void DeviceBuffer::upload(const void* host, size_t bytes, size_t offset) {
  if (bytes == 0) return;
  if (offset > bytes_ || bytes > bytes_ - offset) {
    throw Error("cuda upload: " + std::to_string(bytes) + " bytes at offset " +
                std::to_string(offset) + " overrun a buffer of " + std::to_string(bytes_));
  }
  check(cudaMemcpy(static_cast<char*>(ptr_) + offset, host, bytes, cudaMemcpyHostToDevice),
        "upload");
  // From pageable memory cudaMemcpy may return before the DMA has landed.
  check(cudaStreamSynchronize(nullptr), "upload");
}

void DeviceBuffer::download(void* host, size_t bytes) const {
  if (bytes == 0) return;
  check(cudaMemcpy(host, ptr_, bytes, cudaMemcpyDeviceToHost), "download");
}

// ---------------------------------------------------------------------------
// DeviceLayerBatch
// ---------------------------------------------------------------------------
// One stream's split workspace, sized for `heads` query heads.
struct SplitWorkspace {
  DeviceBuffer partial_o, partial_ml;
  int heads = 0;
};

struct DeviceLayerBatch::State {
  kv::CacheKind kind;
  kv::LayerConfig config;
  int n_seqs = 0, n_kv_heads = 0, head_dim = 0, max_tokens = 0;
  size_t kv_bytes = 0;
  std::vector<DeviceBuffer> regions;
  std::vector<kc::F16SeqView> f16;
  std::vector<kc::KiviSeqView> kivi;
  std::vector<kc::InnerQSeqView> innerq;
  DeviceBuffer views;  // device copy of the views above
  int chunk = 0, max_splits = 0;
  std::mutex workspaces_mutex;
  std::map<cudaStream_t, SplitWorkspace> workspaces;  // by stream
};

namespace {

kc::F16SeqView upload_f16(std::vector<DeviceBuffer>& buffers, const kv::F16LayerCache& c) {
  const int H = c.n_kv_heads(), D = c.head_dim(), n = c.n_tokens();
  const size_t tiles = static_cast<size_t>(n + kTileRows - 1) / kTileRows;
  const auto k = upload_region<f16_bits>(
      buffers, H, [&, keep = std::make_shared<std::vector<decltype(c.k_tiles(0))>>()](int h) {
        keep->push_back(c.k_tiles(h));
        return std::pair{keep->back().data(), tiles * D * kTileRows};
      });
  const auto v = upload_region<f16_bits>(
      buffers, H, [&, keep = std::make_shared<std::vector<decltype(c.v_rows(0))>>()](int h) {
        keep->push_back(c.v_rows(h));
        return std::pair{keep->back().data(), static_cast<size_t>(n) * D};
      });
  return {k.data, v.data, k.stride, v.stride, n};
}

kc::KiviSeqView upload_kivi(std::vector<DeviceBuffer>& buffers, const kv::KiviLayerCache& c) {
  const int H = c.n_kv_heads(), D = c.head_dim();
  const size_t k_bytes = static_cast<size_t>(c.k_quant_tokens() / c.group()) * c.k_block_bytes();
  const size_t v_bytes = static_cast<size_t>(c.v_quant_tokens()) * c.v_row_bytes();
  const auto kb = upload_region<uint8_t>(
      buffers, H, [&, keep = std::make_shared<std::vector<decltype(c.k_blocks(0))>>()](int h) {
        keep->push_back(c.k_blocks(h));
        return std::pair{keep->back().data(), k_bytes};
      });
  const auto vr = upload_region<uint8_t>(
      buffers, H, [&, keep = std::make_shared<std::vector<decltype(c.v_rows(0))>>()](int h) {
        keep->push_back(c.v_rows(h));
        return std::pair{keep->back().data(), v_bytes};
      });
  const auto kr =
      upload_region<f16_bits>(buffers, H, [&](int h) { return rows_span(c.k_residual(h), D); });
  const auto vres =
      upload_region<f16_bits>(buffers, H, [&](int h) { return rows_span(c.v_residual(h), D); });
  return {kb.data,   vr.data,     kr.data,      vres.data,          kb.stride,         vr.stride,
          kr.stride, vres.stride, c.n_tokens(), c.k_quant_tokens(), c.v_quant_tokens()};
}

kc::InnerQSeqView upload_innerq(std::vector<DeviceBuffer>& buffers, const kv::InnerQLayerCache& c) {
  const int H = c.n_kv_heads(), D = c.head_dim();
  const size_t k_bytes =
      static_cast<size_t>(c.k_middle_tokens() + kTileRows - 1) / kTileRows * c.k_format().bytes();
  const size_t v_bytes = static_cast<size_t>(c.v_middle_tokens() / c.config().group) *
                         (D / kTileRows) * c.v_format().bytes();
  const auto ks =
      upload_region<f16_bits>(buffers, H, [&](int h) { return rows_span(c.k_sink(h), D); });
  const auto vs =
      upload_region<f16_bits>(buffers, H, [&](int h) { return rows_span(c.v_sink(h), D); });
  const auto kt = upload_region<uint8_t>(
      buffers, H, [&, keep = std::make_shared<std::vector<decltype(c.k_tiles(0))>>()](int h) {
        keep->push_back(c.k_tiles(h));
        return std::pair{keep->back().data(), k_bytes};
      });
  const auto vb = upload_region<uint8_t>(
      buffers, H, [&, keep = std::make_shared<std::vector<decltype(c.v_blocks(0))>>()](int h) {
        keep->push_back(c.v_blocks(h));
        return std::pair{keep->back().data(), v_bytes};
      });
  const auto kr =
      upload_region<f16_bits>(buffers, H, [&](int h) { return rows_span(c.k_recent(h), D); });
  const auto vr =
      upload_region<f16_bits>(buffers, H, [&](int h) { return rows_span(c.v_recent(h), D); });
  const auto f = upload_region<float>(buffers, H, [&](int h) {
    return std::pair{c.key_norm(h), static_cast<size_t>(D)};
  });
  if (ks.stride != vs.stride || f.stride != static_cast<size_t>(D)) {
    throw Error("cuda upload: sink windows of K and V differ in length");
  }
  return {ks.data,
          vs.data,
          kt.data,
          vb.data,
          kr.data,
          vr.data,
          f.data,
          ks.stride,
          kt.stride,
          vb.stride,
          kr.stride,
          vr.stride,
          c.n_tokens(),
          c.sink_tokens(),
          c.k_middle_tokens(),
          c.v_middle_tokens()};
}

}  // namespace

DeviceLayerBatch::DeviceLayerBatch(const std::vector<const kv::LayerCache*>& seqs, int chunk_tokens)
    : state_(std::make_unique<State>()) {
  if (seqs.empty()) throw Error("cuda upload: no sequences");
  if (chunk_tokens != 0 && std::find(std::begin(kChunkChoices), std::end(kChunkChoices),
                                     chunk_tokens) == std::end(kChunkChoices)) {
    throw Error("cuda decode: chunk_tokens " + std::to_string(chunk_tokens) +
                " is not one of 0 (automatic), 128, 256, 512");
  }
  State& s = *state_;
  const kv::LayerCache& first = *seqs[0];
  s.kind = first.kind();
  s.config = first.config();
  s.n_seqs = static_cast<int>(seqs.size());
  s.n_kv_heads = first.n_kv_heads();
  s.head_dim = first.head_dim();
  for (const kv::LayerCache* c : seqs) {
    if (c->kind() != s.kind || c->n_kv_heads() != s.n_kv_heads || c->head_dim() != s.head_dim) {
      throw Error("cuda upload: every sequence must have the same cache kind and shape");
    }
    if (c->n_tokens() < 1) throw Error("cuda upload: a sequence holds no tokens");
    reject_key_transforms(c->config(), "cuda upload");
    s.max_tokens = std::max(s.max_tokens, c->n_tokens());
    s.kv_bytes += c->memory().total();
    switch (s.kind) {
      case kv::CacheKind::kF16:
        s.f16.push_back(upload_f16(s.regions, static_cast<const kv::F16LayerCache&>(*c)));
        break;
      case kv::CacheKind::kKivi:
        s.kivi.push_back(upload_kivi(s.regions, static_cast<const kv::KiviLayerCache&>(*c)));
        break;
      case kv::CacheKind::kInnerQ:
        s.innerq.push_back(upload_innerq(s.regions, static_cast<const kv::InnerQLayerCache&>(*c)));
        break;
      default:
        throw Error(std::string("cuda upload: cache kind ") + kv::cache_kind_name(s.kind) +
                    " has no CUDA kernel (f16, kivi, innerq)");
    }
  }
  s.chunk = chunk_tokens != 0
                ? chunk_tokens
                : kc::choose_chunk_tokens(s.max_tokens, s.n_kv_heads, s.n_seqs, current_sm_count());
  auto max_splits = [&](const auto& views, auto plan) {
    int m = 1;
    for (const auto& v : views) m = std::max(m, plan(v).splits());
    return m;
  };
  switch (s.kind) {
    case kv::CacheKind::kF16:
      s.max_splits = max_splits(s.f16, [&](const auto& v) { return kc::plan_of(v, s.chunk); });
      s.views = DeviceBuffer(s.f16.data(), s.f16.size() * sizeof(kc::F16SeqView));
      break;
    case kv::CacheKind::kKivi:
      s.max_splits = max_splits(
          s.kivi, [&](const auto& v) { return kc::plan_of(v, s.chunk, s.config.group); });
      s.views = DeviceBuffer(s.kivi.data(), s.kivi.size() * sizeof(kc::KiviSeqView));
      break;
    default:
      s.max_splits = max_splits(
          s.innerq, [&](const auto& v) { return kc::plan_of(v, s.chunk, s.config.group); });
      s.views = DeviceBuffer(s.innerq.data(), s.innerq.size() * sizeof(kc::InnerQSeqView));
      break;
  }
}

DeviceLayerBatch::~DeviceLayerBatch() = default;
DeviceLayerBatch::DeviceLayerBatch(DeviceLayerBatch&&) noexcept = default;
DeviceLayerBatch& DeviceLayerBatch::operator=(DeviceLayerBatch&&) noexcept = default;

kv::CacheKind DeviceLayerBatch::kind() const {
  return state_->kind;
}
int DeviceLayerBatch::n_seqs() const {
  return state_->n_seqs;
}
int DeviceLayerBatch::n_kv_heads() const {
  return state_->n_kv_heads;
}
int DeviceLayerBatch::head_dim() const {
  return state_->head_dim;
}
size_t DeviceLayerBatch::kv_bytes() const {
  return state_->kv_bytes;
}
int DeviceLayerBatch::chunk_tokens() const {
  return state_->chunk;
}

void DeviceLayerBatch::decode(const float* q, int n_heads, float* out, void* stream_ptr) {
  State& s = *state_;
  const kc::DecodeShape shape{s.n_seqs, s.n_kv_heads, n_heads, s.head_dim};
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  // Held until the launch is enqueued: another thread may not resize this
  // stream's workspace in between. Resizing frees the old buffers, and
  // cudaFree waits for the device, so no decode still reads them.
  const std::lock_guard<std::mutex> lock(s.workspaces_mutex);
  SplitWorkspace& ws = s.workspaces[stream];
  if (n_heads != ws.heads) {
    ws.partial_o = DeviceBuffer(kc::partial_o_floats(shape, s.max_splits) * sizeof(float));
    ws.partial_ml = DeviceBuffer(kc::partial_ml_floats(shape, s.max_splits) * sizeof(float));
    ws.heads = n_heads;
  }
  const kc::DecodeWork work{
      q, out, ws.partial_o.as<float>(), ws.partial_ml.as<float>(), s.chunk, s.max_splits};
  const kv::LayerConfig& c = s.config;
  cudaError_t status = cudaSuccess;
  switch (s.kind) {
    case kv::CacheKind::kF16:
      status = kc::launch_decode_f16({s.views.as<const kc::F16SeqView>(), shape, work}, stream);
      break;
    case kv::CacheKind::kKivi:
      status = kc::launch_decode_kivi(
          {s.views.as<const kc::KiviSeqView>(), shape, work, c.k_bits, c.group}, stream);
      break;
    default:
      status = kc::launch_decode_innerq(
          {s.views.as<const kc::InnerQSeqView>(), shape, work, c.k_bits, c.v_bits, c.group,
           mode_has_zero(c.k_mode), mode_has_zero(c.v_mode), c.key_group()},
          stream);
      break;
  }
  check(status, "decode launch");
}

std::vector<float> DeviceLayerBatch::decode_host(const std::vector<float>& q, int n_heads) {
  const size_t n = static_cast<size_t>(state_->n_seqs) * n_heads * state_->head_dim;
  if (q.size() != n) throw Error("cuda decode: q must hold n_seqs·n_heads·head_dim floats");
  DeviceBuffer q_dev(q.data(), n * sizeof(float));
  DeviceBuffer out_dev(n * sizeof(float));
  decode(q_dev.as<const float>(), n_heads, out_dev.as<float>());
  check(cudaDeviceSynchronize(), "decode");
  std::vector<float> out(n);
  out_dev.download(out.data(), n * sizeof(float));
  return out;
}

// ---------------------------------------------------------------------------
// CublasF16Batch
// ---------------------------------------------------------------------------
struct CublasF16Batch::State {
  int n_seqs = 0, n_kv_heads = 0, head_dim = 0, n_tokens = 0;
  DeviceBuffer k, v, scores, weights, inv_sum;
  int scores_heads = 0;
  cublasHandle_t handle = nullptr;
  ~State() {
    if (handle) cublasDestroy(handle);
  }
};

CublasF16Batch::CublasF16Batch(const std::vector<const kv::LayerCache*>& seqs)
    : state_(std::make_unique<State>()) {
  if (seqs.empty()) throw Error("cublas baseline: no sequences");
  State& s = *state_;
  s.n_seqs = static_cast<int>(seqs.size());
  s.n_kv_heads = seqs[0]->n_kv_heads();
  s.head_dim = seqs[0]->head_dim();
  s.n_tokens = seqs[0]->n_tokens();
  const int D = s.head_dim, N = s.n_tokens;
  std::vector<f16_bits> k(static_cast<size_t>(s.n_seqs) * s.n_kv_heads * N * D);
  std::vector<f16_bits> v(k.size());
  for (int q = 0; q < s.n_seqs; ++q) {
    const auto* c = dynamic_cast<const kv::F16LayerCache*>(seqs[static_cast<size_t>(q)]);
    if (!c || c->n_tokens() != N || c->n_kv_heads() != s.n_kv_heads || c->head_dim() != D) {
      throw Error("cublas baseline: every sequence must be an f16 cache of the same shape");
    }
    reject_key_transforms(c->config(), "cublas baseline");
  }
  // [seq][KV head] pairs in parallel: at 128k tokens × 8 sequences this is
  // gigabytes of transposition.
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int q = 0; q < s.n_seqs; ++q) {
    for (int h = 0; h < s.n_kv_heads; ++h) {
      const auto* c = static_cast<const kv::F16LayerCache*>(seqs[static_cast<size_t>(q)]);
      const size_t base = (static_cast<size_t>(q) * s.n_kv_heads + h) * N * D;
      const std::vector<f16_bits> k_tiles = c->k_tiles(h);  // [tile][D][16] → [N][D]
      const f16_bits* tiles = k_tiles.data();
      for (int t = 0; t < N; ++t) {
        for (int d = 0; d < D; ++d) {
          k[base + static_cast<size_t>(t) * D + d] =
              tiles[(static_cast<size_t>(t / kTileRows) * D + d) * kTileRows + t % kTileRows];
        }
      }
      std::memcpy(v.data() + base, c->v_rows(h).data(),
                  static_cast<size_t>(N) * D * sizeof(f16_bits));
    }
  }
  s.k = DeviceBuffer(k.data(), k.size() * sizeof(f16_bits));
  s.v = DeviceBuffer(v.data(), v.size() * sizeof(f16_bits));
  check(cublasCreate(&s.handle), "cublasCreate");
}

CublasF16Batch::~CublasF16Batch() = default;
CublasF16Batch::CublasF16Batch(CublasF16Batch&&) noexcept = default;
CublasF16Batch& CublasF16Batch::operator=(CublasF16Batch&&) noexcept = default;

void CublasF16Batch::decode(const uint16_t* q, int n_heads, float* out) {
  State& s = *state_;
  if (n_heads % s.n_kv_heads != 0) {
    throw Error("cublas baseline: n_heads must be a multiple of n_kv_heads");
  }
  if (n_heads != s.scores_heads) {
    const size_t rows = static_cast<size_t>(s.n_seqs) * n_heads;
    s.scores = DeviceBuffer(rows * s.n_tokens * sizeof(float));
    s.weights = DeviceBuffer(rows * s.n_tokens * sizeof(uint16_t));
    s.inv_sum = DeviceBuffer(rows * sizeof(float));
    s.scores_heads = n_heads;
  }
  kc::cublas_decode_attention(
      s.handle, {q, s.k.as<const uint16_t>(), s.v.as<const uint16_t>(), s.scores.as<float>(),
                 s.weights.as<uint16_t>(), s.inv_sum.as<float>(), out, s.n_seqs, s.n_kv_heads,
                 n_heads, s.head_dim, s.n_tokens});
}

std::vector<float> CublasF16Batch::decode_host(const std::vector<float>& q, int n_heads) {
  const size_t n = static_cast<size_t>(state_->n_seqs) * n_heads * state_->head_dim;
  if (q.size() != n) throw Error("cublas baseline: q must hold n_seqs·n_heads·head_dim floats");
  std::vector<f16_bits> q16(n);
  for (size_t i = 0; i < n; ++i) q16[i] = f32_to_f16(q[i]);
  DeviceBuffer q_dev(q16.data(), n * sizeof(f16_bits));
  DeviceBuffer out_dev(n * sizeof(float));
  decode(q_dev.as<const uint16_t>(), n_heads, out_dev.as<float>());
  check(cudaDeviceSynchronize(), "cublas decode");
  std::vector<float> out(n);
  out_dev.download(out.data(), n * sizeof(float));
  return out;
}

// ---------------------------------------------------------------------------
// Quantize-on-append.
// ---------------------------------------------------------------------------
namespace {

void throw_if_bad_group(const DeviceBuffer& bad, const char* what) {
  int index = 0;
  bad.download(&index, sizeof index);
  if (index != INT32_MAX) {
    throw Error(std::string(what) + ": group " + std::to_string(index) +
                " holds a non-finite value or one beyond ±65504");
  }
}

DeviceBuffer bad_group_flag() {
  const int none = INT32_MAX;
  return DeviceBuffer(&none, sizeof none);
}

}  // namespace

std::vector<uint8_t> append_keys_on_device(const std::vector<f16_bits>& rows,
                                           const std::vector<float>& key_norm, int n_kv_heads,
                                           int n_rows, int head_dim,
                                           const kv::LayerConfig& config) {
  const size_t rows_stride = static_cast<size_t>(n_rows) * head_dim;
  if (rows.size() != rows_stride * n_kv_heads ||
      key_norm.size() != static_cast<size_t>(n_kv_heads) * head_dim) {
    throw Error("cuda append keys: rows or key_norm has the wrong length");
  }
  const TileFormat fmt{config.k_bits, config.key_group(), head_dim / config.key_group(),
                       mode_has_zero(config.k_mode)};
  const size_t tiles_stride = static_cast<size_t>(n_rows + kTileRows - 1) / kTileRows * fmt.bytes();
  DeviceBuffer rows_dev(rows.data(), rows.size() * sizeof(f16_bits));
  DeviceBuffer norm_dev(key_norm.data(), key_norm.size() * sizeof(float));
  DeviceBuffer tiles(tiles_stride * n_kv_heads);
  DeviceBuffer bad = bad_group_flag();
  const kc::AppendKeysParams p{rows_dev.as<const uint16_t>(),
                               norm_dev.as<const float>(),
                               tiles.as<uint8_t>(),
                               bad.as<int>(),
                               rows_stride,
                               tiles_stride,
                               n_kv_heads,
                               n_rows,
                               head_dim,
                               0,
                               config.k_bits,
                               config.key_group(),
                               config.k_mode};
  check(kc::launch_append_keys(p, nullptr), "append keys launch");
  check(cudaDeviceSynchronize(), "append keys");
  throw_if_bad_group(bad, "cuda append keys");
  std::vector<uint8_t> out(tiles_stride * n_kv_heads);
  tiles.download(out.data(), out.size());
  return out;
}

std::vector<uint8_t> append_values_on_device(const std::vector<f16_bits>& rows, int n_kv_heads,
                                             int n_blocks, int head_dim,
                                             const kv::LayerConfig& config) {
  const size_t rows_stride = static_cast<size_t>(n_blocks) * config.group * head_dim;
  if (rows.size() != rows_stride * n_kv_heads) {
    throw Error("cuda append values: rows has the wrong length");
  }
  const TileFormat fmt{config.v_bits, config.group, 1, mode_has_zero(config.v_mode)};
  const size_t blocks_stride = static_cast<size_t>(n_blocks) * (head_dim / kTileRows) * fmt.bytes();
  DeviceBuffer rows_dev(rows.data(), rows.size() * sizeof(f16_bits));
  DeviceBuffer blocks(blocks_stride * n_kv_heads);
  DeviceBuffer bad = bad_group_flag();
  const kc::AppendValuesParams p{rows_dev.as<const uint16_t>(),
                                 blocks.as<uint8_t>(),
                                 bad.as<int>(),
                                 rows_stride,
                                 blocks_stride,
                                 n_kv_heads,
                                 n_blocks,
                                 head_dim,
                                 0,
                                 config.v_bits,
                                 config.group,
                                 config.v_mode};
  check(kc::launch_append_values(p, nullptr), "append values launch");
  check(cudaDeviceSynchronize(), "append values");
  throw_if_bad_group(bad, "cuda append values");
  std::vector<uint8_t> out(blocks_stride * n_kv_heads);
  blocks.download(out.data(), out.size());
  return out;
}

// ---------------------------------------------------------------------------
// Timing.
// ---------------------------------------------------------------------------
double median_time_ms(const std::function<void()>& enqueue, int reps) {
  int device = 0, l2_bytes = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device), "L2 size");
  DeviceBuffer flush(2 * static_cast<size_t>(std::max(l2_bytes, 1 << 20)));
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  enqueue();
  check(cudaDeviceSynchronize(), "warm-up");
  std::vector<double> times;
  for (int r = 0; r < std::max(reps, 1); ++r) {
    check(cudaMemsetAsync(flush.data(), r & 0xff, flush.bytes()), "L2 flush");
    check(cudaEventRecord(start), "cudaEventRecord");
    enqueue();
    check(cudaEventRecord(stop), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::nth_element(times.begin(), times.begin() + static_cast<ptrdiff_t>(times.size() / 2),
                   times.end());
  return times[times.size() / 2];
}

double copy_bandwidth_gbps(size_t bytes) {
  DeviceBuffer src(bytes), dst(bytes);
  const double ms = median_time_ms(
      [&] {
        check(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice), "copy");
      },
      10);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
}

}  // namespace innerq::attn::cuda
