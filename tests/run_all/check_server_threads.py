#!/usr/bin/python3
"""run_all.sh --server-threads (docs/methodology.md "Server threads"):

  1. The core split and the configurations, as functions: the server on CPUs 0..N-1 and
     loadgen on the next N, an N without 2N cores refused with its reason, each variant's
     command at N (asio --threads N, go GOMAXPROCS=N, threads only pinned), uring, eventlet
     and seed at N = 1 only, the N > 1 series' names and labels, and the ceiling's CPU per
     delivered line counted over the server's N cores.
  2. The matrix's verification step (a line relayed between two clients) against chat-asio,
     and chat-go where built, started by the command the matrix gives them at N = 2 (on
     CPUs 0-1, which exist here; the 2N rule is loadgen's). Then
     scripts/run_matrix.py --server-threads 1,2 for real (asio and eventlet, a short idle
     ramp and a short broadcast): N = 1 ran as before; on a machine with fewer than 4 cores
     asio-t2 is recorded as skipped with its reason in results.csv, plan.json, machine.json
     and report.md (on 4 or more it ran on CPUs 0-1 with loadgen on 2-3); eventlet-t2 is
     skipped as one process by design; no skipped point is counted as a failure.
  3. A run with an N = 2 series, made from the fixed results directory (fixture/) with
     asio's rows copied as asio-t2 at 1.5x the deliveries/s (this machine cannot run one):
     report.py gives it its own row beside asio in *Server threads* and keeps it out of
     *Which variant to deploy*; compare.py against the fixture leaves asio's figures as
     they were (N = 1 and N = 2 not mixed); plot.py draws it.
Usage: check_server_threads.py SOURCE_DIR BUILD_DIR (with PYTHONPATH=SOURCE_DIR/scripts)"""
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from chatbench import results_csv, server_process as sp
from chatbench.raw_files import RawFiles
from chatbench.variants import config_label
from verdict import finish


def check_functions(problems):
    def expect(what, got, want):
        if got != want:
            problems.append(f"{what}: got {got!r}, expected {want!r}")

    expect("server_cores(1, 2)", sp.server_cores(1, 2), ("0", "1"))
    expect("server_cores(2, 4)", sp.server_cores(2, 4), ("0-1", "2-3"))
    expect("server_cores(3, 8)", sp.server_cores(3, 8), ("0-2", "3-5"))
    cpus, why = sp.server_cores(2, 3)
    if cpus is not None or "need 4" not in why or "has 3" not in why:
        problems.append(f"server_cores(2, 3) on 3 cores: {(cpus, why)!r}, expected a refusal saying why")

    run, skipped = sp.server_configs(["threads", "asio", "go", "uring", "eventlet", "seed"], [1, 2], 4)
    expect("configurations run on 4 cores", [c.name for c in run],
           ["threads", "asio", "go", "uring", "eventlet", "seed", "threads-t2", "asio-t2", "go-t2"])
    expect("skipped on 4 cores", [(v, n) for v, n, _ in skipped], [("uring", 2), ("eventlet", 2), ("seed", 2)])
    run, skipped = sp.server_configs(["asio"], [1, 2], 2)
    expect("configurations run on 2 cores", [c.name for c in run], ["asio"])
    expect("skipped on 2 cores", [(v, n) for v, n, _ in skipped], [("asio", 2)])

    build = Path("/b")
    expect("asio at 1", sp.Config("asio").command(build), ["taskset", "-c", "0", "/b/bin/chat-asio", "--port", "0"])
    expect("asio at 2", sp.Config("asio", threads=2, cores=4).command(build),
           ["taskset", "-c", "0-1", "/b/bin/chat-asio", "--port", "0", "--threads", "2"])
    expect("threads at 2", sp.Config("threads", threads=2, cores=4).command(build),
           ["taskset", "-c", "0-1", "/b/bin/chat-threads", "--port", "0"])
    expect("go at 2", sp.Config("go", threads=2, cores=4).command(build),
           ["taskset", "-c", "0-1", "env", "GOMAXPROCS=2", "/b/bin/chat-go", "--port", "0"])
    expect("loadgen's CPUs at 2", sp.Config("coro", threads=2, cores=4).loadgen_cpus, "2-3")

    for config, label in [("asio-t2", "asio ×2"), ("coro-uring-t4", "coro-uring ×4"),
                          ("asio-uring", "asio-uring"), ("fibers@128K", "fibers stack 128K")]:
        expect(f"label of {config}", config_label(config), label)
    # The ceiling's server_cpu_fraction is over the server's cores (docs/loadgen.md).
    row = results_csv.ceiling_row({"server_threads": 2}, 100, {"ceiling": {"server_cpu_fraction": 0.5,
                                                                 "deliveries_per_s": 1e6}}, "")
    expect("CPU per delivery at 2 cores, 50% busy, 1e6/s (µs)", row.get("server_cpu_per_delivery_us"), 1.0)


def check_verify_at_two(build, tmp, problems):
    for variant in ["asio", "go"]:
        if variant == "go" and not (build / "bin" / "chat-go").exists():
            continue
        config = sp.Config(variant, threads=2, cores=4)
        why = sp.verify(config, build, tmp / f"verify-{config.name}.log")
        if why is not None:
            problems.append(f"{config.name} ({' '.join(config.command(build))}) failed verification: {why}")


def check_run(source, build, tmp, problems):
    out = tmp / "results"
    env = dict(os.environ, BUILD_DIR=str(build))
    run = subprocess.run(["/usr/bin/python3", str(source / "scripts" / "run_matrix.py"), "--quick",
                          "--modes", "idle,broadcast", "--variants", "asio,eventlet",
                          "--server-threads", "1,2", "--repeats", "1", "--idle-max", "200",
                          "--idle-steps", "2", "--quiet-wait-s", "1", "--broadcast-clients", "20",
                          "--broadcast-messages", "3", "--thread-small-stack", "",
                          "--fiber-big-stack", "", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        problems.append(f"run_matrix.py exited {run.returncode}: {run.stdout[-2000:]} {run.stderr[-2000:]}")
        return
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    four = (os.cpu_count() or 1) >= 4

    def rows_of(config):
        return [r for r in rows if r["config"] == config]

    for config in ["asio", "eventlet"]:
        for mode in ["idle", "broadcast"]:
            mine = [r for r in rows_of(config) if r["mode"] == mode]
            if not mine or any(r["status"] != "ok" or r["server_threads"] != "1" for r in mine):
                problems.append(f"{config} {mode} at N = 1: {[(r['status'], r['server_threads'], r['why']) for r in mine]}")
    skipped_configs = ["eventlet-t2"] + ([] if four else ["asio-t2"])
    for config in skipped_configs:
        mine = rows_of(config)
        want = "one process by design" if config.startswith("eventlet") else "need 4"
        if sorted(r["mode"] for r in mine) != ["broadcast", "idle"] \
                or any(r["status"] != "skipped" or r["server_threads"] != "2" or want not in r["why"] for r in mine):
            problems.append(f"{config}: expected one skipped row per mode saying '{want}', got "
                            f"{[(r['mode'], r['status'], r['server_threads'], r['why']) for r in mine]}")
    if four:  # a machine with cores to spare: asio ran on two, loadgen on the next two
        mine = rows_of("asio-t2")
        if not mine or any(r["status"] != "ok" or r["server_threads"] != "2" for r in mine):
            problems.append(f"asio-t2 on {os.cpu_count()} cores: {[(r['status'], r['why']) for r in mine]}")
        with RawFiles(out) as raw:
            log = next((raw.read_text(n) for n in raw.names() if n.startswith("raw/asio-t2-broadcast-")
                        and n.endswith(".loadgen.log")), "")
        if "taskset -c 2-3 " not in log or "--threads 2 " not in log:
            problems.append(f"asio-t2's loadgen not on CPUs 2-3 with --threads 2: {log[:300]}")

    plan = json.loads((out / "plan.json").read_text()).get("server_threads", {})
    if plan.get("counts") != [1, 2] or set(plan.get("skipped", {})) != set(skipped_configs):
        problems.append(f"plan.json server_threads: {plan}")
    pins = json.loads((out / "machine.json").read_text())["pinning"].get("server_threads", {})
    if pins.get("1") != {"server_cpus": "0", "loadgen_cpus": "1", "loadgen_threads": 1} \
            or ("skipped" in pins.get("2", {})) == four:
        problems.append(f"machine.json pinning.server_threads: {pins}")

    report = (out / "report.md").read_text()
    section = report.split("## Server threads", 1)[-1].split("\n## ", 1)[0]
    if "## Server threads" not in report:
        problems.append("report.md has no Server threads section")
    for config in skipped_configs:
        label = config.replace("-t2", " ×2")
        why = next((r["why"] for r in rows_of(config)), "?")
        if f"| {label} | idle, broadcast | {why} |" not in section:
            problems.append(f"report.md's Server threads section does not list {label} as skipped ({why})")
        if f"| {config} |" in report.split("## Failures", 1)[-1] and "## Failures" in report:
            problems.append(f"report.md counts the skipped {config} as a failure")
    if not four and "cannot show scaling" not in section:
        problems.append("report.md does not say this machine cannot show scaling")


def check_series(source, tmp, problems):
    fixture, run = source / "tests" / "run_all" / "fixture", tmp / "series"
    shutil.copytree(fixture, run)
    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    twos = []
    for r in rows:
        if r["config"] == "asio" and r["mode"] != "microbench":
            two = dict(r, config="asio-t2", server_threads="2")
            if results_csv.num(r.get("deliveries_per_s")) is not None:
                two["deliveries_per_s"] = str(results_csv.num(r["deliveries_per_s"]) * 1.5)
            twos.append(two)
    with open(run / "results.csv", "w", newline="") as f:  # the fixture's rows predate the column
        writer = csv.DictWriter(f, fieldnames=results_csv.COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows + twos)
    plan = json.loads((run / "plan.json").read_text())
    plan["server_threads"] = {"counts": [1, 2], "skipped": {}}
    (run / "plan.json").write_text(json.dumps(plan))
    machine = json.loads((run / "machine.json").read_text())
    machine["cores"] = 4
    machine.setdefault("pinning", {})["server_threads"] = {
        "1": {"server_cpus": "0", "loadgen_cpus": "1", "loadgen_threads": 1},
        "2": {"server_cpus": "0-1", "loadgen_cpus": "2-3", "loadgen_threads": 2}}
    (run / "machine.json").write_text(json.dumps(machine))

    for script in ["report.py", "plot.py"]:
        done = subprocess.run(["/usr/bin/python3", str(source / "scripts" / script), str(run)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            problems.append(f"{script} on the N = 2 series exited {done.returncode}: {done.stderr[-1500:]}")
            return
    report = (run / "report.md").read_text()
    section = report.split("## Server threads", 1)[-1].split("\n## ", 1)[0]
    row = next((line for line in section.splitlines() if line.startswith("| asio ×2 | 2 |")), "")
    if "(1.50× one core)" not in row:
        problems.append(f"report.md's Server threads has no asio ×2 row at 1.50× asio: {row or section[-800:]!r}")
    if "cannot show scaling" in section:
        problems.append("report.md says a 4-core machine cannot show scaling")
    deploy = report.split("## Which variant to deploy", 1)[-1].split("\n## ", 1)[0]
    if "asio-t2" in deploy or "asio ×2" in deploy:
        problems.append("report.md ranks asio-t2 among the one-core variants to deploy")
    if not (run / "ceiling.png").exists():
        problems.append("plot.py drew no ceiling.png for the N = 2 series")

    done = subprocess.run(["/usr/bin/python3", str(source / "scripts" / "compare.py"), str(fixture), str(run)],
                          capture_output=True, text=True, timeout=120)
    asio = [line for line in done.stdout.splitlines() if "| asio |" in line]
    if done.returncode != 0 or not asio or any("| +0% |" not in line for line in asio):
        problems.append(f"compare.py (exit {done.returncode}) changed asio's figures when asio-t2 was added: "
                        f"{[line for line in asio if '| +0% |' not in line][:3] or done.stderr[-800:]}")


def main():
    source, build = Path(sys.argv[1]), Path(sys.argv[2])
    problems = []
    check_functions(problems)
    with tempfile.TemporaryDirectory(prefix="check_server_threads.") as tmp:
        check_verify_at_two(build, Path(tmp), problems)
        check_run(source, build, Path(tmp), problems)
        check_series(source, Path(tmp), problems)
    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())
