// innerq/kv/key_factors.h — InnerQ's per-channel key statistics fixed ahead
// of time (`--kv innerq:kfactors=FILE`), so that every sequence stores the
// same bytes for the same prefix (docs/architecture.md, "Key normalization").
//
// A cache computes its key mean μ (kcenter=on) and factors f (knorm) per
// sequence, at its first flush. A KeyFactors holds both per layer and KV
// head, computed once by `innerq calibrate` from a calibration text with the
// same statistic (key_channel_means, key_channel_factors below, which the
// layer cache shares).
//
// File format (little-endian), version 1:
//
//   offset  bytes  field
//   0       8      magic "INNERQKF"
//   8       4      u32 version (1)
//   12      4      u32 n_layers      (1 .. 4096)
//   16      4      u32 n_kv_heads    (1 .. 1024)
//   20      4      u32 head_dim      (1 .. 4096)
//   24      4      u32 knorm         (0 off, 1 sqrtmax, 2 rms)
//   28      4      u32 flags         (bit 0: centered, bit 1: rotated)
//   32      8      u64 n_tokens      (calibration keys per head)
//   40      4      u32 model_bytes   (0 .. 4096)
//   44      m      model description (UTF-8, e.g. "llama: SmolLM2 135M Instruct")
//   44+m    4·N    f32 factors [n_layers][n_kv_heads][head_dim], N = L·H·D
//   ...     4·N    f32 means, same shape (only when centered)
//   end−8   8      u64 FNV-1a-64 of every byte before it
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "innerq/kv/cache_spec.h"

namespace innerq::kv {

struct KeyFactors {
  std::string model;  // what it was calibrated on, for mismatch errors
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  KeyNorm knorm = KeyNorm::kOff;  // the statistic of `factors` (off: all ones)
  bool centered = false;          // means present; factors are of K − μ (kcenter=on)
  bool rotated = false;           // statistics of rotated keys (rot=k or kv)
  uint64_t n_tokens = 0;          // calibration keys per head
  std::vector<float> factors;     // [n_layers][n_kv_heads][head_dim], each > 0
  std::vector<float> means;       // same shape, or empty when !centered
  std::string path;               // the file it was read from (not stored in it)

  // [head_dim] of layer `layer`, KV head `head`.
  const float* head_factors(int layer, int head) const;
  // [head_dim], or nullptr when !centered.
  const float* head_means(int layer, int head) const;
};

// The per-channel statistics a cache takes from its keys (the first flush of
// InnerQLayerCache, and `innerq calibrate`). rows: [n_rows][head_dim], n_rows
// ≥ 1.
//   key_channel_means:   mu[c] = mean of rows[.][c], summed in double.
//   key_channel_factors: sqrtmax: f[c] = sqrt(max |rows[.][c]|); rms:
//                        f[c] = sqrt(sqrt(mean rows[.][c]²)) (summed in f32);
//                        off: 1. A channel that is all zero (or overflows) gets 1.
void key_channel_means(const float* rows, int n_rows, int head_dim, float* mu);
void key_channel_factors(KeyNorm knorm, const float* rows, int n_rows, int head_dim, float* f);

// The same two statistics over rows given one at a time (the cache's first
// flush reads them out of an f16 window a row at a time): after add() of the
// same rows in the same order, mean() and factors() equal key_channel_means
// and key_channel_factors bit for bit (which are computed through them).
class KeyMeanAccumulator {
 public:
  explicit KeyMeanAccumulator(int head_dim);
  void add(const float* row);  // [head_dim]
  void mean(float* mu) const;  // [head_dim]; at least one row added

 private:
  std::vector<double> sum_;
  int n_rows_ = 0;
};

class KeyFactorAccumulator {
 public:
  KeyFactorAccumulator(KeyNorm knorm, int head_dim);
  void add(const float* row);    // [head_dim]
  void factors(float* f) const;  // [head_dim]; at least one row added

 private:
  KeyNorm knorm_;
  std::vector<float> acc_;  // running Σ x² (rms) or max |x| (sqrtmax)
  int n_rows_ = 0;
};

// Mean (if `center`) then factors of one head's keys, as the cache computes
// them at its first flush: the factors are of rows − μ, each clamped to
// ±65504 (the f16 range the cache stores). rows: [n_rows][head_dim] in the
// cache's coordinates (rotated when rot=k); mu: [head_dim], written only
// when `center`; f: [head_dim].
void compute_key_factors(KeyNorm knorm, bool center, const float* rows, int n_rows, int head_dim,
                         float* mu, float* f);

// The file bytes of `kf` (format above). Does not validate: see check_key_factors_values.
std::vector<uint8_t> serialize_key_factors(const KeyFactors& kf);
// Parses file bytes; `name` (a path) names them in errors. Throws innerq::Error
// for bad magic, an unknown version, truncation or trailing bytes, a checksum
// mismatch, absurd dimensions, and non-finite or non-positive factors
// (non-finite means).
KeyFactors parse_key_factors(const uint8_t* data, size_t size, const std::string& name);

// Throws innerq::Error (naming kf.path) unless every factor is finite and
// > 0 and every mean finite, with the shape the dimensions say.
void check_key_factors_values(const KeyFactors& kf);

// Validates, then writes `path` (replacing it). Returns the bytes written.
size_t write_key_factors(const KeyFactors& kf, const std::string& path);
// Reads and validates `path` (at most kMaxKeyFactorsFileBytes).
KeyFactors read_key_factors(const std::string& path);
inline constexpr uint64_t kMaxKeyFactorsFileBytes = uint64_t{256} << 20;

// What the cache checks when it builds layer `layer` of a model with
// n_kv_heads × head_dim on a config holding `kf`: throws innerq::Error, naming
// the file and the model it was calibrated on, unless the layer exists in kf
// and the head count and head_dim match.
void check_key_factors(const KeyFactors& kf, int layer, int n_kv_heads, int head_dim);

// Throws innerq::Error (prefixed by `context`) unless `c` takes its key
// statistics in the frame kf was calibrated in: the same knorm, kcenter on
// iff kf is centered, rot_k iff kf is rotated.
void check_key_factors_frame(const KeyFactors& kf, const LayerConfig& c,
                             const std::string& context);

// "n_layers 30, 3 KV heads, head_dim 64, knorm=sqrtmax, kcenter=on, rot=k".
std::string describe_key_factors(const KeyFactors& kf);

}  // namespace innerq::kv
