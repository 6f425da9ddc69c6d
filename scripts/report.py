#!/usr/bin/python3
"""Writes RESULTS_DIR/report.md from results.csv, machine.json and plan.json alone:
scripts/report.py RESULTS_DIR. docs/methodology.md defines every number it shows."""
import json
import statistics

from chatbench import aggregate, capacity, results_csv, stats, variants
from chatbench.results_csv import num
from chatbench.machine import BUSY_WINDOW_S

KIB = 1024


def fmt_bytes(v):
    if v is None:
        return "–"
    for unit, size in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", KIB)]:
        if abs(v) >= size:
            return f"{v / size:.3g} {unit}"
    return f"{v:.0f} B"


def fmt_us(v):
    """A duration given in microseconds, in the unit that reads best."""
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.3g} s"
    if v >= 1000:
        return f"{v / 1000:.3g} ms"
    return f"{v:.3g} µs"


def fmt_num(v, digits=3):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def cell(values, fmt):
    """median (min–max) of the repeats, or the single value."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    if fmt(min(values)) == fmt(max(values)):
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def code_total(lines):
    """A variant's own lines and the servers/net lines it uses (machine.json code_lines;
    runs before net_used was recorded give the own lines alone)."""
    own = lines.get("own")
    return None if own is None else own + lines.get("net_used", 0)


def code_size(lines):
    if lines.get("own") is None:
        return "–"
    return f"{lines['own']} + {lines['net_used']}" if lines.get("net_used") else str(lines["own"])


def table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def point_values(rows, config, mode, column, point):
    return [num(r[column]) for r in aggregate.ok_rows(rows, config, mode) if num(r["point"]) == point]


def points(rows, mode):
    return sorted({num(r["point"]) for r in rows if r["mode"] == mode and r["status"] == "ok"})


def shown(rows, mode):
    """The configurations a mode's tables show: the variants', then the brokers' (marked)."""
    return [c for c in aggregate.configs_in(rows) + aggregate.brokers_in(rows) if aggregate.ok_rows(rows, c, mode)]


def metric_table(rows, mode, column, fmt, label_point):
    pts = points(rows, mode)
    configs = shown(rows, mode)
    lines = [[label(rows, c)] + [cell(point_values(rows, c, mode, column, p), fmt) for p in pts]
             for c in configs]
    return table(["variant"] + [label_point(p) for p in pts], lines)


def best(candidates, lower_is_better=True):
    candidates = [(v, c) for c, v in candidates if v is not None]
    if not candidates:
        return None, None
    v, c = (min if lower_is_better else max)(candidates)
    return c, v


def label(rows, config):
    """A configuration's name in tables: the seed's row and a broker's say what they are."""
    if aggregate.variant_of(rows, config) == variants.SEED:
        return f"{config} ({variants.SEED_NOTE})"
    if config in aggregate.brokers_in(rows):
        return f"{config} ({variants.BROKER_NOTE})"
    return config


def ranking(values, what, fmt, lower_is_better=True, bounds=()):
    """A ranking sentence that says only what the repeats support (stats.rank: exact
    two-sided Mann-Whitney U over the repeats, p < 0.05). values: {config: [one value per
    repeat]}; what: e.g. 'the lowest CPU per delivered line'. A configuration in bounds is
    a lower bound: it is never said to be worse than another."""
    best, tied, unranked = stats.leading_group(values, lower_is_better)
    if best is None:
        return None
    value = fmt(statistics.median([v for v in values[best] if v is not None]))
    if best in bounds:
        value = "≥ " + value
    below = [c for c in bounds if c != best and c not in tied + unranked and c in values]
    others = [c for c in values if c != best and any(v is not None for v in values[c])]
    if others and len(unranked) == len(others):
        n = min(len([v for v in values[c] if v is not None]) for c in [best] + others)
        return (f"not enough repeats to rank {what} ({n} per variant here; a ranking needs "
                f"{_repeats_to_rank()}): best median `{best}`, {value}")
    worse = [c for c in others if c not in tied + unranked + below]
    notes = []
    if worse:
        notes.append(f"{', '.join(f'`{c}`' for c in worse)} worse beyond the noise of the repeats")
    if below:
        notes.append(f"{', '.join(f'`{c}`' for c in below)} a lower bound only")
    if unranked:
        notes.append(f"{', '.join(f'`{c}`' for c in unranked)} not enough repeats to rank")
    if not tied:
        head = f"`{best}` has {what} ({value})"
    else:
        head = (f"{', '.join(f'`{c}`' for c in [best] + tied)} are tied for {what} (best median "
                f"`{best}`, {value}; the others within the noise of the repeats)")
    return head + ("; " + "; ".join(notes) if notes else "")


def _repeats_to_rank():
    n = 1
    while not stats.can_rank(n, n):
        n += 1
    return n


# ---------------------------------------------------------------------------------------
# Chat ceilings (loadgen chat --find-ceiling) and how busy loadgen was

def fmt_fraction(v):
    return "–" if v is None else f"{v * 100:.0f}%"


def ceiling_section(rows):
    measured = aggregate.measured_ceilings(rows)
    if not measured:
        return ""
    out = ["## Chat ceilings\n",
           "`loadgen chat --find-ceiling` per variant and repeat (docs/loadgen.md): the highest "
           "rate per client at which deliveries kept up (≥ 99% of offered), p99 stayed under the "
           "bar, nothing was lost, late sends stayed ≤ 1% (not counting those made late only while "
           "the machine kept loadgen off its core) and loadgen's core stayed ≤ 70% busy. "
           "*Limited by* names what failed just above it, per search: `server` (it fell behind), "
           "`latency` (it kept up, p99 over the bar), `loss`, or `loadgen`. A ceiling where loadgen "
           "stopped a search is a lower bound (`≥`): the server was not shown at its limit. Server CPU "
           "per delivered line at the ceiling = its cores' busy fraction × its cores ÷ deliveries/s "
           "(one core unless *Server threads*).\n\n"]
    lines = []
    for c in aggregate.configs_in(rows) + aggregate.brokers_in(rows):
        if c not in measured:
            continue
        e = measured[c]
        col = lambda k: [num(r[k]) for r in e["rows"]]  # noqa: E731
        limits = {}
        for r in e["rows"]:
            limits[r["limited_by"] or "?"] = limits.get(r["limited_by"] or "?", 0) + 1
        lines.append([label(rows, c), ("≥ " if e["lower_bound"] else "") + cell(e["values"], fmt_num),
                      cell(col("rate_per_client"), fmt_num), cell(col("latency_p99_us"), fmt_us),
                      cell(col("server_cpu_per_delivery_us"), fmt_us),
                      cell(col("server_cpu_fraction"), fmt_fraction),
                      cell(col("loadgen_cpu_fraction"), fmt_fraction),
                      ", ".join(f"{k} ×{n}" for k, n in sorted(limits.items()))])
    out.append(table(["variant", "ceiling deliveries/s", "rate per client", "p99 at ceiling",
                      "server CPU / delivered line", "server core busy", "loadgen core busy",
                      "limited by"], lines))
    return "".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# What one core does: efficiency at a fixed load, capacity under a CPU quota

def efficiency_section(rows):
    rates = capacity.efficiency_rates(rows)
    if not rates:
        return ""
    configs = [c for c in aggregate.configs_in(rows) if aggregate.ok_rows(rows, c, "efficiency")]
    offered = {num(r["point"]): num(r["offered_deliveries_per_s"]) for r in rows
               if r["mode"] == "efficiency" and r["status"] == "ok"}
    out = ["## Efficiency: server CPU per delivered line at a fixed load\n\n",
           "Chat at fixed rates every server should sustain (docs/methodology.md *Efficiency*): the "
           "server's user + system CPU over the lines it delivered in the window, all its threads. "
           "Where a server's cores are nearly full, CPU per line is only the window divided by the "
           "rate, and every variant ties; so a point is **flagged**, and not ranked, where the "
           "server's cores were ≥ 90% busy, loadgen's over 70%, or the server did not keep up "
           "(under 99% of offered delivered, or p99 over 100 ms). A variant flagged at a rate is "
           "ranked there by its own ceiling instead (*Chat ceilings*).\n\n"]
    lines = []
    for c in configs:
        line = [label(rows, c)]
        for rate in rates:
            values, flagged = capacity.efficiency(rows, c, rate)
            text = cell(values, fmt_us) if values else "–"
            if flagged:
                text += f" **flagged** ×{len(flagged)}"
            busy = [num(r["server_cpu_fraction"]) for r in aggregate.ok_rows(rows, c, "efficiency")
                    if num(r["point"]) == rate]
            line.append(f"{text}; server {cell(busy, fmt_fraction)}")
        lines.append(line)
    out.append(table(["variant"] + [f"{r:g}/s per client ({fmt_num(offered.get(r))} deliveries/s)" for r in rates],
                     lines) + "\n")
    for rate in rates:
        sentence = ranking(capacity.efficiency_ranked(rows, configs, rate), "the least server CPU per delivered line",
                           fmt_us)
        if sentence:
            out.append(f"- At {rate:g}/s per client: {sentence}.\n")
    kinds = {}  # each flag's kind, its text before the detail in parentheses
    for c in configs:
        for rate in rates:
            for flags in capacity.efficiency(rows, c, rate)[1]:
                for flag in flags.split("; "):
                    kinds[flag.split(" (")[0]] = kinds.get(flag.split(" (")[0], 0) + 1
    if kinds:
        out.append("\nFlags in this run (points; `efficiency_flags` in the CSV has each one's figure): "
                   + "; ".join(f"{k} ×{n}" for k, n in sorted(kinds.items())) + ".\n")
    return "".join(out) + "\n"


def method_of_one_core(plan):
    """The Method bullets of the efficiency and capacity modes, as run."""
    out = []
    eff, cap = plan.get("efficiency"), plan.get("capacity")
    if eff:
        out.append(f"- **efficiency**: chat at {', '.join(f'{r:g}' for r in eff['rates'])} lines/s per client "
                   f"({eff['clients']} clients in rooms of {eff['room_size']}, {eff['duration_s']} s per rate), "
                   f"{eff['repeats']} repeat(s), repeat-major after the rest.\n")
    if cap:
        grid = cap.get("validate")
        out.append(f"- **capacity**: ceiling searches with the server under a CPU quota of {cap['quota']:g} of a core "
                   f"per {cap['period_ms']:g} ms period, p99 bar {cap['p99_bar_ms']:g} ms plus the quota's stall, "
                   f"{cap['repeats']} repeat(s)"
                   + (f"; validation grid: quotas {', '.join(f'{q:g}' for q in grid['quotas'])} × periods "
                      f"{', '.join(f'{p:g}' for p in grid['periods_ms'])} ms for {', '.join(grid['variants'])}"
                      if grid else "; no validation grid")
                   + (f"; server cores {', '.join(str(n) for n in cap['threads'])}" if cap.get("threads") else "")
                   + ".\n")
    return "".join(out)


def fmt_cell(c):
    return f"{c[0]:g} of {c[1]:g} ms"


def capacity_section(rows, plan):
    if not any(r["mode"] == "capacity" for r in rows):
        return ""
    default = capacity.default_cell(plan)
    configs = [c for c in aggregate.configs_in(rows) if capacity.capacity_rows(rows, c, default)
               and aggregate.threads_of(rows, c) == 1]
    transfers, transfer_why = capacity.method_transfers(capacity.cross_check(rows, plan))
    out = ["## Capacity per server core\n\n",
           "`loadgen chat --find-ceiling` with the server held to a CPU quota (a cgroup of its own; "
           "docs/methodology.md *Capacity per server core*), so that it falls behind within loadgen's "
           "reach. **Per server core** = the ceiling's deliveries/s ÷ the server's CPU seconds per "
           "second there, given only where the server stopped the search (`server` or `latency`), "
           "never `loadgen` or `loss` (loadgen withholds it and says why). The quota adds its own "
           "stall: a server that used its quota waits up to period × (1 − quota) before it runs again, "
           "so each search's p99 bar is the run's bar plus that stall. A figure is **published** only "
           "for a variant whose figure this run validated across quotas and periods, and only while "
           "the cross-check below holds; otherwise it is shown in parentheses, with why.\n\n"]
    lines = []
    for c in configs:
        rs = capacity.capacity_rows(rows, c, default)
        col = lambda k: [num(r[k]) for r in rs]  # noqa: E731
        limits = {}
        for r in rs:
            limits[r["limited_by"] or "none"] = limits.get(r["limited_by"] or "none", 0) + 1
        held = [num(r["server_throttled_periods"]) / num(r["server_periods"]) for r in rs
                if num(r["server_periods"])]
        figure, why = capacity.published(rows, c, plan)
        measured = capacity.per_core_values(rs)
        shown = fmt_num(figure) if figure else (f"({cell(measured, fmt_num)})" if measured else "–")
        withheld = sorted({r["per_core_withheld"] for r in rs if r["per_core_withheld"]})
        lines.append([c, fmt_cell(cell_of_rows(rs)), cell(col("quota_stall_ms"), lambda v: f"{v:g} ms"),
                      cell(col("deliveries_per_s"), fmt_num), cell(col("latency_p99_us"), fmt_us),
                      ", ".join(f"{k} ×{n}" for k, n in sorted(limits.items())),
                      cell(col("server_cores"), lambda v: f"{v:.3g}"), cell(held, fmt_fraction), shown,
                      (why + ("; withheld: " + "; ".join(withheld) if withheld else "")).replace("|", "/")])
    out.append(table(["variant", "quota of period", "quota's stall", "ceiling deliveries/s", "p99 at ceiling",
                      "limited by", "server cores used", "periods held back", "deliveries / server core-s",
                      "why"], lines) + "\n")
    out.append(validation_table(rows, configs))
    out.append(cross_check_table(rows, plan, transfers, transfer_why))
    return "".join(out)


def cell_of_rows(rs):
    return capacity.cell_of(rs[0])


def validation_table(rows, configs):
    checked = {c: capacity.validation(rows, c) for c in configs}
    checked = {c: v for c, v in checked.items() if len(v["cells"]) > 1}
    if not checked:
        return ("No validation grid in this run (`--capacity-validate`): no per-core figure is "
                "published.\n\n")
    cells = sorted({k for v in checked.values() for k in v["cells"]})
    lines = []
    for c, v in checked.items():
        separated = [f"{a} vs {b}, p = {p:.2g}" for a, b, verdict, p in v["pairs"] if verdict in ("a", "b")]
        lines.append([c] + [cell(v["cells"].get(k, []), fmt_num) if k in v["cells"] else "·" for k in cells]
                     + [f"{v['ratio']:.2f}" if v["ratio"] else "–",
                        v["verdict"] + (" (" + "; ".join(separated) + ")" if separated else "")])
    return ("### Validation: per-core capacity across quotas and periods\n\n"
            "Deliveries per server core-second at each quota and period (median (min–max) of the "
            "searches that gave one). It agrees when the noise test (*Method*) separates neither the "
            "smallest quota from the largest (each pooled over the periods) nor the shortest period "
            "from the longest (each pooled over the quotas), at p < 0.025 each, and every cell's "
            f"median is within ±{capacity.AGREE_WITHIN:.0%} of the cells' median (with three or four repeats a cell the test "
            "cannot separate even a twofold spread); max/min is the largest cell median over the "
            "smallest. A variant that does not agree does not scale linearly with its share of a "
            "core here, or cannot be shown to: its row is the curve.\n\n"
            + table(["variant"] + [fmt_cell(k) for k in cells] + ["max/min", "verdict"], lines) + "\n")


def cross_check_table(rows, plan, transfers, why):
    if not capacity.cross_check(rows, plan):
        return ("### Cross-check against ceilings without a quota\n\nNo `threads` or `eventlet` search in this run: "
                "the method is not cross-checked, so no per-core figure is published.\n\n")
    lines = []
    for entry in capacity.cross_check(rows, plan):
        verdict = ("within 20%" if entry["within"] else "**not within 20%**") if entry["within"] is not None \
            else entry["why"]
        left_out = f" ({len(entry['left_out'])} stopped by {', '.join(sorted(set(entry['left_out'])))} left out)" \
            if entry["left_out"] else ""
        lines.append([entry["variant"], cell(entry["per_core"], fmt_num),
                      cell(entry["ceiling"], fmt_num) + left_out,
                      f"{entry['ratio']:.2f}" if entry["ratio"] else "–", verdict])
    conclusion = {True: "The method transfers: ", False: "**The method does not transfer**, so no per-core "
                  "figure is published: ", None: "Not cross-checked, so no per-core figure is published: "}[transfers]
    return ("### Cross-check against ceilings without a quota\n\n"
            "`threads` and `eventlet` fall behind within loadgen's reach without a quota, so their "
            "ceilings there are the server's, on one whole core: the per-core figure under the quota "
            f"× 1.0 must predict them within {capacity.CROSS_CHECK_WITHIN:.0%}, from the searches the server stopped "
            f"(at least {capacity.CROSS_CHECK_MIN_SEARCHES}): "
            "one that loadgen stopped measured loadgen, not the server, and is left out.\n\n"
            + table(["variant", "per server core (quota)", "ceiling without a quota", "ratio", "verdict"], lines)
            + f"\n{conclusion}{why}.\n\n")


def several_cores_section(rows, plan):
    entries = capacity.several_cores(rows, plan)
    if not entries:
        return ""
    lines = []
    for e in entries:
        verdict = {"tied": f"grows {e['n']}-fold within the noise", "a": f"more than {e['n']}-fold",
                   "b": f"less than {e['n']}-fold", "too few": "not enough repeats to tell",
                   None: "–"}[e["verdict"]]
        lines.append([variants.config_label(e["config"]), e["n"], cell(e["ceilings"], fmt_num),
                      cell(e["base_ceilings"], fmt_num), f"{e['ratio']:.2f}" if e["ratio"] else "–",
                      verdict if e["valid"] else f"not judged: {e['why']}"])
    return ("### On several cores, under the same quota per core\n\n"
            "`--capacity-threads N`: the server on CPUs 0..N−1 under N × the quota, loadgen on every "
            "CPU with `--threads N` (it uses what the quota leaves), against the same variant on one "
            "core under the quota (loadgen then on CPU 1). Judged only where the server stopped "
            "every search on both sides; the verdict is the noise test of the N-core ceilings "
            "against N × the one-core ones.\n\n"
            + table(["variant", "server cores", "ceiling deliveries/s", "one core", "ratio", "verdict"], lines)
            + "\n")


def headline(rows, config, plan):
    """A variant's throughput headline: its published capacity per server core, else
    deliveries per server core-second at the first efficiency rate (1 ÷ CPU per line)
    where that point measures the server; '' without either."""
    figure, _why = capacity.published(rows, config, plan)
    if figure:
        return f"{fmt_num(figure)} per core-s (capacity)"
    rates = capacity.efficiency_rates(rows)
    if rates:
        values, flagged = capacity.efficiency(rows, config, rates[0])
        if values and not flagged:
            return f"{fmt_num(1e6 / statistics.median(values))} per core-s (efficiency at {rates[0]:g}/s)"
    return "–"


def server_threads_section(rows, machine, plan, best_dps, rss):
    """What --server-threads ran, on which cores, what it could not run here and why, and
    each configuration on N > 1 cores beside the same variant on one. Empty for a run made
    before the option existed."""
    st = plan.get("server_threads")
    if not st:
        return ""
    cores = machine.get("cores") or 0
    pins = machine.get("pinning", {}).get("server_threads", {})

    def pinned(n):
        pin = pins.get(str(n), {})
        if "skipped" in pin:
            return f"N = {n} skipped ({pin['skipped']})"
        return (f"N = {n}: server `taskset -c {pin.get('server_cpus', '?')}`, "
                f"loadgen `taskset -c {pin.get('loadgen_cpus', '?')}`")
    out = ["## Server threads\n",
           "`run_all.sh --server-threads 1,2,…` measures every variant again with its server on "
           "N cores, CPUs 0..N−1 (docs/methodology.md *Server threads*): `asio`, `coro`, `fibers` and "
           "their io_uring builds with `--threads N`, `threads` pinned to the N cores (a thread per "
           "connection already uses every core it is given), `go` with `GOMAXPROCS=N`. `loadgen` gets "
           "the next N cores and `--threads N`: with one core each (reference run of 2026-11-29), its "
           "core was already 59–66% busy at the ceilings of `asio`, `coro` and `fibers`, so it needs "
           "as many as the server. `uring`, `eventlet` "
           "and `seed` are one thread or one process by design and run at N = 1 only. Each N > 1 is "
           "its own series (config `asio-t2`, drawn as `asio ×2`, CSV column `server_threads`), never "
           "ranked with the one-core figures. The load comes from this machine only: `run_matrix.py` "
           "has no remote load hosts (`scripts/run_distributed.sh` is one chat run, "
           "docs/distributed.md), so no point here gives the server every core.\n\n",
           "; ".join(pinned(n) for n in st.get("counts", [])) + ".\n\n"]
    if cores < 4:
        out.append(f"**This machine cannot show scaling.** It has {cores} cores; one must stay for "
                   "loadgen, and N = 2 needs 4 (two for the server, two for loadgen). What it measures "
                   "instead is what crossing threads costs: `scripts/cross_thread_cost.py cpu` runs "
                   "`--threads 2` with both server threads pinned to one core against `--threads 1` "
                   "(and, with `--floor`, two one-thread servers sharing that core with nothing crossing), "
                   "and `scripts/cross_thread_cost.py rss` the idle memory per connection at "
                   "`--threads 4` (docs/servers.md *Several threads*).\n\n")
    lines = []
    for c in aggregate.configs_in(rows):
        n = aggregate.threads_of(rows, c)
        if n == 1:
            continue
        one = variants.config_name(aggregate.variant_of(rows, c))
        ratio = (f" ({best_dps[c] / best_dps[one]:.2f}× one core)"
                 if best_dps.get(c) and best_dps.get(one) else "")
        lines.append([variants.config_label(c), n, fmt_num(best_dps.get(c)) + ratio,
                      fmt_num(best_dps.get(one)), fmt_bytes(rss.get(c)), fmt_bytes(rss.get(one))])
    if lines:
        out.append(table(["variant", "server cores", "chat deliveries/s (ceiling or best sustained)",
                          "the same, one core", "RSS / idle conn", "the same, one core"], lines) + "\n")
    skipped = {}
    for r in aggregate.skipped(rows):
        skipped.setdefault((r["config"], r["why"]), []).append(r["mode"])
    if skipped:
        out.append(table(["skipped", "modes", "why"],
                         [[variants.config_label(c), ", ".join(m), why.replace("|", "/")]
                          for (c, why), m in skipped.items()]) + "\n")
    return "".join(out)


def loadgen_busy_section(rows, per_client):
    """How busy loadgen's own core was at each chat step (CPU s ÷ window), flagged where
    loadgen reported itself saturated: there the step measured loadgen as much as the server."""
    pts = points(rows, "chat")
    lines = []
    for c in shown(rows, "chat"):
        line = [label(rows, c)]
        for p in pts:
            step = [r for r in aggregate.ok_rows(rows, c, "chat") if num(r["point"]) == p]
            text = cell([num(r["loadgen_cpu_fraction"]) for r in step], fmt_fraction)
            if any(r["loadgen_saturated"] == "True" for r in step):
                text += " **saturated**"
            line.append(text)
        lines.append(line)
    return ("**Loadgen's core busy** (its CPU s ÷ window; **saturated** where loadgen flagged "
            "`loadgen_saturated` in any repeat: that step's figures bound the server from below)\n\n"
            + table(["variant"] + [per_client(p) for p in pts], lines) + "\n")


def sustained_by_repeat(rows, config):
    """Per repeat, the deliveries/s of the highest chat step with p99 ≤ the bar."""
    out = {}
    for r in aggregate.ok_rows(rows, config, "chat"):
        if aggregate.kept_up(r):
            rate, dps = num(r["point"]), num(r["deliveries_per_s"])
            if r["repeat"] not in out or rate > out[r["repeat"]][0]:
                out[r["repeat"]] = (rate, dps)
    return [dps for _rate, dps in out.values()]


def throughput_finding(rows, base, measured):
    if any(c in measured for c in base):
        values = {c: measured[c]["values"] for c in base if c in measured}
        bounds = [c for c in values if measured[c]["lower_bound"]]
        sentence = ranking(values, "the highest chat ceiling in deliveries per second", fmt_num,
                           lower_is_better=False, bounds=bounds)
        return (f"- **Throughput** (one core, rooms of 10, p99 ≤ the search's bar): {sentence}."
                + (f" loadgen, not the server, stopped a search for {', '.join(f'`{c}`' for c in bounds)}: "
                   + ("that figure is a lower bound." if len(bounds) == 1 else "those figures are lower bounds.")
                   if bounds else ""))
    values = {c: sustained_by_repeat(rows, c) for c in base}
    sentence = ranking(values, "the most deliveries per second sustained", fmt_num, lower_is_better=False)
    if not sentence:
        return None
    return (f"- **Throughput** (one core, p99 ≤ {aggregate.KEPT_UP_P99_US / 1000:g} ms): {sentence}. "
            "No ceiling search in this run: steps where loadgen saturated its own core bound this "
            "from below.")


def seed_section(rows):
    """eventlet (the seed's model, with the protocol's limits) against the seed's code as
    written, on the seed's own workload: broadcast, by the same noise test."""
    seeds = [c for c in aggregate.configs_in(rows) if aggregate.variant_of(rows, c) == variants.SEED]
    if not seeds or "eventlet" not in aggregate.configs_in(rows) or not points(rows, "broadcast"):
        return ""
    seed = seeds[0]
    lines = []
    for p in points(rows, "broadcast"):
        for column, what, fmt in [("completion_p50_us", "completion p50", fmt_us),
                                  ("server_cpu_s", "server CPU", lambda v: f"{v:.3g} s")]:
            a = point_values(rows, "eventlet", "broadcast", column, p)
            b = point_values(rows, seed, "broadcast", column, p)
            if not a or not b:
                continue
            verdict, pv = stats.rank(a, b)
            text = {"a": "`eventlet` better", "b": "the seed better", "tied": "tied",
                    "too few": "not enough repeats to rank"}[verdict]
            lines.append([f"{p:,.0f}", what, cell(a, fmt), cell(b, fmt),
                          text + (f" (p = {pv:.3g})" if pv is not None else "")])
    if not lines:
        return ""
    return ("## The seed's model: `eventlet` against the seed as written\n\n"
            f"`{seed}` is {variants.SEED_NOTE} (servers/seed/). Same broadcast runs as above; the verdict "
            "is the noise test of *Method*.\n\n"
            + table(["clients", "figure", "eventlet", "seed", "verdict"], lines) + "\n")


def peers_section(rows, machine):
    """The reference servers' idle figures (run_all.sh --peers), each with its Debian
    version and the setting its memory at zero connections follows from."""
    info = machine.get("peers") or {}
    if not info:
        return ""
    lines = []
    for x, i in info.items():
        last = aggregate.idle_last_steps(rows, x)
        if i.get("skipped"):
            lines.append([x, i.get("version") or "–", "skipped: " + i["skipped"], "–", "–", "–"])
            continue
        if not last:
            lines.append([x, i.get("version") or "–", "no ok run (see *Failures*)", "–", "–", i.get("setting")])
            continue
        col = lambda k: [num(r[k]) for r in last]  # noqa: E731
        lines.append([x, i.get("version"), cell(col("clients"), fmt_num), cell(col("rss_slope_bytes"), fmt_bytes),
                      cell(col("rss_zero_bytes"), fmt_bytes), i.get("setting")])
    return ("### Reference servers\n\n"
            f"{variants.PEER_NOTE[0].upper() + variants.PEER_NOTE[1:]}: Debian's builds, one process, loopback, "
            "the same ramp and pinning as the variants (docs/methodology.md *Peers*). nginx's connections "
            "send nothing; a broker's have made its handshake (NATS `CONNECT`, Redis `HELLO 3`, MQTT "
            "`CONNECT`): each is a connected client. They never rank as a variant to deploy. RSS at 0 "
            "connections is the intercept, set largely by the setting beside it.\n\n"
            + table(["server", "Debian version", "connections reached", "RSS / conn",
                     "RSS at 0 connections", "setting"], lines) + "\n")


def among_peers(rows, rss, configs):
    """Where each variant's RSS per idle connection falls among the reference servers'."""
    peer_rss = {x: stats.median([num(r["rss_slope_bytes"]) for r in aggregate.idle_last_steps(rows, x)])
                for x in aggregate.peers_in(rows)}
    peer_rss = {x: v for x, v in peer_rss.items() if v is not None}
    if not peer_rss:
        return ""
    order = ", ".join(f"{x} {fmt_bytes(v)}" for x, v in sorted(peer_rss.items(), key=lambda kv: kv[1]))
    parts = []
    for c in configs:
        v = rss.get(c)
        if v is None:
            continue
        below = [x for x, pv in peer_rss.items() if v < pv]
        parts.append(f"`{c}` {fmt_bytes(v)} (less than {len(below)} of the {len(peer_rss)})")
    return (f"- **Among the reference servers** ({order}; {variants.PEER_NOTE}): " + "; ".join(parts) + ".")


def brokers_section(rows, machine):
    """What the brokers' rows in the tables above are, and where their protocols do not do
    what the chat protocol does (run_all.sh --peers nats,redis,mosquitto)."""
    brokers = [x for x in aggregate.brokers_in(rows)
               if any(aggregate.ok_rows(rows, x, m) for m in ("broadcast", "chat", "ceiling"))]
    if not brokers:
        return ""
    info = machine.get("peers") or {}
    lines = [[x, (info.get(x) or {}).get("version") or "–", f"`{variants.PEER_BY_NAME[x].protocol}`",
              variants.BROKER_DIFFERENCES.get(x, "–")] for x in brokers]
    return ("## Brokers beside the chat servers\n\n"
            "The rows marked *broker* above are Debian's builds of brokers people deploy instead of writing a "
            "chat server, under the same load: `loadgen --protocol` speaks each one's protocol (docs/loadgen.md "
            "*Protocols*) with the same chat line as payload (sender, sequence number, intended send time), "
            "one subject, channel or topic per room, and judges latency, loss, duplicates and order as for "
            "the variants. Each runs on the server's one core (`nats-server` with `GOMAXPROCS=1`), so the "
            "ceilings compare deliveries per server core. They are not chat servers (no commands, no "
            "`/stats`, none of the limits of docs/protocol.md) and never rank as a variant to deploy. "
            "Where their protocols differ (docs/methodology.md *Peers*, docs/reliability.md *Brokers*):\n\n"
            + table(["broker", "Debian version", "loadgen --protocol", "what differs"], lines) + "\n")


def chat_rates(rows, chat):
    """The rates the chat curve ran at (the run may extend --chat-rates past the ceilings)."""
    used = points(rows, "chat")
    return ", ".join(f"{x:g}" for x in used) if used else chat.get("rates")


def noise_rule(rows, plan):
    """The Method paragraph on rankings: which test, and what this run's repeats allow."""
    n = plan.get("repeats")
    need = _repeats_to_rank()
    text = ("\n**Differences beyond noise.** Two variants are ranked only where the exact two-sided "
            "Mann-Whitney U test over their repeats gives p < 0.05 (scripts/chatbench/stats.py, "
            "docs/methodology.md); otherwise they are *tied*. It assumes nothing about the "
            f"distribution, but needs at least {need} repeats per variant to reach p < 0.05 at all "
            f"(3 vs 3 cannot go below p = {stats.smallest_p(3, 3):.2g}).")
    if n is not None and not stats.can_rank(n, n):
        text += f" This run has {n} repeat(s): not enough repeats to rank, so no ranking is stated."
    return text + "\n"


CACHE_SHOWN = 64  # bytes per connection: smaller slab-cache figures are noise on a busy machine


def resolution_line(rows, configs):
    """One line for the points whose parts and whole differ by more than 20% but by less than
    the whole's resolution (loadgen's whole_resolution_bytes): not flagged, and not checked."""
    unresolved = [r for c in configs for r in aggregate.idle_last_steps(rows, c)
                  if results_csv.memory_result(r) and str(r.get("host_within_resolution")) in ("True", "true", "1")
                  and num(r.get("host_parts_bytes")) and num(r.get("host_whole_bytes"))
                  and abs(num(r["host_parts_bytes"]) - num(r["host_whole_bytes"])) > 0.2 * num(r["host_whole_bytes"])]
    if not unresolved:
        return ""
    counts = sorted({int(num(r["point"])) for r in unresolved})
    worst = max(num(r["host_whole_resolution_bytes"]) for r in unresolved)
    return (f"\nAt {', '.join(f'{n:,}'.replace(',', ' ') for n in counts)} connections the whole cannot check the "
            f"parts: in {len(unresolved)} point(s) they differ by more than 20% but by less than the per-CPU "
            f"slabs of the caches the ramp grew (at its start and end), up to {fmt_bytes(worst)} per connection, "
            "whose free slots no reading sees (docs/methodology.md, \"Memory per connection\"); "
            "thousands of connections resolve it.\n")


def server_host_section(rows, configs):
    """The server host's cost per idle connection as named parts, beside the whole of the
    same scope; runs whose parts and whole disagree (or that started on a machine that was
    not quiet) are listed apart with the reason, not given as results."""
    lines, flagged = [], []
    for c in configs:
        last = aggregate.idle_last_steps(rows, c)
        flagged += [[c, r["repeat"], r["memory_flags"]] for r in last if not results_csv.memory_result(r)]
        good = [r for r in last if results_csv.memory_result(r)]
        if not good:
            continue
        col = lambda k: [num(r.get(k)) for r in good]  # noqa: E731
        lines.append([c, len(good)] + [cell(col(f"host_{k}_bytes"), fmt_bytes) for k in results_csv.HOST_PARTS]
                     + [cell(col("host_parts_bytes"), fmt_bytes), cell(col("host_whole_bytes"), fmt_bytes),
                        cell(col("host_whole_meminfo_bytes"), fmt_bytes),
                        cell(col("host_slab_slack_used_bytes"), fmt_bytes),
                        cell(col("host_reclaimable_slab_bytes"), fmt_bytes),
                        cell(col("host_mem_available_bytes"), fmt_bytes),
                        cell(col("client_end_bytes"), fmt_bytes)])
    out = ["### Server host per connection\n\n",
           "What one more idle connection costs the machine the server runs on, as named parts "
           "(least-squares slopes over the ramp): the server's RSS, its page tables (VmPTE), "
           "kernel stacks (threads × the kernel's stack size), the kernel's socket objects for "
           "the server's end, and other kernel objects (epoll items, …) by slab cache. The client's "
           "end, measured apart (server stopped, loadgen's sockets reset, slab drop read), is taken "
           "out of every column but the last: it is not on the server in a deployment. **Whole** = "
           "the drop of free memory (MemFree plus the per-CPU page lists, less the page cache's own change), less the client's end and loadgen's own growth; **meminfo sum** = "
           "the same for AnonPages + Slab + KernelStack + PageTables. Both count back the **slack filled**: "
           "objects the ramp put into empty slots of slabs allocated before it (what earlier work "
           "freed), which took no free memory; at a few hundred connections it can be most of a "
           "connection's kernel objects. Reclaimable slab is part of "
           "the kernel parts, shown apart. **MemAvailable drop** counts reclaimable slab as free "
           "although a socket's inode and dentry stay pinned while it is open: beside, not a "
           "result.\n\n"]
    if lines:
        out.append(table(["variant", "runs", "RSS", "page tables", "kernel stacks", "sockets",
                          "other kernel", "parts", "whole", "meminfo sum", "slack filled", "reclaimable slab",
                          "MemAvailable drop", "client end"], lines))
        out.append(resolution_line(rows, configs))
        out.append("\n![server host per connection](server_host_memory.png)\n\n")
        out.append("The kernel parts by slab cache, bytes per connection, of each configuration's "
                   f"first run that adds up (caches under {CACHE_SHOWN} B left out here; all are in "
                   "`host_kernel_caches`):\n\n")
        for c in configs:
            good = [r for r in aggregate.idle_last_steps(rows, c) if results_csv.memory_result(r)]
            if good:
                shown = [x for x in good[0]["host_kernel_caches"].split()
                         if abs(float(x.partition("=")[2])) >= CACHE_SHOWN]
                out.append(f"- `{c}`: {', '.join(shown) or '–'}\n")
        out.append("\n")
    else:
        out.append("No idle run gave a server-host figure that adds up.\n\n")
    if flagged:
        out.append("Flagged, not given as results (parts and whole disagree by more than 20% and by more than "
                   "the whole's resolution, "
                   "the whole is below the server's own RSS, a part could not be measured, or "
                   "the machine was not quiet before the point):\n\n")
        out.append(table(["variant", "repeat", "why"], flagged))
        out.append("\n")
    return "".join(out)


def main():
    out = results_csv.results_dir_argument("report.py")
    rows = results_csv.read_csv(out / "results.csv")
    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").exists() else {}
    plan = json.loads((out / "plan.json").read_text()) if (out / "plan.json").exists() else {}
    limits = machine.get("limits", {})
    configs = aggregate.configs_in(rows)
    md = []
    w = md.append

    w(f"# chatbench results: {machine.get('date', '?')[:10]}, {machine.get('host', '?')}\n")
    w("Every number is defined in [docs/methodology.md](../../docs/methodology.md) (relative to "
      "a run under `results/`). Cells are the median of the repeats with (min–max); "
      "`–` means not measured or not reached (see *Failures*). Redraw with "
      "`scripts/plot.py DIR && scripts/report.py DIR`.\n")

    w("## Machine\n")
    pk = machine.get("packages", {})
    w(table(["", ""], [
        ["CPU", f"{machine.get('cpu')} ({machine.get('cores')} hardware threads)"],
        ["kernel / OS", f"{machine.get('kernel')} / {machine.get('os')}"],
        ["compiler", machine.get("compiler")],
        ["flags, build type", f"`{machine.get('compiler_flags')}`, {machine.get('build_type')}"],
        ["Boost", machine.get("boost")],
        ["Python, eventlet, greenlet, matplotlib",
         f"{machine.get('python')}, {pk.get('python3-eventlet')}, {pk.get('python3-greenlet')}, "
         f"{pk.get('python3-matplotlib')}"],
        ["git commit", f"`{machine.get('git_commit')}`" + (" (tracked files modified)" if machine.get("git_dirty") else "")],
        ["limits", f"ulimit -n {limits.get('ulimit_n_soft')}/{limits.get('ulimit_n_hard')}, "
                   f"ports {limits.get('ip_local_port_range')}, pid_max {limits.get('pid_max')}, "
                   f"max_map_count {limits.get('max_map_count')}, threads-max {limits.get('threads_max')}, "
                   f"memory {fmt_bytes(limits.get('mem_total_bytes'))}"],
        ["idle target", f"{machine.get('idle_target', {}).get('clients')} connections, set by "
                        f"{machine.get('idle_target', {}).get('binding_limit')}"],
        ["pinning", f"server `taskset -c {machine.get('pinning', {}).get('server_cpus')}`, loadgen "
                    f"`taskset -c {machine.get('pinning', {}).get('loadgen_cpus')}`; microbench on both"],
        ["load average", f"start {machine.get('loadavg_start')}; end {machine.get('loadavg_end')}"],
        ["CPU busy at start", "not recorded" if machine.get("cpu_busy_start") is None else
         f"{machine['cpu_busy_start']:.2f} cores' worth over the {BUSY_WINDOW_S:g} s before the matrix"],
        ["command", f"`{machine.get('command')}`"],
        ["duration", f"{machine.get('duration_s')} s"],
    ]))
    for warning in machine.get("warnings", []):
        w(f"- **Warning:** {warning}\n")
    w("\nVerification (one line relayed between two clients before anything is timed): " +
      ", ".join(f"{v} {why}" for v, why in machine.get("verification", {}).items()) + ".\n")

    w("## Method\n")
    idle, bc, chat = plan.get("idle", {}), plan.get("broadcast", {}), plan.get("chat", {})
    w(f"Each measurement starts a fresh server (pinned to one CPU) and runs one `loadgen` "
      f"(pinned to the other, `--threads 1`, `--server-pid`; on more cores: *Server threads*); "
      f"{plan.get('repeats')} repeat(s), "
      "repeat-major so that drift spreads over every variant.\n\n"
      f"- **idle**: ramp to {idle.get('clients')} connections in {idle.get('steps')} steps; no "
      "bytes sent; memory sampled after each step once RSS is stable.\n"
      f"- **broadcast**: {bc.get('clients')} clients in one room, {bc.get('messages')} lines of "
      f"{bc.get('size')} B, one every {bc.get('interval_ms')} ms from one sender.\n"
      f"- **chat**: {chat.get('clients')} clients in rooms of {chat.get('room_size')}, every client "
      f"sending open-loop at {chat_rates(rows, chat)} lines/s each, stepped up in one run, "
      f"{chat.get('duration_s')} s measured per rate after {chat.get('warmup_s')} s warm-up.\n"
      f"- Extra stack sizes (idle only): threads `{plan.get('stacks', {}).get('threads')}`, "
      f"fibers `{plan.get('stacks', {}).get('fibers')}`.\n"
      "- **microbench**: `build/bin/microbench` once (docs/microbench.md).\n")
    w(method_of_one_core(plan))
    w(noise_rule(rows, plan))

    w("## Idle memory\n")
    if any(aggregate.ok_rows(rows, c, "idle") for c in configs):
        lines = []
        for c in configs:
            last = aggregate.idle_last_steps(rows, c)
            if not last:
                continue
            col = lambda k: [num(r[k]) for r in last]  # noqa: E731
            lines.append([c, cell(col("clients"), fmt_num), cell(col("rss_slope_bytes"), fmt_bytes),
                          cell(col("system_slope_bytes"), fmt_bytes), cell(col("vsz_slope_bytes"), fmt_bytes),
                          cell(col("threads_slope"), fmt_num), cell(col("rss_bytes"), fmt_bytes),
                          cell(col("vsz_bytes"), fmt_bytes)])
        w("Per connection = least-squares slope over the ramp steps. MemAvailable drop = slope "
          "of −MemAvailable over the whole machine, both ends and loadgen included, reclaimable "
          "slab counted as free: not the server's cost (see *Server host per connection*).\n\n")
        w(table(["variant", "connections reached", "RSS / conn", "MemAvailable drop / conn", "VSZ / conn",
                 "threads / conn", "RSS at top", "VSZ at top"], lines))
        w("\n![memory per connection](memory_per_connection.png)\n\n![server memory](server_memory.png)\n\n")
        w(server_host_section(rows, configs))
    w(peers_section(rows, machine))

    if points(rows, "broadcast"):
        w("## Broadcast\n")
        clients = lambda p: f"{p:,.0f} clients"  # noqa: E731
        for col, title in [("completion_p50_us", "completion p50"), ("completion_p95_us", "completion p95"),
                           ("completion_p99_us", "completion p99"), ("completion_max_us", "completion max")]:
            w(f"**Broadcast {title}** (intended send time to the last receiver's arrival)\n\n")
            w(metric_table(rows, "broadcast", col, fmt_us, clients) + "\n")
        w("**Broadcast lines lost** (gaps never filled, and lines missing at receivers the "
          "server closed)\n\n")
        w(metric_table(rows, "broadcast", "lines_lost", fmt_num, clients) + "\n")
        w("**Loadgen's core busy** (its CPU s ÷ the run's window)\n\n")
        w(metric_table(rows, "broadcast", "loadgen_cpu_fraction", fmt_fraction, clients) + "\n")
        w("![broadcast latency](broadcast_latency.png)\n")
        w(seed_section(rows))

    if points(rows, "chat"):
        w("## Chat\n")
        offered = {num(r["point"]): num(r["offered_deliveries_per_s"]) for r in rows
                   if r["mode"] == "chat" and r["status"] == "ok"}
        per_client = lambda p: f"{p:g}/s per client ({fmt_num(offered[p])} deliveries/s offered)"  # noqa: E731
        w("**Deliveries per second** (offered: clients × rate × (room size − 1))\n\n")
        w(metric_table(rows, "chat", "deliveries_per_s", fmt_num, per_client) + "\n")
        for col, title in [("latency_p50_us", "latency p50"), ("latency_p99_us", "latency p99"),
                           ("latency_p999_us", "latency p99.9")]:
            w(f"**Chat {title}**\n\n" + metric_table(rows, "chat", col, fmt_us, per_client) + "\n")
        w("**Server CPU per delivered line** (user+sys ÷ deliveries in the window)\n\n")
        w(metric_table(rows, "chat", "server_cpu_per_delivery_us", fmt_us, per_client) + "\n")
        w("**Chat lines lost, whole run** (gaps never filled, and lines missing at receivers "
          "the server closed)\n\n")
        w(metric_table(rows, "chat", "lines_lost", fmt_num, per_client) + "\n")
        w("**Chat lines outstanding at the end** (still missing at open receivers after the "
          "last line from their sender: the server was behind, not losing)\n\n")
        w(metric_table(rows, "chat", "lines_outstanding", fmt_num, per_client) + "\n")
        w(loadgen_busy_section(rows, per_client))
        w("![latency spectrum](latency_spectrum.png)\n\n![chat throughput](chat_throughput.png)\n")
    w(ceiling_section(rows))
    w(efficiency_section(rows))
    w(capacity_section(rows, plan))
    w(several_cores_section(rows, plan))
    w(brokers_section(rows, machine))

    best_dps, measured = {}, aggregate.measured_ceilings(rows)
    for c in configs:
        value, _rate = aggregate.sustained(rows, c)
        if c in measured:
            best_dps[c] = statistics.median(measured[c]["values"])
        elif value:
            best_dps[c] = value
    if best_dps:
        w("## Throughput against the system-call ceiling\n")
        top, name = aggregate.write_ceiling(rows)
        w(f"Ceiling: `{name}`, {fmt_num(top)} lines/s written by one thread, one line per `write`.\n\n"
          if top else "No microbench syscall ceiling in this run.\n\n")
        w("Per variant: its measured chat ceiling (median of the searches, *Chat ceilings* above; "
          "`≥` where loadgen stopped the search) or, without a search, the best sustained: the "
          f"highest chat step whose p99 latency stayed ≤ {aggregate.KEPT_UP_P99_US / 1000:g} ms "
          "(deliveries/s counts what arrived in the step's window, which can include a backlog from "
          "the step before, so latency is what shows a server falling behind). A fraction above 1 "
          "means the variant writes several lines per system call.\n\n")
        w(table(["variant", "deliveries/s", "from", "fraction of ceiling"],
                [[c, ("≥ " if measured.get(c, {}).get("lower_bound") else "") + fmt_num(v),
                  "ceiling search" if c in measured else "best sustained step",
                  f"{v / top:.2f}" if top else "–"] for c, v in best_dps.items()]))
        w("\n![ceiling](ceiling.png)\n")

    mb = [r for r in rows if r["mode"] == "microbench" and r["status"] == "ok"]
    if mb:
        w("## Micro-benchmarks\n")
        w(table(["benchmark", "real time", "CPU time", "items/s", "memory per unit (total)", "RSS per unit"],
                [[f"`{r['bench_name']}`", f"{fmt_num(num(r['real_time_ns']))} ns",
                  f"{fmt_num(num(r['cpu_time_ns']))} ns", fmt_num(num(r["items_per_second"])),
                  fmt_bytes(num(r["total_per_unit"])), fmt_bytes(num(r["rss_per_unit"]))]
                 for r in mb if not r["bench_name"].startswith("protocol/")]))
        w("\n![microbench](microbench.png)\n")

    w("## Which variant to deploy\n")
    # One server core each: configurations on more (--server-threads) have their own section.
    all_configs, configs = configs, [c for c in configs if aggregate.threads_of(rows, c) == 1]
    base = [c for c in configs if "@" not in c and variants.BY_NAME[aggregate.variant_of(rows, c)].deployable]
    mem = {c: stats.median([num(r["host_whole_bytes"]) for r in aggregate.idle_last_steps(rows, c) if results_csv.memory_result(r)])
           for c in configs}
    rss = {c: stats.median([num(r["rss_slope_bytes"]) for r in aggregate.idle_last_steps(rows, c)]) for c in all_configs}
    bc_pts = points(rows, "broadcast")
    top_bc = max(bc_pts, default=None)
    p99 = {c: stats.median(point_values(rows, c, "broadcast", "completion_p99_us", top_bc)) for c in base}
    # CPU per delivery: the efficiency mode's first rate where it ran (its repeats are the
    # ones made for this, and its flagged points are left out); else the chat curve at the
    # highest rate every variant kept up with: past its saturation a server's window CPU
    # pays for lines of earlier steps.
    eff_rates = capacity.efficiency_rates(rows)
    if eff_rates:
        cpu_rate, cpu_source = eff_rates[0], "efficiency"
        cpu_repeats = {x: capacity.efficiency(rows, x, cpu_rate)[0] for x in base}
        cpu_ranked = capacity.efficiency_ranked(rows, base, cpu_rate)
        cpu_flagged = [x for x in base if capacity.efficiency(rows, x, cpu_rate)[1]]
    else:
        cpu_rate, cpu_source = aggregate.common_rate([r for r in rows if r["config"] in base]), "chat"
        cpu_repeats = {x: point_values(rows, x, "chat", "server_cpu_per_delivery_us", cpu_rate) for x in base}
        cpu_ranked, cpu_flagged = cpu_repeats, []
    cpu = {c: stats.median(v) for c, v in cpu_repeats.items() if v}
    loc = machine.get("code_lines", {})
    lines = []
    for c in configs:
        v = aggregate.variant_of(rows, c)
        lines.append([label(rows, c), fmt_bytes(rss.get(c)), fmt_bytes(mem.get(c)),
                      fmt_us(p99.get(c)), headline(rows, c, plan),
                      ("≥ " if measured.get(c, {}).get("lower_bound") else "") + fmt_num(best_dps.get(c)), f"{cpu[c]:.3g} µs" if cpu.get(c) else "–",
                      code_size(loc.get(v, {}))])
    w(table(["variant", "RSS / idle conn", "server host / idle conn",
             f"broadcast p99 at {fmt_num(top_bc)} clients", "deliveries per server core-s",
             "chat ceiling deliveries/s" if measured else "best sustained deliveries/s",
             f"CPU / delivery at {fmt_num(cpu_rate)}/s per client ({cpu_source})", "lines of code"], lines))
    shared = loc.get("shared", {})
    w(f"\nLines of code: non-blank, non-comment lines under `servers/<variant>/`, plus (after "
      f"a +) those of the `servers/net/` headers it includes, where the Asio-based variants "
      f"keep what they share ({shared.get('net', '?')} lines in all); every C++ variant also "
      f"uses `servers/common/` ({shared.get('common', '?')} lines), the protocol module.\n\n")
    findings = []
    c, v = best([(c, rss.get(c)) for c in configs])
    if c:
        thr = rss.get("threads")
        rss_repeats = {x: [num(r["rss_slope_bytes"]) for r in aggregate.idle_last_steps(rows, x)] for x in configs}
        findings.append("- **Many mostly idle connections:** "
                        + ranking(rss_repeats, "the lowest server process memory per idle connection", fmt_bytes)
                        + (f"; default `threads` {fmt_bytes(thr)}" if thr else "") + ". Per connection the "
                        f"server host as a whole gave {fmt_bytes(mem.get(c))} for `{c}`."
                        + " The seed's 8 MiB per thread is virtual size (VSZ), not memory in use.")
    findings.append(among_peers(rows, rss, base))
    p99_repeats = {x: point_values(rows, x, "broadcast", "completion_p99_us", top_bc) for x in base}
    sentence = ranking(p99_repeats, "the best broadcast completion p99", fmt_us)
    if sentence:
        missing = [x for x in base if not p99.get(x)]
        findings.append(f"- **Fan-out latency:** at {fmt_num(top_bc)} clients, {sentence}"
                        + (f"; not reached by {', '.join(missing)}" if missing else "") + ".")
    findings.append(throughput_finding(rows, base, measured))
    sentence = ranking(cpu_ranked, "the least server CPU per delivered line", fmt_us)
    if sentence:
        findings.append(f"- **CPU per line** at {fmt_num(cpu_rate)} lines/s per client ({cpu_source}): {sentence}"
                        + (f"; not ranked (a repeat flagged): {', '.join(cpu_flagged)}" if cpu_flagged else "") + ".")
    c, v = best([(c, code_total(loc.get(c, {}))) for c in base])
    if c:
        findings.append(f"- **Simplest code:** `{c}` ({code_size(loc.get(c, {}))} lines).")
    w("\n".join(f for f in findings if f) + "\n\n")
    w("Read these with the caveats below: a choice for production follows from which of these "
      "a deployment is short of (memory, tail latency, CPU, people's time), not from one column.\n\n")

    w(server_threads_section(rows, machine, plan, best_dps, rss))

    w("## Caveats of this machine\n")
    w(f"- {machine.get('cores')} cores: the server has one, loadgen the other; a server that "
      "could use more cores (threads) is held to one here, and loadgen itself can saturate its "
      "core (`loadgen_saturated` in the CSV).\n"
      "- Loopback only: no network latency, no NIC, no interrupts on another core; the kernel's "
      "TCP cost is in both processes' system time.\n"
      f"- Descriptor cap: ulimit -n {limits.get('ulimit_n_hard')} per process bounds every count "
      "(the idle target above); this says nothing about what a variant does at 100 000.\n"
      "- Shared virtual machine: other work shows as noise (load average above); a difference "
      "is stated only where the repeats' noise test passes (*Method*).\n")

    fails = aggregate.failures(rows)
    if fails:
        w("\n## Failures and points not reached\n")
        w(table(["variant", "mode", "point", "repeat", "why"],
                [[r["config"], r["mode"], r["point"], r["repeat"], r["why"].replace("|", "/")] for r in fails]))
    (out / "report.md").write_text("\n".join(part.rstrip("\n") + "\n" for part in md if part))
    print(f"report.py: {out / 'report.md'}")


if __name__ == "__main__":
    main()
