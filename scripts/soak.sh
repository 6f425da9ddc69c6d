#!/bin/sh
# Long soak outside CI: the fault suite's Soak test (loadgen chat at a modest rate, no
# line lost, RSS flat) for SECONDS per variant (default 600).
#   scripts/soak.sh [BUILD_DIR] [VARIANT...]     e.g. CHAT_SOAK_S=3600 scripts/soak.sh build asio
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: scripts/soak.sh [BUILD_DIR] [VARIANT...]   (VARIANT: threads fibers asio coro eventlet)"
bad() {
  echo "soak.sh: $1" >&2
  echo "$usage" >&2
  exit 2
}
case ${1-} in -h|--help) echo "$usage"; exit 0 ;; esac
[ $# -eq 0 ] || [ -d "$1" ] || bad "no directory '$1' (BUILD_DIR)"
build=$(cd "${1:-$root/build}" && pwd)
[ $# -gt 0 ] && shift
variants=${*:-threads fibers asio coro eventlet}
for variant in $variants; do
  case $variant in threads|fibers|asio|coro|eventlet) ;; *) bad "no variant '$variant'" ;; esac
done
export CHAT_SOAK_S="${CHAT_SOAK_S:-600}"
case $CHAT_SOAK_S in '' | *[!0-9]*) bad "CHAT_SOAK_S must be whole seconds, not '$CHAT_SOAK_S'" ;; esac
[ -x "$build/bin/faults" ] || { echo "soak.sh: no $build/bin/faults: build first (scripts/build.sh)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

status=0
for variant in $variants; do
  if [ "$variant" = eventlet ]; then
    server="/usr/bin/python3 $root/servers/eventlet/chat_server.py"
  else
    server="$build/bin/chat-$variant"
  fi
  echo "== $variant: ${CHAT_SOAK_S} s"
  # shellcheck disable=SC2086  # the server command is split into its words on purpose
  "$build/bin/faults" --gtest_filter='Soak.*' --variant "$variant" -- $server || status=1
done
exit $status
