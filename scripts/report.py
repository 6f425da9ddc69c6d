#!/usr/bin/python3
"""Writes RESULTS_DIR/report.md from results.csv, machine.json and plan.json alone:
scripts/report.py RESULTS_DIR. docs/methodology.md defines every number it shows."""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_lib as rl  # noqa: E402

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


def table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def ok_rows(rows, config, mode):
    return [r for r in rows if r["config"] == config and r["mode"] == mode and r["status"] == "ok"]


def idle_last_steps(rows, config):
    """The last (largest) ramp step of each repeat: it carries the run's slopes."""
    last = {}
    for r in ok_rows(rows, config, "idle"):
        if r["repeat"] not in last or rl.num(r["clients"]) > rl.num(last[r["repeat"]]["clients"]):
            last[r["repeat"]] = r
    return list(last.values())


def point_values(rows, config, mode, column, point):
    return [rl.num(r[column]) for r in ok_rows(rows, config, mode) if rl.num(r["point"]) == point]


def points(rows, mode):
    return sorted({rl.num(r["point"]) for r in rows if r["mode"] == mode and r["status"] == "ok"})


def metric_table(rows, mode, column, fmt, label_point):
    pts = points(rows, mode)
    configs = [c for c in rl.configs_in(rows) if ok_rows(rows, c, mode)]
    lines = [[c] + [cell(point_values(rows, c, mode, column, p), fmt) for p in pts] for c in configs]
    return table(["variant"] + [label_point(p) for p in pts], lines)


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def best(candidates, lower_is_better=True):
    candidates = [(v, c) for c, v in candidates if v is not None]
    if not candidates:
        return None, None
    v, c = (min if lower_is_better else max)(candidates)
    return c, v


def leaders(candidates, verb, lower_is_better=True, within=0.05):
    """The configurations within 5% of the best value, as `a`, `b`, then the verb
    (singular, plural) that agrees with them: a tie is reported as one."""
    candidates = [(c, v) for c, v in candidates if v is not None]
    if not candidates:
        return "–"
    top = (min if lower_is_better else max)(v for _, v in candidates)
    close = [c for c, v in candidates if abs(v - top) <= within * abs(top)]
    return ", ".join(f"`{c}`" for c in close) + " " + verb[len(close) > 1]


def main():
    out = rl.results_dir_argument("report.py")
    rows = rl.read_csv(out / "results.csv")
    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").exists() else {}
    plan = json.loads((out / "plan.json").read_text()) if (out / "plan.json").exists() else {}
    limits = machine.get("limits", {})
    configs = rl.configs_in(rows)
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
      f"(pinned to the other, `--threads 1`, `--server-pid`); {plan.get('repeats')} repeat(s), "
      "repeat-major so that drift spreads over every variant.\n\n"
      f"- **idle**: ramp to {idle.get('clients')} connections in {idle.get('steps')} steps; no "
      "bytes sent; memory sampled after each step once RSS is stable.\n"
      f"- **broadcast**: {bc.get('clients')} clients in one room, {bc.get('messages')} lines of "
      f"{bc.get('size')} B, one every {bc.get('interval_ms')} ms from one sender.\n"
      f"- **chat**: {chat.get('clients')} clients in rooms of {chat.get('room_size')}, every client "
      f"sending open-loop at {chat.get('rates')} lines/s each, stepped up in one run, "
      f"{chat.get('duration_s')} s measured per rate after {chat.get('warmup_s')} s warm-up.\n"
      f"- Extra stack sizes (idle only): threads `{plan.get('stacks', {}).get('threads')}`, "
      f"fibers `{plan.get('stacks', {}).get('fibers')}`.\n"
      "- **microbench**: `build/bin/microbench` once (docs/microbench.md).\n")

    w("## Idle memory\n")
    if any(ok_rows(rows, c, "idle") for c in configs):
        lines = []
        for c in configs:
            last = idle_last_steps(rows, c)
            if not last:
                continue
            col = lambda k: [rl.num(r[k]) for r in last]  # noqa: E731
            lines.append([c, cell(col("clients"), fmt_num), cell(col("rss_slope_bytes"), fmt_bytes),
                          cell(col("system_slope_bytes"), fmt_bytes), cell(col("vsz_slope_bytes"), fmt_bytes),
                          cell(col("threads_slope"), fmt_num), cell(col("rss_bytes"), fmt_bytes),
                          cell(col("vsz_bytes"), fmt_bytes)])
        w("Per connection = least-squares slope over the ramp steps. Whole machine = slope of "
          "−MemAvailable (server, kernel stacks, socket buffers, loadgen's side).\n\n")
        w(table(["variant", "connections reached", "RSS / conn", "whole machine / conn", "VSZ / conn",
                 "threads / conn", "RSS at top", "VSZ at top"], lines))
        w("\n![memory per connection](memory_per_connection.png)\n\n![server memory](server_memory.png)\n")

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
        w("![broadcast latency](broadcast_latency.png)\n")

    if points(rows, "chat"):
        w("## Chat\n")
        offered = {rl.num(r["point"]): rl.num(r["offered_deliveries_per_s"]) for r in rows
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
        w("![latency spectrum](latency_spectrum.png)\n\n![chat throughput](chat_throughput.png)\n")

    ceiling = [(rl.num(r["items_per_second"]), r["bench_name"]) for r in rows
               if r["mode"] == "microbench" and r["status"] == "ok"
               and r["bench_name"].startswith("syscall/write/") and rl.num(r["items_per_second"])]
    best_dps = {}
    for c in configs:
        value, _rate = rl.sustained(rows, c)
        if value:
            best_dps[c] = value
    if best_dps:
        w("## Throughput against the system-call ceiling\n")
        top, name = max(ceiling) if ceiling else (None, None)
        w(f"Ceiling: `{name}`, {fmt_num(top)} lines/s written by one thread, one line per `write`.\n\n"
          if top else "No microbench syscall ceiling in this run.\n\n")
        w(f"Best sustained: the highest chat step whose p99 latency stayed ≤ {rl.KEPT_UP_P99_US / 1000:g} ms "
          "(deliveries/s counts what arrived in the step's window, which can include a backlog from "
          "the step before, so latency is what shows a server falling behind). A fraction above 1 "
          "means the variant writes several lines per system call.\n\n")
        w(table(["variant", "best sustained deliveries/s", "fraction of ceiling"],
                [[c, fmt_num(v), f"{v / top:.2f}" if top else "–"] for c, v in best_dps.items()]))
        w("\n![ceiling](ceiling.png)\n")

    mb = [r for r in rows if r["mode"] == "microbench" and r["status"] == "ok"]
    if mb:
        w("## Micro-benchmarks\n")
        w(table(["benchmark", "real time", "CPU time", "items/s", "memory per unit (total)", "RSS per unit"],
                [[f"`{r['bench_name']}`", f"{fmt_num(rl.num(r['real_time_ns']))} ns",
                  f"{fmt_num(rl.num(r['cpu_time_ns']))} ns", fmt_num(rl.num(r["items_per_second"])),
                  fmt_bytes(rl.num(r["total_per_unit"])), fmt_bytes(rl.num(r["rss_per_unit"]))]
                 for r in mb if not r["bench_name"].startswith("protocol/")]))
        w("\n![microbench](microbench.png)\n")

    w("## Which variant to deploy\n")
    base = [c for c in configs if "@" not in c]
    mem = {c: median_or_none([rl.num(r["system_slope_bytes"]) for r in idle_last_steps(rows, c)]) for c in configs}
    rss = {c: median_or_none([rl.num(r["rss_slope_bytes"]) for r in idle_last_steps(rows, c)]) for c in configs}
    bc_pts = points(rows, "broadcast")
    top_bc = max(bc_pts, default=None)
    p99 = {c: median_or_none(point_values(rows, c, "broadcast", "completion_p99_us", top_bc)) for c in base}
    cpu = {}
    # CPU per delivery compared at the highest rate every variant kept up with: past its
    # saturation a server's window CPU pays for lines of earlier steps.
    common_chat = rl.common_rate([r for r in rows if r["config"] in base])
    for c in base:
        cpu[c] = median_or_none(point_values(rows, c, "chat", "server_cpu_per_delivery_us", common_chat))
    loc = machine.get("code_lines", {})
    lines = []
    for c in configs:
        v = rl.variant_of(rows, c)
        lines.append([c, fmt_bytes(rss.get(c)), fmt_bytes(mem.get(c)),
                      fmt_us(p99.get(c)),
                      fmt_num(best_dps.get(c)), f"{cpu[c]:.3g} µs" if cpu.get(c) else "–",
                      loc.get(v, {}).get("own", "–")])
    w(table(["variant", "RSS / idle conn", "machine / idle conn",
             f"broadcast p99 at {fmt_num(top_bc)} clients", "best sustained deliveries/s",
             f"CPU / delivery at {fmt_num(common_chat)}/s per client", "own lines of code"], lines))
    shared = loc.get("shared", {})
    w(f"\nLines of code: non-blank, non-comment lines under `servers/<variant>/`; every C++ "
      f"variant also uses `servers/common/` ({shared.get('common', '?')} lines) and the Asio-based "
      f"ones `servers/net/` ({shared.get('net', '?')}).\n\n")
    findings = []
    c, v = best([(c, rss.get(c)) for c in configs])
    if c:
        thr = rss.get("threads")
        noisy = [x for x in configs if mem.get(x) is not None and mem[x] <= 0]
        findings.append(f"- **Many mostly idle connections:** {leaders([(x, rss.get(x)) for x in configs], ('costs', 'cost'))} "
                        f"the server process the least per idle connection ({fmt_bytes(v)}"
                        + (f"; default `threads` {fmt_bytes(thr)}" if thr else "") + "); per connection the "
                        f"whole machine gave {fmt_bytes(mem.get(c))} for it."
                        + (f" The whole-machine slope is within the noise of this machine for {', '.join(noisy)} "
                           "(zero or negative)." if noisy else "")
                        + " The seed's 8 MiB per thread is virtual size (VSZ), not memory in use.")
    c, v = best([(c, p99.get(c)) for c in base])
    if c:
        missing = [x for x in base if not p99.get(x)]
        findings.append(f"- **Fan-out latency:** at {fmt_num(top_bc)} clients "
                        f"{leaders([(x, p99.get(x)) for x in base], ('has', 'have'))} the best broadcast completion p99 "
                        f"({fmt_us(v)})" + (f"; not reached by {', '.join(missing)}" if missing else "") + ".")
    c, v = best([(c, best_dps.get(c)) for c in base], lower_is_better=False)
    if c:
        findings.append(f"- **Throughput:** {leaders([(x, best_dps.get(x)) for x in base], ('sustained', 'sustained'), False)} "
                        f"the most deliveries per second ({fmt_num(v)}/s with p99 ≤ "
                        f"{rl.KEPT_UP_P99_US / 1000:g} ms) on one core. Steps where loadgen saturated its own "
                        "core bound this from below.")
    c, v = best([(c, cpu.get(c)) for c in base])
    if c:
        findings.append(f"- **CPU per line:** {leaders([(x, cpu.get(x)) for x in base], ('spends', 'spend'))} the least server "
                        f"CPU per delivered line ({v:.3g} µs at {fmt_num(common_chat)} lines/s per client).")
    c, v = best([(c, loc.get(c, {}).get("own")) for c in base])
    if c:
        findings.append(f"- **Simplest code:** `{c}` ({v} lines of its own).")
    w("\n".join(findings) + "\n\n")
    w("Read these with the caveats below: a choice for production follows from which of these "
      "a deployment is short of (memory, tail latency, CPU, people's time), not from one column.\n\n")

    w("## Caveats of this machine\n")
    w(f"- {machine.get('cores')} cores: the server has one, loadgen the other; a server that "
      "could use more cores (threads) is held to one here, and loadgen itself can saturate its "
      "core (`loadgen_saturated` in the CSV).\n"
      "- Loopback only: no network latency, no NIC, no interrupts on another core; the kernel's "
      "TCP cost is in both processes' system time.\n"
      f"- Descriptor cap: ulimit -n {limits.get('ulimit_n_hard')} per process bounds every count "
      "(the idle target above); this says nothing about what a variant does at 100 000.\n"
      "- Shared virtual machine: other work shows as noise (load average above); repeats give "
      "min–max, not confidence intervals.\n")

    fails = rl.failures(rows)
    if fails:
        w("\n## Failures and points not reached\n")
        w(table(["variant", "mode", "point", "repeat", "why"],
                [[r["config"], r["mode"], r["point"], r["repeat"], r["why"].replace("|", "/")] for r in fails]))
    (out / "report.md").write_text("\n".join(part.rstrip("\n") + "\n" for part in md))
    print(f"report.py: {out / 'report.md'}")


if __name__ == "__main__":
    main()
