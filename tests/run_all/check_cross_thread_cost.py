#!/usr/bin/python3
"""scripts/cross_thread_cost.py on real servers (chat-asio), briefly: each arm of `cpu --floor`
(--threads 1, --threads 2, two one-thread servers sharing the core) delivers the load it was
offered, the floor's two servers together no more and no less than one server alone, and
each arm's figure is a CPU time per line the server could have spent.

usage: check_cross_thread_cost.py SOURCE_DIR BUILD_DIR
"""
import re
import subprocess
import sys

CLIENTS, RATE, DURATION_S, WARMUP_S, ROOM = 100, 20, 1, 1, 10


def main():
    source, build = sys.argv[1], sys.argv[2]
    script = f"{source}/scripts/cross_thread_cost.py"
    run = subprocess.run(["/usr/bin/python3", script, "cpu", "--variants", "asio", "--repeats", "1", "--floor",
                          "--clients", str(CLIENTS), "--rate", str(RATE), "--duration", str(DURATION_S),
                          "--build", build], capture_output=True, text=True, timeout=120)
    print(run.stdout, run.stderr)
    assert run.returncode == 0, f"exit {run.returncode}"

    found = re.findall(r"^asio (--threads 1|--threads 2|2 servers of 1 thread): (\d+) ns CPU per delivered "
                       r"line \((\d+)\)$", run.stdout, re.M)
    arms = {label: (int(ns), int(lines)) for label, ns, lines in found}
    assert set(arms) == {"--threads 1", "--threads 2", "2 servers of 1 thread"}, f"arms: {sorted(arms)}"
    # Every client sends RATE lines/s from the warm-up on, each to its ROOM - 1 room-mates.
    offered = CLIENTS * RATE * (DURATION_S + WARMUP_S) * (ROOM - 1)
    for label, (ns, lines) in arms.items():
        assert abs(lines - offered) <= offered * 0.02, f"{label}: {lines} lines delivered, {offered} offered"
        # Above nothing, and below the whole run's wall time spent on each line.
        assert 0 < ns < (DURATION_S + WARMUP_S + 1) * 1e9 / lines, f"{label}: {ns} ns per line"
    assert "too few repeats to judge" in run.stdout  # one repeat: the noise test must not rank
    assert re.search(r"^asio: crossing threads adds [+-]\d+\.\d% to the floor", run.stdout, re.M)

    refused = subprocess.run(["/usr/bin/python3", script, "rss", "--floor", "--build", build],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "--floor is for cpu only" in refused.stderr, refused.stderr
    print("ok")


if __name__ == "__main__":
    main()
