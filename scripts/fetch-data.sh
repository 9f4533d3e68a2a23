#!/usr/bin/env bash
# Puts the evaluation text into data/ (git-ignored): WikiText-2 raw test split.
# Copies it from ../shared/data where that exists (every machine of this
# project, CI included), otherwise downloads llama.cpp's CI copy. Either way
# the sha256 must match the canonical wiki.test.raw.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/data/wikitext2/test.raw.txt"
SHA256="173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"
SHARED="$ROOT/../shared/data/wikitext2/test.raw.txt"
URL="https://huggingface.co/datasets/ggml-org/ci/resolve/main/wikitext-2-raw-v1.zip"

verify() { echo "$SHA256  $1" | sha256sum --check --status; }

if [[ -f "$DEST" ]] && verify "$DEST"; then exit 0; fi
mkdir -p "$(dirname "$DEST")"
if [[ -f "$SHARED" ]]; then
  cp "$SHARED" "$DEST.tmp"
else
  echo "fetch-data: downloading WikiText-2 (raw) from $URL" >&2
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  curl -fsSL "$URL" -o "$TMP/wikitext.zip"
  python3 -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('wikitext-2-raw/wiki.test.raw'))" \
    "$TMP/wikitext.zip" "$DEST.tmp"
fi
if ! verify "$DEST.tmp"; then
  rm -f "$DEST.tmp"
  echo "fetch-data: sha256 mismatch for WikiText-2 raw test (expected $SHA256)" >&2
  exit 1
fi
mv "$DEST.tmp" "$DEST"
echo "fetch-data: wrote $DEST" >&2
