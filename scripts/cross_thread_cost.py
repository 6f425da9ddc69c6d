#!/usr/bin/python3
"""What crossing threads costs a server that takes --threads (docs/servers.md, "Several threads").

cpu: server CPU per delivered chat line under `loadgen chat`, --threads 2 with both threads
pinned to one core against --threads 1 on that core, interleaved (A B A B ...), so that
both see the same machine; loadgen runs on another core.
  --floor adds a third arm (A B C A B C ...): two --threads 1 servers sharing that core,
  each with half the clients and a loadgen of its own. Nothing crosses from one to the
  other, so it measures what two event loops on one core cost by themselves, and
  --threads 2 against it what crossing threads adds.
rss: idle RSS per connection (`loadgen idle`) at --threads N against --threads 1.

usage: scripts/cross_thread_cost.py cpu|rss [--variants asio,coro,fibers] [--repeats 4]
           [--threads 2] [--floor] [--clients N] [--build DIR] [--target-pct 15]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

from chatbench import stats, variants

# The variants that take --threads N (the registry's), and the default: one per model.
TAKE_THREADS = [v.name for v in variants.VARIANTS if v.cores == "--threads"]


def start(binary, threads, core):
    server = subprocess.Popen(["taskset", "-c", core, binary, "--port", "0", "--threads", str(threads)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()  # "listening on 127.0.0.1:PORT variant=NAME"
    port = int(line.split()[2].rsplit(":", 1)[1])
    return server, port


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_stats(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"/stats\n")
        data = b""
        while not data.endswith(b"\n"):
            data += s.recv(4096)
    return dict(kv.split("=", 1) for kv in data.decode().split()[1:])


def stop(server):
    server.terminate()
    server.wait(timeout=10)


def cpu_run(args, binary, threads, servers=1):
    """`servers` servers at --threads `threads` on the server core, each driven by a loadgen
    of its own with its share of the clients (whole rooms): ns CPU per delivered line, all
    servers together, and the lines."""
    started = [start(binary, threads, args.server_core) for _ in range(servers)]
    try:
        before = [(cpu_seconds(server.pid), int(server_stats(port)["lines_out"])) for server, port in started]
        loads = [subprocess.Popen(["taskset", "-c", args.loadgen_core, args.loadgen, "chat", "--port", str(port),
                                   "--clients", str(args.clients // servers), "--room-size", "10",
                                   "--rate", str(args.rate), "--duration-s", str(args.duration),
                                   "--warmup-s", "1", "--quiet"], stdout=subprocess.DEVNULL)
                 for _, port in started]
        failed = [load for load in loads if load.wait() != 0]  # waits for every one
        if failed:
            raise subprocess.CalledProcessError(failed[0].returncode, failed[0].args)
        after = [(cpu_seconds(server.pid), int(server_stats(port)["lines_out"])) for server, port in started]
    finally:
        for server, _ in started:
            stop(server)
    cpu = sum(a[0] - b[0] for a, b in zip(after, before))
    lines = sum(a[1] - b[1] for a, b in zip(after, before))
    return cpu / lines * 1e9, lines


def rss_run(args, binary, threads, servers=1):  # one server: --floor is for cpu only
    server, port = start(binary, threads, args.server_core)
    try:
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            subprocess.run(["taskset", "-c", args.loadgen_core, args.loadgen, "idle", "--port", str(port),
                            "--clients", str(args.clients), "--steps", "1", "--server-pid", str(server.pid),
                            "--json", report.name, "--quiet"], check=True, stdout=subprocess.DEVNULL)
            steps = json.load(open(report.name))["memory"]["steps"]
    finally:
        stop(server)
    first, last = steps[0], steps[-1]
    return (last["rss_bytes"] - first["rss_bytes"]) / (last["clients"] - first["clients"]), last["clients"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["cpu", "rss"])
    parser.add_argument("--variants", default="asio,coro,fibers",
                        help="comma-separated, of " + ",".join(TAKE_THREADS))
    parser.add_argument("--repeats", type=int, default=4)  # the fewest the noise test can rank
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--floor", action="store_true",
                        help="cpu: also --threads N servers of one thread each, sharing the core")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--loadgen-core", default="1")
    parser.add_argument("--build", default=str(variants.ROOT / "build"))
    parser.add_argument("--target-pct", type=float, default=15,
                        help="cpu: the most crossing threads may cost, in %% (default 15)")
    args = parser.parse_args()
    args.loadgen = os.path.join(args.build, "bin", "loadgen")
    if args.clients is None:
        args.clients = 1000 if args.what == "cpu" else 10000
    unknown = set(args.variants.split(",")) - set(TAKE_THREADS)
    if unknown:
        parser.error(f"--variants: {','.join(sorted(unknown))} not one of {','.join(TAKE_THREADS)} "
                     "(the variants that take --threads)")
    if args.threads < 2:
        parser.error("--threads: 2 or more (it is compared with --threads 1)")
    if args.floor and args.what != "cpu":
        parser.error("--floor is for cpu only")
    if args.floor and args.clients % (10 * args.threads):
        parser.error(f"--floor splits the clients in whole rooms of 10 over {args.threads} servers: "
                     f"--clients must be a multiple of {10 * args.threads}")
    run = cpu_run if args.what == "cpu" else rss_run
    unit = "ns CPU per delivered line" if args.what == "cpu" else "bytes RSS per idle connection"
    n = args.threads
    # Each arm: its label, and the servers' --threads and their count (floor: N of 1 thread).
    arms = [("--threads 1", 1, 1), (f"--threads {n}", n, 1)]
    if args.floor:
        arms.append((f"{n} servers of 1 thread", 1, n))
    for variant in args.variants.split(","):
        binary = os.path.join(args.build, "bin", "chat-" + variant)
        figures = {label: [] for label, _, _ in arms}
        for _ in range(args.repeats):
            for label, threads, servers in arms:  # interleaved: A B A B ... (A B C with --floor)
                value, count = run(args, binary, threads, servers)
                figures[label].append(value)
                print(f"{variant} {label}: {value:.0f} {unit} ({count})", flush=True)
        one, many = figures["--threads 1"], figures[f"--threads {n}"]
        print(f"{variant}: median {statistics.median(one):.0f} at --threads 1, {statistics.median(many):.0f} "
              f"at --threads {n}: {change(many, one)} (runs: {one} vs {many})", flush=True)
        print(f"{variant}: {verdict(many, one, args.target_pct)}", flush=True)
        if args.floor:
            floor = figures[f"{n} servers of 1 thread"]
            print(f"{variant}: floor ({n} event loops on one core, nothing crossing): median "
                  f"{statistics.median(floor):.0f}, {change(floor, one)} on --threads 1 "
                  f"({compared(floor, one, 'it')}) (runs: {floor})", flush=True)
            print(f"{variant}: crossing threads adds {change(many, floor)} to the floor "
                  f"(--threads {n} {compared(many, floor, 'the floor')})", flush=True)


def change(x, base):
    return f"{(statistics.median(x) / statistics.median(base) - 1) * 100:+.1f}%"


def compared(x, base, name):
    """The report's noise test on x against base, in words."""
    outcome, p = stats.rank(x, base)
    if outcome == "too few":
        return "too few repeats to judge"
    return {"a": f"cheaper than {name}", "b": f"dearer than {name}", "tied": f"tied with {name}"}[outcome] + \
        f", p={p:.3f}"


def verdict(many, one, target_pct):
    """The report's noise test (stats.rank: exact Mann-Whitney U, p < 0.05) on the
    repeats: --threads N against --threads 1 raised by the target, and against --threads 1."""
    bar = [x * (1 + target_pct / 100) for x in one]
    against_bar, p_bar = stats.rank(many, bar)
    against_one, p_one = stats.rank(many, one)
    if against_bar == "too few":
        return "too few repeats to judge (the test needs at least 4 of each)"
    over = {"a": f"within +{target_pct:g}% beyond noise",
            "b": f"over +{target_pct:g}% beyond noise",
            "tied": f"not separable from +{target_pct:g}%"}[against_bar]
    cost = {"a": "cheaper than", "b": "dearer than", "tied": "tied with"}[against_one]
    return f"{over} (p={p_bar:.3f}); {cost} --threads 1 (p={p_one:.3f})"


if __name__ == "__main__":
    sys.exit(main())
