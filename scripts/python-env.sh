#!/usr/bin/env bash
# Creates the project's python virtual environment at build/venv and installs
# into it what the python tests need, only what is missing. Idempotent and
# non-interactive: runs as root (CI) or as a user (apt-get through sudo).
#
#   bash scripts/python-env.sh          numpy, pytest, gguf, and the build
#                                       tools of `pip install .` (scikit-build-core,
#                                       nanobind)
#   bash scripts/python-env.sh --hf     also torch, transformers, accelerate
#                                       (innerq.hf, tests/python/hf)
#
# Then: build/venv/bin/pip install --no-build-isolation . and
#       build/venv/bin/python -m pytest tests/python
#
# Environment:
#   INNERQ_VENV           the venv folder (default build/venv)
#   INNERQ_VENV_PYTHON    the python that creates it (default python3 on PATH)
#   INNERQ_TRANSFORMERS   transformers version for --hf (default 5.25.0, the
#                         newest of the supported range >=5.19,<5.26; CI runs
#                         both ends: 5.19.0 and 5.25.0)
#   INNERQ_TORCH          torch version for --hf (default 2.15.0). PyPI's
#                         torch is the CUDA build: about 900 MB of wheel plus
#                         the nvidia-* libraries; it runs on CPU.
#
# Everything is printed on stderr; the last line on stdout is the venv's python.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${INNERQ_VENV:-$ROOT/build/venv}"
TRANSFORMERS_VERSION="${INNERQ_TRANSFORMERS:-5.25.0}"
TORCH_VERSION="${INNERQ_TORCH:-2.15.0}"

hf=0
for arg in "$@"; do
  case "$arg" in
    --hf) hf=1 ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "python-env: unknown argument '$arg' (usage: $0 [--hf])" >&2; exit 2 ;;
  esac
done

log() { echo "python-env: $*" >&2; }
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
start=$SECONDS

# 1. A python3 with the venv module. Debian splits ensurepip (needed by
# `python3 -m venv`) into python3-venv. The python3 on PATH may not be
# Debian's (pyenv): if it still lacks ensurepip after the install, Debian's
# /usr/bin/python3 makes the venv.
PYTHON="${INNERQ_VENV_PYTHON:-python3}"
has_venv() { "$1" -c 'import venv, ensurepip' >/dev/null 2>&1; }
if ! has_venv "$PYTHON"; then
  if ! has_venv /usr/bin/python3; then
    log "installing python3-venv with apt-get"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  has_venv "$PYTHON" || PYTHON=/usr/bin/python3
fi

# 2. The venv.
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  log "creating $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# 3. Packages: NAME or NAME==VERSION. A bare name is skipped when installed at
# any version; NAME==VERSION when installed at exactly that version.
want=(numpy pytest gguf scikit-build-core nanobind)
if [ "$hf" -eq 1 ]; then
  # transformers reads GGUF files with `gguf` and builds their tokenizers
  # (SmolLM2's BPE, Gemma 3's SentencePiece vocabulary) with `tokenizers`, its
  # own dependency: neither sentencepiece nor protobuf is needed (checked with
  # 5.19 and 5.25).
  want+=("torch==$TORCH_VERSION" "transformers==$TRANSFORMERS_VERSION" accelerate)
fi

missing=()
while IFS= read -r spec; do
  [ -n "$spec" ] && missing+=("$spec")
done < <("$PY" - "${want[@]}" <<'PY'
import sys
from importlib import metadata
for spec in sys.argv[1:]:
    name, _, version = spec.partition("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have is None or (version and have != version):
        print(spec)
PY
)

if [ ${#missing[@]} -eq 0 ]; then
  log "all present in $VENV: ${want[*]}"
else
  note=""
  [[ " ${missing[*]} " == *" torch=="* ]] && note=" (torch: minutes, about 3 GB with its CUDA libraries)"
  log "pip installing ${missing[*]} into $VENV$note"
  # nice: the machine has 2 cores and other builds may be running.
  nice -n 10 "$PY" -m pip install --disable-pip-version-check -q "${missing[@]}"
fi

if [ "$hf" -eq 1 ]; then
  "$PY" -c 'import torch, transformers; print(f"python-env: torch {torch.__version__}, transformers {transformers.__version__}")' >&2
fi
log "done in $((SECONDS - start)) s; $(du -sh "$VENV" 2>/dev/null | cut -f1) in $VENV"
echo "$PY"
