#!/usr/bin/python3
"""Measures another host's UNIX clock against this one's, NTP-style (docs/distributed.md, "Clocks").

usage: scripts/clock_offset.py [--probes N] -- COMMAND...

COMMAND (typically `ssh HOST loadgen clock`) answers each line written to its stdin with
one line "UNIX_NS [RESOLUTION_NS]": its host's clock, read after the request arrived and
before the answer left. A probe reads this host's clock before the request (t0) and after
the answer (t1); the remote reading r was taken at some local time in [t0, t1], so its
offset is r - (t0 + t1) / 2 within (t1 - t0) / 2, plus both clocks' resolutions. Of
--probes probes (the first pays for the command's start), the one with the shortest
round trip gives the tightest bound and is the one printed:

    OFFSET_NS BOUND_NS ROUND_TRIP_NS

OFFSET_NS is the other host's clock less this one's. Exit 1 if the command fails or
answers garbage, 2 on a bad command line.
"""
import subprocess
import sys
import time


def main(argv):
    probes = 16
    args = argv[1:]
    if args[:1] == ["--probes"]:
        if len(args) < 2 or not args[1].isdigit() or int(args[1]) < 1:
            print("clock_offset.py: --probes takes a positive count", file=sys.stderr)
            return 2
        probes, args = int(args[1]), args[2:]
    if args[:1] != ["--"] or len(args) < 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    local_resolution = time.clock_getres(time.CLOCK_REALTIME)
    best = None
    with subprocess.Popen(args[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1) as remote:
        for _ in range(probes):
            t0 = time.time_ns()
            remote.stdin.write("\n")
            remote.stdin.flush()
            answer = remote.stdout.readline()
            t1 = time.time_ns()
            fields = answer.split()
            if not fields or not all(f.lstrip("-").isdigit() for f in fields):
                print(f"clock_offset.py: {' '.join(args[1:])} answered {answer!r}, not UNIX_NS [RESOLUTION_NS]", file=sys.stderr)
                remote.kill()
                return 1
            remote_resolution = int(fields[1]) if len(fields) > 1 else 1000  # unstated: take a microsecond
            bound = (t1 - t0 + 1) // 2 + remote_resolution + max(1, int(local_resolution * 1e9))
            if best is None or bound < best[1]:
                best = (int(fields[0]) - (t0 + t1) // 2, bound, t1 - t0)
        remote.stdin.close()
        if remote.wait(timeout=20) != 0:
            print(f"clock_offset.py: {' '.join(args[1:])} exited {remote.returncode}", file=sys.stderr)
            return 1
    print(*best)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
