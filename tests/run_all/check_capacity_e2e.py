#!/usr/bin/python3
"""The capacity method on real processes: chat-asio under a CPU quota of 0.3 at a 10 ms
period (chatbench.cpu_quota), a short `loadgen chat --find-ceiling` told its cgroup, then
`run_matrix.py --modes capacity` for asio. Checks that the quota bound the server (its CPU
fraction at most the quota plus a margin in every window, its cgroup held it back in the
busiest), that the per-core figure is present exactly when the server stopped the search
and equals the ceiling over the cores it used, that the matrix's row carries the quota,
and that no cgroup is left. Skipped (77) without root or a cgroup CPU controller.
No check depends on a timing or an absolute rate: the machine may be busy.
Usage: check_capacity_e2e.py SOURCE_DIR BUILD_DIR (with PYTHONPATH=SOURCE_DIR/scripts)"""
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from chatbench import cpu_quota

SKIP = 77
QUOTA, PERIOD_MS = 0.3, 10
MARGIN = 0.05  # /proc/PID/stat counts in 10 ms ticks: a 1 s window reads up to a tick or so over
problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


def leftovers(controller, prefix):
    return sorted(p.name for p in controller.mount.iterdir() if p.name.startswith(prefix))


def search_under_quota(build, controller):
    prefix = f"{cpu_quota.PREFIX}e2e-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp, cpu_quota.CpuQuota(QUOTA, PERIOD_MS, name=f"e2e-{os.getpid()}") as quota:
        server = subprocess.Popen(["taskset", "-c", "0", str(build / "bin/chat-asio"), "--port", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=quota.join)
        try:
            path = str(quota.path)
            port = int(re.match(r"listening on [0-9.]+:(\d+)", server.stdout.readline()).group(1))
            check((quota.path / "cgroup.procs").read_text().split() == [str(server.pid)],
                  "the server is not alone in its cgroup")
            report_path = Path(tmp) / "report.json"
            # Late sends are not judged: other work on a shared machine delays loadgen's wake-ups.
            run = subprocess.run(["taskset", "-c", "1", str(build / "bin/loadgen"), "chat", "--clients", "1000",
                                  "--room-size", "10", "--rate", "20", "--find-ceiling", "--ceiling-max-steps", "7",
                                  "--late-bar-pct", "100", "--duration-s", "1", "--warmup-s", "0.3", "--drain-s", "2",
                                  "--port", str(port), "--server-pid", str(server.pid), "--server-cgroup",
                                  str(quota.path), "--quiet", "--json", str(report_path)],
                                 capture_output=True, text=True, timeout=200)
            print(run.stdout + run.stderr)
            check(run.returncode == 0, f"loadgen exited {run.returncode}")
            report = json.loads(report_path.read_text())
        finally:
            server.terminate()
            server.wait(timeout=10)
        check(leftovers(controller, prefix) == [quota.name], f"cgroups while in use: {leftovers(controller, prefix)}")
    check(report["options"]["server_cgroup"] == path, "the report does not name the server's cgroup")
    ceiling = report["ceiling"]
    busiest = None
    for step in report["rate_steps"]:
        cpu = step["cpu"]
        cgroup = cpu["server_cgroup"]
        check(cgroup is not None and cgroup["quota_cores"] == QUOTA and cgroup["period_us"] == PERIOD_MS * 1000,
              f"step at {step['rate']}: server_cgroup {cgroup}")
        check(cpu["server_cpu_fraction"] <= QUOTA + MARGIN,
              f"step at {step['rate']}: the server used {cpu['server_cpu_fraction']} of its core under a quota of {QUOTA}")
        if busiest is None or cpu["server_cpu_fraction"] > busiest["server_cpu_fraction"]:
            busiest = cpu
    check(busiest and busiest["server_cgroup"]["throttled_periods"] > 0 and busiest["server_cgroup"]["throttled_s"] > 0,
          f"the quota never held the server back, even at its busiest: {busiest and busiest['server_cgroup']}")
    per_core = ceiling["deliveries_per_server_core_s"]
    print(f"limited by {ceiling['limited_by']}, ceiling {ceiling['deliveries_per_s']}, server cores "
          f"{ceiling['server_cores']}, per core {per_core} ({ceiling['deliveries_per_server_core_s_withheld']})")
    if ceiling["limited_by"] in ("server", "latency") and ceiling["server_cores"]:
        check(per_core is not None and ceiling["deliveries_per_server_core_s_withheld"] is None,
              "a search the server stopped has no per-core figure")
        check(per_core is not None and abs(per_core - ceiling["deliveries_per_s"] / ceiling["server_cores"]) <= 0.01 * per_core,
              f"per core {per_core} is not {ceiling['deliveries_per_s']} / {ceiling['server_cores']}")
    else:
        check(per_core is None and ceiling["deliveries_per_server_core_s_withheld"],
              f"a figure from a search stopped by {ceiling['limited_by']}")
    check(not leftovers(controller, prefix), f"cgroups left after: {leftovers(controller, prefix)}")


def matrix_capacity(source, build, controller):
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, BUILD_DIR=str(build))
        run = subprocess.Popen(["/usr/bin/python3", str(source / "scripts/run_matrix.py"), "--quick", "--variants",
                                "asio", "--modes", "capacity", "--capacity-period-ms", str(PERIOD_MS),
                                "--ceiling-start-rate", "20", "--out", out], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        output, _ = run.communicate(timeout=400)
        print(output[-3000:])
        check(run.returncode == 0, f"run_matrix.py exited {run.returncode}")
        # run_matrix names each cgroup after its pid and the measurement
        mine = leftovers(controller, f"{cpu_quota.PREFIX}{run.pid}-")
        check(not mine, f"run_matrix left cgroups: {mine}")
        rows = list(csv.DictReader(open(Path(out) / "results.csv")))
        [row] = [r for r in rows if r["mode"] == "capacity"] or [None]
        check(row is not None and row["status"] == "ok", f"no measured capacity row: {row}")
        if row:
            check(float(row["capacity_quota"]) == QUOTA and float(row["capacity_period_ms"]) == PERIOD_MS
                  and float(row["quota_stall_ms"]) == 7, f"the row's quota: {row}")
            check(float(row["p99_bar_ms"]) == 107, f"the bar is not 100 ms + the 7 ms stall: {row['p99_bar_ms']}")
            check(bool(row["deliveries_per_server_core_s"]) == (row["limited_by"] in ("server", "latency")),
                  f"per core {row['deliveries_per_server_core_s']!r} with limited_by {row['limited_by']}")
        check("## Capacity per server core" in (Path(out) / "report.md").read_text(), "no capacity section")


def main():
    source, build = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        cpu_quota.require_root()
        controller = cpu_quota.find_controller()
    except cpu_quota.QuotaError as e:
        print(f"SKIP: {e}")
        return SKIP
    search_under_quota(build, controller)
    matrix_capacity(source, build, controller)
    for p in problems:
        print("FAIL:", p)
    print("FAILED" if problems else "passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
