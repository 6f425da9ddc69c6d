#!/usr/bin/python3
"""Memory per connection end to end, real processes over loopback: loadgen idle against a
real server (chat-asio) with --server-pid, and scripts/memcheck.py.

Checks what can be checked on a busy machine without timing or memory-figure thresholds
that noise could break:
  - loadgen leaves no socket in TIME_WAIT (it resets; a FIN close leaves one per connection)
  - the client's end was measured: loadgen's reset dropped TCP socket objects, about one
    per connection, and the server was continued (it still answers)
  - memory.server_host has every part, a whole of the same scope and a flags list, and its
    parts are the sum of the named parts
  - memcheck.py runs, sees the server grow with its connections and leaves no TIME_WAIT
Needs root (/proc/slabinfo); exits 77 (skipped) otherwise.
Usage: check_memory.py SOURCE_DIR BUILD_DIR"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from verdict import finish

CLIENTS = 600


TIME_WAIT_S = 60    # Linux's TCP_TIMEWAIT_LEN
USER_HZ = os.sysconf("SC_CLK_TCK")  # /proc/net/tcp gives a timer's time left in these


def time_wait(port, since):
    """Sockets in TIME_WAIT with the server's address 127.0.0.1:port at either end
    (/proc/net/tcp: state 06) that entered it at or after `since` (time.monotonic()): only
    ours, whatever the other tests on this machine do. Their client ports can equal our
    port on another source address, and a server of theirs that had our port before us
    leaves its TIME_WAIT sockets on it for a minute (one in CI: 223 of them); a socket's
    timer (time left of the 60 s) says when it entered."""
    server = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] != "06" or server not in f[1:3]:
            continue
        left_s = int(f[5].split(":")[1], 16) / USER_HZ
        if time.monotonic() - (TIME_WAIT_S - left_s) >= since - 1:  # a second's slack for the ticks
            count += 1
    return count


def main():
    source, build = Path(sys.argv[1]), Path(sys.argv[2])
    if os.geteuid() != 0:
        print("skipped: /proc/slabinfo needs root")
        return 77
    problems = []
    server = subprocess.Popen([str(build / "bin" / "chat-asio"), "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    try:
        port = int(re.match(rb"listening on [0-9.]+:(\d+)", server.stdout.readline()).group(1))
        # The client end is a drop in the machine's slab, which other tests on this machine
        # move too: up to 3 runs, the last one judged. A FIN close fails every one.
        for attempt in range(3):
            with tempfile.TemporaryDirectory(prefix="check_memory.") as tmp:
                out = Path(tmp) / "idle.json"
                began = time.monotonic()
                rc = subprocess.run([str(build / "bin" / "loadgen"), "idle", "--port", str(port),
                                     "--clients", str(CLIENTS), "--steps", "3", "--hold-s", "1",
                                     "--server-pid", str(server.pid), "--quiet", "--json", str(out)]).returncode
                tw = time_wait(port, began)
                report = json.loads(out.read_text()) if out.exists() else {}
            memory = report.get("memory") or {}
            end = memory.get("client_end") or {}
            # One TCP socket object (about 2.3 KiB) per connection reset; a FIN close leaves
            # them (orphans in FIN_WAIT2), so the drop is near 0.
            if (end.get("caches") or {}).get("TCP", 0) >= 1000:
                break
        if rc != 0:
            problems.append(f"loadgen exited {rc}")
        # A FIN close leaves one per connection.
        if tw:
            problems.append(f"{tw} of loadgen's connections in TIME_WAIT: it did not reset")
        if end.get("connections") != CLIENTS or (end.get("caches") or {}).get("TCP", 0) < 1000:
            problems.append(f"client end not measured as one TCP object per connection ({attempt + 1} runs): {end}")
        host = memory.get("server_host") or {}
        parts = ["rss_bytes", "pte_bytes", "kernel_stack_bytes", "socket_bytes", "other_kernel_bytes"]
        for k in parts + ["parts_bytes", "whole_bytes", "whole_meminfo_bytes", "mem_available_bytes",
                          "client_end_bytes", "stack_per_thread_bytes", "reclaimable_slab_bytes"]:
            if not isinstance(host.get(k), (int, float)):
                problems.append(f"memory.server_host.{k} is {host.get(k)!r}")
        if not isinstance(host.get("flags"), list):
            problems.append("memory.server_host.flags is not a list")
        if all(isinstance(host.get(k), (int, float)) for k in parts + ["parts_bytes"]) and \
                abs(sum(host[k] for k in parts) - host["parts_bytes"]) > len(parts):
            problems.append(f"parts_bytes {host['parts_bytes']} is not the sum of the parts")
        # The server was continued after the SIGSTOP: it accepts and answers.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"/stats\n")
            if not s.recv(4096).startswith(b"/stats "):
                problems.append("the server does not answer after the client-end measurement")
    except (OSError, AttributeError, ValueError) as e:
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        server.terminate()
        server.wait(timeout=10)

    began = time.monotonic()
    run = subprocess.run(["/usr/bin/python3", str(source / "scripts" / "memcheck.py"), "--variant", "asio",
                          "--clients", str(CLIENTS), "--build-dir", str(build), "--settle-s", "3",
                          "--quiet-wait-s", "0"],
                         capture_output=True, text=True)
    if run.returncode != 0:
        problems.append(f"memcheck.py exited {run.returncode}: {run.stderr.strip()}")
    else:
        result = json.loads(run.stdout)
        # The machine's figures are others' noise too; the server's own growth is not
        # (chat-asio: some 660 B per connection).
        if result["clients"] != CLIENTS or not 100 <= result["per_connection"]["server_rss_bytes"] <= 100_000:
            problems.append(f"memcheck.py did not measure {CLIENTS} connections in the server: {result}")
        if time_wait(result["port"], began):
            problems.append("memcheck.py left connections in TIME_WAIT")
    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())
