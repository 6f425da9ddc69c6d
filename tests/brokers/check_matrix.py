#!/usr/bin/python3
"""run_all.sh --peers nats,redis,mosquitto through scripts/run_matrix.py, real processes over
loopback: beside chat-asio, every installed broker is measured in broadcast, chat and the
ceiling search, in its own protocol (loadgen --protocol), on the server's core; its rows are
ok and lose nothing, and report.md shows them marked as brokers with what their protocols do
differently. A broker that is not installed is reported as skipped with the command that
installs it (checked on a package no machine has). Exits 77 (skipped) when no broker is
installed. Usage: check_matrix.py SOURCE_DIR BUILD_DIR (with PYTHONPATH=SOURCE_DIR/scripts)"""
import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from chatbench import peers, variants
from chatbench.raw_files import RawFiles

BROKERS = ["nats", "redis", "mosquitto"]
MODES = ["broadcast", "chat", "ceiling"]


def check_missing_is_skipped(problems):
    """peer_missing names both commands that install a package that is not there."""
    absent = dataclasses.replace(variants.PEER_BY_NAME["nats"], package="chatbench-no-such-package")
    saved = dict(peers.PEER_BY_NAME)
    peers.PEER_BY_NAME["nats"] = absent
    try:
        why = peers.peer_missing("nats")
    finally:
        peers.PEER_BY_NAME.clear()
        peers.PEER_BY_NAME.update(saved)
    if not why or "scripts/setup.sh --peers nats" not in why or "apt-get install chatbench-no-such-package" not in why:
        problems.append(f"a broker not installed is not reported with its install command: {why!r}")


def check_run(source, build, installed, out, problems):
    run = subprocess.run(["/usr/bin/python3", str(source / "scripts" / "run_matrix.py"), "--quick",
                          "--variants", "asio", "--peers", ",".join(installed), "--modes", ",".join(MODES),
                          "--repeats", "1", "--broadcast-clients", "50", "--chat-clients", "40",
                          "--chat-rates", "5", "--chat-duration-s", "0.5", "--ceiling-start-rate", "50",
                          "--out", str(out)],
                         env=dict(os.environ, BUILD_DIR=str(build)), capture_output=True, text=True, timeout=560)
    print(run.stdout[-3000:], run.stderr[-3000:])
    if run.returncode != 0:
        problems.append(f"run_matrix.py exited {run.returncode}")
        return
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    for broker in installed:
        mine = [r for r in rows if r["config"] == broker]
        modes = sorted({r["mode"] for r in mine})
        if modes != sorted(MODES) or any(r["status"] != "ok" for r in mine):
            problems.append(f"{broker}: rows {[(r['mode'], r['status'], r['why']) for r in mine]}")
        for r in mine:
            if r["mode"] in ("broadcast", "chat") and (r["lines_lost"] != "0" or r["lines_delivered"] in ("", "0")):
                problems.append(f"{broker} {r['mode']}: delivered {r['lines_delivered']}, lost {r['lines_lost']}")
        info = json.loads((out / "machine.json").read_text())["peers"].get(broker, {})
        if info.get("protocol") != variants.PEER_BY_NAME[broker].protocol or info.get("modes") != MODES \
                or not info.get("version") or info.get("skipped"):
            problems.append(f"machine.json peers.{broker}: {info}")
    with RawFiles(out) as raw:  # each measurement's loadgen command is its log's first line
        for name in raw.names():
            m = re.match(r"raw/(\w+)-(broadcast|chat|ceiling)-.*\.loadgen\.log$", name)
            if not m:
                continue
            command = raw.read_text(name).splitlines()[0]
            protocol = variants.PEER_BY_NAME[m.group(1)].protocol if m.group(1) in installed else None
            if (f"--protocol {protocol}" in command) != bool(protocol) or ("--protocol" in command) != bool(protocol):
                problems.append(f"{name}: {command}")
    report = (out / "report.md").read_text()
    for broker in installed:
        if f"| {broker} ({variants.BROKER_NOTE}) |" not in report:
            problems.append(f"report.md marks no row of {broker} as a broker")
    if "## Brokers beside the chat servers" not in report:
        problems.append("report.md has no section on the brokers")


def main():
    source, build = Path(sys.argv[1]), Path(sys.argv[2])
    problems = []
    check_missing_is_skipped(problems)
    installed = [b for b in BROKERS if not peers.peer_missing(b)]
    if installed:
        with tempfile.TemporaryDirectory(prefix="check_matrix.") as tmp:
            check_run(source, build, installed, Path(tmp) / "results", problems)
    for p in problems:
        print("FAIL:", p)
    if not problems and not installed:
        print("skipped: no broker installed (scripts/setup.sh --peers nats,redis,mosquitto)")
        return 77
    missing = [b for b in BROKERS if b not in installed]
    print("FAILED" if problems else "passed" + (f" (not installed, not run: {', '.join(missing)})" if missing else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
