// Parsing of `--kv SPEC` strings (grammar in cache_spec.h).
#include "innerq/kv/cache_spec.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <fmt/format.h>

#include "innerq/base/error.h"
#include "innerq/kv/key_factors.h"
#include "innerq/quant/group_quant.h"

namespace innerq::kv {
namespace {

constexpr const char* kNames = "f32, f16, q8_0, q4_0, kivi, kivi4, innerq, innerq-paper";

struct Rotation {
  bool k, v;
};

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

Rotation parse_rot(std::string_view spec, std::string_view value) {
  if (value == "off") return {false, false};
  if (value == "k") return {true, false};
  if (value == "v") return {false, true};
  if (value == "kv") return {true, true};
  throw Error(
      fmt::format("cache spec '{}': rot='{}' is not a rotation (off, k, v, kv)", spec, value));
}

kernels::ChannelOrder parse_kperm(std::string_view spec, std::string_view value) {
  if (value == "off") return kernels::ChannelOrder::kAsIs;
  if (value == "evenodd") return kernels::ChannelOrder::kEvenOdd;
  if (value == "pairs") return kernels::ChannelOrder::kPairs;
  throw Error(fmt::format(
      "cache spec '{}': kperm='{}' is not a channel order (off, evenodd, pairs)", spec, value));
}

// Base configuration of each name.
LayerConfig base_config(std::string_view spec, std::string_view name) {
  LayerConfig c;  // defaults are the paper's reference configuration
  if (name == "innerq-paper") return c;
  if (name == "innerq") return default_innerq_config();
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

// Applies "key=value[,key=value...]" to c. A `layers=FILE` field is returned
// in *layers_file (nullptr: not allowed here).
void apply_fields(std::string_view spec, std::string_view fields, LayerConfig& c,
                  std::string* layers_file) {
  if (fields.empty()) throw Error(fmt::format("cache spec '{}': nothing after ':'", spec));
  const bool is_innerq = c.kind == CacheKind::kInnerQ;
  const bool is_kivi = c.kind == CacheKind::kKivi;
  std::vector<std::string_view> seen;
  size_t pos = 0;
  while (pos <= fields.size()) {
    const size_t comma = std::min(fields.find(',', pos), fields.size());
    const std::string_view field = fields.substr(pos, comma - pos);
    const size_t eq = field.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == field.size()) {
      throw Error(fmt::format("cache spec '{}': field '{}' is not key=value", spec, field));
    }
    const std::string_view key = field.substr(0, eq), value = field.substr(eq + 1);
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      throw Error(fmt::format("cache spec '{}': key '{}' is given twice", spec, key));
    }
    seen.push_back(key);
    if (is_innerq && key == "k") {
      c.k_bits = parse_bits(spec, key, value);
      c.by_head_dim &= ~LayerConfig::kAutoKBits;
    } else if (is_innerq && key == "v") {
      c.v_bits = parse_bits(spec, key, value);
      c.by_head_dim &= ~LayerConfig::kAutoVBits;
    } else if (is_innerq && key == "kmode")
      c.k_mode = parse_mode(spec, key, value);
    else if (is_innerq && key == "vmode")
      c.v_mode = parse_mode(spec, key, value);
    else if (is_innerq && key == "sink")
      c.sink = parse_tokens(spec, key, value);
    else if (is_innerq && key == "knorm") {
      c.knorm = parse_knorm(spec, value);
      c.by_head_dim &= ~LayerConfig::kAutoKnorm;
    } else if (is_innerq && key == "kcenter") {
      if (value != "on" && value != "off") {
        throw Error(fmt::format("cache spec '{}': kcenter='{}' is not on or off", spec, value));
      }
      c.kcenter = value == "on";
    } else if (is_innerq && key == "ksort") {
      if (value != "on" && value != "off") {
        throw Error(fmt::format("cache spec '{}': ksort='{}' is not on or off", spec, value));
      }
      c.ksort = value == "on";
    } else if (is_innerq && key == "klevels") {
      if (value != "uniform" && value != "normal") {
        throw Error(
            fmt::format("cache spec '{}': klevels='{}' is not uniform or normal", spec, value));
      }
      c.k_levels = value == "normal" ? Levels::kNormal : Levels::kUniform;
      c.by_head_dim &= ~LayerConfig::kAutoKLevels;
    } else if ((is_innerq || is_kivi) && key == "recent")
      c.recent = parse_tokens(spec, key, value);
    else if ((is_innerq || is_kivi) && key == "g") {
      c.group = parse_int(spec, key, value);
      if (!is_supported_group(c.group)) {
        throw Error(fmt::format("cache spec '{}': g={} is not a supported group size (32, 64, 128)",
                                spec, c.group));
      }
    } else if (is_innerq && key == "kg") {
      c.k_group = parse_int(spec, key, value);
      if (!is_supported_group(c.k_group)) {
        throw Error(fmt::format(
            "cache spec '{}': kg={} is not a supported group size (32, 64, 128)", spec, c.k_group));
      }
    } else if (is_innerq && key == "kfactors") {
      c.key_factors = std::make_shared<const KeyFactors>(read_key_factors(std::string(value)));
    } else if (key == "rot") {
      const Rotation r = parse_rot(spec, value);
      c.rot_k = r.k;
      c.rot_v = r.v;
      c.by_head_dim &= ~LayerConfig::kAutoRot;
    } else if (key == "kperm") {
      c.kperm = parse_kperm(spec, value);
    } else if (key == "layers" && layers_file != nullptr) {
      *layers_file = std::string(value);
    } else {
      const char* allowed =
          is_innerq ? "k, v, kmode, vmode, g, kg, sink, recent, knorm, kcenter, ksort, klevels, "
                      "kfactors, rot, kperm, layers"
          : is_kivi ? "g, recent, rot, kperm, layers"
                    : "rot, kperm, layers";
      throw Error(fmt::format("cache spec '{}': unknown key '{}' for {} (allowed keys: {})", spec,
                              key, cache_kind_name(c.kind), allowed));
    }
    pos = comma + 1;
  }
  if (c.k_levels != Levels::kUniform && c.k_mode != QuantMode::kSymmetric) {
    throw Error(fmt::format(
        "cache spec '{}': klevels=normal needs symmetric key groups (kmode=sym), not kmode={}",
        spec, quant::quant_mode_name(c.k_mode)));
  }
  if (!levels_support_bits(c.k_levels, c.k_bits)) {
    throw Error(
        fmt::format("cache spec '{}': klevels=normal has codebooks for k=2, 3 and 4, not k={}",
                    spec, c.k_bits));
  }
  if (c.key_factors && c.kperm != kernels::ChannelOrder::kAsIs) {
    throw Error(fmt::format(
        "cache spec '{}': kfactors and kperm={} together are not supported (a factors file "
        "holds its channels in the model's order); use kperm=off or drop kfactors",
        spec, channel_order_name(c.kperm)));
  }
  if (c.key_factors && c.ksort) {
    throw Error(fmt::format(
        "cache spec '{}': kfactors and ksort=on together are not supported (a factors file "
        "holds no channel order); use ksort=off or drop kfactors",
        spec));
  }
  if (c.key_factors) {
    const std::string where = fmt::format("cache spec '{}'", spec);
    if (c.by_head_dim == 0) {
      check_key_factors_frame(*c.key_factors, c, where);
    } else {
      // The frame is chosen by head_dim: the file must fit one of the two
      // (layers() checks the one chosen); otherwise the refusal below 256.
      try {
        check_key_factors_frame(*c.key_factors, resolve_head_dim(c, kWideHeadDim), where);
      } catch (const Error&) {
        check_key_factors_frame(*c.key_factors, resolve_head_dim(c, kWideHeadDim - 1), where);
      }
    }
  }
  if (is_kivi && c.recent % c.group != 0) {
    throw Error(fmt::format("cache spec '{}': recent={} must be a multiple of g={} for kivi", spec,
                            c.recent, c.group));
  }
}

// NAME[:fields] without overrides.
LayerConfig parse_base(std::string_view spec, std::string_view text, std::string* layers_file) {
  const size_t colon = text.find(':');
  LayerConfig c = base_config(spec, text.substr(0, colon));
  if (colon != std::string_view::npos) apply_fields(spec, text.substr(colon + 1), c, layers_file);
  return c;
}

// N or N-M.
void parse_range(std::string_view spec, std::string_view range, LayerOverride& o) {
  const size_t dash = range.find('-');
  auto layer = [&](std::string_view v) {
    const int n = parse_int(spec, "layer", v);
    if (n < 0 || n > 4095) {
      throw Error(fmt::format("cache spec '{}': layer {} must be between 0 and 4095", spec, n));
    }
    return n;
  };
  o.first = layer(range.substr(0, dash));
  o.last = dash == std::string_view::npos ? o.first : layer(range.substr(dash + 1));
  if (o.last < o.first) {
    throw Error(fmt::format("cache spec '{}': layer range '{}' is empty", spec, range));
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// RANGE=SPEC or RANGE:FIELDS, on top of `base`.
LayerOverride parse_override(std::string_view spec, std::string_view text,
                             const LayerConfig& base) {
  const size_t sep = text.find_first_of("=:");
  if (sep == std::string_view::npos || sep == 0 || sep + 1 == text.size()) {
    throw Error(fmt::format(
        "cache spec '{}': layer override '{}' is not RANGE=SPEC or RANGE:FIELDS", spec, text));
  }
  LayerOverride o;
  parse_range(spec, trim(text.substr(0, sep)), o);
  const std::string_view rest = trim(text.substr(sep + 1));
  if (text[sep] == '=') {
    o.config = parse_base(spec, rest, nullptr);
  } else {
    o.config = base;
    apply_fields(spec, rest, o.config, nullptr);
  }
  return o;
}

// One override per line; '#' starts a comment.
void read_layers_file(std::string_view spec, const std::string& path, const LayerConfig& base,
                      std::vector<LayerOverride>& out) {
  constexpr std::uintmax_t kMaxBytes = 1 << 20;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw Error(
        fmt::format("cache spec '{}': layers file '{}' is not a readable file", spec, path));
  }
  if (std::filesystem::file_size(path, ec) > kMaxBytes || ec) {
    throw Error(fmt::format("cache spec '{}': layers file '{}' is larger than {} bytes", spec, path,
                            kMaxBytes));
  }
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("cache spec '{}': cannot read layers file '{}'", spec, path));
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    std::string_view text = line;
    text = trim(text.substr(0, text.find('#')));
    if (text.empty()) continue;
    try {
      out.push_back(parse_override(spec, text, base));
    } catch (const Error& e) {
      throw Error(fmt::format("{}:{}: {}", path, number, e.what()));
    }
  }
}

}  // namespace

// The project default (docs/architecture.md, "Choosing the default"; the
// measurements are in the README's quality section): keys rotated and
// centered, 3-bit symmetric in 64-channel groups; values 3-bit hybrid in
// 128-token groups. Quantized storage is 3.25 bits per value, the same as
// the paper's config, and 0.216× f16 at 8k tokens with the windows.
LayerConfig default_innerq_config() {
  LayerConfig c;
  c.k_bits = 3;
  c.k_mode = QuantMode::kSymmetric;
  c.k_group = 64;
  c.v_bits = 3;
  c.v_mode = QuantMode::kHybrid;
  c.group = 128;
  c.knorm = KeyNorm::kOff;
  c.kcenter = true;
  c.rot_k = true;  // k_bits, v_bits, knorm, rot_k: below kWideHeadDim
  c.by_head_dim = LayerConfig::kAutoRot | LayerConfig::kAutoKnorm | LayerConfig::kAutoKBits |
                  LayerConfig::kAutoVBits | LayerConfig::kAutoKLevels;
  return c;
}

CacheSpec parse_cache_spec(std::string_view spec) {
  const size_t semi = spec.find(';');
  std::string layers_file;
  CacheSpec out{std::string(spec), parse_base(spec, spec.substr(0, semi), &layers_file), {}};
  if (!layers_file.empty()) read_layers_file(spec, layers_file, out.layer, out.overrides);
  for (size_t pos = semi; pos != std::string_view::npos;) {
    const size_t next = spec.find(';', pos + 1);
    const std::string_view item = spec.substr(
        pos + 1, next == std::string_view::npos ? std::string_view::npos : next - pos - 1);
    out.overrides.push_back(parse_override(spec, item, out.layer));
    pos = next;
  }
  return out;
}

LayerConfig resolve_head_dim(LayerConfig c, int head_dim) {
  const bool wide = head_dim >= kWideHeadDim;
  if (c.by_head_dim & LayerConfig::kAutoRot) c.rot_k = !wide;
  if (c.by_head_dim & LayerConfig::kAutoKnorm) c.knorm = wide ? KeyNorm::kSqrtMax : KeyNorm::kOff;
  if (c.by_head_dim & LayerConfig::kAutoKBits) c.k_bits = wide ? 4 : 3;
  if (c.by_head_dim & LayerConfig::kAutoVBits) c.v_bits = wide ? 2 : 3;
  // The codebook where the key groups allow it (a named kmode=hybrid or k=8
  // keeps uniform levels).
  if (c.by_head_dim & LayerConfig::kAutoKLevels) {
    c.k_levels = wide && levels_fit(Levels::kNormal, c.k_bits, c.k_mode) ? Levels::kNormal
                                                                         : Levels::kUniform;
  }
  c.by_head_dim = 0;
  return c;
}

std::vector<LayerConfig> CacheSpec::configured_layers(int n_layers) const {
  std::vector<LayerConfig> out(static_cast<size_t>(std::max(n_layers, 0)), layer);
  for (const LayerOverride& o : overrides) {
    if (o.last >= n_layers) {
      throw Error(fmt::format("cache spec '{}': layer {} is beyond the model's {} layers (0..{})",
                              text, o.last, n_layers, n_layers - 1));
    }
    for (int l = o.first; l <= o.last; ++l) out[static_cast<size_t>(l)] = o.config;
  }
  return out;
}

std::vector<LayerConfig> CacheSpec::layers(int n_layers, int head_dim) const {
  std::vector<LayerConfig> out = configured_layers(n_layers);
  for (LayerConfig& c : out) {
    const bool had_auto = c.by_head_dim != 0;
    c = resolve_head_dim(c, head_dim);
    if (had_auto && c.key_factors) {
      check_key_factors_frame(*c.key_factors, c,
                              fmt::format("cache spec '{}' at head_dim {}", text, head_dim));
    }
  }
  return out;
}

std::vector<CacheSpec> parse_cache_spec_list(std::string_view specs) {
  // A comma starts a new spec unless what follows it (up to the next comma)
  // is a key=value field: a key free of ':' and ';'.
  std::vector<CacheSpec> out;
  size_t start = 0;
  for (size_t i = 0; i <= specs.size(); ++i) {
    if (i < specs.size() && specs[i] != ',') continue;
    if (i < specs.size()) {
      std::string_view rest = specs.substr(i + 1);
      rest = rest.substr(0, rest.find(','));
      const size_t eq = rest.find('=');
      if (eq != std::string_view::npos &&
          rest.substr(0, eq).find_first_of(":;") == std::string_view::npos)
        continue;
    }
    out.push_back(parse_cache_spec(specs.substr(start, i - start)));
    start = i + 1;
  }
  return out;
}

// The quant layer's spelling of a mode ("sym", "asym", "hybrid").
static std::string_view mode_name(QuantMode m) {
  return quant::quant_mode_name(m);
}

const char* key_norm_name(KeyNorm n) {
  return n == KeyNorm::kOff ? "off" : n == KeyNorm::kRms ? "rms" : "sqrtmax";
}

const char* channel_order_name(kernels::ChannelOrder order) {
  return order == kernels::ChannelOrder::kEvenOdd ? "evenodd"
         : order == kernels::ChannelOrder::kPairs ? "pairs"
                                                  : "off";
}

static const char* rot_name(const LayerConfig& c) {
  return c.rot_k && c.rot_v ? "kv" : c.rot_k ? "k" : c.rot_v ? "v" : "off";
}

static std::string describe_fields(const LayerConfig& c) {
  std::string out = cache_kind_name(c.kind);
  if (c.kind == CacheKind::kInnerQ) {
    out += fmt::format(" k{}{} v{}{} g{} sink{} recent{} knorm={}", c.k_bits, mode_name(c.k_mode),
                       c.v_bits, mode_name(c.v_mode), c.group, c.sink, c.recent,
                       key_norm_name(c.knorm));
    if (c.k_group > 0 && c.k_group != c.group) out += fmt::format(" kg{}", c.k_group);
    if (c.kcenter) out += " kcenter";
    if (c.ksort) out += " ksort";
    if (c.k_levels != Levels::kUniform) out += " klevels=normal";
    if (c.key_factors) out += fmt::format(" kfactors={}", c.key_factors->path);
  } else if (c.kind == CacheKind::kKivi) {
    out += fmt::format(" {}-bit g{} recent{}", c.k_bits, c.group, c.recent);
  }
  if (c.rot_k || c.rot_v) out += fmt::format(" rot={}", rot_name(c));
  if (c.kperm != kernels::ChannelOrder::kAsIs)
    out += fmt::format(" kperm={}", channel_order_name(c.kperm));
  return out;
}

std::string describe(const LayerConfig& c) {
  if (c.by_head_dim == 0) return describe_fields(c);
  // Both choices; of the wide one only the words that differ (describe
  // omits rot when off, so a rotation that goes away is named).
  const LayerConfig narrow = resolve_head_dim(c, kWideHeadDim - 1);
  const LayerConfig wide = resolve_head_dim(c, kWideHeadDim);
  const auto words = [](const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string w; in >> w;) out.push_back(w);
    return out;
  };
  const std::vector<std::string> before = words(describe_fields(narrow));
  std::vector<std::string> differ;
  for (std::string& w : words(describe_fields(wide))) {
    if (std::find(before.begin(), before.end(), w) == before.end()) differ.push_back(std::move(w));
  }
  if (narrow.rot_k && !wide.rot_k && !wide.rot_v) differ.push_back("rot=off");
  return fmt::format("{} (head_dim < {}; from {}: {})", fmt::join(before, " "), kWideHeadDim,
                     kWideHeadDim, fmt::join(differ, " "));
}

std::string spec_string(const LayerConfig& c) {
  const char* rot = rot_name(c);
  const std::string kperm = c.kperm == kernels::ChannelOrder::kAsIs
                                ? std::string()
                                : fmt::format(",kperm={}", channel_order_name(c.kperm));
  switch (c.kind) {
    case CacheKind::kInnerQ: {
      // A field still chosen by head_dim stays unnamed on `innerq`'s base,
      // which chooses them all; naming one clears its bit.
      const unsigned a = c.by_head_dim;
      const auto field = [&](unsigned bit, const std::string& text) {
        return a & bit ? std::string() : text;
      };
      return fmt::format(
          "{}:{}{}kmode={},vmode={},g={},kg={},sink={},recent={}{},kcenter={}{}{}{}{}{}",
          a != 0 ? "innerq" : "innerq-paper",
          field(LayerConfig::kAutoKBits, fmt::format("k={},", c.k_bits)),
          field(LayerConfig::kAutoVBits, fmt::format("v={},", c.v_bits)), mode_name(c.k_mode),
          mode_name(c.v_mode), c.group, c.key_group(), c.sink, c.recent,
          field(LayerConfig::kAutoKnorm, fmt::format(",knorm={}", key_norm_name(c.knorm))),
          c.kcenter ? "on" : "off", c.ksort ? ",ksort=on" : "",
          field(LayerConfig::kAutoKLevels, c.k_levels != Levels::kUniform ? ",klevels=normal"
                                           : a != 0                       ? ",klevels=uniform"
                                                                          : ""),
          field(LayerConfig::kAutoRot, fmt::format(",rot={}", rot)), kperm,
          c.key_factors ? ",kfactors=" + c.key_factors->path : "");
    }
    case CacheKind::kKivi:
      return fmt::format("{}:g={},recent={},rot={}{}", c.k_bits == 2 ? "kivi" : "kivi4", c.group,
                         c.recent, rot, kperm);
    default:
      return fmt::format("{}:rot={}{}", cache_kind_name(c.kind), rot, kperm);
  }
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
