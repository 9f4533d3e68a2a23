// innerq/kv/cache_spec.h — the `--kv SPEC` string every tool uses to name a
// cache configuration, and the per-layer configuration it expands to.
//
//   SPEC := NAME[:key=value[,key=value...]]
//   NAME := f32 | f16 | q8_0 | q4_0 | kivi | kivi4 | innerq
//   keys (innerq): k, v (bits: 2 3 4 8), kmode, vmode (sym|asym|hybrid),
//                  g (32 64 128), sink, recent (tokens ≥ 0), knorm (off|sqrtmax|rms)
//   keys (kivi, kivi4): g, recent (the fp16 residual length)
//
// `innerq` alone is the reference configuration (DESIGN.md §1.5): K 3-bit
// symmetric with sqrt-max key normalization, V 2-bit hybrid, g=32, sink=32,
// recent=96. Invalid specs throw innerq::Error naming the field and the
// allowed values.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "innerq/kernels/group_format.h"

namespace innerq::kv {

enum class CacheKind { kF32, kF16, kQ8_0, kQ4_0, kKivi, kInnerQ };
enum class KeyNorm { kOff, kSqrtMax, kRms };

// One layer's configuration. Fields that a kind does not use are ignored.
struct LayerConfig {
  CacheKind kind = CacheKind::kInnerQ;
  int k_bits = 3;
  int v_bits = 2;
  QuantMode k_mode = QuantMode::kSymmetric;
  QuantMode v_mode = QuantMode::kHybrid;
  int group = 32;
  int sink = 32;
  int recent = 96;
  KeyNorm knorm = KeyNorm::kSqrtMax;
};

struct CacheSpec {
  std::string text;   // canonical spelling, e.g. "innerq:k=4,v=4"
  LayerConfig layer;  // applied to every layer unless overridden
};

CacheSpec parse_cache_spec(std::string_view spec);

// Splits "a,b:k=1,c" style lists of specs on commas that start a new NAME.
std::vector<CacheSpec> parse_cache_spec_list(std::string_view specs);

const char* cache_kind_name(CacheKind kind);

}  // namespace innerq::kv
