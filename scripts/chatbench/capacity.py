"""What one core of a server does, from results.csv (docs/methodology.md "Efficiency",
"Capacity per server core"): the efficiency points that measure the server, the per-core
capacity under a CPU quota, whether it holds across quotas and periods (validation), the
cross-check against ceilings found without a quota, when a per-core figure is published,
and what several cores give. The report and compare.py read these; nothing here formats."""
import statistics

from chatbench import stats
from chatbench.results_csv import num, server_threads_of

SERVER_LIMITS = ("server", "latency")  # a search the server stopped: its figure is the server's
CROSS_CHECK_VARIANTS = ("threads", "eventlet")  # server-limited without a quota on this machine
CROSS_CHECK_WITHIN = 0.20  # per core x 1.0 must predict the ceiling without a quota this closely
# Every cell of the validation grid within this of the cells' median: a figure that moves
# more with the quota chosen is not one figure, whether or not the noise test can tell.
AGREE_WITHIN = 0.20
# The fewest searches without a quota the cross-check is judged on (those the server stopped).
CROSS_CHECK_MIN_SEARCHES = 3


def _ok(rows, mode, config=None):
    return [r for r in rows if r["mode"] == mode and r["status"] == "ok"
            and (config is None or r["config"] == config)]


# ---------------------------------------------------------------------------------------
# Efficiency

def efficiency_rates(rows):
    return sorted({num(r["point"]) for r in _ok(rows, "efficiency")})


def efficiency(rows, config, rate):
    """(values, flagged): server CPU per delivered line (µs) of each repeat at this rate
    whose point measures the server, and the flags of those that do not (one string per
    flagged repeat)."""
    values, flagged = [], []
    for r in _ok(rows, "efficiency", config):
        if num(r["point"]) != rate:
            continue
        if r["efficiency_flags"]:
            flagged.append(r["efficiency_flags"])
        elif num(r["server_cpu_per_delivery_us"]) is not None:
            values.append(num(r["server_cpu_per_delivery_us"]))
    return values, flagged


def efficiency_ranked(rows, configs, rate):
    """{config: [values]} of the configurations none of whose repeats at this rate was
    flagged: the only ones a ranking at this rate may name."""
    out = {}
    for c in configs:
        values, flagged = efficiency(rows, c, rate)
        if values and not flagged:
            out[c] = values
    return out


# ---------------------------------------------------------------------------------------
# Capacity under a quota

def cell_of(row):
    return num(row["capacity_quota"]), num(row["capacity_period_ms"])


def default_cell(plan):
    capacity = (plan or {}).get("capacity") or {}
    if capacity.get("quota") is None:
        return None
    return float(capacity["quota"]), float(capacity["period_ms"])


def capacity_rows(rows, config, cell=None):
    return [r for r in _ok(rows, "capacity", config) if cell is None or cell_of(r) == cell]


def per_core_values(rows):
    """Each search's deliveries per server core-second; searches that withheld it left out."""
    return [num(r["deliveries_per_server_core_s"]) for r in rows if num(r["deliveries_per_server_core_s"])]


def cells_of(rows, config):
    """{(quota, period_ms): [per-core values]} of one configuration's capacity searches."""
    out = {}
    for r in capacity_rows(rows, config):
        out.setdefault(cell_of(r), [])
        if num(r["deliveries_per_server_core_s"]):
            out[cell_of(r)].append(num(r["deliveries_per_server_core_s"]))
    return out


def validation(rows, config):
    """Whether a configuration's per-core capacity holds across quotas and periods: a dict
    with cells ({(quota, period): [values]}), pairs ([(side a, side b, verdict, p)] of the
    two noise tests below), ratio (largest cell median over smallest) and verdict: "agrees"
    (at least 2 quotas and 2 periods, neither test separates its sides, and every cell's
    median within AGREE_WITHIN of the cells' median), "does not scale linearly" (a test
    separates its sides), or "not validated: WHY" (too few cells or repeats, a cell whose
    searches withheld the figure, or cells spread wider than AGREE_WITHIN that the test,
    with its few repeats, could not separate).

    Two tests, not one per pair of cells: bursts would show as a trend with the quota or
    the period, so the smallest quota is tested against the largest, each pooled over the
    periods, and the shortest period against the longest, each pooled over the quotas, at
    ALPHA / 2 each (Bonferroni). Fifteen pairwise tests at ALPHA would separate two cells
    of a server that scales by chance alone up to a third of the time."""
    cells = cells_of(rows, config)
    out = {"cells": cells, "pairs": [], "ratio": None}
    if not cells:
        return dict(out, verdict="not validated: no capacity search")
    missing = [c for c, v in cells.items() if not v]
    quotas, periods = sorted({q for q, _ in cells}), sorted({p for _, p in cells})
    medians = [statistics.median(v) for v in cells.values() if v]
    if medians:
        out["ratio"] = max(medians) / min(medians)
    if len(quotas) < 2 or len(periods) < 2:
        return dict(out, verdict="not validated: measured at one quota or one period only (--capacity-validate)")
    if missing:
        return dict(out, verdict="not validated: no per-core figure at " + ", ".join(
            f"quota {q:g}, period {p:g} ms" for q, p in sorted(missing)) + " (the searches withheld it)")

    def pooled(keep):
        return [v for cell, values in cells.items() if keep(cell) for v in values]

    sides = [(f"quota {quotas[0]:g}", pooled(lambda c: c[0] == quotas[0]),
              f"quota {quotas[-1]:g}", pooled(lambda c: c[0] == quotas[-1])),
             (f"period {periods[0]:g} ms", pooled(lambda c: c[1] == periods[0]),
              f"period {periods[-1]:g} ms", pooled(lambda c: c[1] == periods[-1]))]
    for name_a, a, name_b, b in sides:
        verdict, p = stats.rank(a, b, lower_is_better=False, alpha=stats.ALPHA / len(sides))
        out["pairs"].append((name_a, name_b, verdict, p))
    if any(v == "too few" for _a, _b, v, _p in out["pairs"]):
        return dict(out, verdict="not validated: too few repeats per cell for the noise test")
    if any(v in ("a", "b") for _a, _b, v, _p in out["pairs"]):
        return dict(out, verdict="does not scale linearly")
    middle = statistics.median(medians)
    if any(abs(m / middle - 1) > AGREE_WITHIN for m in medians):
        return dict(out, verdict=f"not validated: cell medians {min(medians) / middle:.2f}–{max(medians) / middle:.2f}"
                                 f" × their median, beyond ±{AGREE_WITHIN:.0%} (the noise test could not tell them apart)")
    return dict(out, verdict="agrees")


def unthrottled_ceiling(rows, config):
    """(server's, others): the ceilings found without a quota (mode ceiling) by searches
    the server stopped, and the limits that stopped the others (loadgen: lower bounds)."""
    found = [r for r in _ok(rows, "ceiling", config) if num(r["deliveries_per_s"])]
    return ([num(r["deliveries_per_s"]) for r in found if r["limited_by"] in SERVER_LIMITS],
            [r["limited_by"] or "nothing" for r in found if r["limited_by"] not in SERVER_LIMITS])


def cross_check(rows, plan):
    """For threads and eventlet: the per-core figure at the default cell x 1.0 against the
    ceiling without a quota, from the searches the server stopped (at least
    CROSS_CHECK_MIN_SEARCHES; one loadgen stopped gives a lower bound only, and what stops
    loadgen on this machine, other work on its core, says nothing of the server).
    [{variant, per_core, ceiling, left_out, ratio, within, why}]; within is None where it
    cannot be judged (why says what is missing)."""
    cell = default_cell(plan)
    out = []
    present = {r["variant"] for r in rows if r["mode"] in ("capacity", "ceiling")}
    for v in [v for v in CROSS_CHECK_VARIANTS if v in present]:
        per_core = per_core_values(capacity_rows(rows, v, cell))
        ceilings, others = unthrottled_ceiling(rows, v)
        entry = {"variant": v, "per_core": per_core, "ceiling": ceilings, "left_out": others,
                 "ratio": None, "within": None, "why": ""}
        if not per_core:
            entry["why"] = "no per-core figure (no capacity search, or every one withheld it)"
        elif not ceilings and not others:
            entry["why"] = "no ceiling without a quota (--modes ceiling)"
        elif len(ceilings) < CROSS_CHECK_MIN_SEARCHES:
            stopped = f" (others by {', '.join(sorted(set(others)))})" if others else ""
            entry["why"] = (f"{len(ceilings)} of {len(ceilings) + len(others)} searches without a quota were "
                            f"stopped by the server{stopped}; at least {CROSS_CHECK_MIN_SEARCHES} are needed")
        else:
            entry["ratio"] = statistics.median(per_core) * 1.0 / statistics.median(ceilings)
            entry["within"] = abs(entry["ratio"] - 1) <= CROSS_CHECK_WITHIN
        out.append(entry)
    return out


def method_transfers(checks):
    """(True/False/None, why): whether the cross-check holds: every variant judged is
    within CROSS_CHECK_WITHIN, and at least one was judged (None: none could be)."""
    judged = [c for c in checks if c["within"] is not None]
    if not judged:
        return None, "no cross-check in this run"
    failed = [c["variant"] for c in judged if not c["within"]]
    if failed:
        return False, "the cross-check failed for " + ", ".join(failed)
    return True, "the cross-check held for " + ", ".join(c["variant"] for c in judged)


def published(rows, config, plan):
    """(median per-core figure or None, why): a configuration's capacity per server core is
    published only where this run validated it across quotas and periods and the cross-check
    held; else why not."""
    transfers, why = method_transfers(cross_check(rows, plan))
    check = validation(rows, config)
    if check["verdict"] != "agrees":
        return None, check["verdict"]
    if not transfers:
        return None, "not published: " + why
    values = per_core_values(capacity_rows(rows, config, default_cell(plan)))
    return (statistics.median(values) if values else None), "validated; " + why


# ---------------------------------------------------------------------------------------
# Several cores

def several_cores(rows, plan):
    """Each configuration on N > 1 cores under N x the quota against the same variant on
    one: [{config, base, n, ceilings, base_ceilings, ratio, verdict, valid, why}]. verdict:
    the noise test of the N-core ceilings against N x the one-core ones ("tied": capacity
    grows N-fold within the noise). valid: both sides' searches were stopped by the server."""
    cell = default_cell(plan)
    out = []
    configs = sorted({r["config"] for r in _ok(rows, "capacity") if server_threads_of(r) > 1})
    for c in configs:
        mine = capacity_rows(rows, c)
        n = server_threads_of(mine[0])
        base = mine[0]["variant"]
        theirs = capacity_rows(rows, base, cell)
        ceilings = [num(r["deliveries_per_s"]) for r in mine if num(r["deliveries_per_s"])]
        base_ceilings = [num(r["deliveries_per_s"]) for r in theirs if num(r["deliveries_per_s"])]
        stopped = [r["limited_by"] for r in mine + theirs]
        valid = bool(ceilings and base_ceilings) and all(x in SERVER_LIMITS for x in stopped)
        entry = {"config": c, "base": base, "n": n, "ceilings": ceilings, "base_ceilings": base_ceilings,
                 "ratio": None, "verdict": None, "valid": valid,
                 "why": "" if valid else "a search was stopped by " + ", ".join(
                     sorted({x or "nothing" for x in stopped if x not in SERVER_LIMITS})) + ", not the server"}
        if ceilings and base_ceilings:
            entry["ratio"] = statistics.median(ceilings) / statistics.median(base_ceilings)
            entry["verdict"], _p = stats.rank(ceilings, [n * x for x in base_ceilings], lower_is_better=False)
        out.append(entry)
    return out
