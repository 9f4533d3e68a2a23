#!/usr/bin/env bash
# The whole test suite from a fresh checkout: installs missing Debian
# packages, fetches the models (SmolLM2, Gemma 3 270M) and the evaluation text
# (the quality gate, label `model`, scores SmolLM2 on it), builds with warnings
# as errors (and the CUDA backend when nvcc is present, whose tests skip
# without a GPU), and runs every test but the `slow` label, the C ABI's
# included (tests/capi: every call from C, the exported symbols, examples/c
# built against an installed prefix). Then the Python package: `pip install .`
# into build/venv and its tests (tests/python), torch-free first, then the
# transformers integration at both ends of its pinned range (5.19, 5.25).
# Last, the C++ and C suites under ASan + UBSan and the fuzzers (label
# `fuzz`, about a minute each).
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

# The Python package as a user installs it, then its tests against the tool
# just built (the same greedy tokens, the same perplexity): the transformers
# tests with the oldest supported transformers, then everything with the
# newest (the venv's default, kept for the next run).
echo "test: pip install . and the Python tests" >&2
python="$(INNERQ_TRANSFORMERS=5.19.0 bash scripts/python-env.sh --hf | tail -n 1)"
"$python" -m pip install --disable-pip-version-check -q --no-build-isolation .
export INNERQ_BINARY="$PWD/build/ci/innerq"
"$python" -m pytest -q tests/python/hf
bash scripts/python-env.sh --hf >/dev/null
"$python" -m pytest -q tests/python

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
