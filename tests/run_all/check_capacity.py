#!/usr/bin/python3
"""The figures of what one core does, from results.csv rows made here (no server runs):
which efficiency points are flagged, the per-core columns of a capacity row taken from
loadgen's ceiling object, the validation across quotas and periods, the cross-check, the
rule that publishes a per-core figure, several cores, cgroup setup against a fake cgroup
tree of either version, and report.py and compare.py on such a run.
Usage: check_capacity.py SOURCE_DIR (with PYTHONPATH=SOURCE_DIR/scripts)"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from chatbench import capacity, cpu_quota, results_csv

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


DEFAULT = (0.3, 5.0)
PLAN = {"capacity": {"quota": DEFAULT[0], "period_ms": DEFAULT[1]}, "repeats": 4}


def row(config, mode, repeat, **values):
    r = {k: "" for k in results_csv.COLUMNS}
    variant, _, n = config.partition("-t")
    r.update(config=config, variant=variant, server_threads=n or "1", mode=mode, repeat=str(repeat), status="ok")
    r.update({k: str(v) for k, v in values.items()})
    return r


def capacity_rows(config, cell, per_core, limited_by="server", ceiling=None):
    """One capacity row per value of per_core (None: the search withheld it)."""
    out = []
    for i, v in enumerate(per_core, 1):
        dps = ceiling[i - 1] if isinstance(ceiling, list) else ceiling or (v or 1e5) * cell[0]
        r = row(config, "capacity", i, limited_by=limited_by, deliveries_per_s=dps)
        results_csv.add_quota([r], *cell, p99_bar_ms=100 + cell[1] * (1 - cell[0]))
        r = {k: ("" if v is None else str(v)) for k, v in r.items()}
        if v is not None:
            r["deliveries_per_server_core_s"] = str(v)
        out.append(r)
    return out


def grid(config, by_cell):
    return [r for cell, values in by_cell.items() for r in capacity_rows(config, cell, values)]


def check_efficiency_flags():
    base = dict(offered_deliveries_per_s=180000, deliveries_per_s=180000, latency_p99_us=5000,
                server_cpu_fraction=0.6, loadgen_cpu_fraction=0.5)
    check(results_csv.efficiency_flags(base) == [], f"a point with room flagged: {results_csv.efficiency_flags(base)}")
    for change, word in [({"server_cpu_fraction": 0.93}, "93% busy"), ({"loadgen_cpu_fraction": 0.75}, "loadgen"),
                         ({"deliveries_per_s": 150000}, "did not keep up"), ({"latency_p99_us": 250000}, "p99"),
                         ({"server_cpu_fraction": None}, "no server CPU")]:
        flags = "; ".join(results_csv.efficiency_flags(dict(base, **change)))
        check(word in flags, f"{change}: flags {flags!r} do not say {word!r}")
    rows = [row("asio", "efficiency", i, point=20, server_cpu_per_delivery_us=4 + i / 10, efficiency_flags="")
            for i in range(1, 5)]
    rows += [row("threads", "efficiency", i, point=20, server_cpu_per_delivery_us=3, efficiency_flags="did not keep up")
             for i in range(1, 5)]
    ranked = capacity.efficiency_ranked(rows, ["asio", "threads"], 20.0)
    check(list(ranked) == ["asio"], f"a flagged variant is ranked: {sorted(ranked)}")


def check_ceiling_row():
    base = {"config": "asio", "variant": "asio", "server_threads": 1, "mode": "capacity"}
    ceiling = {"deliveries_per_s": 600000, "rate_per_client": 66.7, "p99_us": 9000, "server_cpu_fraction": 0.3,
               "loadgen_cpu_fraction": 0.5, "limited_by": "latency", "lower_bound": False, "server_cores": 0.3,
               "deliveries_per_server_core_s": 2000000, "deliveries_per_server_core_s_withheld": None,
               "server_cgroup": {"periods": 400, "throttled_periods": 390, "throttled_s": 1.4,
                                 "quota_cores": 0.3, "period_us": 5000}}
    r = results_csv.ceiling_row(base, 1000, {"ceiling": ceiling}, "")
    check(r["deliveries_per_server_core_s"] == 2000000 and r["per_core_withheld"] == "",
          f"capacity row's per-core columns: {r}")
    check(r["server_throttled_periods"] == 390 and r["server_periods"] == 400, "throttling not in the row")
    withheld = dict(ceiling, limited_by="loadgen", deliveries_per_server_core_s=None,
                    deliveries_per_server_core_s_withheld="limited by loadgen: the search measured loadgen")
    r = results_csv.ceiling_row(base, 1000, {"ceiling": withheld}, "")
    check(r["deliveries_per_server_core_s"] is None and "loadgen" in r["per_core_withheld"],
          "a loadgen-limited search's row carries a per-core figure")
    old = {k: v for k, v in ceiling.items() if "per_server_core" not in k}
    r = results_csv.ceiling_row(base, 1000, {"ceiling": old}, "")
    check(r["deliveries_per_server_core_s"] is None and r["per_core_withheld"], "an old report's row has a figure")


# asio: the same per core at every quota and period (within the repeats' noise); fibers:
# more per core the less of a core it gets (it batches more in bursts).
ASIO = {(q, p): [2.00e6 + d for d in (-3e4, -1e4, 1e4, 3e4)] for q in (0.2, 0.3, 0.4) for p in (5.0, 20.0)}
ASIO[(0.2, 5.0)] = [1.99e6, 2.02e6, 1.98e6, 2.03e6]
FIBERS = {(q, p): [v * (1 + (0.4 - q)) for v in (2.5e6, 2.52e6, 2.48e6, 2.51e6)] for q in (0.2, 0.3, 0.4)
          for p in (5.0, 20.0)}


def check_validation_and_publication():
    rows = grid("asio", ASIO) + grid("fibers", FIBERS) + capacity_rows("coro", DEFAULT, [2.1e6] * 4)
    asio, fibers, coro = (capacity.validation(rows, c) for c in ("asio", "fibers", "coro"))
    check(asio["verdict"] == "agrees", f"asio: {asio['verdict']}")
    check(fibers["verdict"] == "does not scale linearly", f"fibers: {fibers['verdict']}")
    check(fibers["ratio"] and fibers["ratio"] > 1.1, f"fibers max/min {fibers['ratio']}")
    check(coro["verdict"].startswith("not validated"), f"coro (one cell): {coro['verdict']}")
    withheld = grid("asio", {**ASIO, (0.4, 20.0): [None] * 4})
    check(capacity.validation(withheld, "asio")["verdict"].startswith("not validated"),
          "a cell whose searches withheld the figure still validates")
    few = grid("asio", {cell: v[:3] for cell, v in ASIO.items()})
    check("too few" in capacity.validation(few, "asio")["verdict"], "3 repeats a cell validate")

    # Not published without the cross-check; published once threads and eventlet hold.
    figure, why = capacity.published(rows, "asio", PLAN)
    check(figure is None and "cross-check" in why, f"published without a cross-check: {figure} ({why})")
    good = rows + capacity_rows("threads", DEFAULT, [140e3] * 4) + capacity_rows("eventlet", DEFAULT, [100e3] * 4)
    good += [row(v, "ceiling", i, deliveries_per_s=c, limited_by="server") for v, c in
             [("threads", 142e3), ("eventlet", 109e3)] for i in range(1, 5)]
    checks = capacity.cross_check(good, PLAN)
    check([c["within"] for c in checks] == [True, True], f"cross-check: {checks}")
    figure, why = capacity.published(good, "asio", PLAN)
    check(figure == 2.0e6, f"asio's validated figure: {figure} ({why})")
    check(capacity.published(good, "fibers", PLAN)[0] is None, "fibers published though it does not scale")
    check(capacity.published(good, "coro", PLAN)[0] is None, "coro published without a validation grid")
    bad = [dict(r, deliveries_per_s="80000") if r["mode"] == "ceiling" and r["variant"] == "eventlet" else r
           for r in good]
    transfers, why = capacity.method_transfers(capacity.cross_check(bad, PLAN))
    check(transfers is False and "eventlet" in why, f"a 25% miss passes the cross-check: {why}")
    check(capacity.published(bad, "asio", PLAN)[0] is None, "published though the cross-check failed")
    loadgen = [dict(r, limited_by="loadgen") if r["mode"] == "ceiling" else r for r in good]
    check(all(c["within"] is None for c in capacity.cross_check(loadgen, PLAN)),
          "cross-checked against a ceiling loadgen stopped")
    return good


def check_several_cores():
    rows = capacity_rows("asio", DEFAULT, [2e6] * 4, ceiling=[590e3, 600e3, 610e3, 620e3])
    doubled = rows + capacity_rows("asio-t2", DEFAULT, [2e6] * 4, ceiling=[1.15e6, 1.19e6, 1.22e6, 1.25e6])
    [e] = capacity.several_cores(doubled, PLAN)
    check(e["valid"] and e["verdict"] == "tied" and abs(e["ratio"] - 2.0) < 0.01, f"doubling: {e}")
    short = rows + capacity_rows("asio-t2", DEFAULT, [1.5e6] * 4, ceiling=[880e3, 900e3, 910e3, 930e3])
    check(capacity.several_cores(short, PLAN)[0]["verdict"] == "b", "1.5-fold reads as doubling")
    stopped = rows + capacity_rows("asio-t2", DEFAULT, [2e6] * 4, limited_by="loadgen", ceiling=1190e3)
    check(not capacity.several_cores(stopped, PLAN)[0]["valid"], "judged though loadgen stopped a search")


def check_fake_cgroups():
    """CpuQuota against a fake cgroup tree of each version: which files it writes."""
    for version in (1, 2):
        with tempfile.TemporaryDirectory() as root:
            mount = Path(root) / "cpu"
            mount.mkdir()
            mounts = Path(root) / "mounts"
            if version == 2:
                (mount / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
                (mount / "cgroup.subtree_control").write_text("memory\n")
                mounts.write_text(f"cgroup2 {mount} cgroup2 rw,nosuid 0 0\n")
            else:
                mounts.write_text(f"cgroup {Path(root) / 'memory'} cgroup rw,memory 0 0\n"
                                  f"cgroup {mount} cgroup rw,cpu,cpuacct 0 0\n")
            controller = cpu_quota.find_controller(mounts)
            check(controller.version == version and controller.mount == mount, f"v{version}: found {controller}")
            quota = cpu_quota.CpuQuota(0.3, 5, cores=2, name="fake", mounts=mounts)
            path = quota.create()
            check(path == mount / "chatbench-quota-fake", f"v{version}: cgroup at {path}")
            if version == 2:
                check((path / "cpu.max").read_text() == "3000 5000", "v2 cpu.max: 2 cores x 0.3 of 5 ms")
                check((mount / "cgroup.subtree_control").read_text() == "+cpu", "v2: +cpu not enabled")
            else:
                check((path / "cpu.cfs_quota_us").read_text() == "3000"
                      and (path / "cpu.cfs_period_us").read_text() == "5000", "v1 quota and period")
            quota.add(4242)
            check((path / "cgroup.procs").read_text() == "4242", "the pid not written to cgroup.procs")
            real_rmdir = os.rmdir

            def cgroupfs_rmdir(directory):  # a cgroup's files go with it
                for f in Path(directory).iterdir():
                    f.unlink()
                real_rmdir(directory)
            os.rmdir = cgroupfs_rmdir
            try:
                quota.remove()
            finally:
                os.rmdir = real_rmdir
            check(not path.exists(), f"v{version}: the cgroup is left")
            check((mount / "cgroup.procs").read_text() == "4242", "the pid was not moved back to the parent")
    with tempfile.TemporaryDirectory() as root:
        mounts = Path(root) / "mounts"
        (Path(root) / "unified").mkdir()
        (Path(root) / "unified" / "cgroup.controllers").write_text("\n")
        mounts.write_text(f"cgroup2 {root}/unified cgroup2 rw 0 0\ncgroup {root}/memory cgroup rw,memory 0 0\n")
        try:
            cpu_quota.find_controller(mounts)
            check(False, "a CPU controller found where there is none")
        except cpu_quota.QuotaError as e:
            check("no cgroup CPU controller" in str(e) and "unified/cgroup.controllers" in str(e)
                  and "\n" not in str(e), f"no controller: {e}")
    for quota, period, cores, word in [(0, 10, 1, "(0, 1]"), (1.2, 10, 1, "(0, 1]"), (0.3, 0.5, 1, "[1, 1000]"),
                                       (0.3, 2000, 1, "[1, 1000]"), (0.2, 1, 1, "--period-ms 5"),
                                       (0.1, 5, 1, "--period-ms 10")]:
        try:
            cpu_quota.check_quota(quota, period, cores)
            check(False, f"quota {quota} of {period} ms accepted")
        except cpu_quota.UsageError as e:
            check(word in str(e), f"quota {quota} of {period} ms: {e!r} does not say {word!r}")
    check(cpu_quota.check_quota(0.1, 5, 2) == (1000, 5000), "2 cores x 0.1 of 5 ms is 1 ms a period")


def check_report_and_compare(source, rows):
    """report.py and compare.py on a run with every capacity section."""
    rows = rows + [row(c, "efficiency", i, point=20, server_cpu_per_delivery_us=v, efficiency_flags=flag,
                       server_cpu_fraction=0.5, offered_deliveries_per_s=180000)
                   for c, v, flag in [("asio", 4.2, ""), ("fibers", 2.9, ""), ("threads", 8, "did not keep up")]
                   for i in range(1, 6)]
    with tempfile.TemporaryDirectory() as out:
        results_csv.write_csv(Path(out) / "results.csv", rows)
        (Path(out) / "plan.json").write_text(json.dumps(PLAN))
        env = dict(os.environ, PYTHONPATH=str(source / "scripts"))
        run = subprocess.run(["/usr/bin/python3", str(source / "scripts/report.py"), out], env=env,
                             capture_output=True, text=True)
        check(run.returncode == 0, f"report.py exited {run.returncode}: {run.stderr[-500:]}")
        report = (Path(out) / "report.md").read_text() if run.returncode == 0 else ""
        for text in ["## Efficiency", "## Capacity per server core", "### Validation", "does not scale linearly",
                     "### Cross-check", "The method transfers", "2,000,000 per core-s (capacity)",
                     "per core-s (efficiency at 20/s)", "**flagged** ×5"]:
            check(text in report, f"report.md lacks {text!r}")
        check("`fibers` has the least server CPU" in report or "`fibers`, `asio` are tied" in report,
              "no efficiency ranking at 20/s")
        run = subprocess.run(["/usr/bin/python3", str(source / "scripts/compare.py"), out, out], env=env,
                             capture_output=True, text=True)
        check(run.returncode == 0, f"compare.py exited {run.returncode}: {run.stderr[-500:]}")
        for text in ["deliveries per server core-second (capacity) at quota 0.2 of 20 ms",
                     "server CPU per delivered line (efficiency) at 20/s per client | asio"]:
            check(text in run.stdout, f"compare.py lacks {text!r}")
        check("(efficiency) at 20/s per client | threads" not in run.stdout, "compare.py compares a flagged point")


def main():
    source = Path(sys.argv[1])
    check_efficiency_flags()
    check_ceiling_row()
    rows = check_validation_and_publication()
    check_several_cores()
    check_fake_cgroups()
    check_report_and_compare(source, rows)
    for p in problems:
        print("FAIL:", p)
    print("FAILED" if problems else "passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
