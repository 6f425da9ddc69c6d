#!/usr/bin/python3
"""Draws the plots of a results directory from its results.csv (and plan.json, if there)
alone, so they can be redrawn without re-running: scripts/plot.py RESULTS_DIR.
docs/methodology.md says how to read each one."""
import json
import statistics
import sys

from chatbench import aggregate, plot_style, results_csv, stats, variants
from chatbench.results_csv import num

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
except ImportError as e:
    sys.exit(f"plot.py: {e}: install Debian's python3-matplotlib (scripts/setup.sh) and run "
             "with /usr/bin/python3")

SEED_STACK = 8 * 1024 * 1024  # the seed: "an 8 MB stack" per thread (1 GiB at 128 users)
KIB, MIB = 1024, 1024 * 1024


def bytes_label(v, _pos=None):
    for unit, size in [("GiB", 1 << 30), ("MiB", MIB), ("KiB", KIB)]:
        if abs(v) >= size:
            return f"{v / size:.4g} {unit}"
    return f"{v:.4g} B"


def bytes_axis(axis):
    """Ticks at powers of 4 bytes (1 KiB, 4 KiB, ... 1 GiB), labelled in binary units."""
    axis.set_major_locator(LogLocator(base=4))
    axis.set_major_formatter(FuncFormatter(bytes_label))
    axis.set_minor_formatter(NullFormatter())


def errorbar(ax, pts, rows, config, **extra):
    if not pts:
        return
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    lo = [max(p[1] - p[2], 0) for p in pts]
    hi = [max(p[3] - p[1], 0) for p in pts]
    kw = plot_style.style(rows, config)
    kw.update(extra)
    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", markersize=3, capsize=2, **kw)


def finish(fig, out, name, note=""):
    if note:
        fig.text(0.01, 0.005, note, fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    print(f"plot.py: {out / name}")


def positive(pts):
    return [p for p in pts if p[1] > 0]


def plot_memory_per_connection(rows, out, note):
    # The server's RSS per step only: the MemAvailable drop per step counts both ends and
    # reclaimable slab as free; the server host's cost is server_host_memory.png.
    fig, ax = plt.subplots(1, 1, figsize=(8, 5))
    for c in aggregate.configs_in(rows) + aggregate.peers_in(rows):
        errorbar(ax, positive(aggregate.idle_series(rows, c, "rss_per_conn_bytes")), rows, c)
    ax.axhline(SEED_STACK, color="black", linestyle=":", linewidth=1.5,
               label="seed's claim: 8 MiB per thread")
    ax.set_xscale("log")
    ax.set_yscale("log")
    bytes_axis(ax.yaxis)
    ax.set_xlabel("idle connections (log)")
    ax.set_ylabel("memory per connection (bytes, log)")
    ax.set_title("Idle memory per connection: server process (RSS)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    finish(fig, out, "memory_per_connection.png",
           "Per connection = (value at N − value at 0 clients) / N; median of repeats, bars min–max. "
           + ("Grey: reference servers (idle only). " if aggregate.peers_in(rows) else "") + note)


HOST_PART_LABELS = {"rss": "server RSS", "pte": "server page tables", "kernel_stack": "kernel stacks",
                    "socket": "socket objects (server end)", "other_kernel": "other kernel objects"}
HOST_PART_COLOURS = {"rss": "#1f77b4", "pte": "#aec7e8", "kernel_stack": "#d62728",
                     "socket": "#2ca02c", "other_kernel": "#98df8a"}


def plot_server_host(rows, out, note):
    """Stacked bars: the server host's cost per idle connection by part (median over the
    runs that add up), with the whole of the same scope as a marker. Flagged runs are left out."""
    configs, parts, wholes = [], {k: [] for k in results_csv.HOST_PARTS}, []
    for c in aggregate.configs_in(rows):
        # the largest step of each repeat carries the run's slopes
        good = [r for r in aggregate.idle_last_steps(rows, c) if results_csv.memory_result(r)]
        if not good:
            continue
        configs.append(c)
        for k in results_csv.HOST_PARTS:
            parts[k].append(stats.median([num(r[f"host_{k}_bytes"]) or 0 for r in good]))
        wholes.append(stats.median([num(r["host_whole_bytes"]) for r in good]))
    fig, ax = plt.subplots(1, 1, figsize=(9, 5))
    if not configs:
        ax.text(0.5, 0.5, "no idle run whose parts and whole add up", ha="center", va="center")
    xs = range(len(configs))
    bottom = [0.0] * len(configs)
    for k in results_csv.HOST_PARTS:
        # A part that came out negative (noise) is drawn as zero; the table shows its value.
        heights = [max(v, 0) / KIB for v in parts[k]]
        ax.bar(xs, heights, bottom=bottom, color=HOST_PART_COLOURS[k], label=HOST_PART_LABELS[k])
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.scatter(xs, [w / KIB for w in wholes], marker="_", s=900, color="black", zorder=3,
               label="whole: MemFree drop less the client's end")
    ax.set_xticks(list(xs), [variants.config_label(c).replace(" stack ", "\nstack ") for c in configs])
    ax.set_ylabel("KiB per idle connection")
    ax.set_title("Server host per idle connection: parts and whole")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    finish(fig, out, "server_host_memory.png",
           "Least-squares slopes over the ramp; median of the runs that add up (flagged runs left out). " + note)


def plot_server_memory(rows, out, note):
    fig, ax = plt.subplots(figsize=(9, 5.5))
    top = 0
    for c in aggregate.configs_in(rows) + aggregate.peers_in(rows):
        pts = aggregate.idle_series(rows, c, "rss_bytes")
        errorbar(ax, pts, rows, c)
        top = max([top] + [p[0] for p in pts])
        if aggregate.variant_of(rows, c) == "threads":
            vsz = aggregate.idle_series(rows, c, "vsz_bytes")
            kw = plot_style.style(rows, c)
            ax.plot([p[0] for p in vsz], [p[1] for p in vsz], color=kw["color"], linestyle="-.",
                    marker="^", markersize=3, alpha=0.6, label=kw["label"] + " virtual size (VSZ)")
    if top:
        xs = [1, top]
        ax.plot(xs, [x * SEED_STACK for x in xs], color="black", linestyle=":",
                label="seed's claim: 8 MiB × clients")
        ax.plot([128], [128 * SEED_STACK], "k*", markersize=9, label="seed: 1 GiB at 128 users")
    ax.set_xscale("log")
    ax.set_yscale("log")
    bytes_axis(ax.yaxis)
    ax.set_xlabel("idle connections (log)")
    ax.set_ylabel("server memory (bytes, log)")
    ax.set_title("Server memory vs idle connections (RSS; VSZ for threads)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    finish(fig, out, "server_memory.png",
           ("Grey: reference servers (idle only). " if aggregate.peers_in(rows) else "") + note)


def plot_broadcast(rows, out, note):
    fig, axes = plt.subplots(1, 3, figsize=(15, 5), sharey=True)
    for ax, p in zip(axes, ["p50", "p95", "max"]):
        for c in aggregate.configs_in(rows) + aggregate.brokers_in(rows):
            errorbar(ax, positive(aggregate.series(rows, c, "broadcast", f"completion_{p}_us")), rows, c)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clients in the room (log)")
        ax.set_title(f"Broadcast completion {p}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("send → last receiver has it (µs, log)")
    axes[0].legend(fontsize=8)
    finish(fig, out, "broadcast_latency.png",
           "One sender, everyone else receives; per message, intended send time to the last arrival. "
           + ("Grey: brokers, in their own protocol. " if aggregate.brokers_in(rows) else "") + note)


def plot_spectrum(rows, out, note):
    rate = aggregate.common_rate(rows)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    cols = [(0.5, "latency_p50_us"), (0.9, "latency_p90_us"), (0.99, "latency_p99_us"),
            (0.999, "latency_p999_us")]
    clients = ""
    for c in aggregate.configs_in(rows):
        pts = []
        for q, col in cols:
            s = [p for p in aggregate.series(rows, c, "chat", col) if p[0] == rate]
            if s:
                pts.append((1 / (1 - q), s[0][1], s[0][2], s[0][3], s[0][4]))
        errorbar(ax, pts, rows, c)
        clients = clients or next((r["clients"] for r in rows if r["config"] == c and r["mode"] == "chat"
                                   and r["status"] == "ok"), "")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([2, 10, 100, 1000])
    ax.set_xticklabels(["50%", "90%", "99%", "99.9%"])
    ax.set_xlabel("percentile (x = 1/(1−p), log)")
    ax.set_ylabel("delivery latency (µs, log)")
    ax.set_title(f"Chat latency spectrum at {rate:g} lines/s per client, {clients} clients\n"
                 "(the highest rate every variant kept up with)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    finish(fig, out, "latency_spectrum.png",
           "Latency from the intended send time of an open-loop schedule (no coordinated omission). " + note)


def plot_throughput(rows, out, note):
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2))
    top, bottom = 0, float("inf")
    for c in aggregate.configs_in(rows) + aggregate.brokers_in(rows):
        x = "offered_deliveries_per_s"
        errorbar(axes[0], positive(aggregate.series(rows, c, "chat", "latency_p99_us", x=x)), rows, c)
        # Filled: steps the server kept up with; hollow: steps it fell behind on, where
        # the window's arrivals and CPU include a backlog from the step before.
        p99 = {p[0]: p[1] for p in aggregate.series(rows, c, "chat", "latency_p99_us", x=x)}
        for ax, column in [(axes[1], "deliveries_per_s"), (axes[2], "server_cpu_per_delivery_us")]:
            pts = positive(aggregate.series(rows, c, "chat", column, x=x))
            errorbar(ax, [p for p in pts if p99.get(p[0], 0) <= aggregate.KEPT_UP_P99_US], rows, c)
            behind = [p for p in pts if p99.get(p[0], 0) > aggregate.KEPT_UP_P99_US]
            ax.plot([p[0] for p in behind], [p[1] for p in behind], linestyle="none", marker="o",
                    markerfacecolor="none", markeredgecolor=plot_style.style(rows, c)["color"], markersize=7)
        offered = [num(r[x]) for r in rows if r["config"] == c and r["mode"] == "chat" and num(r[x])]
        top, bottom = max([top] + offered), min([bottom] + offered)
    axes[0].axhline(aggregate.KEPT_UP_P99_US, color="black", linestyle=":",
                    label=f"kept up: p99 ≤ {aggregate.KEPT_UP_P99_US / 1000:g} ms")
    if top:
        axes[1].plot([bottom, top], [bottom, top], color="black", linestyle=":", label="offered")
    axes[1].plot([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="black",
                 label="fell behind (p99 above the line at left)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered deliveries per second (log)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("delivery latency p99 (µs, log)")
    axes[0].set_title("Chat p99 latency vs offered load")
    axes[1].set_ylabel("deliveries per second (log)")
    axes[1].set_title("Chat deliveries per second vs offered load")
    axes[2].set_ylabel("server CPU per delivered line (µs, log)")
    axes[2].set_title("Server CPU (user+sys) per delivered line")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    finish(fig, out, "chat_throughput.png",
           "Rooms of 10; offered deliveries = clients × rate × 9. Server on one core, loadgen on the other. "
           + ("Grey: brokers, in their own protocol. " if aggregate.brokers_in(rows) else "") + note)


def best_deliveries(rows, config):
    """(deliveries/s, lower bound?): the measured chat ceiling's median where the run
    searched for it, else the best sustained chat step (a lower bound only in the sense
    that the next step was not measured, so not hatched)."""
    measured = aggregate.measured_ceilings(rows).get(config)
    if measured:
        return statistics.median(measured["values"]), measured["lower_bound"]
    return aggregate.sustained(rows, config)[0], False


def plot_ceiling(rows, out, note):
    ceiling, name = aggregate.write_ceiling(rows)
    fig, ax = plt.subplots(figsize=(9, 5))
    configs = [c for c in aggregate.configs_in(rows) + aggregate.brokers_in(rows) if best_deliveries(rows, c)[0]]
    if ceiling and configs:
        values = [best_deliveries(rows, c) for c in configs]
        bars = ax.bar(range(len(configs)), [v / ceiling for v, _ in values],
                      color=[plot_style.style(rows, c)["color"] for c in configs],
                      hatch=["//" if bound else "" for _, bound in values], edgecolor="black")
        for b, (v, bound) in zip(bars, values):
            ax.annotate(("≥ " if bound else "") + f"{v:,.0f}/s", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.axhline(1, color="black", linestyle=":", label=f"{name}: {ceiling:,.0f} lines/s")
        ax.set_xticks(range(len(configs)))
        ax.set_xticklabels([variants.config_label(c) + ("\n(broker)" if c in aggregate.brokers_in(rows) else "")
                            for c in configs])
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no microbench syscall ceiling or no chat/broadcast results",
                ha="center", transform=ax.transAxes)
    ax.set_ylabel("deliveries/s ÷ syscall ceiling")
    ax.set_title("Chat ceiling (or best sustained) as a fraction of one thread's write() ceiling")
    ax.grid(True, axis="y", alpha=0.3)
    finish(fig, out, "ceiling.png",
           "Median of ceiling searches; hatched ≥: loadgen stopped one (no search: best step with "
           f"p99 ≤ {aggregate.KEPT_UP_P99_US / 1000:g} ms). " + note)


def plot_microbench(rows, out, note):
    mb = [r for r in rows if r["mode"] == "microbench" and r["status"] == "ok"]
    groups = [("units/", "real_time_ns", "create + join one unit (ns, log)", "Create"),
              ("switch/", "real_time_ns", "one round trip = 2 switches (ns, log)", "Switch"),
              ("memory/", "total_per_unit", "bytes per parked unit (log)", "Memory per unit")]
    fig, axes = plt.subplots(1, 3, figsize=(17, 6))
    for ax, (prefix, col, label, title) in zip(axes, groups):
        sel = [r for r in mb if r["bench_name"].startswith(prefix) and (num(r[col]) or 0) > 0]
        names = [r["bench_name"][len(prefix):].replace("/real_time", "").replace("/iterations:1", "")
                 for r in sel]
        ax.barh(range(len(sel)), [num(r[col]) for r in sel],
                color=[plot_style.COLOURS[r["variant"]] for r in sel])
        if prefix == "memory/":
            ax.barh(range(len(sel)), [num(r["rss_per_unit"]) or 0 for r in sel], color="none",
                    edgecolor="black", hatch="//", label="of which process RSS")
            bytes_axis(ax.xaxis)
            ax.legend(fontsize=8)
        ax.set_yticks(range(len(sel)))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xscale("log")
        if sel:  # log-scale bars start at the axis' left edge: keep the smallest visible
            ax.set_xlim(left=min(num(r[col]) for r in sel) / 3)
        ax.set_xlabel(label)
        ax.set_title(f"microbench: {title}")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    finish(fig, out, "microbench.png", "Colour = the variant whose model the unit is; grey = system. " + note)


def main():
    out = results_csv.results_dir_argument("plot.py")
    rows = results_csv.read_csv(out / "results.csv")
    note = ""
    machine = out / "machine.json"
    if machine.exists():
        m = json.loads(machine.read_text())
        note = f"{m.get('host', '')} {m.get('date', '')[:10]}, {m.get('cores')} cores, commit {str(m.get('git_commit', ''))[:8]}"
    modes = {r["mode"] for r in rows if r["status"] == "ok"}
    if "idle" in modes:
        plot_memory_per_connection(rows, out, note)
        plot_server_memory(rows, out, note)
        plot_server_host(rows, out, note)
    if "broadcast" in modes:
        plot_broadcast(rows, out, note)
    if "chat" in modes:
        plot_spectrum(rows, out, note)
        plot_throughput(rows, out, note)
    if modes & {"chat", "broadcast", "ceiling"}:
        plot_ceiling(rows, out, note)
    if "microbench" in modes:
        plot_microbench(rows, out, note)


if __name__ == "__main__":
    main()
