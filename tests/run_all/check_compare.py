#!/usr/bin/python3
"""scripts/compare.py on two fixed results directories (compare/a, compare/b: 5 repeats
each; B is a machine 1.5x slower all round on which coro's fan-out also doubled and asio's
CPU per line did not move), and chatbench.stats's exact Mann-Whitney U against textbook values.
Checks the verdict of each case: a difference within noise is tied, one beyond it is not,
what travels (pairs of variants, the write() ceiling) is tied where only the machine
changed, too few repeats never rank, and bad arguments exit 2 with a usage line.
Usage: check_compare.py FIXTURE_DIR SCRIPTS_DIR (with PYTHONPATH=SCRIPTS_DIR)"""
import subprocess
import sys
from pathlib import Path

import compare
from chatbench import stats
from verdict import finish

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


def verdicts(text):
    """{(section, figure, variant): verdict} from compare.py's tables."""
    out, section = {}, ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:]
        elif line.startswith("| ") and not line.startswith("| figure"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[(section, cells[0], cells[1])] = cells[5].split(" (p")[0]
    return out


def main():
    fixture, scripts = Path(sys.argv[1]), Path(sys.argv[2])
    # Exact two-sided p: fully separated groups give 2 / C(n+m, n); U = 1 of 5 vs 5 is 4/252.
    for a, b, p in [([1, 2, 3], [4, 5, 6], 0.1), ([1, 2, 3, 4], [5, 6, 7, 8], 2 / 70),
                    ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], 2 / 252), ([1, 2, 3, 4, 6], [5, 7, 8, 9, 10], 4 / 252),
                    ([1, 1, 1], [1, 1, 1], 1.0), ([1, 3, 5, 7], [2, 4, 6, 8], 48 / 70)]:
        got = stats.mann_whitney_p(a, b)
        check(abs(got - p) < 1e-12, f"mann_whitney_p({a}, {b}) = {got}, not {p}")
    check(stats.rank([1, 2, 3], [4, 5, 6])[0] == "too few", "3 vs 3 repeats ranked")
    check(stats.rank([1, 2, 3, 4], [5, 6, 7, 8]) == ("a", 2 / 70), "4 vs 4 separated not ranked")
    check(stats.rank([5, 6, 7, 8], [1, 2, 3, 4], lower_is_better=False)[0] == "a", "higher-is-better ignored")

    # Separated by the test but less than 1% apart: no change; 2% apart: ranked.
    check(compare.judge([100, 100.1, 100.2, 100.3], [100.5, 100.6, 100.7, 100.8], True)[0] == "within",
          "a separated change under 1% ranked")
    check(compare.judge([100, 100.1, 100.2, 100.3], [102, 102.1, 102.2, 102.3], True)[0] == "a",
          "a separated change of 2% not ranked")

    # A pair's ratio is taken repeat by repeat: a drift of the machine that moves both
    # variants alike between repeats cancels (over the other's median it would not).
    key = ("broadcast", "completion_p99_us", 1000.0)
    drift = {key: {"asio": {1: 10, 2: 20, 3: 30, 4: 40}, "coro": {1: 5, 2: 10, 3: 15, 4: 20}}}
    got_pairs = compare.relative_to_others(drift, {key: ["asio", "coro"]})
    check(got_pairs == {key: {"asio ÷ coro": [2, 2, 2, 2]}},
          f"pairs not taken repeat by repeat: {got_pairs}")

    cmd = ["/usr/bin/python3", str(scripts / "compare.py")]
    run = subprocess.run(cmd + [str(fixture / "a"), str(fixture / "b")], capture_output=True, text=True)
    check(run.returncode == 0, f"compare.py exited {run.returncode}: {run.stderr}")
    got = verdicts(run.stdout)
    absolute, pairs, ceiling = ("Absolute", "Relative to the other variants in the same run",
                                "Relative to the run's write() ceiling")
    expected = {
        # beyond noise: every value of B above every value of A
        (absolute, "broadcast completion p99 at 1,000 clients", "asio"): "A better",
        (absolute, "chat ceiling, deliveries/s", "threads"): "A better",
        # within noise: the repeats interleave
        (absolute, "server CPU per delivered line at 20/s per client", "asio"): "tied",
        # only the machine changed: the pair's ratio and the share of the write() ceiling travel
        (pairs, "broadcast completion p99 at 1,000 clients", "threads ÷ asio"): "tied",
        (pairs, "chat ceiling, deliveries/s", "threads ÷ asio"): "tied",
        (ceiling, "chat ceiling, deliveries/s", "asio"): "tied",
        (ceiling, "server CPU per delivered line at 20/s per client", "coro"): "tied",
        # coro's fan-out changed beyond the machine: its pairs say so
        (pairs, "broadcast completion p99 at 1,000 clients", "asio ÷ coro"): "B better",
        # asio's CPU per line did not move while the machine got slower: it travels worse
        (ceiling, "server CPU per delivered line at 20/s per client", "asio"): "B better",
        # 3 repeats can never reach p < 0.05
        (absolute, "RSS per idle connection", "asio"): "not enough repeats",
    }
    for key, verdict in expected.items():
        check(got.get(key) == verdict, f"{key}: {got.get(key)!r}, expected {verdict!r}")
    check("+50%" in run.stdout and "+100%" in run.stdout, "changes A → B not printed")
    check("would still be ranked, by chance alone" in run.stdout, "the count expected by chance not stated")

    for args in [[], [str(fixture / "a")], [str(fixture / "a"), str(fixture / "nonexistent")]]:
        bad = subprocess.run(cmd + args, capture_output=True, text=True)
        check(bad.returncode == 2 and bad.stderr.startswith("usage: "),
              f"compare.py {args}: exit {bad.returncode}, stderr {bad.stderr[:80]!r}")
    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())
