// innerq/model/model_path.h — what `-m NAME` means.
//
//   smollm2      models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model.sh)
//   gemma3-270m  models/gemma-3-270m-q4_k_m.gguf (scripts/fetch-model.sh)
//   stories260K  ../shared/data/models/stories260K.gguf
//   anything else: a path to a GGUF file.
// Relative names are resolved against the repository root, found by walking
// up from the current directory to the one holding scripts/fetch-model.sh.
#pragma once

#include <string>

namespace innerq::model {

// Throws innerq::Error when the named file does not exist (for the fetched
// models: with the command that fetches it).
std::string resolve_model_path(const std::string& name);

}  // namespace innerq::model
