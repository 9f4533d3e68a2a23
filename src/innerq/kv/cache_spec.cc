// Parsing of `--kv SPEC` strings (grammar in cache_spec.h).
#include "innerq/kv/cache_spec.h"

#include <charconv>
#include <string>

#include <fmt/core.h>

#include "innerq/base/error.h"

namespace innerq::kv {
namespace {

constexpr const char* kNames = "f32, f16, q8_0, q4_0, kivi, kivi4, innerq";

int parse_int(std::string_view spec, std::string_view key, std::string_view value) {
  int out = 0;
  const auto* end = value.data() + value.size();
  auto [ptr, ec] = std::from_chars(value.data(), end, out);
  if (ec != std::errc() || ptr != end || value.empty()) {
    throw Error(fmt::format("cache spec '{}': {}='{}' is not an integer", spec, key, value));
  }
  return out;
}

int parse_bits(std::string_view spec, std::string_view key, std::string_view value) {
  const int b = parse_int(spec, key, value);
  if (!is_supported_bits(b)) {
    throw Error(fmt::format("cache spec '{}': {}={} is not a supported bit width (2, 3, 4, 8)",
                            spec, key, b));
  }
  return b;
}

QuantMode parse_mode(std::string_view spec, std::string_view key, std::string_view value) {
  if (value == "sym") return QuantMode::kSymmetric;
  if (value == "asym") return QuantMode::kAsymmetric;
  if (value == "hybrid") return QuantMode::kHybrid;
  throw Error(
      fmt::format("cache spec '{}': {}='{}' is not a mode (sym, asym, hybrid)", spec, key, value));
}

KeyNorm parse_knorm(std::string_view spec, std::string_view value) {
  if (value == "off") return KeyNorm::kOff;
  if (value == "sqrtmax") return KeyNorm::kSqrtMax;
  if (value == "rms") return KeyNorm::kRms;
  throw Error(fmt::format(
      "cache spec '{}': knorm='{}' is not a key normalization (off, sqrtmax, rms)", spec, value));
}

int parse_tokens(std::string_view spec, std::string_view key, std::string_view value) {
  const int n = parse_int(spec, key, value);
  if (n < 0 || n > (1 << 20)) {
    throw Error(
        fmt::format("cache spec '{}': {}={} must be between 0 and 1048576 tokens", spec, key, n));
  }
  return n;
}

// Base configuration of each name.
LayerConfig base_config(std::string_view spec, std::string_view name) {
  LayerConfig c;  // defaults are the InnerQ reference configuration
  if (name == "innerq") return c;
  c.sink = 0;
  c.recent = 0;
  c.knorm = KeyNorm::kOff;
  if (name == "f32")
    c.kind = CacheKind::kF32;
  else if (name == "f16")
    c.kind = CacheKind::kF16;
  else if (name == "q8_0")
    c.kind = CacheKind::kQ8_0;
  else if (name == "q4_0")
    c.kind = CacheKind::kQ4_0;
  else if (name == "kivi" || name == "kivi4") {
    c.kind = CacheKind::kKivi;
    c.k_bits = c.v_bits = name == "kivi" ? 2 : 4;
    c.k_mode = c.v_mode = QuantMode::kAsymmetric;
    c.group = 32;
    c.recent = 128;
  } else {
    throw Error(fmt::format("cache spec '{}': unknown cache '{}' (expected one of {})", spec, name,
                            kNames));
  }
  return c;
}

}  // namespace

CacheSpec parse_cache_spec(std::string_view spec) {
  const size_t colon = spec.find(':');
  const std::string_view name = spec.substr(0, colon);
  CacheSpec out{std::string(spec), base_config(spec, name)};
  LayerConfig& c = out.layer;
  if (colon == std::string_view::npos) return out;

  const std::string_view fields = spec.substr(colon + 1);
  if (fields.empty()) throw Error(fmt::format("cache spec '{}': nothing after ':'", spec));
  const bool is_innerq = c.kind == CacheKind::kInnerQ;
  const bool is_kivi = c.kind == CacheKind::kKivi;
  size_t pos = 0;
  while (pos <= fields.size()) {
    const size_t comma = std::min(fields.find(',', pos), fields.size());
    const std::string_view field = fields.substr(pos, comma - pos);
    const size_t eq = field.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == field.size()) {
      throw Error(fmt::format("cache spec '{}': field '{}' is not key=value", spec, field));
    }
    const std::string_view key = field.substr(0, eq), value = field.substr(eq + 1);
    if (is_innerq && key == "k")
      c.k_bits = parse_bits(spec, key, value);
    else if (is_innerq && key == "v")
      c.v_bits = parse_bits(spec, key, value);
    else if (is_innerq && key == "kmode")
      c.k_mode = parse_mode(spec, key, value);
    else if (is_innerq && key == "vmode")
      c.v_mode = parse_mode(spec, key, value);
    else if (is_innerq && key == "sink")
      c.sink = parse_tokens(spec, key, value);
    else if (is_innerq && key == "knorm")
      c.knorm = parse_knorm(spec, value);
    else if ((is_innerq || is_kivi) && key == "recent")
      c.recent = parse_tokens(spec, key, value);
    else if ((is_innerq || is_kivi) && key == "g") {
      c.group = parse_int(spec, key, value);
      if (!is_supported_group(c.group)) {
        throw Error(fmt::format("cache spec '{}': g={} is not a supported group size (32, 64, 128)",
                                spec, c.group));
      }
    } else {
      const char* allowed = is_innerq ? "k, v, kmode, vmode, g, sink, recent, knorm"
                            : is_kivi ? "g, recent"
                                      : "none";
      throw Error(fmt::format("cache spec '{}': unknown key '{}' for {} (allowed keys: {})", spec,
                              key, name, allowed));
    }
    pos = comma + 1;
  }
  if (is_kivi && c.recent % c.group != 0) {
    throw Error(fmt::format("cache spec '{}': recent={} must be a multiple of g={} for kivi", spec,
                            c.recent, c.group));
  }
  return out;
}

std::vector<CacheSpec> parse_cache_spec_list(std::string_view specs) {
  // A comma starts a new spec unless what follows looks like key=value.
  std::vector<CacheSpec> out;
  size_t start = 0;
  for (size_t i = 0; i <= specs.size(); ++i) {
    if (i < specs.size() && specs[i] != ',') continue;
    if (i < specs.size()) {
      const std::string_view rest = specs.substr(i + 1);
      const size_t eq = rest.find('='), next = rest.find_first_of(",:");
      if (eq != std::string_view::npos && (next == std::string_view::npos || eq < next)) continue;
    }
    out.push_back(parse_cache_spec(specs.substr(start, i - start)));
    start = i + 1;
  }
  return out;
}

const char* cache_kind_name(CacheKind kind) {
  switch (kind) {
    case CacheKind::kF32:
      return "f32";
    case CacheKind::kF16:
      return "f16";
    case CacheKind::kQ8_0:
      return "q8_0";
    case CacheKind::kQ4_0:
      return "q4_0";
    case CacheKind::kKivi:
      return "kivi";
    case CacheKind::kInnerQ:
      return "innerq";
  }
  return "?";
}

}  // namespace innerq::kv
