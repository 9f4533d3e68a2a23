// tests/fuzz/kv_spec_fuzz.cc — the `--kv` spec parser under arbitrary bytes.
// Contract: parse_cache_spec and parse_cache_spec_list either return a spec
// or throw innerq::Error; a parsed spec gives one config per layer (or an
// Error for an override beyond the model), and every layer config survives
// the round trip through its canonical spelling, spec_string().
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"

namespace {

[[noreturn]] void fail(std::string_view input, const std::string& what) {
  std::fprintf(stderr, "kv_spec_fuzz: %s\ninput (%zu bytes): '%.*s'\n", what.c_str(), input.size(),
               static_cast<int>(input.size()), input.data());
  __builtin_trap();
}

void check_spec(std::string_view input, const innerq::kv::CacheSpec& spec) {
  using namespace innerq::kv;
  for (int n_layers : {1, 30}) {
    std::vector<LayerConfig> layers;
    try {
      layers = spec.layers(n_layers, n_layers == 1 ? 64 : 256);  // both sides of the rule
    } catch (const innerq::Error&) {
      continue;  // an override beyond the model, a kfactors frame: refused with a message
    }
    if (static_cast<int>(layers.size()) != n_layers) fail(input, "layers() has the wrong size");
    for (const LayerConfig& c : layers) {
      const std::string canonical = spec_string(c);
      (void)describe(c);
      std::string again;
      try {
        again = spec_string(parse_cache_spec(canonical).layer);
      } catch (const innerq::Error& e) {
        fail(input, "canonical spelling '" + canonical + "' does not parse: " + e.what());
      }
      if (again != canonical) {
        fail(input, "round trip changed '" + canonical + "' into '" + again + "'");
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // specs are short; keep each run bounded
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // `layers=FILE` and `kfactors=FILE` read a file named by the input: keep
  // runs independent of the file system (both readers have their own tests).
  if (input.find("layers") != std::string_view::npos ||
      input.find("kfactors") != std::string_view::npos)
    return 0;
  try {
    check_spec(input, innerq::kv::parse_cache_spec(input));
  } catch (const innerq::Error&) {
  }
  try {
    for (const auto& spec : innerq::kv::parse_cache_spec_list(input)) check_spec(input, spec);
  } catch (const innerq::Error&) {
  }
  return 0;
}
