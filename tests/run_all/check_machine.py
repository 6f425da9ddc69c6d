#!/usr/bin/python3
"""The start-of-run check that other work is running (scripts/chatbench/machine.py
cpu_busy, matrix.idle_target's warnings):

  - a process spinning on a CPU shows as at least half a core busy;
  - the run warns on CPUs busy at start, and not on a high load average alone (which
    still counts run_all.sh's own build minutes after it ended).
Usage: check_machine.py (with PYTHONPATH=SOURCE_DIR/scripts)"""
import contextlib
import io
import subprocess
import sys
from types import SimpleNamespace

from chatbench import machine, matrix
from verdict import finish


def warnings_for(busy, loadavg):
    desc = {"cores": 2, "build_type": "Release", "loadavg_start": loadavg, "cpu_busy_start": busy,
            "cpu": "test", "kernel": "test", "limits": machine.machine_limits()}
    args = SimpleNamespace(quick=True, idle_max=None, broadcast_clients=[100], chat_clients=100)
    with contextlib.redirect_stdout(io.StringIO()):
        matrix.idle_target(args, desc, "/nonexistent")
    return [w for w in desc["warnings"] if "busy at start" in w]


def main():
    problems = []
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = machine.cpu_busy(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    print(f"with a spinning process: {busy} cores busy")
    if busy < 0.5:
        problems.append(f"a spinning process showed as {busy} cores busy, expected at least 0.5")

    if not warnings_for(0.5, "0.40 0.30 0.20 1/90 100"):
        problems.append("no warning with half a core busy at start")
    if warnings_for(0.0, "12.40 9.00 8.00 1/90 100"):
        problems.append("a warning on the load average alone, nothing busy at start")
    sys.exit(finish(problems))


if __name__ == "__main__":
    main()
