#!/usr/bin/env bash
# The whole test suite from a fresh checkout: installs missing Debian
# packages, fetches the models (SmolLM2, Gemma 3 270M) and the evaluation text
# (the quality gate, label `model`, scores SmolLM2 on it), builds with warnings
# as errors (and the CUDA backend when nvcc is present, whose tests skip
# without a GPU), and runs every test but the `slow` label; then the same
# suite under ASan + UBSan and the fuzzers (label `fuzz`, about a minute each).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh
bash scripts/fetch-model.sh
bash scripts/fetch-data.sh

cuda=OFF
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda=ON
  export PATH="$PATH:/usr/local/cuda/bin"
fi
echo "test: configuring (CUDA backend: $cuda)" >&2
cmake --preset ci -DINNERQ_CUDA="$cuda" >/dev/null
cmake --build --preset ci -j "$(nproc)"
ctest --preset ci -j "$(nproc)"

# The same suite under AddressSanitizer + UBSan (clang) but for the `model`
# label (the quality gate and tune evaluate SmolLM2 for minutes under ASan;
# the model code they run is covered by the model tests on stories260K and
# the synthetic files), then each libFuzzer target for INNERQ_FUZZ_SECONDS
# (60 s) from its seed corpus (tests/fuzz).
echo "test: the default suite under ASan + UBSan, then the fuzzers" >&2
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$(nproc)"
ctest --preset asan -j "$(nproc)"
ctest --preset fuzz
