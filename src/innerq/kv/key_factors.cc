// Calibrated key statistics and their file format (key_factors.h).
#include "innerq/kv/key_factors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/base/fp16.h"

namespace innerq::kv {
namespace {

constexpr char kMagic[8] = {'I', 'N', 'N', 'E', 'R', 'Q', 'K', 'F'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 44;  // through model_bytes
constexpr size_t kChecksumBytes = 8;
constexpr uint32_t kMaxLayers = 4096, kMaxKvHeads = 1024, kMaxHeadDim = 4096, kMaxModelBytes = 4096;
constexpr uint32_t kFlagCentered = 1, kFlagRotated = 2;

uint64_t fnv1a64(const uint8_t* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ data[i]) * 0x100000001b3ull;
  return h;
}

void put_u32(std::vector<uint8_t>& out, uint32_t x) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
void put_u64(std::vector<uint8_t>& out, uint64_t x) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
void put_f32s(std::vector<uint8_t>& out, const std::vector<float>& x) {
  for (float f : x) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    put_u32(out, bits);
  }
}
uint32_t get_u32(const uint8_t* p) {
  uint32_t x = 0;
  for (int i = 3; i >= 0; --i) x = (x << 8) | p[i];
  return x;
}
uint64_t get_u64(const uint8_t* p) {
  uint64_t x = 0;
  for (int i = 7; i >= 0; --i) x = (x << 8) | p[i];
  return x;
}
void get_f32s(const uint8_t* p, size_t n, std::vector<float>& out) {
  out.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t bits = get_u32(p + 4 * i);
    std::memcpy(&out[i], &bits, sizeof bits);
  }
}

size_t values_per_array(const KeyFactors& kf) {
  return static_cast<size_t>(kf.n_layers) * kf.n_kv_heads * kf.head_dim;
}

const char* on_off(bool b) {
  return b ? "on" : "off";
}

}  // namespace

const float* KeyFactors::head_factors(int layer, int head) const {
  return factors.data() + (static_cast<size_t>(layer) * n_kv_heads + head) * head_dim;
}

const float* KeyFactors::head_means(int layer, int head) const {
  if (!centered) return nullptr;
  return means.data() + (static_cast<size_t>(layer) * n_kv_heads + head) * head_dim;
}

KeyMeanAccumulator::KeyMeanAccumulator(int head_dim) : sum_(static_cast<size_t>(head_dim), 0.0) {}

void KeyMeanAccumulator::add(const float* row) {
  for (size_t c = 0; c < sum_.size(); ++c) sum_[c] += row[c];
  ++n_rows_;
}

void KeyMeanAccumulator::mean(float* mu) const {
  for (size_t c = 0; c < sum_.size(); ++c) mu[c] = static_cast<float>(sum_[c] / n_rows_);
}

KeyFactorAccumulator::KeyFactorAccumulator(KeyNorm knorm, int head_dim)
    : knorm_(knorm), acc_(static_cast<size_t>(head_dim), 0.0f) {}

void KeyFactorAccumulator::add(const float* row) {
  for (size_t c = 0; c < acc_.size(); ++c) {
    acc_[c] =
        knorm_ == KeyNorm::kRms ? acc_[c] + row[c] * row[c] : std::max(acc_[c], std::fabs(row[c]));
  }
  ++n_rows_;
}

void KeyFactorAccumulator::factors(float* f) const {
  for (size_t c = 0; c < acc_.size(); ++c) {
    if (knorm_ == KeyNorm::kOff) {
      f[c] = 1.0f;
      continue;
    }
    float x = acc_[c];
    if (knorm_ == KeyNorm::kRms) x = std::sqrt(x / static_cast<float>(n_rows_));
    f[c] = x > 0.0f && std::isfinite(x) ? std::sqrt(x) : 1.0f;
  }
}

void key_channel_means(const float* rows, int n_rows, int head_dim, float* mu) {
  KeyMeanAccumulator acc(head_dim);
  for (int t = 0; t < n_rows; ++t) acc.add(rows + static_cast<size_t>(t) * head_dim);
  acc.mean(mu);
}

void key_channel_factors(KeyNorm knorm, const float* rows, int n_rows, int head_dim, float* f) {
  KeyFactorAccumulator acc(knorm, head_dim);
  if (knorm != KeyNorm::kOff) {
    for (int t = 0; t < n_rows; ++t) acc.add(rows + static_cast<size_t>(t) * head_dim);
  }
  acc.factors(f);
}

void compute_key_factors(KeyNorm knorm, bool center, const float* rows, int n_rows, int head_dim,
                         float* mu, float* f) {
  if (!center) {
    key_channel_factors(knorm, rows, n_rows, head_dim, f);
    return;
  }
  key_channel_means(rows, n_rows, head_dim, mu);
  std::vector<float> centered(static_cast<size_t>(n_rows) * head_dim);
  for (size_t i = 0; i < centered.size(); ++i)
    centered[i] = std::clamp(rows[i] - mu[i % static_cast<size_t>(head_dim)], -kF16Max, kF16Max);
  key_channel_factors(knorm, centered.data(), n_rows, head_dim, f);
}

std::string describe_key_factors(const KeyFactors& kf) {
  return fmt::format("{} layers, {} KV heads, head_dim {}, knorm={}, kcenter={}, rot={}",
                     kf.n_layers, kf.n_kv_heads, kf.head_dim, key_norm_name(kf.knorm),
                     on_off(kf.centered), kf.rotated ? "k" : "off");
}

std::vector<uint8_t> serialize_key_factors(const KeyFactors& kf) {
  std::vector<uint8_t> out(std::begin(kMagic), std::end(kMagic));
  put_u32(out, kVersion);
  put_u32(out, static_cast<uint32_t>(kf.n_layers));
  put_u32(out, static_cast<uint32_t>(kf.n_kv_heads));
  put_u32(out, static_cast<uint32_t>(kf.head_dim));
  put_u32(out, static_cast<uint32_t>(kf.knorm));
  put_u32(out, (kf.centered ? kFlagCentered : 0) | (kf.rotated ? kFlagRotated : 0));
  put_u64(out, kf.n_tokens);
  const std::string model = kf.model.substr(0, kMaxModelBytes);
  put_u32(out, static_cast<uint32_t>(model.size()));
  out.insert(out.end(), model.begin(), model.end());
  put_f32s(out, kf.factors);
  if (kf.centered) put_f32s(out, kf.means);
  put_u64(out, fnv1a64(out.data(), out.size()));
  return out;
}

KeyFactors parse_key_factors(const uint8_t* data, size_t size, const std::string& name) {
  const auto fail = [&](const std::string& what) {
    return Error(fmt::format("key factors file '{}': {}", name, what));
  };
  if (size < sizeof kMagic || std::memcmp(data, kMagic, sizeof kMagic) != 0) {
    if (size < sizeof kMagic && (size == 0 || std::memcmp(data, kMagic, size) == 0)) {
      throw fail(fmt::format("truncated: {} bytes, the header alone is {}", size,
                             kHeaderBytes + kChecksumBytes));
    }
    throw fail(
        "not a key factors file (bad magic; expected 'INNERQKF', written by innerq "
        "calibrate)");
  }
  if (size < 12)
    throw fail(fmt::format("truncated: {} bytes, the header alone is {}", size,
                           kHeaderBytes + kChecksumBytes));
  const uint32_t version = get_u32(data + 8);
  if (version != kVersion) {
    throw fail(fmt::format("version {} is not supported (this innerq reads version {})", version,
                           kVersion));
  }
  if (size < kHeaderBytes + kChecksumBytes) {
    throw fail(fmt::format("truncated: {} bytes, the header alone is {}", size,
                           kHeaderBytes + kChecksumBytes));
  }
  const uint32_t layers = get_u32(data + 12), heads = get_u32(data + 16), dim = get_u32(data + 20),
                 knorm = get_u32(data + 24), flags = get_u32(data + 28),
                 model_bytes = get_u32(data + 40);
  if (layers < 1 || layers > kMaxLayers || heads < 1 || heads > kMaxKvHeads || dim < 1 ||
      dim > kMaxHeadDim) {
    throw fail(fmt::format(
        "dimensions {} layers, {} KV heads, head_dim {} are out of range (1..{}, 1..{}, 1..{})",
        layers, heads, dim, kMaxLayers, kMaxKvHeads, kMaxHeadDim));
  }
  if (knorm > static_cast<uint32_t>(KeyNorm::kRms)) {
    throw fail(fmt::format("knorm {} is not 0 (off), 1 (sqrtmax) or 2 (rms)", knorm));
  }
  if ((flags & ~(kFlagCentered | kFlagRotated)) != 0) {
    throw fail(fmt::format("flags {:#x} hold unknown bits", flags));
  }
  if (model_bytes > kMaxModelBytes) {
    throw fail(
        fmt::format("model description of {} bytes exceeds {}", model_bytes, kMaxModelBytes));
  }
  // Every count is bounded above, so this cannot overflow; nothing is
  // allocated before the file is known to hold it.
  const uint64_t values = uint64_t{layers} * heads * dim;
  const uint64_t want =
      kHeaderBytes + model_bytes + values * 4 * ((flags & kFlagCentered) ? 2 : 1) + kChecksumBytes;
  if (size < want) {
    throw fail(fmt::format("truncated: {} bytes, its header describes {}", size, want));
  }
  if (size > want) {
    throw fail(fmt::format("{} bytes, but its header describes {} ({} trailing bytes)", size, want,
                           size - want));
  }
  const uint64_t stored = get_u64(data + size - kChecksumBytes);
  const uint64_t computed = fnv1a64(data, size - kChecksumBytes);
  if (stored != computed) {
    throw fail(
        fmt::format("checksum mismatch (stored {:016x}, computed {:016x}): the file is "
                    "corrupted",
                    stored, computed));
  }
  KeyFactors kf;
  kf.n_layers = static_cast<int>(layers);
  kf.n_kv_heads = static_cast<int>(heads);
  kf.head_dim = static_cast<int>(dim);
  kf.knorm = static_cast<KeyNorm>(knorm);
  kf.centered = (flags & kFlagCentered) != 0;
  kf.rotated = (flags & kFlagRotated) != 0;
  kf.n_tokens = get_u64(data + 32);
  kf.model.assign(reinterpret_cast<const char*>(data + kHeaderBytes), model_bytes);
  kf.path = name;
  const uint8_t* payload = data + kHeaderBytes + model_bytes;
  get_f32s(payload, values, kf.factors);
  if (kf.centered) get_f32s(payload + values * 4, values, kf.means);
  check_key_factors_values(kf);
  return kf;
}

void check_key_factors_values(const KeyFactors& kf) {
  const auto fail = [&](const std::string& what) {
    return Error(fmt::format("key factors file '{}': {}", kf.path, what));
  };
  const size_t n = values_per_array(kf);
  if (kf.n_layers < 1 || kf.n_kv_heads < 1 || kf.head_dim < 1 || kf.factors.size() != n ||
      (kf.centered ? kf.means.size() != n : !kf.means.empty())) {
    throw fail(fmt::format("{} factors and {} means do not fit {}", kf.factors.size(),
                           kf.means.size(), describe_key_factors(kf)));
  }
  const auto where = [&](size_t i) {
    const size_t D = static_cast<size_t>(kf.head_dim), H = static_cast<size_t>(kf.n_kv_heads);
    return fmt::format("layer {} KV head {} channel {}", i / (D * H), i / D % H, i % D);
  };
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(kf.factors[i]) || kf.factors[i] <= 0.0f) {
      throw fail(
          fmt::format("factor of {} is {} (must be finite and > 0)", where(i), kf.factors[i]));
    }
    if (kf.centered && !std::isfinite(kf.means[i])) {
      throw fail(fmt::format("mean of {} is {} (must be finite)", where(i), kf.means[i]));
    }
  }
}

size_t write_key_factors(const KeyFactors& kf, const std::string& path) {
  KeyFactors named = kf;
  named.path = path;
  check_key_factors_values(named);
  const std::vector<uint8_t> bytes = serialize_key_factors(kf);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(fmt::format("key factors file '{}': cannot open for writing", path));
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw Error(fmt::format("key factors file '{}': write failed", path));
  return bytes.size();
}

KeyFactors read_key_factors(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw Error(fmt::format("key factors file '{}' is not a readable file", path));
  }
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec || size > kMaxKeyFactorsFileBytes) {
    throw Error(fmt::format("key factors file '{}' is larger than {} bytes", path,
                            kMaxKeyFactorsFileBytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (!in || !in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size))) {
    throw Error(fmt::format("key factors file '{}': cannot read", path));
  }
  return parse_key_factors(bytes.data(), bytes.size(), path);
}

void check_key_factors(const KeyFactors& kf, int layer, int n_kv_heads, int head_dim) {
  if (layer < 0 || layer >= kf.n_layers || n_kv_heads != kf.n_kv_heads || head_dim != kf.head_dim) {
    throw Error(fmt::format(
        "key factors file '{}' was calibrated on '{}' ({}), which does not fit layer {} of this "
        "model ({} KV heads, head_dim {}); run innerq calibrate on this model",
        kf.path, kf.model, describe_key_factors(kf), layer, n_kv_heads, head_dim));
  }
}

void check_key_factors_frame(const KeyFactors& kf, const LayerConfig& c,
                             const std::string& context) {
  if (kf.knorm != c.knorm || kf.centered != c.kcenter || kf.rotated != c.rot_k) {
    throw Error(fmt::format(
        "{}: key factors file '{}' holds statistics for knorm={}, kcenter={}, rot(k)={}, but this "
        "config has knorm={}, kcenter={}, rot(k)={}; calibrate with the same --kv",
        context, kf.path, key_norm_name(kf.knorm), on_off(kf.centered), on_off(kf.rotated),
        key_norm_name(c.knorm), on_off(c.kcenter), on_off(c.rot_k)));
  }
}

}  // namespace innerq::kv
