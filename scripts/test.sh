#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test under ctest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

"$root/scripts/setup.sh"
werror=()
[ -n "${CI:-}" ] && werror=(-DCHATBENCH_WERROR=ON)
"$root/scripts/build.sh" "${werror[@]}"
cd "${BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "${CTEST_PARALLEL:-2}" "$@"
