#!/usr/bin/env bash
# The quality tables and the Pareto plots of the README (docs/img/pareto.svg
# for SmolLM2-135M, docs/img/pareto-gemma3.svg with MODEL=gemma3-270m): the
# WikiText-2 raw test split, every cache config of $SPECS, KL divergence from
# f16 (same run) against bits per value at 8k tokens. First `innerq tune` at
# an average of 3 bits on the validation split (build/quality/tuned-3bit.txt,
# or build/quality/gemma3-270m/tuned-3bit.txt; kept if present, TUNE=1 redoes
# it; SmolLM2 ~12 min, Gemma ~4), then two perplexity runs (ctx 1024 with 8
# chunks; ctx 4096 with 2 chunks, 512 scored tokens each) and one `info
# --json`, ~15 min on 2 cores. JSON goes to the same folder, the Markdown
# table to stdout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh
bash scripts/fetch-model.sh
bash scripts/fetch-data.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target innerq >/dev/null

innerq=build/release/innerq
threads="${THREADS:-$(nproc)}"
model="${MODEL:-smollm2}"
case "$model" in
  smollm2) out=build/quality svg=docs/img/pareto.svg title="SmolLM2-135M" tune_ctx=(512 256) ;;
  gemma3-270m)
    out=build/quality/gemma3-270m svg=docs/img/pareto-gemma3.svg title="Gemma 3 270M"
    tune_ctx=(1024 512)
    ;;
  *)
    echo "quality.sh: MODEL=$model is not smollm2 or gemma3-270m" >&2
    exit 2
    ;;
esac
mkdir -p "$out" docs/img
tuned="$out/tuned-3bit.txt"
if [[ ! -f "$tuned" || "${TUNE:-0}" == 1 ]]; then
  "$innerq" tune -m "$model" -f data/wikitext2/valid.txt --base innerq --budget 3.0 \
    --ctx "${tune_ctx[0]}" --prefix "${tune_ctx[1]}" --chunks 2 -t "$threads" -o "$tuned" \
    >"$out/tune.txt"
fi
SPECS="${SPECS:-q8_0,q8_0:rot=kv,q4_0,q4_0:rot=kv,kivi,kivi4,innerq-paper,innerq-paper:vmode=sym,innerq-paper:k=4,v=4,innerq,innerq:k=4,v=2,innerq:k=3,v=2,innerq:k=2,v=3,innerq:k=2,v=2,innerq:layers=$tuned,innerq:k=4,v=4}"

"$innerq" info -m "$model" -c 8192 --kv "f16,$SPECS" --json >"$out/bytes8k.json"
echo "quality: ctx 1024, 8 chunks" >&2
"$innerq" perplexity -m "$model" -f data/wikitext2/test.raw.txt --ctx 1024 --prefix 512 --chunks 8 \
  --kv "$SPECS" -t "$threads" --json >"$out/ppl1024.json"
echo "quality: ctx 4096, 2 chunks" >&2
"$innerq" perplexity -m "$model" -f data/wikitext2/test.raw.txt --ctx 4096 --prefix 3584 --chunks 2 \
  --kv "$SPECS" -t "$threads" --json >"$out/ppl4096.json"
python3 scripts/pareto.py --bytes "$out/bytes8k.json" --ppl "1024:$out/ppl1024.json" \
  --ppl "4096:$out/ppl4096.json" --svg "$svg" --title "$title"
