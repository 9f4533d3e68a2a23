#!/usr/bin/env bash
# How innerq's OpenMP threads behave beside another busy process (issue
# "hardening", class 9; docs/architecture.md, "Threads under contention").
# Runs two workloads on SmolLM2 with 2 threads under four wait policies, each
# alone and beside one and two busy processes, interleaved so noise lands on
# all alike, and prints seconds (median of --reps) and ratios to the default
# policy alone. Usage: bash scripts/bench-contention.sh [innerq binary] [reps]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${1:-build/release/innerq}"
REPS="${2:-3}"
[ -x "$BIN" ] || { echo "bench-contention: no binary at $BIN (cmake --build --preset release)" >&2; exit 2; }
bash scripts/fetch-model.sh >/dev/null
bash scripts/fetch-data.sh >/dev/null
TEXT="$(mktemp)"
trap 'rm -f "$TEXT"; [ -n "$BUSY" ] && kill $BUSY 2>/dev/null; true' EXIT
head -c 200000 data/wikitext2/test.raw.txt >"$TEXT"
BUSY=""

workload() {  # $1: policy (VAR=value), $2: name
  case "$2" in
    decode) env "$1" "$BIN" generate -m smollm2 -p "The history of the city" -n 64 --kv innerq \
              -t 2 --json >/dev/null ;;
    perplexity) env "$1" "$BIN" perplexity -m smollm2 -f "$TEXT" --ctx 256 --prefix 128 \
                  --chunks 1 --kv f16,innerq -t 2 --json >/dev/null 2>&1 ;;
  esac
}

# INNERQ_BENCH_DEFAULT=1 sets nothing, so innerq applies its own setting
# (tools/main.cc: 1000 spins).
policies=("GOMP_SPINCOUNT=300000:libgomp default (300k spins)" "GOMP_SPINCOUNT=10000:10k spins"
          "OMP_WAIT_POLICY=passive:passive" "INNERQ_BENCH_DEFAULT=1:innerq (1k spins)")
results="$(mktemp)"
for rep in $(seq "$REPS"); do
  for busy in 0 1 2; do
    BUSY=""
    for _ in $(seq "$busy"); do
      ( while :; do :; done ) &
      BUSY="$BUSY $!"
    done
    for w in decode perplexity; do
      for p in "${policies[@]}"; do
        t0=$EPOCHREALTIME
        workload "${p%%:*}" "$w"
        echo "$w|$busy|${p#*:}|$t0|$EPOCHREALTIME" >>"$results"
      done
    done
    if [ -n "$BUSY" ]; then kill $BUSY; wait $BUSY 2>/dev/null || true; BUSY=""; fi
  done
  echo "bench-contention: round $rep of $REPS done" >&2
done
python3 - "$results" <<'PY'
import statistics, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    w, busy, pol, t0, t1 = line.strip().split("|")
    rows[(w, int(busy), pol)].append(float(t1) - float(t0))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"CPU: {cpu}; 2 threads; median of {len(next(iter(rows.values())))} runs; "
      "ratio = time / (libgomp default, alone)")
print(f"{'workload':<11} {'wait policy':<36} {'alone s':>8} {'+1 busy':>8} {'+2 busy':>8}"
      f" {'alone x':>8} {'+1 x':>6} {'+2 x':>6}")
for w in ("decode", "perplexity"):
    base = statistics.median(rows[(w, 0, "libgomp default (300k spins)")])
    for pol in dict.fromkeys(p for (ww, _, p) in rows if ww == w):
        t = [statistics.median(rows[(w, b, pol)]) for b in (0, 1, 2)]
        print(f"{w:<11} {pol:<36} {t[0]:8.2f} {t[1]:8.2f} {t[2]:8.2f}"
              f" {t[0]/base:8.2f} {t[1]/base:6.2f} {t[2]/base:6.2f}")
PY
rm -f "$results"
