#!/usr/bin/python3
"""Runs a command under a CPU quota of its own (a cgroup; docs/methodology.md, "Capacity per
server core"), to reproduce a capacity figure by hand:

  scripts/cpu_quota.py run --quota 0.3 --period-ms 10 --name asio -- taskset -c 0 build/bin/chat-asio --port 3000
  build/bin/loadgen chat --find-ceiling ... --server-cgroup /sys/fs/cgroup/cpu/chatbench-quota-asio
  scripts/cpu_quota.py check        # can a quota be set here? (root, a cgroup CPU controller)

`run` prints the cgroup's path first (for loadgen's --server-cgroup), waits for the
command, passes SIGINT and SIGTERM on to it, prints how often the quota held it back,
removes the cgroup and exits with the command's status. Needs root. Exit 2: a bad command
line (a quota outside (0, 1], a period outside [1, 1000] ms or one too short for the
quota); 1: no quota can be set here (not root, no cgroup CPU controller), said in one line."""
import argparse
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatbench.cpu_quota import MOUNTS, CpuQuota, QuotaError, UsageError, find_controller, require_root  # noqa: E402

PROG = "scripts/cpu_quota.py"


def parse_args():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mounts", default=MOUNTS, help=argparse.SUPPRESS)  # test knob: a mount table to read
    sub = p.add_subparsers(dest="action")
    sub.add_parser("check", help="say whether a CPU quota can be set here (exit 0) or why not (exit 1)")
    run = sub.add_parser("run", help="run COMMAND under a CPU quota",
                         usage=f"{PROG} run --quota Q --period-ms P [--cores N] [--name NAME] -- COMMAND ...")
    run.add_argument("--quota", type=float, required=True,
                     help="the share of each core it may use per period, in (0, 1]")
    run.add_argument("--period-ms", type=float, required=True,
                     help="the quota's period in ms, [1, 1000]; quota × period must be ≥ 1 ms")
    run.add_argument("--cores", type=int, default=1,
                     help="cores the command is given (e.g. by taskset); the cgroup's quota is cores × quota")
    run.add_argument("--name", default=None, help="the cgroup is chatbench-quota-NAME (default: this pid)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    a, unknown = p.parse_known_args()  # an unknown option is named before a missing action
    if unknown:
        p.error("unrecognized arguments: " + " ".join(unknown))
    if a.action is None:
        p.error("an action is needed: check or run")
    if a.action == "run":
        if a.command[:1] == ["--"]:
            a.command = a.command[1:]
        if not a.command:
            p.error("run: no COMMAND after --")
        if a.cores < 1:
            p.error(f"--cores {a.cores}: at least 1")
        try:
            a.quota_obj = CpuQuota(a.quota, a.period_ms, a.cores, a.name, mounts=a.mounts)
        except UsageError as e:
            p.error(str(e))
    return a


def throttling(path):
    stat = dict(line.split() for line in (path / "cpu.stat").read_text().splitlines() if len(line.split()) == 2)
    held = int(stat.get("throttled_usec", 0)) / 1e6 if "throttled_usec" in stat \
        else int(stat.get("throttled_time", 0)) / 1e9
    return f"held back in {stat.get('nr_throttled', '?')} of {stat.get('nr_periods', '?')} periods, {held:.3f} s in all"


def run(a):
    quota = a.quota_obj
    with quota:
        print(f"cpu_quota: cgroup {quota.path} ({quota.controller}): {quota.quota_us} µs of every "
              f"{quota.period_us} µs", file=sys.stderr, flush=True)
        try:
            child = subprocess.Popen(a.command, preexec_fn=quota.join)
        except subprocess.SubprocessError as e:  # join() failed in the child
            raise QuotaError(f"cannot move the command into {quota.path}: {e}") from e
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda n, _f: child.send_signal(n))
        status = child.wait()
        print(f"cpu_quota: {throttling(quota.path)}", file=sys.stderr)
    return status if status >= 0 else 128 - status


def main():
    a = parse_args()
    try:
        if a.action == "check":
            require_root()
            print(f"cpu_quota: a CPU quota can be set here ({find_controller(a.mounts)})")
            return 0
        return run(a)
    except QuotaError as e:
        print(f"cpu_quota: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:  # the command itself
        print(f"cpu_quota: cannot run {a.command[0]}: {e.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
