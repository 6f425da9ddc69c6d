"""Figures read back from results.csv rows: configurations in order, medians over repeats,
chat ceilings and the rates kept up with, as the plots, the report and compare.py show them
(docs/methodology.md, "results.csv")."""
import statistics

from chatbench.results_csv import num, server_threads_of
from chatbench.variants import BY_NAME, NAMES, PEER_BY_NAME, PEER_NAMES


def configs_in(rows):
    """Configurations in a stable order: variant order, one server core first, default stack
    first. Those only skipped (--server-threads) are left out: they have no figures."""
    seen = {(r["variant"], server_threads_of(r), r["stack_size"], r["config"]) for r in rows
            if r["variant"] in BY_NAME and r["status"] != "skipped"}
    order = sorted(seen, key=lambda t: (NAMES.index(t[0]), t[1], t[2] != "", t[2]))
    return [c for _, _, _, c in order]


def peers_in(rows):
    """The reference servers measured, in the registry's order."""
    seen = {r["config"] for r in rows if r["variant"] in PEER_NAMES}
    return [x for x in PEER_NAMES if x in seen]


def brokers_in(rows):
    """The brokers measured (the peers that speak a protocol of their own), in the
    registry's order: beside the variants in every mode, never ranked with them."""
    return [x for x in peers_in(rows) if PEER_BY_NAME[x].broker]


def variant_of(rows, config):
    return next(r["variant"] for r in rows if r["config"] == config)


def threads_of(rows, config):
    """The server cores a configuration ran on (server_threads)."""
    return server_threads_of(next(r for r in rows if r["config"] == config))


def series(rows, config, mode, column, x="point"):
    """[(x, median, min, max, n)] over repeats of the ok rows of one configuration and mode."""
    groups = {}
    for r in rows:
        if r["config"] == config and r["mode"] == mode and r["status"] == "ok":
            xv, yv = num(r[x]), num(r[column])
            if xv is not None and yv is not None:
                groups.setdefault(xv, []).append(yv)
    return [(xv, statistics.median(v), min(v), max(v), len(v)) for xv, v in sorted(groups.items())]


def idle_series(rows, config, column):
    """Idle rows come in steps whose client counts differ slightly between repeats when a
    ramp stops short; group them by step index within each repeat instead of by count."""
    by_repeat = {}
    for r in rows:
        if r["config"] == config and r["mode"] == "idle" and r["status"] == "ok":
            by_repeat.setdefault(r["repeat"], []).append(r)
    steps = {}
    for rs in by_repeat.values():
        rs.sort(key=lambda r: num(r["clients"]))
        for i, r in enumerate(rs):
            y = num(r[column])
            if y is not None:
                steps.setdefault(i, []).append((num(r["clients"]), y))
    out = []
    for i in sorted(steps):
        xs = [x for x, _ in steps[i]]
        ys = [y for _, y in steps[i]]
        out.append((statistics.median(xs), statistics.median(ys), min(ys), max(ys), len(ys)))
    return out


def ok_rows(rows, config, mode):
    return [r for r in rows if r["config"] == config and r["mode"] == mode and r["status"] == "ok"]


def idle_last_steps(rows, config):
    """The last (largest) ramp step of each repeat: it carries the run's slopes."""
    last = {}
    for r in ok_rows(rows, config, "idle"):
        if r["repeat"] not in last or num(r["clients"]) > num(last[r["repeat"]]["clients"]):
            last[r["repeat"]] = r
    return list(last.values())


def write_ceiling(rows):
    """(lines/s, benchmark): one thread's write() rate to loopback sockets, one line per
    write(), the best of microbench's syscall/write points; (None, None) without them."""
    best = [(num(r["items_per_second"]), r["bench_name"]) for r in rows
            if r["mode"] == "microbench" and r["status"] == "ok"
            and r["bench_name"].startswith("syscall/write/") and num(r["items_per_second"])]
    return max(best) if best else (None, None)


def failures(rows):
    return [r for r in rows if r["status"] not in ("ok", "skipped")]


def skipped(rows):
    return [r for r in rows if r["status"] == "skipped"]


def measured_ceilings(rows):
    """{config: {values, rows, lower_bound}} from the ok ceiling rows: one value (deliveries/s)
    per search. A figure is a lower bound when loadgen stopped any of its searches: then it
    is not the server's ceiling."""
    out = {}
    for r in rows:
        if r["mode"] == "ceiling" and r["status"] == "ok" and num(r["deliveries_per_s"]) is not None:
            e = out.setdefault(r["config"], {"values": [], "rows": [], "lower_bound": False})
            e["values"].append(num(r["deliveries_per_s"]))
            e["rows"].append(r)
            e["lower_bound"] |= r["limited_by"] == "loadgen"
    return out


# A chat rate step the server "kept up with": p99 delivery latency at most this. loadgen
# counts a line delivered late (up to its drain deadline) in deliveries_per_s, so a server
# that falls behind still shows the offered rate there; latency is what shows it fell behind.
KEPT_UP_P99_US = 100_000


def kept_up(row):
    p99 = num(row.get("latency_p99_us"))
    return row.get("status") == "ok" and p99 is not None and p99 <= KEPT_UP_P99_US


def sustained(rows, config):
    """The highest deliveries/s of a chat step the configuration kept up with (median over
    repeats of that step), and the step's rate per client; (None, None) if none."""
    steps = {}
    for r in rows:
        if r["config"] == config and r["mode"] == "chat" and r["status"] == "ok":
            steps.setdefault(num(r["point"]), []).append(r)
    best = (None, None)
    for rate, rs in sorted(steps.items()):
        if statistics.median(num(r["latency_p99_us"]) or float("inf") for r in rs) <= KEPT_UP_P99_US:
            best = (statistics.median(num(r["deliveries_per_s"]) for r in rs), rate)
    return best


def common_rate(rows):
    """The highest chat rate per client that every variant's configuration with chat
    results kept up with (median p99), else the lowest rate: where variants are compared at
    one load. The brokers are shown beside the variants, not asked to keep up."""
    configs = {r["config"] for r in rows
               if r["mode"] == "chat" and r["status"] == "ok" and r["variant"] in BY_NAME}
    rates = sorted({num(r["point"]) for r in rows if r["mode"] == "chat" and r["status"] == "ok"})

    def kept(config, rate):
        p99 = [num(r["latency_p99_us"]) for r in rows if r["config"] == config and r["mode"] == "chat"
               and r["status"] == "ok" and num(r["point"]) == rate and num(r["latency_p99_us"]) is not None]
        return bool(p99) and statistics.median(p99) <= KEPT_UP_P99_US

    common = [rate for rate in rates if all(kept(c, rate) for c in configs)]
    return max(common) if common else (rates[0] if rates else None)
