#!/usr/bin/python3
"""An independent plain check of memory per idle connection, with nothing of loadgen in it.

Starts one server, opens N idle connections from a separate plain client process (Python
sockets, blocking connects, source addresses spread over 127.0.0.1-127.0.0.S), and diffs
/proc/meminfo, /proc/slabinfo and the two processes' /proc/PID/status between just before
the connects and after them. Then the client resets its connections (SO_LINGER 0, so no
TIME_WAIT is left) and the server is stopped.

The figures include both ends: the client's sockets are on this machine too. The one that
compares with loadgen's idle report is the machine's MemFree drop (less the page cache's own
changes) less the client process's
own growth (RSS and page tables), i.e. server host + the client's end in the kernel; the
same scope in a loadgen report is memory.server_host.whole_bytes plus the part of
loadgen's client end that a plain client's socket has too (its engine's io_uring requests
or epoll items left out), and --compare prints both. docs/methodology.md, "Memory per connection", explains why.

Usage: scripts/memcheck.py --variant asio [--clients 10000] [--compare RESULTS_DIR/raw/asio-idle-…json]
(--compare reads a packed run's report from its raw.tar.xz by the same path.)
Exit status: 0 measured; 1 a step failed (the reason on stderr); 2 bad arguments.
"""
import argparse
import json
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from chatbench import machine, raw_files
from chatbench.machine import LOADGEN_CPU, SERVER_CPU
from chatbench.server_process import raise_nofile
from chatbench.variants import BY_NAME, NAMES, ROOT


# ---------------------------------------------------------------------------------------
# The client process: started as `memcheck.py --client PORT N SOURCES`, driven over stdin.

def client(port, count, sources):
    raise_nofile()
    print("started", flush=True)
    sys.stdin.readline()  # "connect"
    conns = []
    try:
        for i in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((f"127.0.0.{1 + i % sources}", 0))
            s.connect(("127.0.0.1", port))
            conns.append(s)
    except OSError as e:
        print(f"failed after {len(conns)} connections: {e}", flush=True)
    else:
        print(f"connected {len(conns)}", flush=True)
    sys.stdin.readline()  # "close"
    linger = struct.pack("ii", 1, 0)  # a reset: nothing left in TIME_WAIT
    for s in conns:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.close()
    print("closed", flush=True)


# ---------------------------------------------------------------------------------------
# Readings

def meminfo():
    return dict(machine.meminfo(), PerCpuFree=machine.per_cpu_free_bytes())  # free, not in MemFree


def read_line(proc, timeout_s, what):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout_s):
        raise RuntimeError(f"no {what} within {timeout_s:g} s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"process exited ({proc.wait()}) before {what}")
    return line.decode().strip()


def readings(server, client_proc):
    return (meminfo(), machine.slabinfo(), machine.process_status(server.pid),
            machine.process_status(client_proc.pid))


def settle(pid, limit_s):
    """Waits until the server's RSS and the machine's Slab stop moving (or limit_s)."""
    end = time.monotonic() + limit_s
    last = None
    while time.monotonic() < end:
        time.sleep(0.5)
        now = (machine.process_status(pid)["VmRSS"], meminfo()["Slab"] >> 18)  # Slab in 256 KiB units
        if now == last:
            return
        last = now


# ---------------------------------------------------------------------------------------
# The check

def server_command(variant, build_dir):
    return ["taskset", "-c", SERVER_CPU] + BY_NAME[variant].command(Path(build_dir) / "bin") + ["--port", "0"]


def check(args):
    waited = 0.0
    while machine.time_wait_count() > 100 and waited < args.quiet_wait_s:
        time.sleep(1)
        waited += 1
    tw = machine.time_wait_count()
    server = subprocess.Popen(server_command(args.variant, args.build_dir), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
    client_proc = None
    try:
        m = re.match(r"listening on [0-9.]+:(\d+)", read_line(server, 10, "'listening on' line"))
        if not m:
            raise RuntimeError("the server's first line is not 'listening on ADDRESS:PORT'")
        port = int(m.group(1))
        client_proc = subprocess.Popen(
            ["taskset", "-c", LOADGEN_CPU, "/usr/bin/python3", __file__, "--client", str(port),
             str(args.clients), str(args.sources)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        read_line(client_proc, 10, "client start")
        settle(server.pid, args.settle_s)
        before = readings(server, client_proc)
        client_proc.stdin.write(b"connect\n")
        client_proc.stdin.flush()
        said = read_line(client_proc, 600, "connects")
        if not said.startswith("connected "):
            raise RuntimeError(f"client: {said}")
        n = int(said.split()[1])
        settle(server.pid, args.settle_s)
        after = readings(server, client_proc)
        client_proc.stdin.write(b"close\n")
        client_proc.stdin.flush()
        read_line(client_proc, 60, "close")
    finally:
        for proc in [client_proc, server]:
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM if proc is server else signal.SIGKILL)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    per = lambda a, b: (b - a) / n  # noqa: E731
    m0, m1 = before[0], after[0]
    caches = {k: per(before[1].get(k, 0), v) for k, v in after[1].items()}
    client_growth = per(before[3]["VmRSS"], after[3]["VmRSS"]) + per(before[3].get("VmPTE", 0),
                                                                       after[3].get("VmPTE", 0))
    # Free memory as loadgen counts it: MemFree, the free pages in the per-CPU lists, less
    # the page cache's own comings and goings.
    free = lambda m: m["MemFree"] + m["PerCpuFree"] + m["Cached"] + m["Buffers"]  # noqa: E731
    mem_free_drop = -per(free(m0), free(m1))
    return {
        "variant": args.variant, "clients": n, "sources": args.sources, "port": port,
        "time_wait_at_start": tw, "busy_machine_loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "per_connection": {
            "mem_free_drop_bytes": mem_free_drop,
            "page_cache_bytes": per(m0["Cached"] + m0["Buffers"], m1["Cached"] + m1["Buffers"]),
            "per_cpu_free_bytes": per(m0["PerCpuFree"], m1["PerCpuFree"]),
            "mem_available_drop_bytes": -per(m0["MemAvailable"], m1["MemAvailable"]),
            **{f"{k}_bytes": per(m0[k], m1[k]) for k in ["AnonPages", "Slab", "SReclaimable",
                                                         "KernelStack", "PageTables"]},
            "server_rss_bytes": per(before[2]["VmRSS"], after[2]["VmRSS"]),
            "server_pte_bytes": per(before[2].get("VmPTE", 0), after[2].get("VmPTE", 0)),
            "server_threads": per(before[2]["Threads"], after[2]["Threads"]),
            "client_process_bytes": client_growth,
            # Comparable with loadgen's server_host.whole_bytes + client_end_bytes.
            "machine_less_client_process_bytes": mem_free_drop - client_growth,
            "slab_caches": {k: round(v) for k, v in sorted(caches.items(), key=lambda kv: -abs(kv[1]))
                            if abs(v) >= 16},
        },
    }


# What a plain blocking client's socket has in the kernel too: the socket, its inode,
# dentry and file, their security blobs, queued buffers. loadgen's client end holds more
# (its engine's io_uring requests or epoll items, in io_kiocb, kmalloc-*, eventpoll_*),
# which the plain client does not; they are left out of the comparison.
PLAIN_SOCKET_CACHES = ("TCP", "TCPv6", "sock_inode_cache", "dentry", "filp", "lsm_file_cache",
                       "lsm_inode_cache", "skbuff_")


def plain_socket_cache(name):
    return any(name == c or (c.endswith("_") and name.startswith(c)) for c in PLAIN_SOCKET_CACHES)


def compare(result, path, report):
    """The same-scope figure from a loadgen idle report (read from path) beside this check's."""
    memory = report.get("memory") or {}
    host, client_end = memory.get("server_host") or {}, memory.get("client_end") or {}
    if host.get("whole_bytes") is None or host.get("client_end_bytes") is None:
        return {"loadgen_json": str(path), "verdict": "the loadgen report has no server_host whole"}
    # The server host, plus loadgen's client end as far as a plain client has it too.
    client_sockets = sum(v for k, v in (client_end.get("caches") or {}).items() if plain_socket_cache(k))
    suite = host["whole_bytes"] + client_sockets
    plain = result["per_connection"]["machine_less_client_process_bytes"]
    diff = (suite - plain) / plain if plain > 0 else None
    # The slab alone, both ends: what a busy machine's other processes disturb least.
    suite_slab = (host.get("socket_bytes") or 0) + (host.get("other_kernel_bytes") or 0) + client_sockets
    plain_slab = result["per_connection"]["Slab_bytes"]
    return {"loadgen_json": str(path), "suite_bytes": suite, "plain_bytes": plain,
            "suite_client_sockets_bytes": client_sockets,
            "suite_client_engine_bytes": host["client_end_bytes"] - client_sockets,
            "difference": diff,
            "verdict": "within 15%" if diff is not None and abs(diff) <= 0.15 else "NOT within 15%",
            "suite_slab_bytes": suite_slab, "plain_slab_bytes": plain_slab,
            "slab_difference": (suite_slab - plain_slab) / plain_slab if plain_slab > 0 else None}


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        client(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", required=True, choices=NAMES)
    p.add_argument("--clients", type=int, default=10000)
    p.add_argument("--sources", type=int, default=8, help="source addresses 127.0.0.1-127.0.0.S")
    p.add_argument("--build-dir", default=str(ROOT / "build"))
    p.add_argument("--settle-s", type=float, default=10, help="longest wait for memory to settle")
    p.add_argument("--quiet-wait-s", type=float, default=60,
                   help="longest wait for TIME_WAIT sockets (at most 100) before starting")
    p.add_argument("--compare", help="a loadgen idle JSON report to compare with")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    if args.clients < 1 or not 1 <= args.sources <= 254:
        p.error("--clients must be positive and --sources in 1..254")
    report = None
    if args.compare:
        try:
            report = json.loads(raw_files.read_bytes(args.compare))
        except (OSError, ValueError) as e:
            p.error(f"--compare: {e}")
    if os.geteuid() != 0:
        print("memcheck: warning: not root, /proc/slabinfo is unreadable: no slab caches",
              file=sys.stderr)
    try:
        result = check(args)
    except (OSError, RuntimeError, ValueError) as e:
        print(f"memcheck: {e}", file=sys.stderr)
        return 1
    if args.compare:
        result["compare"] = compare(result, args.compare, report)
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
