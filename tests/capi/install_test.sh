#!/usr/bin/env bash
# The installed package, as a user gets it: `cmake --install` of the build
# into a temporary prefix, then examples/c built against that prefix only
# (find_package with the shared and the static library, and pkg-config), and
# each binary run on the tiny model; its text and cache line must appear.
#   install_test.sh BUILD_DIR EXAMPLE_DIR MODEL
set -euo pipefail
build="$1" example="$2" model="$3"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"

cmake --install "$build" --prefix "$prefix" --component library >/dev/null
test -f "$prefix/include/innerq/innerq.h"
test -f "$prefix/include/innerq/version.h"
test -f "$prefix/lib/cmake/innerq/innerqConfig.cmake"
test -f "$prefix/lib/pkgconfig/innerq.pc"
# Nothing private is installed.
if find "$prefix/include" -name '*.h' | grep -v -e '/innerq/innerq.h$' -e '/innerq/version.h$'; then
  echo "install_test: private headers were installed" >&2
  exit 1
fi

check_run() {  # BINARY: runs it and checks what it prints
  local out
  out="$("$@" "$model" "Once upon a time" 24 f16 2>&1)" || {
    echo "$out" >&2
    exit 1
  }
  case "$out" in
  *"Once upon a time"*"kv cache f16: "*" tokens, "*"bytes held"*) ;;
  *)
    echo "install_test: unexpected output of $1:" >&2
    echo "$out" >&2
    exit 1
    ;;
  esac
}

for kind in shared static; do
  static=OFF
  [ "$kind" = static ] && static=ON
  cmake -S "$example" -B "$tmp/$kind" -DCMAKE_PREFIX_PATH="$prefix" \
    -DINNERQ_EXAMPLE_STATIC=$static -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$tmp/$kind" >/dev/null
  check_run "$tmp/$kind/innerq_generate"
done
# The static binary does not need libinnerq.so.
if ldd "$tmp/static/innerq_generate" | grep -q libinnerq; then
  echo "install_test: the static example links libinnerq.so" >&2
  exit 1
fi

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc -std=c11 -Wall -Werror "$example/generate.c" $(pkg-config --cflags --libs innerq) \
  -Wl,-rpath,"$prefix/lib" -o "$tmp/pc_generate"
check_run "$tmp/pc_generate"
echo "install_test: shared, static and pkg-config builds of examples/c run"
