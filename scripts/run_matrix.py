#!/usr/bin/python3
"""Runs every server variant through one measurement matrix and writes a results directory
(chatbench.matrix; docs/methodology.md defines every number).

Called by scripts/run_all.sh after setup and build; can be run on its own. Layout of the
output (docs/methodology.md "The results directory"):

  OUT/machine.json   the machine, the build, the limits, the pinning, the exact command
  OUT/plan.json      the matrix as planned (counts, rates, repeats, deadlines)
  OUT/raw.tar.xz     the raw files, packed when the run ends or is interrupted (under
                     OUT/raw/ while it runs): one loadgen report per measurement, each
                     server's stderr (its final /stats) and loadgen's stdout, microbench's JSON
  OUT/results.csv    tidy: one row per variant x mode x point x repeat
  OUT/*.png, OUT/report.md   from scripts/plot.py and scripts/report.py (CSV/JSON only)
"""
import argparse
import datetime
import os
import socket
import sys
from pathlib import Path

from chatbench import cpu_quota, matrix, variants
from chatbench.variants import PEER_NAMES, ROOT


def build_dir():
    return Path(os.environ.get("BUILD_DIR", ROOT / "build"))


def env_default(name, default):
    return os.environ.get("CHATBENCH_" + name, default)


def int_list(text):
    return [int(x) for x in str(text).split(",") if x]


def float_list(text):
    return [float(x) for x in str(text).split(",") if x]


def parse_args():
    # prog: run_all.sh passes its own name, so that help and errors name what was typed.
    p = argparse.ArgumentParser(
        prog=os.environ.get("CHATBENCH_PROG"),
        description="Run the chatbench matrix (docs/methodology.md). Every option also reads "
                    "CHATBENCH_<NAME> from the environment, e.g. CHATBENCH_REPEATS=5.")
    p.add_argument("--quick", action="store_true", default=env_default("QUICK", "") != "",
                   help="smoke run: small counts, one repeat, microbench --smoke (< 2 min)")
    p.add_argument("--variants", default=env_default("VARIANTS", ",".join(default_variants())),
                   help="comma-separated subset of " + ",".join(variants.NAMES)
                        + " (seed: idle and broadcast only)")
    p.add_argument("--peers", default=env_default("PEERS", ""),
                   help="reference servers measured beside the variants, never ranked with them: "
                        "nginx in idle, the brokers (nats, redis, mosquitto) in every mode, in their "
                        "own protocol (loadgen --protocol); a comma-separated subset of "
                        + ",".join(PEER_NAMES) + ", or all (Debian's packages: scripts/setup.sh --peers)")
    p.add_argument("--out", default=env_default("OUT", ""),
                   help="results directory (default results/<date>-<host>)")
    p.add_argument("--repeats", type=int, default=env_default("REPEATS", None),
                   help="repeats per point (default 4, the fewest whose ranking can pass "
                        "the noise test; quick 1)")
    p.add_argument("--idle-max", type=int, default=env_default("IDLE_MAX", None),
                   help="idle ramp target (default: what the machine's limits allow)")
    p.add_argument("--idle-steps", type=int, default=env_default("IDLE_STEPS", None),
                   help="idle ramp steps (default 10, quick 4)")
    p.add_argument("--broadcast-clients", default=env_default("BROADCAST_CLIENTS", None),
                   help="broadcast points (default 100,1000,5000,10000)")
    p.add_argument("--broadcast-messages", type=int, default=env_default("BROADCAST_MESSAGES", None),
                   help="messages per broadcast point (default 40, quick 10)")
    p.add_argument("--broadcast-interval-ms", type=int,
                   default=env_default("BROADCAST_INTERVAL_MS", "100"),
                   help="time between broadcast messages (default 100)")
    p.add_argument("--chat-clients", type=int, default=env_default("CHAT_CLIENTS", None),
                   help="chat clients, in rooms of --room-size (default 1000, quick 100)")
    p.add_argument("--room-size", type=int, default=env_default("ROOM_SIZE", "10"))
    p.add_argument("--chat-rates", default=env_default("CHAT_RATES", None),
                   help="lines/s per client, stepped up in one loadgen run "
                        "(default 1,5,10,20,40,80,160)")
    p.add_argument("--chat-duration-s", type=float, default=env_default("CHAT_DURATION_S", None),
                   help="measured window per rate (default 2, quick 1)")
    p.add_argument("--thread-small-stack", default=env_default("THREAD_SMALL_STACK", "64K"),
                   help="extra idle runs of threads at this --stack-size ('' for none)")
    p.add_argument("--fiber-big-stack", default=env_default("FIBER_BIG_STACK", "128K"),
                   help="extra idle runs of fibers at this --stack-size ('' for none)")
    p.add_argument("--ceiling-start-rate", type=float, default=env_default("CEILING_START_RATE", None),
                   help="chat ceiling search: first rate per client (default 10, quick 100); "
                        "later repeats start at half the first repeat's ceiling")
    p.add_argument("--p99-bar-ms", type=float, default=env_default("P99_BAR_MS", "100"),
                   help="chat ceiling search: the p99 bar (default 100)")
    p.add_argument("--quiet-wait-s", type=float, default=env_default("QUIET_WAIT_S", None),
                   help="longest wait before an idle point for TIME_WAIT sockets to go and "
                        "memory to settle (default 60, quick 5)")
    p.add_argument("--modes", default=env_default("MODES", "idle,broadcast,chat,ceiling,efficiency,microbench"),
                   help="ceiling runs only where loadgen has --find-ceiling; capacity (not a default: "
                        "root, and long) is also --capacity")
    add_capacity_options(p)
    p.add_argument("--server-threads", default=env_default("SERVER_THREADS", "1"),
                   help="server core counts N, comma-separated (default 1): at each N the "
                        "server runs on CPUs 0..N-1 (asio, coro, fibers and their uring "
                        "builds with --threads N, threads pinned there, go with GOMAXPROCS=N) "
                        "and loadgen on the next N with --threads N; an N the machine has "
                        "no 2N cores for, and uring, eventlet and seed above 1, are recorded "
                        "as skipped with the reason")
    p.add_argument("--command", default=" ".join(sys.argv), help=argparse.SUPPRESS)
    p.add_argument("--no-setup", action="store_true", help="run_all.sh: do not run scripts/setup.sh")
    p.add_argument("--no-build", action="store_true", help="run_all.sh: use the binaries already built")
    p.add_argument("--check-args", action="store_true", help=argparse.SUPPRESS)  # run_all.sh
    a = p.parse_args()

    q = a.quick
    try:  # the lists, and defaults from the environment, are read here: a usage error too
        a.repeats = int(a.repeats or (1 if q else 4))
        a.ceiling_start_rate = float(a.ceiling_start_rate or (100 if q else 10))
        a.idle_steps = int(a.idle_steps or (4 if q else 10))
        a.broadcast_clients = int_list(a.broadcast_clients or ("50,200" if q else "100,1000,5000,10000"))
        a.broadcast_messages = int(a.broadcast_messages or (10 if q else 40))
        a.chat_clients = int(a.chat_clients or (100 if q else 1000))
        a.chat_rates = float_list(a.chat_rates or ("5,20" if q else "1,5,10,20,40,80,160"))
        a.chat_duration_s = float(a.chat_duration_s or (1 if q else 2))
        a.quiet_wait_s = float(a.quiet_wait_s if a.quiet_wait_s is not None else (5 if q else 60))
        a.server_threads = int_list(a.server_threads)
    except ValueError as e:
        p.error(f"not a number (in a count, a comma-separated list or a CHATBENCH_* variable): {e}")
    a.variants = [v for v in a.variants.split(",") if v]
    unknown = set(a.variants) - set(variants.NAMES)
    if unknown:
        p.error("unknown variant(s): " + ",".join(sorted(unknown)))
    a.peers = PEER_NAMES if a.peers == "all" else [x for x in a.peers.split(",") if x]
    unknown = set(a.peers) - set(PEER_NAMES)
    if unknown:
        p.error("unknown peer(s): " + ",".join(sorted(unknown)) + " (known: "
                + ",".join(PEER_NAMES) + ", or all)")
    a.modes = [m for m in a.modes.split(",") if m]
    read_capacity_options(p, a)
    if not a.server_threads or min(a.server_threads) < 1 or len(set(a.server_threads)) != len(a.server_threads):
        p.error("--server-threads: distinct core counts of 1 or more, e.g. 1,2,4")
    if "capacity" in a.modes:  # not a bad command line, but nothing to run it on: exit 1 before setup and build
        try:
            cpu_quota.require_root()
            cpu_quota.find_controller()
        except cpu_quota.QuotaError as e:
            sys.exit(f"run_matrix: --modes capacity: {e}")
    if a.check_args:
        sys.exit(0)
    return a


def add_capacity_options(p):
    """The efficiency and capacity modes (docs/methodology.md "Efficiency", "Capacity per
    server core")."""
    p.add_argument("--efficiency-rates", default=env_default("EFFICIENCY_RATES", None),
                   help="efficiency: chat lines/s per client, each a step of one run (default 10,20: "
                        "the highest at which the event loops' cores stay under 90%% busy here; quick 10)")
    p.add_argument("--efficiency-repeats", default=env_default("EFFICIENCY_REPEATS", None),
                   help="efficiency: repeats, interleaved across variants (default 5, quick 1)")
    p.add_argument("--capacity", action="store_true", default=env_default("CAPACITY", "") != "",
                   help="add the capacity mode: a ceiling search with the server under a CPU quota "
                        "(needs root and a cgroup CPU controller)")
    p.add_argument("--capacity-quota", default=env_default("CAPACITY_QUOTA", "0.3"),
                   help="capacity: the server's CPU quota per core, in (0, 1] (default 0.3)")
    p.add_argument("--capacity-period-ms", default=env_default("CAPACITY_PERIOD_MS", "5"),
                   help="capacity: the quota's period in ms (default 5; quota x period ≥ 1 ms)")
    p.add_argument("--capacity-repeats", default=env_default("CAPACITY_REPEATS", None),
                   help="capacity: repeats of each search (default 4, quick 1)")
    p.add_argument("--capacity-validate", action="store_true",
                   default=env_default("CAPACITY_VALIDATE", "") != "",
                   help="capacity: also measure the grid of --capacity-validate-quotas x "
                        "--capacity-validate-periods for --capacity-validate-variants (implies --capacity)")
    p.add_argument("--capacity-validate-quotas", default=env_default("CAPACITY_VALIDATE_QUOTAS", "0.2,0.3,0.4"))
    p.add_argument("--capacity-validate-periods", default=env_default("CAPACITY_VALIDATE_PERIODS", "5,20"),
                   help="ms (default 5,20: the kernel takes no quota under 1 ms, so a 1 ms period "
                        "allows only a quota of 1.0)")
    p.add_argument("--capacity-validate-variants",
                   default=env_default("CAPACITY_VALIDATE_VARIANTS", "asio,fibers,threads,eventlet"),
                   help="default asio,fibers,threads,eventlet (threads and eventlet also for the "
                        "cross-check against their ceilings without a quota)")
    p.add_argument("--capacity-threads", default=env_default("CAPACITY_THREADS", "1"),
                   help="capacity: server core counts N (default 1); each N > 1 runs every variant "
                        "that can on CPUs 0..N-1 under N x the quota, loadgen on every CPU")


def read_capacity_options(p, a):
    """Reads and checks the efficiency and capacity options (a usage error: exit 2)."""
    q = a.quick
    try:
        a.efficiency_rates = float_list(a.efficiency_rates or ("10" if q else "10,20"))
        a.efficiency_repeats = int(a.efficiency_repeats or (1 if q else 5))
        a.capacity_quota = float(a.capacity_quota)
        a.capacity_period_ms = float(a.capacity_period_ms)
        a.capacity_repeats = int(a.capacity_repeats or (1 if q else 4))
        a.capacity_validate_quotas = float_list(a.capacity_validate_quotas)
        a.capacity_validate_periods = float_list(a.capacity_validate_periods)
        a.capacity_threads = int_list(a.capacity_threads)
    except ValueError as e:
        p.error(f"not a number (in a capacity or efficiency option): {e}")
    if not a.efficiency_rates or min(a.efficiency_rates) <= 0:
        p.error("--efficiency-rates: rates above 0, e.g. 10,20")
    if a.efficiency_repeats < 1 or a.capacity_repeats < 1:
        p.error("--efficiency-repeats, --capacity-repeats: at least 1")
    if a.capacity or a.capacity_validate:
        a.modes += [] if "capacity" in a.modes else ["capacity"]
    a.capacity_validate_variants = [v for v in a.capacity_validate_variants.split(",") if v]
    unknown = set(a.capacity_validate_variants) - set(variants.NAMES)
    if unknown:
        p.error("--capacity-validate-variants: unknown variant(s): " + ",".join(sorted(unknown)))
    if not a.capacity_threads or min(a.capacity_threads) < 1:
        p.error("--capacity-threads: core counts of 1 or more, e.g. 1,2")
    cells = [(a.capacity_quota, a.capacity_period_ms)]
    if a.capacity_validate:
        if len(a.capacity_validate_quotas) < 2 or len(a.capacity_validate_periods) < 2:
            p.error("--capacity-validate: at least 2 quotas and 2 periods, e.g. 0.2,0.3,0.4 and 5,20")
        cells += [(x, y) for x in a.capacity_validate_quotas for y in a.capacity_validate_periods]
    for quota, period in cells:
        for n in a.capacity_threads:
            try:
                cpu_quota.check_quota(quota, period, n)
            except cpu_quota.UsageError as e:
                p.error(str(e).replace("--quota", "--capacity-quota").replace("--period-ms", "--capacity-period-ms"))


def default_variants():
    """Every variant, those a machine may lack (the seed's server, chat-go) only where present."""
    names, notes = variants.available(build_dir() / "bin")
    for note in notes:
        print(f"run_matrix: {note}", file=sys.stderr)
    return names


def main():
    args = parse_args()
    host = socket.gethostname()
    out = Path(args.out or ROOT / "results" / f"{datetime.date.today().isoformat()}-{host}").resolve()
    matrix.run(args, build_dir(), out)


if __name__ == "__main__":
    main()
