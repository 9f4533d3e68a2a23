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
# `fuzz`, 20 s each).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Each stage says when it starts, in seconds since this script did, so a CI
# log shows where the suite's time goes.
started=$SECONDS
stage() { echo "test: [$((SECONDS - started)) s] $*" >&2; }

stage "dependencies, models and data"
bash scripts/install-deps.sh
bash scripts/fetch-model.sh
bash scripts/fetch-data.sh

cuda=OFF
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda=ON
  export PATH="$PATH:/usr/local/cuda/bin"
fi
stage "configuring (CUDA backend: $cuda)"
cmake --preset ci -DINNERQ_CUDA="$cuda" >/dev/null
cmake --build --preset ci -j "$(nproc)"
stage "the default suite"
ctest --preset ci -j "$(nproc)"

# The Python package as a user installs it, then its tests against the tool
# just built (the same greedy tokens, the same perplexity): the transformers
# tests with the oldest supported transformers, then everything with the
# newest (the venv's default, kept for the next run).
stage "pip install . and the Python tests"
python="$(INNERQ_TRANSFORMERS=5.19.0 bash scripts/python-env.sh --hf | tail -n 1)"
"$python" -m pip install --disable-pip-version-check -q --no-build-isolation .
export INNERQ_BINARY="$PWD/build/ci/innerq"
"$python" -m pytest -q tests/python/hf
stage "the newest transformers and every Python test"
bash scripts/python-env.sh --hf >/dev/null
"$python" -m pytest -q tests/python

# The same suite under AddressSanitizer + UBSan (clang) but for the `model`
# label (the quality gate and tune evaluate SmolLM2 for minutes under ASan;
# the model code they run is covered by the model tests on stories260K and
# the synthetic files), then each libFuzzer target for INNERQ_FUZZ_SECONDS
# (20 s) from its seed corpus (tests/fuzz), side by side.
stage "the default suite under ASan + UBSan, then the fuzzers"
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$(nproc)"
ctest --preset asan -j "$(nproc)"
ctest --preset fuzz -j "$(nproc)"
stage "done"
