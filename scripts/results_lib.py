"""The results directory's tidy CSV: its columns, how rows are made from loadgen's and
microbench's JSON, and how plot.py and report.py read them back (medians over repeats).
docs/methodology.md defines every column."""
import csv
import itertools
import json
import math
import statistics
import sys
from pathlib import Path

VARIANTS = ["threads", "fibers", "asio", "coro", "uring", "asio-uring", "coro-uring", "eventlet", "go", "seed"]
# A variant built from another's source (servers/<source>/), on another I/O backend.
SOURCE_DIRS = {"asio-uring": "asio", "coro-uring": "coro"}
# The seed's server as written (servers/seed/): no rooms, no commands, no /stats, no
# protocol limits; measured in idle and broadcast only, and never a variant to deploy.
SEED = "seed"
SEED_NOTE = "the seed as written: no protocol limits"
SEED_MODES = ["idle", "broadcast"]
# Reference servers (run_all.sh --peers): Debian's builds of servers a reader knows,
# measured in idle only, beside the variants and never ranked as one to deploy.
PEERS = ["nginx", "mosquitto", "redis", "nats"]
PEER_PACKAGES = {"nginx": "nginx", "mosquitto": "mosquitto", "redis": "redis-server",
                 "nats": "nats-server"}
PEER_NOTE = "reference servers: no chat protocol, idle only"
# Greys, told apart by their dashes: muted beside the variants' colours.
PEER_STYLES = {"nginx": ("#6e6e6e", ":"), "mosquitto": ("#8c8c8c", "--"),
               "redis": ("#a8a8a8", "-."), "nats": ("#7a7a7a", (0, (1, 4)))}
# One colour per variant in every plot; a configuration with a non-default stack size
# keeps its variant's colour and gets a dashed line (on more server cores: dash-dotted).
COLOURS = {"threads": "#d62728", "fibers": "#ff7f0e", "asio": "#1f77b4",
           "coro": "#2ca02c", "uring": "#17becf", "asio-uring": "#aec7e8",
           "coro-uring": "#98df8a", "eventlet": "#9467bd", "go": "#bcbd22", "seed": "#8c564b",
           "system": "#7f7f7f"}

# A configuration whose server ran on N > 1 cores (run_all.sh --server-threads) is its own
# series, named variant + "-tN" (asio-t2), drawn and shown as "asio ×2"; at N = 1 the name is
# the variant's, as before the option existed.
THREADS_SUFFIX = "-t"


def config_name(variant, stack="", server_threads=1):
    return variant + (f"@{stack}" if stack else "") + (f"{THREADS_SUFFIX}{server_threads}"
                                                       if server_threads > 1 else "")


def server_threads_of(row):
    """A row's server core count: 1 where the column is empty (a CSV written before it)."""
    n = num(row.get("server_threads"))
    return int(n) if n else 1


COLUMNS = [
    # what was measured; server_threads: the cores the server had (loadgen had as many),
    # 1 unless run_all.sh --server-threads; "skipped" rows say why a configuration did not run
    "config", "variant", "stack_size", "server_threads", "mode", "point", "repeat", "status",
    "why", "json",
    # idle/broadcast/chat: connections open (idle: at this step)
    "clients",
    # chat: offered load of this rate step
    "rate_per_client", "offered_lines_per_s", "offered_deliveries_per_s",
    # idle: server memory at this step, and per connection relative to the 0-client baseline
    "rss_bytes", "pss_bytes", "vsz_bytes", "threads", "system_used_bytes",
    "kernel_stack_bytes", "slab_bytes", "sock_mem_bytes",
    "rss_per_conn_bytes", "vsz_per_conn_bytes", "system_per_conn_bytes",
    # idle: the server's RSS before any client (the intercept, same on every step row)
    "rss_zero_bytes",
    # idle: loadgen's least-squares slopes over the whole ramp (same on every step row)
    "rss_slope_bytes", "pss_slope_bytes", "vsz_slope_bytes", "system_slope_bytes",
    "threads_slope",
    # idle: the server host's cost per connection as named parts (slopes), the whole of the
    # same scope they are checked against, and why a point is not a result (same on every
    # step row; docs/methodology.md "Memory per connection")
    "host_rss_bytes", "host_pte_bytes", "host_kernel_stack_bytes", "host_socket_bytes",
    "host_other_kernel_bytes", "host_kernel_caches", "host_reclaimable_slab_bytes",
    "host_parts_bytes", "host_whole_bytes", "host_whole_meminfo_bytes",
    "host_mem_available_bytes", "client_end_bytes", "loadgen_slope_bytes", "memory_flags",
    # idle: the matrix's quiet-machine check before the point (scripts/run_matrix.py)
    "quiet_time_wait", "quiet_wait_s", "quiet_settled",
    # broadcast and chat: delivery latency (chat: this rate step's window), microseconds
    "latency_p50_us", "latency_p90_us", "latency_p99_us", "latency_p999_us", "latency_max_us",
    "latency_count",
    # broadcast: time until the last receiver had each message, microseconds
    "completion_p50_us", "completion_p95_us", "completion_p99_us", "completion_max_us",
    "incomplete_messages",
    # broadcast and chat (chat: this rate step)
    "sent_per_s", "deliveries_per_s", "server_cpu_s", "loadgen_cpu_s", "window_s",
    "server_cpu_per_delivery_us", "late_sends", "loadgen_saturated",
    # broadcast and chat: the whole run's loss accounting (same on every rate step row)
    "lines_sent", "lines_delivered", "lines_expected", "lines_lost", "lines_outstanding",
    "lines_duplicated", "lines_reordered", "receivers_disconnected", "server_lines_out",
    # microbench
    "bench_name", "real_time_ns", "cpu_time_ns", "items_per_second", "rss_per_unit",
    "vsz_per_unit", "total_per_unit",
    # chat and ceiling: loadgen's CPU s / (window x its one pinned core); ceiling: the
    # server's the same way, what stopped the search, whether the figure is a lower bound
    "loadgen_cpu_fraction", "server_cpu_fraction", "limited_by", "lower_bound",
]


def failed_row(config, variant, stack, mode, point, repeat, why, json_path="", server_threads=1):
    return {"config": config, "variant": variant, "stack_size": stack,
            "server_threads": server_threads, "mode": mode, "point": point, "repeat": repeat,
            "status": "failed", "why": why, "json": json_path}


def skipped_row(config, variant, server_threads, mode, why):
    """A configuration the matrix did not run at all (--server-threads: too few cores, or a
    variant that is one thread by design), one row per mode, so that the report says why."""
    return dict(failed_row(config, variant, "", mode, "", 0, why, server_threads=server_threads),
                status="skipped")


def _get(d, *keys):
    for k in keys:
        if d is None:
            return None
        d = d.get(k)
    return d


def _latency(row, lat):
    for p in ["p50", "p90", "p99", "p999", "max"]:
        row[f"latency_{p}_us"] = _get(lat, p)
    row["latency_count"] = _get(lat, "count")


def _lines(row, lines):
    for k in ["sent", "delivered", "expected", "lost", "outstanding", "duplicated", "reordered"]:
        row[f"lines_{k}"] = _get(lines, k)
    row["receivers_disconnected"] = _get(lines, "receivers_disconnected")
    row["server_lines_out"] = _get(lines, "server_lines_out")


def _cpu(row, cpu, deliveries_per_s, cores):
    if not cpu:
        return
    user, system = cpu.get("server_user_s"), cpu.get("server_sys_s")
    row["server_cpu_s"] = None if user is None else user + (system or 0)
    row["loadgen_cpu_s"] = (cpu.get("loadgen_user_s") or 0) + (cpu.get("loadgen_sys_s") or 0)
    row["window_s"] = cpu.get("window_s")
    row["loadgen_saturated"] = cpu.get("loadgen_saturated")
    row["loadgen_cpu_fraction"] = loadgen_fraction(cpu, cores)
    delivered = (deliveries_per_s or 0) * (cpu.get("window_s") or 0)
    if row["server_cpu_s"] is not None and delivered > 0:
        row["server_cpu_per_delivery_us"] = row["server_cpu_s"] / delivered * 1e6


HOST_PARTS = ["rss", "pte", "kernel_stack", "socket", "other_kernel"]


def _server_host(row, memory):
    """The idle run's server-host breakdown (loadgen's memory.server_host) into row."""
    host = memory.get("server_host") or {}
    for k in HOST_PARTS + ["reclaimable_slab", "parts", "whole", "whole_meminfo", "mem_available"]:
        row[f"host_{k}_bytes"] = host.get(f"{k}_bytes")
    caches = {**(host.get("socket_caches") or {}), **(host.get("other_caches") or {})}
    row["host_kernel_caches"] = " ".join(f"{name}={caches[name]:.0f}" for name in
                                         sorted(caches, key=lambda n: -abs(caches[n])))
    row["client_end_bytes"] = host.get("client_end_bytes")
    row["loadgen_slope_bytes"] = host.get("loadgen_bytes")
    row["memory_flags"] = "; ".join(host.get("flags") or [])


def add_quiet(rows, quiet):
    """The quiet-machine check run_matrix made before an idle point, into its rows; a point
    that started on a machine that was not quiet is flagged like one that does not add up."""
    if not quiet:
        return
    for row in rows:
        row["quiet_time_wait"] = quiet["time_wait"]
        row["quiet_wait_s"] = quiet["wait_s"]
        row["quiet_settled"] = quiet["settled"]
        if quiet.get("problem"):
            row["memory_flags"] = "; ".join(x for x in [row.get("memory_flags"), quiet["problem"]] if x)


def memory_result(row):
    """An idle row whose server-host figures are a result: measured and not flagged."""
    return row.get("status") == "ok" and num(row.get("host_whole_bytes")) is not None \
        and not row.get("memory_flags")


def rows_from_report(config, variant, stack, mode, point, repeat, status, why, path, out_dir,
                     server_threads=1):
    """Rows for one loadgen run: idle gives one per ramp step, broadcast one, chat one
    per rate step. A failed run without a report gives one failed row."""
    if path is None:
        return [failed_row(config, variant, stack, mode, point, repeat, why,
                           server_threads=server_threads)]
    report = json.loads(Path(path).read_text())
    base = {"config": config, "variant": variant, "stack_size": stack,
            "server_threads": server_threads, "mode": mode,
            "repeat": repeat, "status": status, "why": why,
            "json": str(Path(path).relative_to(out_dir))}
    rows = []
    if mode == "idle":
        steps = _get(report, "memory", "steps") or []
        slope = _get(report, "memory", "per_connection") or {}
        zero = steps[0] if steps and steps[0]["clients"] == 0 else None
        # A run in which the server closed connections gives no step rows: the server did
        # not hold what the ramp opened (loadgen's closed_by_server), only its failed row.
        if report.get("closed_by_server"):
            steps = []
        for s in steps:
            if s["clients"] == 0:
                continue
            row = dict(base, point=s["clients"], clients=s["clients"], status="ok", why="")
            for k in ["rss_bytes", "pss_bytes", "vsz_bytes", "threads", "kernel_stack_bytes",
                      "slab_bytes", "sock_mem_bytes"]:
                row[k] = s.get(k)
            if zero:
                row["system_used_bytes"] = zero["mem_available_bytes"] - s["mem_available_bytes"]
                n = s["clients"]
                row["rss_per_conn_bytes"] = (s["rss_bytes"] - zero["rss_bytes"]) / n
                row["vsz_per_conn_bytes"] = (s["vsz_bytes"] - zero["vsz_bytes"]) / n
                row["system_per_conn_bytes"] = row["system_used_bytes"] / n
                row["rss_zero_bytes"] = zero["rss_bytes"]
            for k in ["rss", "pss", "vsz", "system"]:
                row[f"{k}_slope_bytes"] = slope.get(f"{k}_bytes")
            row["threads_slope"] = slope.get("threads")
            _server_host(row, report.get("memory") or {})
            rows.append(row)
        if status != "ok" or not rows:
            rows.append(dict(base, point=point, clients=report.get("clients_connected"),
                             status="failed", why=why or "no ramp step reached"))
        return rows
    if mode == "broadcast":
        row = dict(base, point=point, clients=report.get("clients_connected"))
        _latency(row, report.get("latency_us"))
        bc = report.get("broadcast_completion_us") or {}
        for p in ["p50", "p95", "p99", "max"]:
            row[f"completion_{p}_us"] = bc.get(p)
        row["incomplete_messages"] = bc.get("incomplete_messages")
        row["sent_per_s"] = _get(report, "throughput", "sent_per_s")
        row["deliveries_per_s"] = _get(report, "throughput", "deliveries_per_s")
        _cpu(row, report.get("cpu"), row["deliveries_per_s"], server_threads)
        row["late_sends"] = _get(report, "lines", "late_sends")
        _lines(row, report.get("lines"))
        return [row]
    if mode == "ceiling":
        return [ceiling_row(base, point, report, why)]
    # chat: one row per rate step
    clients = report.get("clients_connected") or 0
    room = _get(report, "options", "room_size") or 1
    for step in report.get("rate_steps") or []:
        rate = step["rate"]
        row = dict(base, point=rate, clients=clients, rate_per_client=rate,
                   offered_lines_per_s=rate * clients,
                   offered_deliveries_per_s=rate * clients * (min(room, clients) - 1))
        _latency(row, step.get("latency_us"))
        row["sent_per_s"] = _get(step, "throughput", "sent_per_s")
        row["deliveries_per_s"] = _get(step, "throughput", "deliveries_per_s")
        _cpu(row, step.get("cpu"), row["deliveries_per_s"], server_threads)
        row["late_sends"] = step.get("late_sends")
        _lines(row, report.get("lines"))
        rows.append(row)
    if not rows:
        rows.append(dict(base, point=point, status="failed", why=why or "no rate step in the report"))
    return rows


def loadgen_fraction(cpu, cores):
    """How busy loadgen's cores were: its CPU s / (window x its cores), as loadgen reports
    it (loadgen_cpu_fraction) or, from a loadgen that predates the key, computed the same
    way from its CPU seconds and window. run_matrix gives loadgen as many cores as the
    server (server_threads)."""
    if cpu.get("loadgen_cpu_fraction") is not None:
        return cpu["loadgen_cpu_fraction"]
    window = cpu.get("window_s")
    if not window:
        return None
    used = (cpu.get("loadgen_user_s") or 0) + (cpu.get("loadgen_sys_s") or 0)
    return used / (window * cores)


def ceiling_row(base, point, report, why):
    """The row of one `loadgen chat --find-ceiling` run (docs/loadgen.md): the highest
    rate at which every condition held, what failed above it, and the server's CPU per
    delivered line there (its busy fraction of its cores, times those cores, over the
    deliveries/s)."""
    c = report.get("ceiling")
    if not c:
        return dict(base, point=point, status="failed", why=why or "no ceiling in the report")
    row = dict(base, point=point, clients=report.get("clients_connected"),
               rate_per_client=c.get("rate_per_client"), deliveries_per_s=c.get("deliveries_per_s"),
               latency_p99_us=c.get("p99_us"), server_cpu_fraction=c.get("server_cpu_fraction"),
               loadgen_cpu_fraction=c.get("loadgen_cpu_fraction"), limited_by=c.get("limited_by"),
               lower_bound=bool(c.get("lower_bound")))
    if row["server_cpu_fraction"] is not None and row["deliveries_per_s"]:
        row["server_cpu_per_delivery_us"] = (row["server_cpu_fraction"] * base["server_threads"]
                                             / row["deliveries_per_s"] * 1e6)
    return row


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


def bench_model(name):
    """Which variant's model a micro-benchmark measures ('system' for syscalls, protocol)."""
    if "thread" in name:
        return "threads"
    if "fiber" in name or "boost_context" in name:
        return "fibers"
    if "coroutine" in name or "co_spawn" in name:
        return "coro"
    if "asio" in name:
        return "asio"
    return "system"


def rows_from_microbench(path, why):
    path = Path(path)
    if not path.exists():
        return [failed_row("system", "system", "", "microbench", "", 1, why or "no report")]
    rows = []
    to_ns = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}
    for b in json.loads(path.read_text()).get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue
        model = bench_model(b["name"])
        unit = to_ns.get(b.get("time_unit", "ns"), 1)
        row = {"config": model, "variant": model, "stack_size": "", "mode": "microbench",
               "point": b["name"], "repeat": 1, "bench_name": b["name"],
               "status": "failed" if b.get("error_occurred") else "ok",
               "why": b.get("error_message", ""), "json": "raw/microbench.json",
               "real_time_ns": b.get("real_time", 0) * unit, "cpu_time_ns": b.get("cpu_time", 0) * unit}
        for k in ["items_per_second", "rss_per_unit", "vsz_per_unit", "total_per_unit"]:
            row[k] = b.get(k)
        rows.append(row)
    return rows


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
    """The highest chat rate per client that every configuration with chat results kept
    up with (median p99), else the lowest rate: where variants are compared at one load."""
    configs = {r["config"] for r in rows if r["mode"] == "chat" and r["status"] == "ok"}
    rates = sorted({num(r["point"]) for r in rows if r["mode"] == "chat" and r["status"] == "ok"})

    def kept(config, rate):
        p99 = [num(r["latency_p99_us"]) for r in rows if r["config"] == config and r["mode"] == "chat"
               and r["status"] == "ok" and num(r["point"]) == rate and num(r["latency_p99_us"]) is not None]
        return bool(p99) and statistics.median(p99) <= KEPT_UP_P99_US

    common = [rate for rate in rates if all(kept(c, rate) for c in configs)]
    return max(common) if common else (rates[0] if rates else None)


def write_csv(path, rows):
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="raise")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    tmp.replace(path)


# ---------------------------------------------------------------------------------------
# Reading back

def read_csv(path):
    """The rows, with every column of COLUMNS: a CSV written before a column existed reads
    it as empty, except loadgen_cpu_fraction, which follows from its CPU s and window, and
    server_threads, which was 1."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in COLUMNS:
            r.setdefault(k, "")
        r["server_threads"] = r["server_threads"] or ("1" if r["mode"] != "microbench" else "")
        if r["loadgen_cpu_fraction"] == "" and num(r["loadgen_cpu_s"]) is not None and num(r["window_s"]):
            r["loadgen_cpu_fraction"] = str(num(r["loadgen_cpu_s"])
                                            / (num(r["window_s"]) * server_threads_of(r)))
    return rows


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def configs_in(rows):
    """Configurations in a stable order: variant order, one server core first, default stack
    first. Those only skipped (--server-threads) are left out: they have no figures."""
    seen = {(r["variant"], server_threads_of(r), r["stack_size"], r["config"]) for r in rows
            if r["variant"] in VARIANTS and r["status"] != "skipped"}
    order = sorted(seen, key=lambda t: (VARIANTS.index(t[0]), t[1], t[2] != "", t[2]))
    return [c for _, _, _, c in order]


def split_threads(config):
    """("asio", 2) for "asio-t2"; (config, 1) for a configuration on one server core."""
    base, sep, n = config.rpartition(THREADS_SUFFIX)
    if sep and n.isdigit() and base.split("@")[0] in VARIANTS:
        return base, int(n)
    return config, 1


def config_label(config):
    """A configuration's name in plots: "fibers stack 128K", "asio ×2"."""
    base, n = split_threads(config)
    return base.replace("@", " stack ") + (f" ×{n}" if n > 1 else "")


def peers_in(rows):
    """The reference servers measured, in PEERS order."""
    seen = {r["config"] for r in rows if r["variant"] in PEERS}
    return [x for x in PEERS if x in seen]


def variant_of(rows, config):
    return next(r["variant"] for r in rows if r["config"] == config)


def threads_of(rows, config):
    """The server cores a configuration ran on (server_threads)."""
    return server_threads_of(next(r for r in rows if r["config"] == config))


def style(rows, config):
    """matplotlib keyword arguments of a configuration's line."""
    r = next(r for r in rows if r["config"] == config)
    if r["variant"] in PEERS:  # muted: a reference, not a candidate
        colour, dashes = PEER_STYLES[r["variant"]]
        return {"color": colour, "linestyle": dashes, "label": f"{config} (reference)"}
    # More server cores (--server-threads): the variant's colour, dash-dotted.
    dashes = "--" if r["stack_size"] else "-." if server_threads_of(r) > 1 else "-"
    return {"color": COLOURS.get(r["variant"], "black"), "linestyle": dashes, "label": config_label(config)}


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


def failures(rows):
    return [r for r in rows if r["status"] not in ("ok", "skipped")]


def skipped(rows):
    return [r for r in rows if r["status"] == "skipped"]


# ---------------------------------------------------------------------------------------
# Differences beyond noise (docs/methodology.md, "Noise"): every ranking the report and
# compare.py print goes through rank().

ALPHA = 0.05
# Above this many ways to split the pooled repeats, the normal approximation replaces the
# exact enumeration (8 + 8 repeats is 12 870 splits: still exact).
EXACT_SPLITS = 20_000


def mann_whitney_p(a, b):
    """Two-sided p of the Mann-Whitney U test, exact: U of every way to split the pooled
    values into groups of len(a) and len(b), ties included (a permutation test on U).
    U of a group = the sum of its midranks in the pooled values - n(n+1)/2: the pairs in
    which its value is the larger, ties counting half."""
    n, m = len(a), len(b)
    if not n or not m:
        return 1.0
    ranks = _midranks(list(a) + list(b))
    centre = n * m / 2
    offset = n * (n + 1) / 2
    observed = abs(sum(ranks[:n]) - offset - centre)
    splits = math.comb(n + m, n)
    if splits > EXACT_SPLITS:
        sd = math.sqrt(n * m * (n + m + 1) / 12)
        z = max(observed - 0.5, 0) / sd  # continuity correction
        return math.erfc(z / math.sqrt(2))
    # Midranks are multiples of 0.5: the tolerance only absorbs float error.
    extreme = sum(abs(sum(ranks[i] for i in chosen) - offset - centre) >= observed - 1e-9
                  for chosen in itertools.combinations(range(n + m), n))
    return extreme / splits


def _midranks(values):
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def smallest_p(n, m):
    """The smallest two-sided p the exact test can give with n and m repeats: every value
    of one group beyond every value of the other. 3 vs 3 gives 0.1, 4 vs 4 0.029."""
    return 2 / math.comb(n + m, n) if n and m else 1.0


def can_rank(n, m):
    return smallest_p(n, m) < ALPHA


def rank(a, b, lower_is_better=True):
    """Whether a is better than b beyond the noise of their repeats: (verdict, p) with
    verdict 'a', 'b', 'tied' (the test cannot tell them apart at ALPHA) or 'too few'
    (too few repeats for any outcome to reach ALPHA)."""
    a = [v for v in a if v is not None]
    b = [v for v in b if v is not None]
    if not can_rank(len(a), len(b)):
        return "too few", None
    p = mann_whitney_p(a, b)
    if p >= ALPHA:
        return "tied", p
    a_lower = statistics.median(a) < statistics.median(b)
    return ("a" if a_lower == lower_is_better else "b"), p


def leading_group(candidates, lower_is_better=True):
    """From {name: [repeat values]}: (best, tied, unranked). best is the name with the best
    median; tied the others the test cannot separate from it; unranked those with too few
    repeats (against best's) for the test to separate anything. Every other name is worse
    than best beyond noise."""
    have = {c: [x for x in v if x is not None] for c, v in candidates.items()}
    have = {c: v for c, v in have.items() if v}
    if not have:
        return None, [], []
    pick = min if lower_is_better else max
    best = pick(have, key=lambda c: statistics.median(have[c]))
    tied, unranked = [], []
    for c, values in have.items():
        if c != best:
            outcome, _p = rank(have[best], values, lower_is_better)
            if outcome == "tied":
                tied.append(c)
            elif outcome == "too few":
                unranked.append(c)
    return best, tied, unranked


def results_dir_argument(prog):
    """The one argument of plot.py and report.py: a results directory with results.csv.
    --help prints the usage; anything else wrong is a usage error (exit 2)."""
    usage = f"usage: scripts/{prog} RESULTS_DIR   (a directory written by scripts/run_all.sh)"
    args = sys.argv[1:]
    if args in (["-h"], ["--help"]):
        print(usage)
        sys.exit(0)
    if len(args) != 1 or args[0].startswith("-"):
        problem = f"expects one RESULTS_DIR, got {len(args)} arguments" if len(args) != 1 else f"unknown option {args[0]}"
    elif not (Path(args[0]) / "results.csv").is_file():
        problem = f"no {Path(args[0]) / 'results.csv'}"
    else:
        return Path(args[0])
    print(f"{prog}: {problem}", file=sys.stderr)
    print(usage, file=sys.stderr)
    sys.exit(2)


def per_cpu_free_bytes():
    """Free pages parked in the kernel's per-CPU page lists (the "count:" of every pageset
    in /proc/zoneinfo). MemFree leaves them out; since Linux 6.7 those lists grow to hold
    what was just freed (tens of MB on a 2-core VM) and hand it back over seconds, so free
    memory is MemFree plus these (docs/methodology.md, "Memory per connection")."""
    import os
    import re
    counts = re.findall(r"^\s+count:\s+(\d+)$", Path("/proc/zoneinfo").read_text(), re.M)
    return sum(int(c) for c in counts) * os.sysconf("SC_PAGE_SIZE")
