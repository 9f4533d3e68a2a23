#!/usr/bin/env bash
# Packs what a lent GPU machine needs to run the CUDA tests, the sanitizers
# and the CUDA bench in one call. Its image has nvcc 13, the CUDA runtime,
# cuBLAS, compute-sanitizer and ncu, but none of this project's Debian build
# dependencies (Highway, fmt, GoogleTest, CLI11), so the binaries are built
# here with the same nvcc and travel with the shared libraries they load that
# are neither glibc's, the C++ runtime's (newer there: the sanitizer and ncu
# must keep loading their own) nor cuBLAS's (taken from the device:
# libcublasLt alone is over 500 MB). The C++ runtime travels too, in
# lib-fallback/, used only if the device's is too old for the binaries.
#
# In the repository root, once:   mkdir -p .git/info && echo /.gpu/ >> .git/info/exclude
# Here:    cmake --preset cuda && cmake --build build/cuda -j2 \
#            --target innerq decode_attention_cuda_test append_cuda_test
#          tests/cuda/bundle_for_device.sh build/cuda
# Variants of the bench binary copied to BUILD/innerq-NAME (say, built with
# -DINNERQ_CUDA_DECODE_MIN_BLOCKS=5) travel too; run.sh benches each at
# llama3-8b, 8 sequences, 64k and 128k tokens, after everything else.
# Device:  run(command=".gpu/run.sh", carry=[".gpu"], timeout_s=490)
#
# run.sh writes at most 8 files to $OUT (the device tool's limit): run.log
# (everything, in order), sanitizer.log, ncu.log and bench-SHAPE.json for
# each bench shape (1 and 8 sequences); it prints a short summary last. Each step has its own
# timeout so that one slow step cannot take the others' time; the order puts
# the results that matter most first: tests, the llama3-8b bench, the
# sanitizers, the mha bench, then a single-kernel ncu profile.
set -euo pipefail

build=${1:-build/cuda}
out=.gpu
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/lib-fallback"
cp "$build/innerq" "$build"/tests/cuda/{decode_attention_cuda_test,append_cuda_test} \
  "$out/bin/"
for variant in "$build"/innerq-*; do
  [ -x "$variant" ] && cp "$variant" "$out/bin/"
done
libs=$(for binary in "$out"/bin/*; do ldd "$binary"; done |
  awk '$3 ~ /^\// { print $3 }' | sort -u)
echo "$libs" |
  grep -v -E '/(libc|libm|libdl|libpthread|librt|ld-linux-x86-64|libstdc\+\+|libgcc_s)\.so|/libcublas(Lt)?\.so' |
  xargs -r cp -L -t "$out/lib"
echo "$libs" | grep -E '/(libstdc\+\+|libgcc_s)\.so' | xargs -r cp -L -t "$out/lib-fallback"

cat >"$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# On the device, from the repository root. Optional environment:
#   SPECS   the bench's --kv list (default below; rotated specs, such as the
#           default innerq, are refused by the CUDA path)
#   NCU_KV  the cache spec whose split kernel ncu profiles (default innerq-paper)
#   STEPS   which steps to run, a subset of
#           "smi tests bench1 sanitize bench2 ncu variants"
#   TOTAL   seconds for all steps (default 460): a step gets what is left, at
#           most its own limit, and is skipped when under 15 s are left
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
log=$OUT/run.log
exec > >(tee -a "$log") 2>&1
SPECS=${SPECS:-f16,kivi,innerq-paper,innerq-paper:k=2,v=2,innerq:rot=off}
NCU_KV=${NCU_KV:-innerq-paper}
STEPS=${STEPS:-smi tests bench1 sanitize bench2 ncu variants}
TOTAL=${TOTAL:-460}
start=$(date +%s)
summary=()
note() { summary+=("$(printf '%4ds  %s' $(($(date +%s) - start)) "$*")"); echo "### $*" >&2; }
want() { [[ " $STEPS " == *" $1 "* ]]; }

cublas_dir=$(python3 -c 'import nvidia.cublas as m; print(list(m.__path__)[0] + "/lib")' 2>/dev/null || true)
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${cublas_dir}:${LD_LIBRARY_PATH:-}"
if ldd "$here/bin/innerq" | grep -q 'not found'; then
  ldd "$here/bin/innerq" | grep 'not found'
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$here/lib-fallback"
  ldd "$here/bin/innerq" | grep -q 'not found' && note "innerq: libraries still missing"
fi
find_tool() {
  command -v "$1" 2>/dev/null && return
  ls /usr/local/cuda/bin/"$1" /opt/nvidia/*/"$1" /opt/nvidia/*/*/"$1" 2>/dev/null | head -1
}
sanitizer=$(find_tool compute-sanitizer)
ncu=$(find_tool ncu)
status=0
step() {  # step NAME TIMEOUT COMMAND...: runs, records pass/fail in the summary
  local name=$1 limit=$2
  shift 2
  local left=$((TOTAL - ($(date +%s) - start)))
  if [ $left -lt 15 ]; then
    note "$name: skipped, out of time"
    status=1
    return 1
  fi
  [ $left -lt "$limit" ] && limit=$left
  echo "### $name (limit $limit s): $*" >&2
  local t0=$(date +%s)
  timeout --signal=INT --kill-after=10 "$limit" "$@"
  local rc=$?
  [ $rc -ne 0 ] && status=1
  note "$name: rc $rc ($(($(date +%s) - t0)) s)"
  return $rc
}

if want smi; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu,persistence_mode,compute_mode --format=csv
  nvidia-smi -L
  note "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
  note "compute-sanitizer: ${sanitizer:-missing}; ncu: ${ncu:-missing}"
fi

# The decode test's cases in 8 gtest shards at once (its CPU references are
# single-threaded; the machine has 16 cores).
decode_shards() {
  local pids=() rc=0 i
  for i in 0 1 2 3 4 5 6 7; do
    GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i "$here/bin/decode_attention_cuda_test" \
      --gtest_brief=1 >"/tmp/decode_shard_$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 0 1 2 3 4 5 6 7; do
    wait "${pids[$i]}" || rc=1
    echo "--- shard $i"
    cat "/tmp/decode_shard_$i.log"
  done
  return $rc
}
if want tests; then
  step "append_cuda_test" 60 "$here/bin/append_cuda_test" --gtest_brief=1
  step "decode_attention_cuda_test (8 shards)" 120 bash -c "$(declare -f decode_shards); here=$here; decode_shards"
fi

bench() {  # bench SHAPE LIMIT: 1 and 8 sequences, 1k to 128k tokens
  step "bench $1" "$2" "$here/bin/innerq" bench attention --device cuda --shape "$1" \
    --seqs 1,8 --ctx 1k,4k,16k,64k,128k --kv "$SPECS" -t 16 --json >"$OUT/bench-$1.json"
}
if want bench1; then
  bench llama3-8b 90
fi

if want sanitize; then
  if [ -n "$sanitizer" ]; then
    # Small cases: every layout at every chunk, a ragged batch, two streams,
    # and the append kernels.
    decode_filter='Chunks/*:Ragged/*_3:Kinds/*_0:Kinds/*_5'
    for tool in memcheck racecheck synccheck; do
      step "$tool append_cuda_test" 30 "$sanitizer" --tool "$tool" --error-exitcode 1 \
        "$here/bin/append_cuda_test" --gtest_brief=1 > >(tee -a "$OUT/sanitizer.log") 2>&1
      step "$tool decode_attention_cuda_test" 60 "$sanitizer" --tool "$tool" --error-exitcode 1 \
        "$here/bin/decode_attention_cuda_test" --gtest_brief=1 "--gtest_filter=$decode_filter" \
        > >(tee -a "$OUT/sanitizer.log") 2>&1
    done
  else
    note "compute-sanitizer not found: sanitizers not run"
    status=1
  fi
fi

if want bench2; then
  bench mha 260  # 8 x 128k x 32 heads: ~2 min of cache building on the host
fi

if want ncu && [ -n "$ncu" ]; then
  # One InnerQ split kernel (llama3-8b, 8 x 64k tokens), after warm-up.
  # (launch-skip: the warm-up and probe launches of the timing loop.)
  step "ncu innerq kernel" 90 "$ncu" --set basic --clock-control none --kernel-name-base demangled \
    -k regex:InnerQLayout --launch-skip 3 --launch-count 1 \
    "$here/bin/innerq" bench attention --device cuda --shape llama3-8b --seqs 8 --ctx 64k \
    --kv "$NCU_KV" -t 16 --reps 3 > >(tee "$OUT/ncu.log") 2>&1
fi

if want variants; then
  for variant in "$here"/bin/innerq-*; do
    [ -x "$variant" ] || continue
    name=$(basename "$variant")
    step "bench $name" 60 "$variant" bench attention --device cuda --shape llama3-8b --seqs 8 \
      --ctx 64k,128k --kv f16,kivi,innerq-paper -t 16 --json >"$OUT/bench-$name.json"
  done
fi

echo
echo "===== summary ($(($(date +%s) - start)) s) ====="
printf '%s\n' "${summary[@]}"
for f in "$OUT"/bench-*.json; do
  [ -s "$f" ] || continue
  python3 - "$f" <<'PY' || true
import json, os, sys
name = os.path.basename(sys.argv[1])[len("bench-"):-len(".json")]
rows = json.load(open(sys.argv[1]))
for r in rows:
    if r["ctx"] < 16384 or not r["kv"].startswith("innerq"):
        continue
    kivi = r["speedup_vs_kivi"]
    kivi = "-" if kivi is None else f"{kivi:.2f}x"
    print(f'{name[:14]:>14} s{r["seqs"]} {r["kv"][:14]:<14} {r["ctx"]:>6} {r["us"]:7.1f}us '
          f'{r["gbps"]:5.0f}GB/s {100*r["gbps"]/r["copy_bandwidth_gbps"]:3.0f}% '
          f'cublas {r["speedup_vs_cublas_f16"]:4.2f}x kivi {kivi:>5} '
          f'err {r["rel_err"]:.3f}{"" if r["ok"] else " WRONG"}')
PY
done
exit $status
RUN
chmod +x "$out/run.sh"
du -sh "$out"
