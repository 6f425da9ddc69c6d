#!/usr/bin/python3
"""The reference-server plumbing (run_all.sh --peers), real processes over loopback:

  1. loadgen idle flags connections the server closes during the hold: against a listener
     that closes each connection 0.3 s after accepting it, the report's closed_by_server
     is not 0 and a warning says so (a server that times out silent clients must not pass
     for one that holds them cheaply).
  2. scripts/run_matrix.py --peers redis with a short idle ramp beside chat-asio: redis is
     started from Debian's package with its config in the results directory, ramped,
     stopped (its port refuses afterwards), and its idle rows are in results.csv with a
     slope and an intercept; machine.json has its version; report.md its section.
Part 2 needs the redis-server package (scripts/setup.sh --peers redis): without it the
test exits 77 (skipped) after part 1.
Usage: check_peers.py SOURCE_DIR BUILD_DIR (with PYTHONPATH=SOURCE_DIR/scripts)"""
import csv
import fnmatch
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from chatbench.raw_files import RawFiles

# Above 5000 clients loadgen spreads its connections over 127.0.0.1 and 127.0.0.2: a peer
# that takes only 127.0.0.1 for loopback (redis in protected mode) shows here.
PEER, CLIENTS = "redis", 5200


def closing_listener():
    """A listener that closes every connection 0.3 s after accepting it."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Timer(0.3, conn.close).start()
    threading.Thread(target=serve, daemon=True).start()
    return listener


def check_closed_flag(build, tmp, problems):
    listener = closing_listener()
    out = tmp / "closing.json"
    try:
        rc = subprocess.run([str(build / "bin" / "loadgen"), "idle", "--port", str(listener.getsockname()[1]),
                             "--clients", "20", "--steps", "2", "--hold-s", "1", "--quiet",
                             "--json", str(out)], timeout=60).returncode
    finally:
        listener.close()
    report = json.loads(out.read_text()) if out.exists() else {}
    closed = report.get("closed_by_server")
    if not isinstance(closed, int) or closed < 1:
        problems.append(f"loadgen idle (exit {rc}) did not flag the server's closes: closed_by_server={closed!r}")
    elif not any("closed by the server" in w for w in report.get("warnings") or []):
        problems.append(f"no warning for {closed} closed connections: {report.get('warnings')}")


def check_peer_run(source, build, tmp, problems):
    out = tmp / "results"
    env = dict(os.environ, BUILD_DIR=str(build))
    run = subprocess.run(["/usr/bin/python3", str(source / "scripts" / "run_matrix.py"), "--quick",
                          "--modes", "idle", "--variants", "asio", "--peers", PEER, "--repeats", "1",
                          "--idle-max", str(CLIENTS), "--idle-steps", "2", "--quiet-wait-s", "1",
                          "--thread-small-stack", "", "--fiber-big-stack", "", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=400)
    if run.returncode != 0:
        problems.append(f"run_matrix.py exited {run.returncode}: {run.stdout[-2000:]} {run.stderr[-2000:]}")
        return
    with open(out / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["config"] == PEER]
    ok = [r for r in rows if r["mode"] == "idle" and r["status"] == "ok"]
    if not ok or len(ok) != len(rows):
        problems.append(f"{PEER}: expected only ok idle rows, got {[(r['mode'], r['status'], r['why']) for r in rows]}")
    for r in ok:
        for k in ["rss_slope_bytes", "rss_zero_bytes", "rss_bytes"]:
            try:
                if float(r[k]) <= 0 and k != "rss_slope_bytes":
                    problems.append(f"{PEER} row {r['clients']}: {k} = {r[k]}")
            except ValueError:
                problems.append(f"{PEER} row {r['clients']}: {k} is {r[k]!r}")
    if ok and max(int(float(r["clients"])) for r in ok) != CLIENTS:
        problems.append(f"{PEER} did not reach {CLIENTS} connections")
    peer = json.loads((out / "machine.json").read_text()).get("peers", {}).get(PEER, {})
    if not peer.get("version") or peer.get("skipped") or "maxclients" not in peer.get("setting", ""):
        problems.append(f"machine.json peers.{PEER}: {peer}")
    with RawFiles(out) as raw:  # packed at the end of the run
        names = raw.names()
        if not fnmatch.filter(names, f"raw/{PEER}-idle-*.peer/redis.conf"):
            problems.append("no redis.conf in the results directory's raw files")
        # Stopped afterwards: the port it listened on refuses.
        log = next(iter(fnmatch.filter(names, f"raw/{PEER}-idle-*.loadgen.log")), None)
        port = re.search(r"--port (\d+)", raw.read_text(log)).group(1) if log else None
    if not port:
        problems.append("no loadgen log for the peer")
    else:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
            problems.append(f"{PEER} still listening on {port} after the run")
        except OSError:
            pass
    report = (out / "report.md").read_text()
    if "### Reference servers" not in report or f"| {PEER} |" not in report:
        problems.append("report.md has no reference-server row for " + PEER)


def main():
    source, build = Path(sys.argv[1]), Path(sys.argv[2])
    problems = []
    with tempfile.TemporaryDirectory(prefix="check_peers.") as tmp:
        check_closed_flag(build, Path(tmp), problems)
        installed = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "redis-server"],
                                   capture_output=True, text=True).stdout.startswith("install ok installed")
        if installed:
            check_peer_run(source, build, Path(tmp), problems)
    for p in problems:
        print("FAIL:", p)
    if not problems and not installed:
        print("closed-connection flag passed; skipped the peer run: redis-server is not installed "
              "(scripts/setup.sh --peers redis)")
        return 77
    print("FAILED" if problems else "passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
