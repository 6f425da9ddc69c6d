#!/usr/bin/env bash
# One command from a fresh machine to a results directory people can cite (docs/methodology.md):
# installs what is missing, builds Release, then runs the measurement matrix
# (scripts/run_matrix.py), draws the plots (scripts/plot.py) and writes report.md
# (scripts/report.py). Every option is run_matrix.py's (see --help), plus:
#   --no-setup   do not run scripts/setup.sh (e.g. not root, everything installed)
#   --no-build   use the binaries already in BUILD_DIR
# BUILD_DIR (default build/) is the build tree used, as for scripts/build.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export BUILD_DIR=${BUILD_DIR:-$root/build}

# run_matrix.py reads the command line, under this script's name, so that its help and
# its errors name the command the user typed.
export CHATBENCH_PROG=run_all.sh
setup=1 build=1
for arg in "$@"; do
  case $arg in
    --no-setup) setup=0 ;;
    --no-build) build=0 ;;
    -h|--help) exec /usr/bin/python3 "$root/scripts/run_matrix.py" --help ;;
  esac
done
# A bad command line stops here, before setup and build (exit 2, docs/exit-status.md);
# on a machine without python3 yet, run_matrix.py finds it after setup.
if [ -x /usr/bin/python3 ]; then
  /usr/bin/python3 "$root/scripts/run_matrix.py" --check-args "$@"
fi

[ $setup = 1 ] && "$root/scripts/setup.sh"
if [ $build = 1 ]; then
  mkdir -p "$BUILD_DIR"
  log=$BUILD_DIR/run_all-build.log
  echo "run_all: building Release in $BUILD_DIR (log: $log)"
  if ! BUILD_TYPE=Release "$root/scripts/build.sh" >"$log" 2>&1; then
    # A broken test target elsewhere in the tree must not stop a benchmark run: build
    # just what the run uses (the registry's compiled servers), and say so.
    tail -n 20 "$log" >&2
    echo "run_all: the full build failed (above); building only the servers, loadgen and microbench" >&2
    servers=$(/usr/bin/python3 "$root/scripts/chatbench/variants.py" --targets)
    # shellcheck disable=SC2086  # one target per word
    cmake --build "$BUILD_DIR" -j "$(nproc)" --target $servers loadgen microbench >>"$log" 2>&1 \
      || { tail -n 30 "$log" >&2; echo "run_all: build failed" >&2; exit 1; }
  fi
fi

# The exact command goes into machine.json.
exec /usr/bin/python3 "$root/scripts/run_matrix.py" --command "$0 $*" "$@"
