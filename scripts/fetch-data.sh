#!/usr/bin/env bash
# Puts the evaluation text into data/ (git-ignored): the WikiText-2 raw test
# split (scored by `perplexity` and the quality gate) and the validation
# split (calibration for `innerq tune`, never scored). Copies each from
# ../shared/data where that exists (every machine of this project, CI
# included), otherwise downloads its public source (llama.cpp's CI copy of
# wiki.test.raw; pytorch/examples' valid.txt). Either way the sha256 must match.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$ROOT/data/wikitext2"

verify() { echo "$1  $2" | sha256sum --check --status; }

# fetch NAME SHA256 DOWNLOAD-COMMAND...: data/wikitext2/NAME
fetch() {
  local name=$1 sha=$2
  shift 2
  local dest="$ROOT/data/wikitext2/$name" shared="$ROOT/../shared/data/wikitext2/$name"
  if [[ -f "$dest" ]] && verify "$sha" "$dest"; then return 0; fi
  if [[ -f "$shared" ]]; then
    cp "$shared" "$dest.tmp"
  else
    "$@" "$dest.tmp"
  fi
  if ! verify "$sha" "$dest.tmp"; then
    rm -f "$dest.tmp"
    echo "fetch-data: sha256 mismatch for WikiText-2 $name (expected $sha)" >&2
    exit 1
  fi
  mv "$dest.tmp" "$dest"
  echo "fetch-data: wrote $dest" >&2
}

download_test() {
  local url="https://huggingface.co/datasets/ggml-org/ci/resolve/main/wikitext-2-raw-v1.zip"
  echo "fetch-data: downloading WikiText-2 (raw) from $url" >&2
  local tmp
  tmp="$(mktemp -d)"
  curl -fsSL "$url" -o "$tmp/wikitext.zip"
  python3 -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('wikitext-2-raw/wiki.test.raw'))" \
    "$tmp/wikitext.zip" "$1"
  rm -rf "$tmp"
}

download_valid() {
  local url="https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/valid.txt"
  echo "fetch-data: downloading the WikiText-2 validation split from $url" >&2
  curl -fsSL "$url" -o "$1"
}

fetch test.raw.txt 173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08 download_test
fetch valid.txt f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8 download_valid
