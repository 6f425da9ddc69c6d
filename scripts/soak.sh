#!/bin/sh
# Long soak outside CI: the fault suite's Soak test (loadgen chat at a modest rate, no
# line lost, RSS flat) for CHAT_SOAK_S seconds (default 600; ctest's runs are 15 s), one
# server after another: every one the suites run against (`ctest -N -L soak` in the build
# tree lists them, from the registry in CMakeLists.txt), or those named.
#   scripts/soak.sh [BUILD_DIR] [NAME...]     e.g. CHAT_SOAK_S=3600 scripts/soak.sh build asio asio-t2
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: scripts/soak.sh [BUILD_DIR] [NAME...]   (NAME: a variant, or VARIANT-t2; default all)"
bad() {
  echo "soak.sh: $1" >&2
  echo "$usage" >&2
  exit 2
}
case ${1-} in -h|--help) echo "$usage"; exit 0 ;; esac
[ $# -eq 0 ] || [ -d "$1" ] || bad "no directory '$1' (BUILD_DIR)"
build=$(cd "${1:-$root/build}" && pwd)
[ $# -gt 0 ] && shift
export CHAT_SOAK_S="${CHAT_SOAK_S:-600}"
case $CHAT_SOAK_S in '' | *[!0-9]*) bad "CHAT_SOAK_S must be whole seconds, not '$CHAT_SOAK_S'" ;; esac
[ -x "$build/bin/faults" ] || { echo "soak.sh: no $build/bin/faults: build first (scripts/build.sh)" >&2; exit 1; }

# NAME and the command of each soak test ctest has, one per line, tab-separated; run
# directly, without ctest's timeout.
tests=$(cd "$build" && ctest --show-only=json-v1 -L soak | /usr/bin/python3 -c '
import json, shlex, sys
for test in json.load(sys.stdin)["tests"]:
    print(test["name"].split(".")[0], shlex.join(test["command"]), sep="\t")
')
for name in "$@"; do
  printf '%s\n' "$tests" | cut -f1 | grep -qxF -- "$name" ||
    bad "no soak test for '$name' in $build ($(printf '%s\n' "$tests" | cut -f1 | paste -sd ' '))"
done
ulimit -n "$(ulimit -Hn)"

status=0
tab=$(printf '\t')
while IFS=$tab read -r name command; do
  if [ $# -gt 0 ]; then
    case " $* " in *" $name "*) ;; *) continue ;; esac
  fi
  echo "== $name: ${CHAT_SOAK_S} s"
  eval "$command" || status=1
done <<EOF_TESTS
$tests
EOF_TESTS
exit $status
