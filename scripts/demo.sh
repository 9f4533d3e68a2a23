#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, fetches
# SmolLM2-135M-Instruct and Gemma 3 270M, builds innerq (release), then runs
#   1. `generate` with an f16 cache and with the InnerQ cache on one prompt,
#   2. `perplexity` on a slice of WikiText-2 (raw test split) for f16, kivi,
#      q4_0 (plain and Hadamard-rotated, as llama.cpp runs it), the paper's
#      config and the default innerq, every scored token attending to the
#      quantized cache,
#   3. the same two on Gemma 3 270M (head_dim 256, one KV head; its 15
#      sliding-window layers keep their 512 positions in f16, `--kv` sets the
#      3 global layers),
#   4. `bench attention` for the Llama-3-8B head shape at 16k tokens.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh
bash scripts/fetch-model.sh
bash scripts/fetch-data.sh
echo "demo: building (release)..." >&2
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target innerq >/dev/null

innerq=build/release/innerq
threads="${THREADS:-$(nproc)}"
prompt="Write a short story about a robot who learns to paint."

for kv in f16 innerq; do  # 300 tokens: well past the 32 sink + 96 recent tokens InnerQ keeps in f16
  echo
  echo "== innerq generate -m smollm2 --chat --kv $kv -n 300 -t $threads"
  "$innerq" generate -m smollm2 --chat -p "$prompt" -n 300 --kv "$kv" -t "$threads"
done

echo
echo "== innerq perplexity -m smollm2 (WikiText-2 raw test, 2 chunks of 1024 tokens, prefix 512)"
"$innerq" perplexity -m smollm2 -f data/wikitext2/test.raw.txt --ctx 1024 --prefix 512 --chunks 2 \
  --kv f16,kivi,q4_0,q4_0:rot=kv,innerq-paper,innerq -t "$threads"

for kv in f16 innerq; do
  echo
  echo "== innerq generate -m gemma3-270m --kv $kv -n 64 -t $threads"
  "$innerq" generate -m gemma3-270m -p "The capital of France is" -n 64 --kv "$kv" -t "$threads"
done

echo
echo "== innerq perplexity -m gemma3-270m (WikiText-2 raw test, 1 chunk of 1024 tokens, prefix 512)"
"$innerq" perplexity -m gemma3-270m -f data/wikitext2/test.raw.txt --ctx 1024 --prefix 512 \
  --chunks 1 --kv f16,q4_0:rot=kv,innerq-paper,innerq -t "$threads"

echo
echo "== innerq bench attention --shape llama3-8b --ctx 16384"
"$innerq" bench attention --shape llama3-8b --ctx 16384 --kv f16,kivi,q4_0,innerq-paper,innerq -t "$threads"
