#!/usr/bin/env bash
# Configures (once) and builds chatbench; incremental. Extra arguments go to cmake's
# configure step, e.g. scripts/build.sh -DCHATBENCH_WERROR=ON.
# BUILD_DIR (default build/) picks the build tree.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}

usage="usage: scripts/build.sh [-DVAR=VALUE | -UVAR | -G GENERATOR | -W... | --fresh | --log-level=LEVEL]..."
# Only what the configure step takes; anything else would be an error there, or worse,
# a path cmake takes for a source tree. (docs/exit-status.md: 2 is a bad command line.)
expect_value=0
for arg in "$@"; do
  if [ $expect_value = 1 ]; then expect_value=0; continue; fi
  case $arg in
    -h|--help) echo "$usage"; exit 0 ;;
    -D?*|-U?*|-G?*|-W?*|--fresh|--log-level=?*) ;;
    -D|-U|-G) expect_value=1 ;;
    *) echo "build.sh: '$arg' is not a cmake configure option this script passes on" >&2
       echo "$usage" >&2; exit 2 ;;
  esac
done
[ $expect_value = 0 ] || { echo "build.sh: ${*: -1} needs a value" >&2; echo "$usage" >&2; exit 2; }

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
