// The architectures the forward pass runs, and reading one model's
// description from its GGUF metadata (arch.h).
#include "innerq/model/arch.h"

#include <cmath>
#include <limits>
#include <string_view>

#include <fmt/core.h>

#include "innerq/base/error.h"

namespace innerq::model {
namespace {

// What an architecture fixes, as opposed to what its file says. Values
// marked "llama.cpp" are those llama.cpp's loader assumes for files that do
// not carry them (Gemma 3 GGUFs have no sliding-window pattern or local RoPE
// base key).
struct ArchTraits {
  std::string_view name;
  RopeStyle rope_style;
  Activation activation;
  bool qkv_bias;
  bool qk_norm;
  bool post_norms;
  bool embed_scaled;  // embeddings × sqrt(n_embd)
  // With <arch>.attention.sliding_window and no per-layer pattern, layer l is
  // global when (l + 1) % window_period == 0, windowed otherwise (llama.cpp:
  // 6 for Gemma 3); 0: the architecture has no sliding-window layers.
  int window_period;
  // RoPE base of the windowed layers without <arch>.rope.freq_base_swa
  // (llama.cpp: 10000 for Gemma 3).
  double window_rope_base;
};

constexpr ArchTraits kArchitectures[] = {
    {"llama", RopeStyle::kAdjacentPairs, Activation::kSilu, false, false, false, false, 0, 0.0},
    {"qwen2", RopeStyle::kHalfSplit, Activation::kSilu, true, false, false, false, 0, 0.0},
    {"qwen3", RopeStyle::kHalfSplit, Activation::kSilu, false, true, false, false, 0, 0.0},
    {"gemma3", RopeStyle::kHalfSplit, Activation::kGeluTanh, false, true, true, true, 6, 10000.0},
};

// Largest count a config key may hold; every buffer it sizes also needs
// tensors of that size in the file.
constexpr int64_t kMaxCount = int64_t{1} << 24;

// Reads keys of one architecture: key("block_count") is "<arch>.block_count".
class Keys {
 public:
  Keys(const GgufFile& f, std::string_view arch) : f_(f), arch_(arch) {}

  std::string key(std::string_view name) const { return fmt::format("{}.{}", arch_, name); }
  bool has(std::string_view name) const { return f_.find(key(name)) != nullptr; }

  // An integer in [lo, hi], checked in the type it is stored as.
  int count(std::string_view name, int64_t lo, int64_t hi) const {
    return static_cast<int>(f_.get_int(key(name), lo, hi));
  }
  int count(std::string_view name, int64_t lo, int64_t hi, int64_t fallback) const {
    return static_cast<int>(f_.get_int(key(name), lo, hi, fallback));
  }

  // A float in [lo, hi] that stays finite and nonzero as an f32 (a double
  // beyond the float range would not convert; NaN would reach the caches).
  float real(std::string_view name, double fallback, double lo, double hi,
             std::string_view why) const {
    const double v = f_.get_float(key(name), fallback);
    if (!(v >= lo && v <= hi) || static_cast<float>(v) == 0.0f) {
      throw Error(
          f_.describe(fmt::format("{} = {} must be in [{}, {}] ({})", key(name), v, lo, hi, why)));
    }
    return static_cast<float>(v);
  }

  [[noreturn]] void refuse(std::string_view what) const { throw Error(f_.describe(what)); }

 private:
  const GgufFile& f_;
  std::string_view arch_;
};

const ArchTraits& traits_of(const GgufFile& f, std::string_view arch) {
  for (const ArchTraits& t : kArchitectures) {
    if (t.name == arch) return t;
  }
  throw Error(f.describe(
      fmt::format("architecture '{}' is not supported (llama, qwen2, qwen3, gemma3)", arch)));
}

// Which layers are windowed: <arch>.attention.sliding_window_pattern when the
// file has it, as one bool per layer (true = windowed) or as a period p
// (layer l is global when (l + 1) % p == 0; p = 0: every layer windowed, as
// llama.cpp reads it), else the architecture's period.
std::vector<bool> window_pattern(const GgufFile& f, const Keys& k, const ArchTraits& t,
                                 int n_layers) {
  const std::string key = k.key("attention.sliding_window_pattern");
  std::vector<bool> windowed(static_cast<size_t>(n_layers), false);
  const GgufValue* v = f.find(key);
  if (v != nullptr && v->type == GgufType::kArray) {
    const GgufValue& a = f.get_array(key, GgufType::kBool);
    if (a.array.size() != static_cast<size_t>(n_layers))
      k.refuse(fmt::format("{} has {} entries for {} layers", key, a.array.size(), n_layers));
    for (int l = 0; l < n_layers; ++l)
      windowed[static_cast<size_t>(l)] = a.array[static_cast<size_t>(l)].u != 0;
    return windowed;
  }
  const int period =
      v != nullptr ? k.count("attention.sliding_window_pattern", 0, n_layers) : t.window_period;
  for (int l = 0; l < n_layers; ++l)
    windowed[static_cast<size_t>(l)] = period == 0 || (l + 1) % period != 0;
  return windowed;
}

}  // namespace

int ModelDesc::n_window_layers() const {
  int n = 0;
  for (const LayerDesc& l : layers) n += l.window > 0 ? 1 : 0;
  return n;
}

std::vector<int> ModelDesc::windows() const {
  if (n_window_layers() == 0) return {};
  std::vector<int> w;
  for (const LayerDesc& l : layers) w.push_back(l.window);
  return w;
}

ModelDesc read_model_desc(const GgufFile& f) {
  ModelDesc d;
  d.arch = std::string(f.get_string("general.architecture"));
  const ArchTraits& t = traits_of(f, d.arch);
  const Keys k(f, d.arch);

  // ---- shape ----
  d.n_layers = k.count("block_count", 1, kMaxCount);
  d.n_embd = k.count("embedding_length", 1, kMaxCount);
  d.n_heads = k.count("attention.head_count", 1, kMaxCount);
  d.n_kv_heads = k.count("attention.head_count_kv", 1, d.n_heads, d.n_heads);
  d.n_ff = k.count("feed_forward_length", 1, kMaxCount);
  d.n_ctx_train = k.count("context_length", 1, kMaxCount);
  if (d.n_heads % d.n_kv_heads != 0) {
    k.refuse(fmt::format("{} heads do not divide into {} kv heads ({})", d.n_heads, d.n_kv_heads,
                         k.key("attention.head_count_kv")));
  }
  // key_length is the head size where it is not n_embd / n_heads (Gemma 3:
  // 640 / 4 heads of 256; Mistral Nemo: 5120 / 32 heads of 128).
  if (!k.has("attention.key_length") && d.n_embd % d.n_heads != 0) {
    k.refuse(fmt::format("embedding {} does not divide into {} heads and {} is absent", d.n_embd,
                         d.n_heads, k.key("attention.key_length")));
  }
  d.head_dim = k.count("attention.key_length", 1, kMaxCount, d.n_embd / d.n_heads);
  const int value_length = k.count("attention.value_length", 1, kMaxCount, d.head_dim);
  if (value_length != d.head_dim) {
    k.refuse(fmt::format("{} = {} differs from the key length {} (not supported)",
                         k.key("attention.value_length"), value_length, d.head_dim));
  }
  if (int64_t{d.n_heads} * d.head_dim > kMaxCount) {
    k.refuse(
        fmt::format("{} heads of {} exceed {} query values", d.n_heads, d.head_dim, kMaxCount));
  }
  d.n_rot = k.count("rope.dimension_count", 2, d.head_dim, d.head_dim);
  if (d.n_rot % 2 != 0) {
    k.refuse(fmt::format("{} {} must be even and at most head_dim {}",
                         k.key("rope.dimension_count"), d.n_rot, d.head_dim));
  }

  // ---- constants ----
  // RoPE frequencies base^(−2i/n_rot) lie in (0, 1] for a base of at least 1.
  d.rope_base = k.real("rope.freq_base", 10000.0, 1.0, std::numeric_limits<float>::max(),
                       "finite and at least 1");
  d.rms_eps = k.real("attention.layer_norm_rms_epsilon", 1e-5, 0.0, 1.0 - 1e-7, "an f32 in (0, 1)");
  const std::string scaling = f.get_string(k.key("rope.scaling.type"), "none");
  if (scaling == "linear") {
    d.rope_scale = 1.0f / k.real("rope.scaling.factor", 1.0, 1.0, 1e6, "a factor of at least 1");
  } else if (scaling != "none") {
    k.refuse(
        fmt::format("{} '{}' is not supported (none, linear; Llama 3 frequency factors come "
                    "as rope_freqs.weight)",
                    k.key("rope.scaling.type"), scaling));
  }
  if (k.has("attn_logit_softcapping")) {
    k.refuse(fmt::format("{}: attention soft-capping (Gemma 2) is not supported",
                         k.key("attn_logit_softcapping")));
  }
  if (k.has("final_logit_softcapping")) {
    d.final_softcap = k.real("final_logit_softcapping", 0.0, 1e-3, 1e6, "a positive cap");
  }

  // ---- what the architecture fixes ----
  d.rope_style = t.rope_style;
  d.activation = t.activation;
  d.qkv_bias = t.qkv_bias;
  d.qk_norm = t.qk_norm;
  d.post_norms = t.post_norms;
  d.embed_scale = t.embed_scaled ? std::sqrt(static_cast<float>(d.n_embd)) : 1.0f;
  // Scores are q·k/sqrt(head_dim). Gemma 3 27B (the only one with 62 layers)
  // scales by its query_pre_attn_scalar n_embd / n_heads = 168 instead, as
  // llama.cpp does (its GGUF has no key for it).
  const bool gemma27b = d.arch == "gemma3" && d.n_layers == 62;
  d.attn_scale = 1.0f / std::sqrt(static_cast<float>(gemma27b ? d.n_embd / d.n_heads : d.head_dim));

  // ---- layers: sliding windows and their RoPE base ----
  d.layers.assign(static_cast<size_t>(d.n_layers), LayerDesc{0, d.rope_base});
  const int window = t.window_period > 0 ? k.count("attention.sliding_window", 0, kMaxCount, 0) : 0;
  if (window > 0) {
    const float window_base = k.real("rope.freq_base_swa", t.window_rope_base, 1.0,
                                     std::numeric_limits<float>::max(), "finite and at least 1");
    const std::vector<bool> windowed = window_pattern(f, k, t, d.n_layers);
    for (int l = 0; l < d.n_layers; ++l) {
      if (windowed[static_cast<size_t>(l)])
        d.layers[static_cast<size_t>(l)] = LayerDesc{window, window_base};
    }
  }
  return d;
}

const char* rope_style_name(RopeStyle style) {
  return style == RopeStyle::kAdjacentPairs ? "adjacent pairs (NORM)" : "half split (NEOX)";
}

const char* activation_name(Activation activation) {
  return activation == Activation::kSilu ? "SwiGLU" : "GeGLU (tanh)";
}

}  // namespace innerq::model
