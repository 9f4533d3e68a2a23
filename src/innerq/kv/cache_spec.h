// innerq/kv/cache_spec.h — the `--kv SPEC` string every tool uses to name a
// cache configuration, and the per-layer configuration it expands to.
//
//   SPEC     := BASE[;OVERRIDE...]
//   BASE     := NAME[:key=value[,key=value...]]
//   NAME     := f32 | f16 | q8_0 | q4_0 | kivi | kivi4 | innerq | innerq-paper
//   keys (innerq, innerq-paper): k, v (bits: 2 3 4 8), kmode, vmode
//                  (sym|asym|hybrid), g (32 64 128), kg (K's own group size,
//                  32 64 128; default g), sink, recent (tokens ≥ 0),
//                  knorm (off|sqrtmax|rms), kcenter (on|off),
//                  ksort (on|off): the quantized keys' channels sorted by
//                  their magnitude at the first flush, per KV head, so each
//                  group holds channels of one size (not with kfactors),
//                  klevels (uniform|normal): K's codes index uniform levels
//                  or a codebook placed for a normal distribution
//                  (kernels/group_format.h; needs kmode=sym and k of 2-4),
//                  kfactors=FILE: the key mean and factors of every layer
//                  and KV head read from FILE (written by `innerq
//                  calibrate`, kv/key_factors.h) instead of computed per
//                  sequence, so equal prefixes store equal bytes; FILE must
//                  have been calibrated with the same knorm, kcenter and
//                  rot (of K). It is read once, when the spec is parsed;
//                  overrides on top of the base share it
//   keys (kivi, kivi4): g, recent (the fp16 residual length)
//   keys (every name): rot (off|k|v|kv): randomized Hadamard rotation of K
//                  and/or V along head_dim (kernels/hadamard.h);
//                  kperm (off|evenodd|pairs): a fixed order of K's channels
//                  before grouping and rotation (kernels/channel_order.h;
//                  not with kfactors);
//                  layers=FILE: per-layer overrides, one OVERRIDE per line
//   OVERRIDE := RANGE=SPEC      layers RANGE use SPEC (any name)
//             | RANGE:FIELDS    layers RANGE use BASE with FIELDS applied
//   RANGE    := N | N-M         0-based layer indices, inclusive
//
// e.g. `innerq;0-1:k=8,v=4;29=f16` or `innerq:layers=tuned.txt`. Later
// overrides win. `innerq-paper` is the paper's reference configuration
// (docs/architecture.md, "Specs"): K 3-bit symmetric with sqrt-max key
// normalization, V 2-bit hybrid, g=32, sink=32, recent=96, no rotation;
// `innerq` alone is the project's default (docs/architecture.md, "Choosing
// the default"); its k, v, knorm and rot depend on head_dim unless named.
// Invalid specs throw innerq::Error naming the field and the allowed values.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "innerq/kernels/channel_order.h"
#include "innerq/kernels/group_format.h"

namespace innerq::kv {

enum class CacheKind { kF32, kF16, kQ8_0, kQ4_0, kKivi, kInnerQ };
enum class KeyNorm { kOff, kSqrtMax, kRms };
struct KeyFactors;  // kv/key_factors.h

// One layer's configuration. Fields that a kind does not use are ignored.
struct LayerConfig {
  CacheKind kind = CacheKind::kInnerQ;
  int k_bits = 3;
  int v_bits = 2;
  QuantMode k_mode = QuantMode::kSymmetric;
  QuantMode v_mode = QuantMode::kHybrid;
  int group = 32;   // G of V's token groups (and of K's, unless k_group is set)
  int k_group = 0;  // G of K's channel groups; 0: the same as `group`
  int sink = 32;
  int recent = 96;
  KeyNorm knorm = KeyNorm::kSqrtMax;
  bool kcenter = false;  // keys stored minus their per-channel mean (innerq)
  // Quantized keys stored with their channels sorted by magnitude, an order
  // fixed per KV head at the first flush (innerq; docs/architecture.md,
  // "Channel order").
  bool ksort = false;
  Levels k_levels = Levels::kUniform;  // K's levels (innerq): uniform or codebook
  bool rot_k = false;                  // keys stored rotated (query rotated at decode)
  bool rot_v = false;                  // values stored rotated (output rotated back)
  // Keys stored with their channels in this order (query permuted alike).
  kernels::ChannelOrder kperm = kernels::ChannelOrder::kAsIs;
  // Calibrated key mean and factors (kfactors=FILE), or null: computed per
  // sequence at the first flush. Immutable, shared by every layer using it.
  std::shared_ptr<const KeyFactors> key_factors;
  // Fields of `innerq` that depend on head_dim (docs/architecture.md,
  // "Choosing the default"): while a bit of `by_head_dim` is set, that field
  // still holds its value for head_dim < 256 and resolve_head_dim() sets it;
  // a spec that names the field clears the bit.
  enum : unsigned {
    kAutoRot = 1,
    kAutoKnorm = 2,
    kAutoKBits = 4,
    kAutoVBits = 8,
    kAutoKLevels = 16
  };
  unsigned by_head_dim = 0;

  int key_group() const { return k_group > 0 ? k_group : group; }
};

// Layers [first, last] use `config`.
struct LayerOverride {
  int first = 0, last = 0;
  LayerConfig config;
};

struct CacheSpec {
  std::string text;   // as given, e.g. "innerq:k=4,v=4"
  LayerConfig layer;  // applied to every layer unless overridden
  std::vector<LayerOverride> overrides;

  // One config per layer for a model of n_layers layers and head_dim,
  // resolved for head_dim (resolve_head_dim). Throws innerq::Error when an
  // override names a layer at or beyond n_layers, or when a kfactors file
  // does not match the resolved key frame.
  std::vector<LayerConfig> layers(int n_layers, int head_dim) const;
  // The same before resolve_head_dim (auto fields unresolved, kfactors
  // unchecked against them): what the spec says without a model.
  std::vector<LayerConfig> configured_layers(int n_layers) const;
};

CacheSpec parse_cache_spec(std::string_view spec);

// What `innerq` alone means (before resolve_head_dim).
LayerConfig default_innerq_config();

// From this head_dim on, `innerq` stores 4-bit keys unrotated with sqrt-max
// key normalization and codebook levels (klevels=normal, where the key
// groups allow it: symmetric, 2-4 bits) and 2-bit values; below it, 3-bit
// rotated keys without normalization on uniform levels and 3-bit values
// (the same bytes).
inline constexpr int kWideHeadDim = 256;

// c with the fields still chosen by head_dim set for head_dim, and
// by_head_dim cleared.
LayerConfig resolve_head_dim(LayerConfig c, int head_dim);

// Splits "a,b:k=1,c" style lists of specs on commas that start a new NAME.
std::vector<CacheSpec> parse_cache_spec_list(std::string_view specs);

const char* cache_kind_name(CacheKind kind);
const char* key_norm_name(KeyNorm norm);                      // "off", "sqrtmax", "rms"
const char* channel_order_name(kernels::ChannelOrder order);  // "off", "evenodd", "pairs"

// A short canonical description of one layer's config, e.g.
// "innerq k3sym v2hybrid g32 sink32 recent96 knorm=sqrtmax rot=k"
// (plus " kfactors=FILE" when calibrated factors are used). A config with
// fields still chosen by head_dim describes both choices: "<below 256>
// (head_dim < 256; from 256: <the fields that differ>)".
std::string describe(const LayerConfig& c);

// A spec string that parses back to exactly `c`, with every field spelled
// out, e.g. "innerq-paper:k=3,v=2,kmode=sym,...,rot=k" (used in layers files).
std::string spec_string(const LayerConfig& c);

}  // namespace innerq::kv
