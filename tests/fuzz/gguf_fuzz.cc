// tests/fuzz/gguf_fuzz.cc — the GGUF reader and the model loader under
// arbitrary bytes (docs/architecture.md, "GGUF files"). Contract:
//   - GgufFile either parses the bytes or throws innerq::Error;
//   - every metadata value of a parsed file reads back without throwing,
//     arrays element by element, by iteration and by index alike;
//   - LlamaModel either loads or throws innerq::Error;
//   - a loaded tiny model runs a 2-token prefill and one decode step, each
//     either giving finite logits or throwing innerq::Error.
// Any other exception, a crash or a failed check is a bug.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/model/gguf.h"
#include "innerq/model/llama.h"

namespace {

using innerq::model::GgufFile;
using innerq::model::GgufType;
using innerq::model::GgufValue;
using innerq::model::LlamaModel;

// Every parameter a prefill reads; keeps each run within milliseconds even
// when the replay main is given a big file.
constexpr int64_t kMaxParams = int64_t{1} << 20;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "gguf_fuzz: %s\n", what.c_str());
  __builtin_trap();
}

// Reads every element of a value; the parser checked them all, so an
// innerq::Error here is a bug too.
void visit(const GgufValue& v, int depth) {
  if (v.type != GgufType::kArray) return;
  if (depth > 8) fail("arrays nested deeper than the parser allows");
  size_t n = 0;
  for (const GgufValue& e : v.array) {
    if (e.type != v.array.elem_type()) fail("an array element has the wrong type");
    visit(e, depth + 1);
    ++n;
  }
  if (n != v.array.size()) fail("iteration and size() disagree");
  if (n > 0) {
    visit(v.array[0], depth + 1);
    visit(v.array[n - 1], depth + 1);
  }
}

void check_logits(const std::vector<float>& logits, size_t expected) {
  if (logits.size() != expected) fail("logits have the wrong size");
  for (float x : logits) {
    if (!std::isfinite(x)) fail("non-finite logits returned instead of an innerq::Error");
  }
}

void run_model(std::unique_ptr<GgufFile> file) {
  const LlamaModel model(std::move(file));
  if (model.n_params() > kMaxParams) return;
  const int n_vocab = model.config().n_vocab;
  innerq::kv::KvCache cache(model.cache_shape(4), innerq::kv::parse_cache_spec("f32").layer);
  innerq::kv::KvCache* caches[] = {&cache};
  const int prompt[] = {0, n_vocab - 1};
  std::vector<float> logits;
  model.prefill(prompt, caches, /*all_logits=*/true, logits, /*n_threads=*/1);
  check_logits(logits, 2 * static_cast<size_t>(n_vocab));
  const int next[] = {n_vocab / 2};
  model.decode(next, caches, logits, /*n_threads=*/1);
  check_logits(logits, static_cast<size_t>(n_vocab));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<GgufFile> file;
  try {
    file = std::make_unique<GgufFile>("fuzz input", std::span<const uint8_t>(data, size));
  } catch (const innerq::Error&) {
    return 0;
  }
  try {
    for (const auto& [key, value] : file->metadata()) visit(value, 0);
  } catch (const innerq::Error& e) {
    fail(std::string("reading parsed metadata threw: ") + e.what());
  }
  try {
    run_model(std::move(file));
  } catch (const innerq::Error&) {
  }
  return 0;
}
