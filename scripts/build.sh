#!/usr/bin/env bash
# Configures (once) and builds chatbench; incremental. Extra arguments go to cmake's
# configure step, e.g. scripts/build.sh -DCHATBENCH_WERROR=ON.
# BUILD_DIR (default build/) picks the build tree.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
