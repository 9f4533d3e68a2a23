#!/usr/bin/env bash
# Packs what a lent GPU machine needs to run the CUDA tests and the CUDA bench.
# Its image has nvcc 13, the CUDA runtime and cuBLAS, but none of this
# project's Debian build dependencies (Highway, fmt, GoogleTest, CLI11), so the
# binaries are built here with the same nvcc and travel with the shared
# libraries they load that are neither glibc's nor cuBLAS's (cuBLAS is taken
# from the device: libcublasLt alone is over 500 MB).
#
# In the repository root, once:   mkdir -p .git/info && echo /.gpu/ >> .git/info/exclude
# Here:    cmake --preset cuda && cmake --build build/cuda -j2 \
#            --target innerq decode_attention_cuda_test append_cuda_test
#          tests/cuda/bundle_for_device.sh build/cuda
# Device:  run(command=".gpu/run.sh", carry=[".gpu"])   (tests, then a short bench)
set -euo pipefail

build=${1:-build/cuda}
out=.gpu
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp "$build/innerq" "$build"/tests/cuda/{decode_attention_cuda_test,append_cuda_test} \
  "$out/bin/"
for binary in "$out"/bin/*; do ldd "$binary"; done |
  awk '$3 ~ /^\// { print $3 }' | sort -u |
  grep -v -E '/(libc|libm|libdl|libpthread|librt|ld-linux-x86-64)\.so|/libcublas(Lt)?\.so' |
  xargs -r cp -L -t "$out/lib"

cat >"$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# On the device, from the repository root: GPU tests, then the bench. Extra
# arguments replace the bench's (e.g. --shape mha --seqs 8 --ctx 1k,16k,128k).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cublas_dir=$(python3 -c 'import nvidia.cublas as m; print(list(m.__path__)[0] + "/lib")' 2>/dev/null || true)
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${cublas_dir}:${LD_LIBRARY_PATH:-}"
nvidia-smi -L
status=0
for test in append_cuda_test decode_attention_cuda_test; do
  "$here/bin/$test" --gtest_brief=1 || status=1
done
if [ $# -eq 0 ]; then
  set -- --shape llama3-8b --seqs 1 --threads 16 --ctx 1k,16k,64k --kv f16,kivi,innerq,innerq:k=2,v=2
fi
"$here/bin/innerq" bench attention --device cuda "$@" || status=1
exit $status
RUN
chmod +x "$out/run.sh"
du -sh "$out"
