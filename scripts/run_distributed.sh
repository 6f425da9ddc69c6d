#!/usr/bin/env bash
# One chat, broadcast or idle run from several load hosts: one loadgen slice per host over
# ssh with GNU parallel, a common start time, the slices' reports fetched and merged
# exactly (docs/distributed.md). Exit: 0 merged and complete; 1 a host failed its check, a slice
# failed or missed its deadline, or the merge is incomplete (each named); 2 bad command line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

usage="usage: scripts/run_distributed.sh --hosts FILE --server ADDRESS:PORT --clients N [--loadgen PATH] [--ship]
       [--ssh-config FILE] [--server-ssh SSHLOGIN --server-pid PID] [--out DIR] [--start-delay-s S] [--deadline-s S] -- chat|broadcast|idle LOADGEN_OPTIONS..."
die_usage() { echo "run_distributed.sh: $1" >&2; echo "$usage" >&2; exit 2; }
die() { echo "run_distributed.sh: $1" >&2; exit 1; }

hosts_file="" server="" clients="" loadgen="$root/build/bin/loadgen" ship=0 server_ssh="" server_pid=""
out="" start_delay_s=10 deadline_s="" ssh_config=""
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) echo "$usage"; exit 0 ;;
    --hosts) hosts_file=${2:-}; shift ;;
    --server) server=${2:-}; shift ;;
    --clients) clients=${2:-}; shift ;;
    --loadgen) loadgen=${2:-}; shift ;;
    --ship) ship=1 ;;
    --ssh-config) ssh_config=${2:-}; shift ;;
    --server-ssh) server_ssh=${2:-}; shift ;;
    --server-pid) server_pid=${2:-}; shift ;;
    --out) out=${2:-}; shift ;;
    --start-delay-s) start_delay_s=${2:-}; shift ;;
    --deadline-s) deadline_s=${2:-}; shift ;;
    --) shift; break ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
  shift
done
[ -n "$hosts_file" ] && [ -r "$hosts_file" ] || die_usage "--hosts FILE: a readable sshlogin file is required"
[[ $server =~ ^([0-9.]+):([0-9]+)$ ]] || die_usage "--server ADDRESS:PORT is required (IPv4), got '$server'"
server_address=${BASH_REMATCH[1]} server_port=${BASH_REMATCH[2]}
[[ $clients =~ ^[1-9][0-9]*$ ]] || die_usage "--clients N (the whole run's clients) is required"
[[ $start_delay_s =~ ^[0-9]+$ ]] || die_usage "--start-delay-s takes whole seconds"
[ -z "$deadline_s" ] || [[ $deadline_s =~ ^[1-9][0-9]*$ ]] || die_usage "--deadline-s takes whole seconds"
[ -z "$server_pid" ] || { [[ $server_pid =~ ^[1-9][0-9]*$ ]] && [ -n "$server_ssh" ]; } || die_usage "--server-pid PID needs --server-ssh SSHLOGIN"
mode=${1:-}
case $mode in chat|broadcast|idle) ;; *) die_usage "after --: chat, broadcast or idle and its loadgen options" ;; esac
shift
# Idle's memory per connection is the server's, read on its host at each step's sample time.
[ "$mode" != idle ] || [ -n "$server_pid" ] || die_usage "idle needs --server-ssh SSHLOGIN --server-pid PID: the server's memory is sampled on its host"
for arg in "$@"; do
  case $arg in
    --host|--host=*|--port|--port=*|--clients|--clients=*|--clients-total*|--client-offset*|--start-at*|--json*|--server-pid*|--clock-offset-ns*|--clock-offset-bound-ns*)
      die_usage "$arg is set by this script; leave it out of the loadgen options" ;;
  esac
done
for tool in parallel rsync; do  # parallel's --return and --basefile use rsync
  command -v $tool >/dev/null || die "$tool is missing (scripts/setup.sh installs it)"
done
[ -x "$loadgen" ] || die "no loadgen at $loadgen (scripts/build.sh, or --loadgen PATH)"
loadgen=$(cd "$(dirname "$loadgen")" && pwd)/$(basename "$loadgen")  # the same path on every host

# The sshlogins of GNU parallel's --sshloginfile: one a line, "#" comments, an optional
# "N/" job-slot prefix (each host runs one slice here, so it is ignored), ":" (this
# machine) not allowed: every slice runs on a load host.
mapfile -t logins < <(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$hosts_file" | grep -v '^$' | sed -E 's#^[0-9]+/##')
[ ${#logins[@]} -gt 0 ] || die_usage "$hosts_file names no host"
host_count=${#logins[@]}
[ "$clients" -ge "$host_count" ] || die_usage "--clients $clients is fewer than the $host_count hosts"
out=${out:-$(mktemp -d /tmp/run_distributed.XXXXXX)}
mkdir -p "$out"
ssh_options=(-o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3)
if [ -n "$ssh_config" ]; then
  [ -r "$ssh_config" ] || die_usage "--ssh-config $ssh_config is not readable"
  ssh_options=(-F "$(cd "$(dirname "$ssh_config")" && pwd)/$(basename "$ssh_config")" "${ssh_options[@]}")
fi
per_host=$(( (clients + host_count - 1) / host_count ))
remote_loadgen=$loadgen
[ $ship = 1 ] && remote_loadgen=$(cd "$out" && pwd)/loadgen  # --basefile puts it at the same absolute path

# 1. Every host, before anything is timed, all at once, each within 20 s: reachable,
# loadgen there (or shipped), fd limit and port range enough for its slice.
echo "run_distributed: checking ${host_count} hosts"
check_dir=$out/checks
mkdir -p "$check_dir"
for i in "${!logins[@]}"; do
  # shellcheck disable=SC2016  # expanded on the load host
  timeout 20 ssh "${ssh_options[@]}" "${logins[$i]}" \
    "ulimit -Hn; cat /proc/sys/net/ipv4/ip_local_port_range; if [ $ship = 1 ] || [ -x '$loadgen' ]; then echo present; else echo absent; fi" \
    >"$check_dir/$i.out" 2>"$check_dir/$i.err" &
done
failed=0
for i in "${!logins[@]}"; do
  wait -n || true
done
for i in "${!logins[@]}"; do
  login=${logins[$i]}
  read -r fd_limit <"$check_dir/$i.out" 2>/dev/null || fd_limit=""
  if [ -z "$fd_limit" ]; then
    echo "run_distributed.sh: host $login unreachable over ssh: $(tr '\n' ' ' <"$check_dir/$i.err")" >&2; failed=1; continue
  fi
  read -r low high < <(sed -n 2p "$check_dir/$i.out")
  present=$(sed -n 3p "$check_dir/$i.out")
  [ "$present" = present ] || { echo "run_distributed.sh: host $login has no $loadgen (build it there, or --ship)" >&2; failed=1; }
  if [ "$fd_limit" != unlimited ] && [ "$fd_limit" -lt $((per_host + 16)) ]; then
    echo "run_distributed.sh: host $login: hard fd limit $fd_limit is below its $per_host clients + 16 (docs/distributed.md)" >&2; failed=1
  fi
  if [ $((high - low + 1)) -lt "$per_host" ]; then
    echo "run_distributed.sh: host $login: port range $low-$high is smaller than its $per_host clients (net.ipv4.ip_local_port_range)" >&2; failed=1
  fi
done
[ $failed = 0 ] || exit 1

# Each host's UNIX clock less this machine's (the run's reference clock), NTP-style over
# ssh, all at once, each within 20 s (scripts/clock_offset.py). Bash's EPOCHREALTIME reads
# the clock without a fork, so nothing but bash 5 is needed on the host. A slice times
# another's lines only with both offsets known, within both bounds (docs/distributed.md).
# shellcheck disable=SC2016  # expanded on the load host
remote_clock='bash -c '\''[ -n "${EPOCHREALTIME:-}" ] || exit 1; while read -r _; do echo "${EPOCHREALTIME//[!0-9]/}000 1000"; done'\'
measure_clocks() {  # into $1/I.out: OFFSET_NS BOUND_NS ROUND_TRIP_NS
  mkdir -p "$1"
  for i in "${!logins[@]}"; do
    timeout 20 "$root/scripts/clock_offset.py" -- ssh "${ssh_options[@]}" "${logins[$i]}" "$remote_clock" >"$1/$i.out" 2>"$1/$i.err" &
  done
  for i in "${!logins[@]}"; do wait -n || true; done
}
measure_clocks "$out/clock_before"
for i in "${!logins[@]}"; do
  read -r _ bound _ <"$out/clock_before/$i.out" 2>/dev/null || bound=""
  [ -n "$bound" ] || die "cannot measure the clock of host ${logins[$i]} (bash 5 there?): $(tr '\n' ' ' <"$out/clock_before/$i.err")"
done

# 2. The slices: slice i runs clients [offset_i, offset_i + n_i), the remainder spread over
# the first slices. GNU parallel gives each host one slice but picks which (its
# --hostgroups does not pin them in this version), so a slice takes its clock's offset and
# bound by the host it lands on ($PARALLEL_SSHLOGIN there), and the joblog says which.
slices=$out/slices.txt
: >"$slices"
offset=0
clock_by_host='case $PARALLEL_SSHLOGIN in'
for i in "${!logins[@]}"; do
  n=$(( clients / host_count + (i < clients % host_count ? 1 : 0) ))
  echo "$((i + 1)) $offset $n" >>"$slices"
  offset=$((offset + n))
  read -r clock_offset clock_bound _ <"$out/clock_before/$i.out"
  clock_by_host+=" $(printf %q "${logins[$i]}")) o=$clock_offset b=$clock_bound ;;"
done
clock_by_host+=' *) echo "no measured clock for host $PARALLEL_SSHLOGIN" >&2; exit 1 ;; esac;'

# The server's counters and CPU, before and after, from this machine and the server's host.
stats() {
  python3 - "$server_address" "$server_port" <<'EOF'
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
    s.sendall(b"/stats\n")
    data = b""
    while b"\n" not in data:
        chunk = s.recv(4096)
        if not chunk: break
        data += chunk
print(data.split(b"\n")[0].decode())
EOF
}
server_sample() {
  [ -n "$server_pid" ] || return 0
  timeout 20 ssh "${ssh_options[@]}" "$server_ssh" \
    "awk '{print \$14, \$15}' /proc/$server_pid/stat; grep VmRSS /proc/$server_pid/status; getconf CLK_TCK"
}
stats >"$out/server_stats_before.txt" || die "the server at $server does not answer /stats"
server_sample >"$out/server_before.txt" || die "cannot sample process $server_pid on $server_ssh"

start_at=$(( $(date +%s%3N) + start_delay_s * 1000 ))
# The phases after the start, as loadgen lays them out from --start-at (loadgen/chat.cpp,
# broadcast.cpp, idle.cpp), and so how long a slice may take: its start delay, the phases
# and the drain, plus a minute to spare. For idle, also each step's sample time (UNIX ms).
read -r run_s sample_times < <(python3 - "$mode" "$start_at" "$clients" "$@" <<'EOF'
import math, sys
mode, start_at, clients, a = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def opt(name, default):
    for i, x in enumerate(a):
        if x == name and i + 1 < len(a): return a[i + 1]
        if x.startswith(name + "="): return x.split("=", 1)[1]
    return default
drain = float(opt("--drain-s", "5"))
if mode == "chat":
    # Each rate step: warm-up + window + drain deadline + 1 s.
    steps = len(opt("--rate", "10").split(","))
    print(steps * (float(opt("--warmup-s", "1")) + float(opt("--duration-s", "5")) + drain + 1) + 2 * drain)
elif mode == "broadcast":
    # 1 s of sync, then the messages, then the drain.
    print(1 + int(opt("--messages", "100")) * float(opt("--interval-ms", "10")) / 1000 + 2 * drain + 1)
else:
    # Step s ramps from T + (s-1) span + 0.5 s and is sampled at T + s span; span = 0.5 s +
    # the ramp's deadline (--connect-timeout-s, plus pacing at --connect-rate) + --hold-s.
    steps, rate = int(opt("--steps", "5")), float(opt("--connect-rate", "0"))
    pacing = math.ceil(clients / steps) / rate if rate > 0 else 0
    span_ns = 500_000_000 + int((float(opt("--connect-timeout-s", "10")) + pacing) * 1e9) + int(float(opt("--hold-s", "2")) * 1e9)
    # A slice has no --server-pid, so it measures no client end: it ends at its last sample.
    print(steps * span_ns / 1e9 + 5, *(start_at + s * span_ns // 1_000_000 for s in range(steps + 1)))
EOF
)
[ -n "$deadline_s" ] || deadline_s=$(python3 -c "import sys; print(int(float(sys.argv[1])) + 60 + $start_delay_s)" "$run_s")

# 3. One loadgen per host: one job slot per host, as many jobs as hosts, so each host runs
# exactly one slice; reports come back with --return, hung slices end at --timeout.
login_file=$out/sshlogins
printf '1/%s\n' "${logins[@]}" >"$login_file"
parallel_options=(--sshloginfile "$login_file" --jobs 1 --colsep ' ' --timeout "$deadline_s" --joblog "$out/joblog"
                  --tagstring 'slice {1}' --workdir ... --return 'slice-{1}.json' --cleanup
                  --ssh "ssh ${ssh_options[*]}")
if [ $ship = 1 ]; then
  cp "$loadgen" "$remote_loadgen"  # --cleanup removes it from the hosts afterwards
  parallel_options+=(--basefile "$remote_loadgen")
fi
# Idle: the server's RSS on its host at each step's sample time, over one ssh session that
# answers each line with one reading (no fork on the server's host), sent at the sample
# time by this machine's clock, the run's reference.
sampler_pid=""
if [ "$mode" = idle ]; then
  # shellcheck disable=SC2016  # expanded on the server's host
  remote_rss='bash -c '\''while read -r _; do r=gone; while read -r k v _; do [ "$k" = VmRSS: ] && r=$v; done </proc/'"$server_pid"'/status; echo "$r"; done'\'
  # shellcheck disable=SC2086  # one time a word
  timeout "$deadline_s" python3 - "$out/server_memory.txt" $sample_times -- ssh "${ssh_options[@]}" "$server_ssh" "$remote_rss" <<'EOF' &
import subprocess, sys, time
args = sys.argv[1:]
out, times, command = args[0], [int(t) for t in args[1:args.index("--")]], args[args.index("--") + 1:]
ssh = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
with open(out, "w") as f:
    for step, due in enumerate(times):
        time.sleep(max(0.0, due / 1000 - time.time()))
        asked = time.time()
        ssh.stdin.write("\n")
        ssh.stdin.flush()
        reply = ssh.stdout.readline().strip()
        # step, due (UNIX ms), asked, answered, VmRSS in kB (or "gone")
        print(step, due, round(asked * 1000, 1), round(time.time() * 1000, 1), reply or "none", file=f, flush=True)
ssh.stdin.close()
ssh.wait()
EOF
  sampler_pid=$!
fi

echo "run_distributed: $mode, $clients clients on $host_count hosts, start at $start_at (UNIX ms), deadline ${deadline_s} s"
set +e
(cd "$out" && parallel "${parallel_options[@]}" \
   "$clock_by_host" "$remote_loadgen" "$mode" --host "$server_address" --port "$server_port" --clients '{3}' --clients-total "$clients" \
   --client-offset '{2}' --clock-offset-ns '$o' --clock-offset-bound-ns '$b' --start-at "$start_at" --json 'slice-{1}.json' --quiet "$@" \
   :::: "$slices")
parallel_status=$?
[ -z "$sampler_pid" ] || wait "$sampler_pid" || echo "run_distributed.sh: the server's memory sampler on $server_ssh failed" >&2
set -e
measure_clocks "$out/clock_after"  # how far each clock drifted during the run
server_sample >"$out/server_after.txt" || true
stats >"$out/server_stats_after.txt" || echo "run_distributed.sh: the server did not answer /stats after the run" >&2

# 4. Which slices failed, by host (joblog: Seq Host Starttime JobRuntime Send Receive
# Exitval Signal Command); each missing one goes into the merged report (missing_hosts).
failed=0
: >"$out/missing_slices.txt"  # SEQ HOST FIRST LAST WHY...
: >"$out/slice_hosts.txt"     # SEQ HOST
while read -r seq host _ runtime _ _ exitval signal _; do
  [ "$seq" = Seq ] && continue
  read -r _ first n _ < <(sed -n "${seq}p" "$slices")
  echo "$seq $host" >>"$out/slice_hosts.txt"
  if [ "$exitval" != 0 ] || [ "$signal" != 0 ]; then
    why="exit status $exitval"
    [ "$signal" != 0 ] && why="killed by signal $signal after ${runtime} s (deadline ${deadline_s} s)"
    echo "run_distributed.sh: slice $seq (clients $first-$((first + n - 1))) on $host failed: $why" >&2
    echo "$seq $host $first $((first + n - 1)) $why" >>"$out/missing_slices.txt"
    failed=1
  fi
done <"$out/joblog"
[ "$parallel_status" = 0 ] || failed=1
reports=()
while read -r seq first n _; do
  if [ -s "$out/slice-$seq.json" ]; then reports+=("$out/slice-$seq.json"); continue; fi
  echo "run_distributed.sh: no report from slice $seq (clients $first-$((first + n - 1)))" >&2
  host=$(sed -n "s/^$seq //p" "$out/slice_hosts.txt")
  grep -q "^$seq " "$out/missing_slices.txt" || echo "$seq ${host:-?} $first $((first + n - 1)) returned no report" >>"$out/missing_slices.txt"
  failed=1
done <"$slices"
[ ${#reports[@]} -gt 0 ] || die "no slice returned a report"

merge_status=0
"$loadgen" merge "${reports[@]}" --json "$out/merged.json" || merge_status=$?
[ -s "$out/merged.json" ] || die "the merge wrote nothing (status $merge_status)"
# The server's side of the run, measured here rather than by any slice.
python3 - "$out" "$mode" "${logins[@]}" <<'EOF'
import json, sys, pathlib
out, mode, logins = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
def stats(name):
    line = (out / name).read_text().split()
    return {k: v for k, v in (f.split("=", 1) for f in line[1:] if "=" in f)} if line else {}
def sample(name):
    p = out / name
    if not p.exists() or not p.read_text().strip(): return None
    rows = p.read_text().split("\n")
    user, system = (int(x) for x in rows[0].split())
    hz = int(rows[2])
    return {"user_s": user / hz, "sys_s": system / hz, "rss_bytes": int(rows[1].split()[1]) * 1024}
merged = json.loads((out / "merged.json").read_text())
before, after = stats("server_stats_before.txt"), stats("server_stats_after.txt")
delta = lambda k: int(after[k]) - int(before[k]) if k in before and k in after else None
if merged.get("lines"): merged["lines"]["server_lines_out"] = delta("lines_out")
b, a = sample("server_before.txt"), sample("server_after.txt")
merged["server"] = {"stats_before": before, "stats_after": after, "lines_in_delta": delta("lines_in"), "lines_out_delta": delta("lines_out"),
                    "cpu_user_s": a["user_s"] - b["user_s"] if a and b else None, "cpu_sys_s": a["sys_s"] - b["sys_s"] if a and b else None,
                    "rss_bytes_after": a["rss_bytes"] if a else None,
                    "note": "deltas over the whole run, from before the first slice started to after the last one ended"}
# Each host's offset measured again after the run: a clock that drifted from the reference
# by more than the bounds allow makes its cross-slice samples off by more than stated.
drifts = []
slice_of = {login: seq for seq, login in (row.split() for row in (out / "slice_hosts.txt").read_text().splitlines())}
for i, login in enumerate(logins):
    host = next((h for h in merged["hosts"] if h["report"].endswith(f"/slice-{slice_of.get(login)}.json")), None)
    after = (out / "clock_after" / f"{i}.out")
    fields = after.read_text().split() if after.exists() else []
    if host is None: continue
    host["login"] = login
    host["clock_offset_after_ms"] = int(fields[0]) / 1e6 if fields else None
    host["clock_offset_bound_after_ms"] = int(fields[1]) / 1e6 if fields else None
    if fields and host["clock_offset_ms"] is not None:
        drift = abs(host["clock_offset_after_ms"] - host["clock_offset_ms"])
        slack = host["clock_offset_bound_ms"] + host["clock_offset_bound_after_ms"]
        drifts.append(drift)
        if drift > slack:
            merged["warnings"].append(f"host {login}: its clock moved {drift:.3f} ms against the reference during the run, more than the "
                                      f"{slack:.3f} ms the measurements allow: its cross-slice samples may be off by more than stated")
if "clock" in merged: merged["clock"]["offset_drift_during_run_ms_max"] = max(drifts) if drifts else None
# The hosts whose slice is not in the merge, and why: their clients are missing_clients.
merged["missing_hosts"] = []
for row in (out / "missing_slices.txt").read_text().splitlines():
    seq, login, first, last, why = row.split(" ", 4)
    merged["missing_hosts"].append({"login": login, "slice": int(seq), "clients": [int(first), int(last)], "why": why})
    merged["warnings"].append(f"host {login} (slice {seq}, clients {first}-{last}) is missing from the merge: {why}")
# Idle: the server's RSS at each step's sample time, read on its host; memory per
# connection is its least-squares slope over the steps' connection totals.
if mode == "idle":
    rows = [r.split() for r in (out / "server_memory.txt").read_text().splitlines()] if (out / "server_memory.txt").exists() else []
    points = []
    for step in merged["memory"]["steps"]:
        row = next((r for r in rows if int(r[1]) == step["sample_at_unix_ms"]), None)
        step["rss_bytes"] = int(row[4]) * 1024 if row and row[4].isdigit() else None
        step["sampled_at_unix_ms"] = float(row[2]) if row else None
        step["answered_at_unix_ms"] = float(row[3]) if row else None
        if step["rss_bytes"] is None:
            merged["warnings"].append(f"the server's memory was not read at {step['sample_at_unix_ms']} (UNIX ms)")
        else:
            points.append((step["clients"], step["rss_bytes"]))
    slope = None
    if len({x for x, _ in points}) >= 2:
        mx, my = sum(x for x, _ in points) / len(points), sum(y for _, y in points) / len(points)
        slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    merged["memory"]["per_connection"]["rss_bytes"] = round(slope, 1) if slope is not None else None
    merged["memory"]["sampled_on"] = "the server's host, over ssh, at each step's sample_at_unix_ms on this machine's clock"
(out / "merged.json").write_text(json.dumps(merged, indent=1))
EOF
echo "run_distributed: merged report $out/merged.json"
[ $merge_status = 0 ] || { echo "run_distributed.sh: the merge is incomplete or refused (loadgen merge exited $merge_status)" >&2; failed=1; }
exit $failed
