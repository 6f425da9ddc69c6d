#!/usr/bin/python3
"""Compares two results directories figure by figure: scripts/compare.py RUN_A RUN_B
(e.g. results/2026-11-25-vm against your own run). For every figure both runs measured,
the change from A to B and a verdict by the report's noise rule (chatbench.stats.rank: exact
two-sided Mann-Whitney U over the repeats, p < 0.05): tied, A better or B better, or not
enough repeats to tell.

Absolute times differ between machines, so it also compares what should travel:
  - each variant relative to the others in the same run (pairwise ratios), and
  - relative to the same run's micro-benchmark ceiling (one thread's loopback write()
    rate): deliveries/s as a fraction of it, CPU per line in units of one write().
docs/methodology.md ("Comparing two runs") says how to read it. Writes Markdown to stdout."""
import argparse
import statistics
import sys
from pathlib import Path

from chatbench import aggregate, capacity, results_csv, stats, variants
from chatbench.results_csv import num


def fmt_us(v):
    if v >= 1e6:
        return f"{v / 1e6:.3g} s"
    if v >= 1000:
        return f"{v / 1000:.3g} ms"
    return f"{v:.3g} µs"


def fmt_bytes(v):
    return f"{v / 1024:.3g} KiB" if abs(v) >= 1024 else f"{v:.0f} B"


def fmt_num(v):
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


# (mode, column, title, lower is better, format, how it travels: "time" | "rate" | None)
FIGURES = [
    ("idle", "rss_slope_bytes", "RSS per idle connection", True, fmt_bytes, None),
    ("idle", "host_whole_bytes", "server host per idle connection", True, fmt_bytes, None),
    # runs before the server-host breakdown had only the whole machine's MemAvailable drop
    ("idle", "system_slope_bytes", "whole machine per idle connection (MemAvailable)", True, fmt_bytes,
     None),
    ("broadcast", "completion_p50_us", "broadcast completion p50", True, fmt_us, None),
    ("broadcast", "completion_p99_us", "broadcast completion p99", True, fmt_us, None),
    ("chat", "latency_p99_us", "chat latency p99", True, fmt_us, None),
    ("chat", "server_cpu_per_delivery_us", "server CPU per delivered line", True, fmt_us, "time"),
    ("ceiling", "deliveries_per_s", "chat ceiling, deliveries/s", False, fmt_num, "rate"),
    ("ceiling", "server_cpu_per_delivery_us", "server CPU per delivered line at the ceiling", True,
     fmt_us, "time"),
    # docs/methodology.md "Efficiency", "Capacity per server core": flagged efficiency points
    # and withheld per-core figures are not figures of the server, and are left out
    ("efficiency", "server_cpu_per_delivery_us", "server CPU per delivered line (efficiency)", True, fmt_us,
     "time"),
    ("capacity", "deliveries_per_server_core_s", "deliveries per server core-second (capacity)", False, fmt_num,
     "rate"),
]


def point_label(mode, point):
    if mode == "broadcast":
        return f" at {point:,.0f} clients"
    if mode in ("chat", "efficiency"):
        return f" at {point:g}/s per client"
    if mode == "capacity":
        return f" at quota {point[0]:g} of {point[1]:g} ms"
    return ""


def repeats(rows):
    """{(mode, column, point): {config: {repeat: value}}} for every figure."""
    out = {}
    for mode, column, *_ in FIGURES:
        for r in rows:
            if r["mode"] != mode or r["status"] != "ok" or num(r[column]) is None:
                continue
            if column == "host_whole_bytes" and not results_csv.memory_result(r):
                continue  # flagged: its parts and whole do not add up
            if mode == "efficiency" and r["efficiency_flags"]:
                continue  # the point measures the rate, loadgen, or a server that fell behind
            # idle: the slopes are on every step row of a repeat; one value per repeat;
            # capacity: one figure per quota and period
            point = None if mode in ("idle", "ceiling") else capacity.cell_of(r) if mode == "capacity" \
                else num(r["point"])
            cell = out.setdefault((mode, column, point), {}).setdefault(r["config"], {})
            cell[r["repeat"]] = num(r[column])
    return out


def values(figs):
    """The same without the repeat numbers: {key: {config: [one value per repeat]}}."""
    return {k: {c: list(v.values()) for c, v in by.items()} for k, by in figs.items()}


def relative_to_others(figs, shared):
    """Each pair of the configurations both runs measured, as 'x ÷ y': x's value over y's in
    the same repeat (a repeat measures every configuration's point back to back, so the
    machine's drift between repeats cancels; over y's median instead, y's own spread would
    go unseen). Pairs, not a share of the field: a change in one variant then shows in its
    own pairs only (a field's median or mean would move every ratio)."""
    out = {}
    for key, by in figs.items():
        names = order([c for c in shared.get(key, []) if c in by])
        pairs = {}
        for i, x in enumerate(names):
            for y in names[i + 1:]:
                ratios = [by[x][r] / by[y][r] for r in sorted(set(by[x]) & set(by[y])) if by[y][r]]
                if ratios:
                    pairs[f"{x} ÷ {y}"] = ratios
        if pairs:
            out[key] = pairs
    return out


def order(configs):
    """Variant order, a configuration's non-default stack after its default, more server
    cores (--server-threads) after one."""
    def key(c):
        base, n = variants.split_threads(c.split(" ")[0])
        v = base.split("@")[0]
        return (variants.NAMES.index(v) if v in variants.NAMES else len(variants.NAMES), n, c)
    return sorted(configs, key=key)


def relative_to_ceiling(figs, ceiling):
    """Rates as a fraction of the write() ceiling; CPU per line in write() calls' time."""
    kind = {(m, col): travel for m, col, _t, _l, _f, travel in FIGURES}
    out = {}
    if not ceiling:
        return out
    for key, by in figs.items():
        travel = kind[key[:2]]
        if travel == "rate":
            out[key] = {c: [v / ceiling for v in vs.values()] for c, vs in by.items()}
        elif travel == "time":
            out[key] = {c: [v * ceiling / 1e6 for v in vs.values()] for c, vs in by.items()}
    return out


def cell(values, fmt):
    med = statistics.median(values)
    if len(values) == 1 or fmt(min(values)) == fmt(max(values)):
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


VERDICT = {"a": "A better", "b": "B better", "tied": "tied", "too few": "not enough repeats",
           "within": "same within 1%"}
# A difference the test finds but smaller than this is reported as no change: figures
# reproduced to the byte (idle RSS) differ in their last digit from run to run, and a
# ranking of 1.3900x against 1.3901x would only hide the changes that matter.
SAME_WITHIN = 0.01


def judge(a, b, lower_is_better):
    """The noise test's (verdict, p), a ranking under SAME_WITHIN turned into 'within'."""
    verdict, p = stats.rank(a, b, lower_is_better)
    ma, mb = statistics.median(a), statistics.median(b)
    if verdict in ("a", "b") and ma and abs(mb - ma) < SAME_WITHIN * abs(ma):
        verdict = "within"
    return verdict, p


def section(title, intro, a, b, fmt_for):
    meta = {(m, col): (t, lower) for m, col, t, lower, _f, _tr in FIGURES}
    lines, counts = [], {}
    figure_order = [(m, col) for m, col, *_ in FIGURES]
    for key in sorted(set(a) & set(b), key=lambda k: (figure_order.index(k[:2]), k[2] or 0)):
        name, lower = meta[key[:2]]
        for config in order(set(a[key]) & set(b[key])):
            va, vb = a[key][config], b[key][config]
            verdict, p = judge(va, vb, lower)
            ma, mb = statistics.median(va), statistics.median(vb)
            counts[verdict] = counts.get(verdict, 0) + 1
            change = f"{(mb - ma) / abs(ma) * 100:+.0f}%" if ma else "–"
            fmt = fmt_for(key)
            lines.append([name + point_label(key[0], key[2]) if key[2] is not None else name, config,
                          cell(va, fmt), cell(vb, fmt), change,
                          VERDICT[verdict] + (f" (p = {p:.2g})" if p is not None else "")])
    if not lines:
        return "", counts
    text = [f"## {title}\n", intro + "\n", "| figure | variant | A | B | change A → B | verdict |",
            "|---|---|---|---|---|---|"]
    text += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(text) + "\n", counts


def summary(name, counts):
    parts = [f"{n} {VERDICT[v]}" for v, n in sorted(counts.items())]
    if not parts:
        return f"- {name}: no figure in both runs"
    # Each verdict is one test at p < ALPHA, with no correction for their number: where
    # nothing changed, about ALPHA of the rankable figures still come out ranked.
    testable = sum(n for v, n in counts.items() if v != "too few")
    chance = (f"; had nothing changed, about {testable * stats.ALPHA:.1f} of these {testable} "
              f"testable figures would still be ranked, by chance alone") if testable else ""
    return f"- {name}: " + ", ".join(parts) + chance


def load(parser, directory):
    path = Path(directory) / "results.csv"
    if not path.is_file():
        parser.error(f"{directory}: no results.csv (not a results directory)")
    return results_csv.read_csv(path)


def main():
    parser = argparse.ArgumentParser(
        prog="scripts/compare.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a", metavar="RUN_A", help="results directory A (e.g. the reference)")
    parser.add_argument("run_b", metavar="RUN_B", help="results directory B")
    args = parser.parse_args()  # exits 2 with the usage line on bad arguments
    rows_a, rows_b = load(parser, args.run_a), load(parser, args.run_b)
    a, b = repeats(rows_a), repeats(rows_b)
    shared = {k: sorted(set(a[k]) & set(b[k])) for k in set(a) & set(b)}
    fmts = {(m, col): f for m, col, _t, _l, f, _tr in FIGURES}
    ceil_a, ceil_b = aggregate.write_ceiling(rows_a)[0], aggregate.write_ceiling(rows_b)[0]

    out = [f"# {args.run_a} (A) against {args.run_b} (B)\n",
           "Verdict per figure: the exact two-sided Mann-Whitney U test over the two runs' repeats "
           f"(p < {stats.ALPHA:g}); *tied* where it cannot tell them apart, *not enough repeats* where "
           f"too few repeats could never reach p < {stats.ALPHA:g}, *same within 1%* where it can but the "
           f"medians differ by less than {SAME_WITHIN:.0%}. Change = median B vs median A.\n"]
    results = []
    text, counts = section("Absolute", "As measured: these differ between machines as well as "
                           "between versions.", values(a), values(b), lambda k: fmts[k[:2]])
    out.append(text)
    results.append(("absolute", counts))
    text, counts = section(
        "Relative to the other variants in the same run",
        "Each pair of variants both runs measured: the first's value ÷ the second's, repeat by "
        "repeat in the same run. This should travel between machines of different speed; a variant "
        "that changed shows in its own pairs.",
        relative_to_others(a, shared), relative_to_others(b, shared), lambda k: lambda v: f"{v:.3g}×")
    out.append(text)
    results.append(("relative to the other variants", counts))
    if ceil_a and ceil_b:
        text, counts = section(
            "Relative to the run's write() ceiling",
            f"Deliveries/s ÷ one thread's loopback write() rate (A {fmt_num(ceil_a)}/s, B "
            f"{fmt_num(ceil_b)}/s, microbench); CPU per line in units of one write() call.",
            relative_to_ceiling(a, ceil_a), relative_to_ceiling(b, ceil_b), lambda k: lambda v: f"{v:.3g}")
        out.append(text)
        results.append(("relative to the write() ceiling", counts))
    else:
        out.append("## Relative to the run's write() ceiling\n\nNot compared: "
                   + ("neither run" if not (ceil_a or ceil_b) else "only one run")
                   + " has microbench's syscall/write ceiling.\n")
    only = sorted({f"{k[0]} {k[1]}" for k in set(a) ^ set(b)})
    out.append("## Summary\n\n" + "\n".join(summary(n, c) for n, c in results)
               + (f"\n- measured in one run only: {', '.join(only)}" if only else "") + "\n")
    print("\n".join(o for o in out if o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
