"""The results directory's tidy CSV: its columns, how rows are made from loadgen's and
microbench's JSON, and how they are written and read back. docs/methodology.md
("results.csv") defines every column."""
import csv
import json
import sys
from pathlib import Path

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
    "host_parts_bytes", "host_whole_bytes", "host_whole_meminfo_bytes", "host_slab_slack_used_bytes",
    "host_whole_resolution_bytes", "host_within_resolution", "host_mem_available_bytes", "client_end_bytes",
    "loadgen_slope_bytes", "memory_flags",
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
    # efficiency (a chat step at a fixed rate, docs/methodology.md "Efficiency"): why the
    # point measures the rate rather than the server, "; "-separated; empty when it does not
    "efficiency_flags",
    # capacity (a ceiling search with the server under a CPU quota, "Capacity per server
    # core"); ceiling rows carry the per-core columns too. The quota per server core and its
    # period; the stall the quota adds at worst (period - quota x period); the p99 bar the
    # search judged by; at the ceiling: the server's CPU s per s (cores' worth used), the
    # periods its cgroup ran and was held back in, and for how long; the ceiling over the
    # cores used, or why it is withheld
    "capacity_quota", "capacity_period_ms", "quota_stall_ms", "p99_bar_ms", "server_cores",
    "server_periods", "server_throttled_periods", "server_throttled_s",
    "deliveries_per_server_core_s", "per_core_withheld",
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
    row["server_cpu_fraction"] = cpu.get("server_cpu_fraction")
    delivered = (deliveries_per_s or 0) * (cpu.get("window_s") or 0)
    if row["server_cpu_s"] is not None and delivered > 0:
        row["server_cpu_per_delivery_us"] = row["server_cpu_s"] / delivered * 1e6


HOST_PARTS = ["rss", "pte", "kernel_stack", "socket", "other_kernel"]


def _server_host(row, memory):
    """The idle run's server-host breakdown (loadgen's memory.server_host) into row."""
    host = memory.get("server_host") or {}
    wholes = ["parts", "whole", "whole_meminfo", "slab_slack_used", "whole_resolution", "mem_available"]
    for k in HOST_PARTS + ["reclaimable_slab"] + wholes:
        row[f"host_{k}_bytes"] = host.get(f"{k}_bytes")
    row["host_within_resolution"] = host.get("within_resolution")
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
    # Load on fewer clients than asked is another point, not this one: clients the server
    # reset or refused after their connect completed (an accept queue that overflowed, a
    # limit) fail the run, with why. Receivers it disconnected later, slow at saturation,
    # are part of the measurement (lines.receivers_disconnected).
    stayed, requested = report.get("clients_connected"), report.get("clients_requested")
    dropped = _get(report, "lines", "receivers_disconnected") or 0
    if mode != "idle" and stayed is not None and requested and stayed + dropped < requested:
        return [dict(base, point=point, clients=stayed, status="failed",
                     why=f"{requested - stayed - dropped} of {requested} clients were reset or refused before "
                         f"they joined" + (f"; {why}" if why else ""))]
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
    if mode in ("ceiling", "capacity"):
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
        if mode == "efficiency":
            row["efficiency_flags"] = "; ".join(efficiency_flags(row))
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


# An efficiency point measures the server only while its cores have room and loadgen
# has headroom, and the server keeps up: past that, CPU per line is the window over the
# rate (a full core divided among whatever arrived), or loadgen's limit.
EFFICIENCY_MAX_SERVER_BUSY = 0.9
EFFICIENCY_MAX_LOADGEN = 0.7          # the ceiling search's bar on loadgen
EFFICIENCY_MIN_DELIVERED = 0.99       # the ceiling search's: deliveries/s over offered
EFFICIENCY_P99_BAR_US = 100_000


def efficiency_flags(row):
    """Why an efficiency row does not measure the server's cost per line, each flag "KIND
    (DETAIL)"; [] when it does."""
    flags = []
    busy, loadgen = num(row.get("server_cpu_fraction")), num(row.get("loadgen_cpu_fraction"))
    offered, delivered = num(row.get("offered_deliveries_per_s")), num(row.get("deliveries_per_s"))
    p99 = num(row.get("latency_p99_us"))
    if busy is None:
        flags.append("no server CPU figure")
    elif busy >= EFFICIENCY_MAX_SERVER_BUSY:
        flags.append(f"server cores ≥ {EFFICIENCY_MAX_SERVER_BUSY:.0%} busy ({busy:.0%}: the figure measures the rate)")
    if loadgen is not None and loadgen > EFFICIENCY_MAX_LOADGEN:
        flags.append(f"loadgen over {EFFICIENCY_MAX_LOADGEN:.0%} ({loadgen:.0%})")
    if offered and (delivered or 0) < EFFICIENCY_MIN_DELIVERED * offered:
        flags.append(f"server did not keep up ({(delivered or 0) / offered:.1%} of offered delivered)")
    elif p99 is None or p99 > EFFICIENCY_P99_BAR_US:
        flags.append("server did not keep up (p99 over 100 ms)" if p99 else "nothing delivered")
    return flags


def add_quota(rows, quota, period_ms, p99_bar_ms):
    """The CPU quota a capacity search ran under, into its rows: quota per server core,
    period, the stall it adds at worst per period, and the p99 bar the search judged by."""
    for row in rows:
        row["capacity_quota"] = quota
        row["capacity_period_ms"] = period_ms
        row["quota_stall_ms"] = round(period_ms * (1 - quota), 3)
        row["p99_bar_ms"] = p99_bar_ms


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
    # The per-core figure as loadgen computed and withheld it (docs/loadgen.md); a report
    # of a loadgen before it has neither key, and then no figure.
    row["server_cores"] = c.get("server_cores")
    row["deliveries_per_server_core_s"] = c.get("deliveries_per_server_core_s")
    row["per_core_withheld"] = c.get("deliveries_per_server_core_s_withheld") or (
        "" if "deliveries_per_server_core_s" in c else "this loadgen reports no per-core figure")
    cgroup = c.get("server_cgroup") or {}
    row["server_periods"] = cgroup.get("periods")
    row["server_throttled_periods"] = cgroup.get("throttled_periods")
    row["server_throttled_s"] = cgroup.get("throttled_s")
    return row


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


def server_threads_of(row):
    """A row's server core count: 1 where the column is empty (a CSV written before it)."""
    n = num(row.get("server_threads"))
    return int(n) if n else 1


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
