#!/usr/bin/env bash
# Is the instrument the limit? Runs the same `loadgen chat --find-ceiling` against chat-asio
# twice: once plainly, once with loadgen held to a fraction of its core by a cgroup CPU
# quota. If loadgen had headroom, both searches find the same ceiling within the noise;
# if the throttled one finds a lower ceiling, loadgen was (part of) what the first measured.
# Server on CPU 0, loadgen on CPU 1; a fresh server for each search.
#
# usage: scripts/ceiling_check.sh [--clients N] [--room-size K] [--rate R] [--quota F]
#                                 [--build DIR] [--out DIR] [-- more loadgen chat options]
# Needs root for the cgroup (cgroup v1 cpu.cfs_quota_us, or v2 cpu.max).
set -euo pipefail

clients=1000 room_size=10 rate=20 quota=0.7
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build out=
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --clients) clients=$2; shift 2 ;;
    --room-size) room_size=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --quota) quota=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "ceiling_check.sh: unknown argument $1 (see the usage at the top of the script)" >&2; exit 2 ;;
  esac
done
loadgen=$build/bin/loadgen server_bin=$build/bin/chat-asio
for bin in "$loadgen" "$server_bin"; do
  [[ -x $bin ]] || { echo "ceiling_check.sh: $bin not built (scripts/build.sh)" >&2; exit 1; }
done
[[ $(nproc --all) -ge 2 ]] || { echo "ceiling_check.sh: needs two CPUs (server on 0, loadgen on 1)" >&2; exit 1; }
[[ -n $out ]] || out=$(mktemp -d /tmp/ceiling_check.XXXXXX)
mkdir -p "$out"

period_us=100000
quota_us=$(/usr/bin/python3 -c "import sys; q = float(sys.argv[1]); assert 0 < q <= 1; print(int(q * $period_us))" "$quota") ||
  { echo "ceiling_check.sh: --quota takes a fraction in (0, 1]" >&2; exit 2; }

# The cgroup, under this shell's own: v2 if the unified hierarchy is mounted at the root.
cgroup= server_pid=
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  parent=/sys/fs/cgroup$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
  version=2
else
  mount=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpu(,|$)/ {print $2; exit}' /proc/mounts)
  [[ -n $mount ]] || { echo "ceiling_check.sh: no cgroup cpu controller mounted" >&2; exit 1; }
  parent=$mount$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ {print $3; exit}' /proc/self/cgroup)
  version=1
fi
cgroup=${parent%/}/chatbench-ceiling-$$

cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; fi
  [[ -d $cgroup ]] && rmdir "$cgroup" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir "$cgroup" || { echo "ceiling_check.sh: cannot create $cgroup (root needed)" >&2; exit 1; }
if [[ $version == 2 ]]; then
  grep -qw cpu "$parent/cgroup.subtree_control" || echo +cpu >"$parent/cgroup.subtree_control"
  echo "$quota_us $period_us" >"$cgroup/cpu.max"
else
  echo "$period_us" >"$cgroup/cpu.cfs_period_us"
  echo "$quota_us" >"$cgroup/cpu.cfs_quota_us"
fi

# Starts chat-asio on CPU 0 on a free port; sets server_pid and port.
start_server() {
  local log=$out/server-$1.log
  taskset -c 0 "$server_bin" --port 0 >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    port=$(sed -n 's/^listening on [^:]*:\([0-9]*\).*/\1/p' "$log")
    [[ -n $port ]] && return
    sleep 0.1
  done
  echo "ceiling_check.sh: chat-asio did not start (see $log)" >&2
  exit 1
}

stop_server() {
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

search() {  # search NAME [in-cgroup]
  start_server "$1"
  local command=("$loadgen" chat --clients "$clients" --room-size "$room_size" --rate "$rate" --find-ceiling
                 --port "$port" --server-pid "$server_pid" --json "$out/$1.json" --quiet "${extra[@]}")
  echo "== $1: ${command[*]}" >&2
  local status=0
  if [[ ${2:-} == in-cgroup ]]; then
    # Join the cgroup first, then become loadgen: every thread it starts is throttled.
    sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec taskset -c 1 "$@"' sh "$cgroup" "${command[@]}" >"$out/$1.txt" || status=$?
  else
    taskset -c 1 "${command[@]}" >"$out/$1.txt" || status=$?
  fi
  stop_server
  [[ $status == 0 ]] || { echo "ceiling_check.sh: loadgen exited $status in the $1 search (see $out/$1.txt)" >&2; exit 1; }
}

search plain
search throttled in-cgroup

/usr/bin/python3 - "$out/plain.json" "$out/throttled.json" "$quota" <<'EOF'
import json, sys
plain, throttled = (json.load(open(p))["ceiling"] for p in sys.argv[1:3])
rows = [("deliveries/s", "deliveries_per_s"), ("rate per client", "rate_per_client"), ("p99 us", "p99_us"),
        ("server cpu fraction", "server_cpu_fraction"), ("loadgen cpu fraction", "loadgen_cpu_fraction"),
        ("limited by", "limited_by"), ("lower bound", "lower_bound"), ("first failed rate", "first_failed_rate_per_client")]
print("%-22s %16s %16s" % ("ceiling", "plain", "loadgen at %g" % float(sys.argv[3])))
for label, key in rows:
    print("%-22s %16s %16s" % (label, plain[key], throttled[key]))
print("%-22s %16d %16d" % ("steps", len(plain["steps"]), len(throttled["steps"])))
a, b = plain["deliveries_per_s"], throttled["deliveries_per_s"]
if a and b:
    print("throttled / plain: %.3f (the search brackets to within its --ceiling-precision; "
          "a ratio well below that says loadgen was the limit)" % (b / a))
EOF
echo "reports in $out" >&2
