#!/usr/bin/python3
"""A run's raw files packed into one archive (scripts/chatbench/raw_files.py):

  1. pack() turns RESULTS/raw/ into RESULTS/raw.tar.xz and removes raw/; a second pack adds
     to the first archive (a file of the same name replaced, the others kept); a reader
     takes a file from raw/ while it is there (a run in progress), from the archive
     otherwise, and by the path it was written at (RESULTS/raw/NAME); memcheck.py --compare
     refuses a report that is in neither as a bad command line.
  2. With BUILD_DIR: scripts/run_matrix.py interrupted by SIGTERM, then by SIGINT, in the
     middle of its second measurement (chat-asio, idle): it exits 128 + the signal, the
     first measurement's report and the second's logs are in raw.tar.xz, raw/ is gone,
     results.csv has the first measurement's rows, and no process of the run is left.
Usage: check_raw_files.py SOURCE_DIR [BUILD_DIR] (with PYTHONPATH=SOURCE_DIR/scripts)"""
import csv
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from chatbench import raw_files
from verdict import finish

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def check_pack_and_read(source, tmp):
    out = tmp / "run"
    write(out / "raw/a-idle-10-r1.json", '{"a": 1}')
    write(out / "raw/a-idle-10-r1.server.log", "stats 1")
    write(out / "raw/redis-idle-10-r1.peer/redis.conf", "port 1")
    check(raw_files.pack(out) == out / raw_files.ARCHIVE, "pack did not return the archive")
    check(not (out / "raw").exists(), "raw/ left after pack")
    with tarfile.open(out / raw_files.ARCHIVE) as tar:
        members = sorted(m.name for m in tar if m.isfile())
    check(members == ["raw/a-idle-10-r1.json", "raw/a-idle-10-r1.server.log", "raw/redis-idle-10-r1.peer/redis.conf"],
          f"archive members {members}")

    # A second run into the same directory: its files replace those of the same name.
    write(out / "raw/a-idle-10-r1.json", '{"a": 2}')
    write(out / "raw/b-idle-10-r1.json", '{"b": 1}')
    with raw_files.RawFiles(out) as raw:  # in progress: raw/ first, the archive for the rest
        check(raw.read_text("raw/a-idle-10-r1.json") == '{"a": 2}', "a run in progress read from the archive")
        check(raw.read_text("raw/a-idle-10-r1.server.log") == "stats 1", "the archive not read beside raw/")
        check(len(raw.names()) == 4, f"names while in progress: {raw.names()}")
    raw_files.pack(out)
    with raw_files.RawFiles(out) as raw:
        got = {name: raw.read_text(name) for name in raw.names()}
        try:
            raw.read_bytes("raw/nonexistent.json")
            check(False, "a file in neither raw/ nor the archive was read")
        except FileNotFoundError:
            pass
    check(got == {"raw/a-idle-10-r1.json": '{"a": 2}', "raw/a-idle-10-r1.server.log": "stats 1",
                  "raw/b-idle-10-r1.json": '{"b": 1}', "raw/redis-idle-10-r1.peer/redis.conf": "port 1"},
          f"after a second pack: {got}")
    check(raw_files.read_bytes(out / "raw/b-idle-10-r1.json") == b'{"b": 1}', "not read by its written path")
    check(raw_files.pack(tmp / "empty") is None, "pack of a directory without raw files")

    run = subprocess.run(["/usr/bin/python3", str(source / "scripts/memcheck.py"), "--variant", "asio",
                          "--compare", str(out / "raw/nonexistent.json")], capture_output=True, text=True)
    check(run.returncode == 2 and "--compare" in run.stderr and "usage:" in run.stderr,
          f"memcheck.py --compare of a missing report: exit {run.returncode}, {run.stderr[-300:]!r}")


def check_interrupted(source, build, tmp, signum):
    out = tmp / f"interrupted-{signum}"
    cmd = ["/usr/bin/python3", str(source / "scripts/run_matrix.py"), "--quick", "--modes", "idle",
           "--variants", "asio", "--repeats", "4", "--idle-max", "200", "--idle-steps", "2",
           "--quiet-wait-s", "0", "--thread-small-stack", "", "--fiber-big-stack", "", "--out", str(out)]
    # A session of its own: whatever it started can be found afterwards.
    run = subprocess.Popen(cmd, env=dict(os.environ, BUILD_DIR=str(build)), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    said = []
    for line in run.stdout:
        said.append(line)
        if re.search(r"\] 2/4 asio idle", line):
            break
    time.sleep(1)  # the second measurement's server and loadgen are running
    run.send_signal(signum)
    try:
        _, err = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
        check(False, f"run_matrix.py still running 120 s after {signal.Signals(signum).name}")
        return
    name = signal.Signals(signum).name
    check(run.returncode == 128 + signum, f"{name}: exit {run.returncode}, expected {128 + signum}: "
                                          f"{''.join(said)[-500:]} {err[-500:]}")
    check("interrupted" in err and raw_files.ARCHIVE in err, f"{name}: stderr does not say what was kept: {err!r}")
    check(not (out / "raw").exists(), f"{name}: raw/ left unpacked")
    names = []
    if (out / raw_files.ARCHIVE).exists():
        with raw_files.RawFiles(out) as raw:
            names = raw.names()
    check("raw/asio-idle-200-r1.json" in names, f"{name}: the first measurement's report not archived: {names}")
    check("raw/asio-idle-200-r2.server.log" in names, f"{name}: the second measurement's server log not archived")
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    check(any(r["repeat"] == "1" and r["status"] == "ok" for r in rows), f"{name}: no rows of the first measurement")
    try:
        os.killpg(run.pid, 0)
        check(False, f"{name}: a process of the run is still running")
        os.killpg(run.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main():
    source = Path(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="check_raw_files.") as tmp:
        check_pack_and_read(source, Path(tmp))
        if len(sys.argv) > 2:
            for signum in [signal.SIGTERM, signal.SIGINT]:
                check_interrupted(source, Path(sys.argv[2]), Path(tmp), signum)
    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())
