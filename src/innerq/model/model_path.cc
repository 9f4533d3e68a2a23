// innerq/model/model_path.cc — model short names to files.
#include "innerq/model/model_path.h"

#include <filesystem>
#include <utility>

#include <fmt/core.h>

#include "innerq/base/error.h"

namespace innerq::model {
namespace {

namespace fs = std::filesystem;

// The nearest directory at or above the current one that holds
// scripts/fetch-model.sh; the current directory when there is none.
fs::path repo_root() {
  std::error_code ec;
  fs::path dir = fs::current_path(ec);
  for (fs::path d = dir; !d.empty(); d = d.parent_path()) {
    if (fs::exists(d / "scripts" / "fetch-model.sh", ec)) return d;
    if (d == d.parent_path()) break;
  }
  return dir;
}

}  // namespace

std::string resolve_model_path(const std::string& name) {
  std::error_code ec;
  // The models scripts/fetch-model.sh puts in models/.
  for (const auto& [short_name, file] :
       {std::pair<const char*, const char*>{"smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"},
        std::pair<const char*, const char*>{"gemma3-270m", "gemma-3-270m-q4_k_m.gguf"}}) {
    if (name != short_name) continue;
    const fs::path p = repo_root() / "models" / file;
    if (!fs::exists(p, ec)) {
      throw Error(fmt::format("model {} not found at {}; run scripts/fetch-model.sh {} first", name,
                              p.string(), name));
    }
    return p.string();
  }
  if (name == "stories260K") {
    const fs::path p =
        repo_root().parent_path() / "shared" / "data" / "models" / "stories260K.gguf";
    if (!fs::exists(p, ec))
      throw Error(fmt::format("model stories260K not found at {}", p.string()));
    return p.string();
  }
  if (!fs::exists(name, ec)) throw Error(fmt::format("model file {} does not exist", name));
  return name;
}

}  // namespace innerq::model
