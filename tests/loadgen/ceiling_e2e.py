#!/usr/bin/python3
"""End-to-end checks of `loadgen chat --find-ceiling` and of loadgen's CPU figures,
against a real server on loopback.

Usage: ceiling_e2e.py CASE --loadgen PATH --server PATH
No check depends on a timing or an absolute rate: the machine may be busy.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile

from e2e import check, check_schema, start_server, wait_for_lines_in  # beside this script

CORE_KEYS = ["cpu", "busy", "steal"]
CEILING_KEYS = ["deliveries_per_s", "rate_per_client", "p99_us", "server_cpu_fraction", "loadgen_cpu_fraction",
                "limited_by", "lower_bound", "steps"]
STEP_KEYS = ["rate_per_client", "offered_per_s", "deliveries_per_s", "granularity_per_s", "p99_us", "lost", "outstanding", "late_sends",
             "sends", "server_cpu_fraction", "loadgen_cpu_fraction", "cores", "passed", "limit", "reason", "superseded"]


def loadgen_run(loadgen, port, server_pid, extra, timeout=100, during=None, preexec=None):
    """Runs loadgen; returns (exit status, report or None, stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "report.json")
        command = [loadgen, *extra, "--port", str(port), "--server-pid", str(server_pid), "--json", report_path, "--quiet"]
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
        if during:
            during()
        out, err = run.communicate(timeout=timeout)  # the bound on a search that must not hang
        sys.stdout.write(out)
        sys.stderr.write(err)
        report = None
        if os.path.exists(report_path):
            with open(report_path) as f:
                report = json.load(f)
    return run.returncode, report, err


def check_cores(cores, where):
    check(isinstance(cores, list) and len(cores) > 0, "%s: per-core busy %r" % (where, cores))
    for core in cores:
        for key in CORE_KEYS:
            check(key in core, "%s: core without %s" % (where, key))
        check(0 <= core["busy"] <= 1 and 0 <= core["steal"] <= 1, "%s: core fractions %r" % (where, core))


def passes(step, bar_us, late_bar_pct):
    """The criteria of docs/loadgen.md, recomputed from the step's own figures."""
    return (step["deliveries_per_s"] >= 0.99 * step["offered_per_s"] - step["granularity_per_s"] - 1  # both rounded to whole lines/s
            and step["p99_us"] is not None and step["p99_us"] <= bar_us
            and step["lost"] == 0 and step["outstanding"] == 0
            and step["late_sends"] <= late_bar_pct / 100 * step["sends"]
            and step["loadgen_cpu_fraction"] <= 0.7)


def case_search(loadgen, server, port):
    # A growth of 8 from 20 lines/s per client reaches a rate no server and no loadgen on
    # this machine sustains (tens of millions of deliveries/s) within the step budget.
    # Late sends are not judged here: on a shared test machine other processes delay
    # loadgen's wake-ups past 1 ms at any rate, and then no rate would pass (the late-send
    # criterion is unit-tested in ceiling_unit_test.cpp).
    late_bar_pct = 100
    status, report, _ = loadgen_run(loadgen, port, server.pid,
                                    ["chat", "--clients", "40", "--room-size", "10", "--rate", "20", "--find-ceiling",
                                     "--ceiling-growth", "8", "--ceiling-precision", "1.5", "--ceiling-max-steps", "8",
                                     "--late-bar-pct", str(late_bar_pct), "--duration-s", "1", "--warmup-s", "0.3", "--drain-s", "2"])
    check(status == 0, "loadgen exited %d" % status)
    check_schema(report)
    ceiling = report["ceiling"]
    check(ceiling is not None, "no ceiling object")
    for key in CEILING_KEYS:
        check(key in ceiling, "missing ceiling.%s" % key)
    steps = ceiling["steps"]
    check(len(steps) <= 8, "more steps than --ceiling-max-steps: %d" % len(steps))
    check(len(report["rate_steps"]) == len(steps), "rate_steps %d, ceiling.steps %d" % (len(report["rate_steps"]), len(steps)))
    bar_us = 100_000
    # A coherent, monotone bracket: each rate lies between the highest pass and the lowest
    # failure measured before it, and each step's verdict follows from its own figures.
    passed, failed = 0.0, float("inf")
    for i, step in enumerate(steps):
        for key in STEP_KEYS:
            check(key in step, "step %d without %s" % (i, key))
        check_cores(step["cores"], "step %d" % i)
        check(step["passed"] == passes(step, bar_us, late_bar_pct), "step %d verdict disagrees with its figures: %r" % (i, step))
        if step["superseded"]:
            # Failed on late sends alone: the same rate is measured again at once, and that decides.
            check(not step["passed"] and step["reason"].endswith("sends late") and ";" not in step["reason"],
                  "step %d superseded although %r" % (i, step["reason"]))
            check(i + 1 < len(steps) and steps[i + 1]["rate_per_client"] == step["rate_per_client"],
                  "step %d superseded but not measured again" % i)
            continue
        check(passed < step["rate_per_client"] < failed, "step %d rate %s outside (%s, %s)" % (i, step["rate_per_client"], passed, failed))
        check(step["passed"] == (step["reason"] == ""), "step %d reason %r" % (i, step["reason"]))
        if step["passed"]:
            passed = step["rate_per_client"]
        else:
            check(step["limit"] in ("latency", "server", "loss", "loadgen"), "step %d limit %r" % (i, step["limit"]))
            failed = step["rate_per_client"]
    check(ceiling["rate_per_client"] == passed, "ceiling %s, highest pass %s" % (ceiling["rate_per_client"], passed))
    check(failed != float("inf"), "no rate failed: the search found no bracket")
    first_above = next(s for s in steps if s["rate_per_client"] == failed and not s["superseded"])
    check(ceiling["limited_by"] == first_above["limit"], "limited_by %r, first failure %r" % (ceiling["limited_by"], first_above))
    check(ceiling["lower_bound"] == (ceiling["limited_by"] == "loadgen"), "lower_bound %r" % ceiling["lower_bound"])
    top = next(s for s in steps if s["rate_per_client"] == passed and not s["superseded"])
    check(ceiling["deliveries_per_s"] == top["deliveries_per_s"] and ceiling["p99_us"] == top["p99_us"], "ceiling figures %r" % ceiling)
    check(ceiling["server_died"] is False and report["limit_hit"] is None, "nothing died: %r" % report["limit_hit"])
    for i, detail in enumerate(report["rate_steps"]):
        check(detail["settle"] is not None and detail["settle"]["seconds"] >= 0, "step %d settle %r" % (i, detail["settle"]))


def case_rate_list(loadgen, server, port):
    status, report, err = loadgen_run(loadgen, port, server.pid, ["chat", "--clients", "10", "--rate", "10,20", "--find-ceiling"],
                                      timeout=20)
    check(status == 2, "exit status %d, want 2 (usage)" % status)
    check(report is None, "a refused command line wrote a report")
    lines = err.strip().splitlines()
    check(len(lines) == 1 and "--find-ceiling" in lines[0], "want one line naming --find-ceiling: %r" % err)


def case_server_killed(loadgen, server, port):
    def kill_mid_search():
        # Kill once the search has relayed some lines.
        wait_for_lines_in(port, 200, timeout=30)
        server.send_signal(signal.SIGKILL)

    status, report, err = loadgen_run(loadgen, port, server.pid,
                                      ["chat", "--clients", "40", "--room-size", "10", "--rate", "50", "--find-ceiling",
                                       "--duration-s", "2", "--warmup-s", "0.2", "--drain-s", "2"],
                                      timeout=60, during=kill_mid_search)
    check(status == 4, "exit status %d, want 4 (server died during the search)" % status)
    check("server died" in err, "stderr %r" % err)
    check(report is not None, "no report written")
    check_schema(report)
    check(report["limit_hit"] is not None and "died" in report["limit_hit"], "limit_hit %r" % report["limit_hit"])
    check(report["ceiling"]["server_died"] is True, "ceiling %r" % report["ceiling"])
    check(report["clients_connected"] == 0, "connected %s" % report["clients_connected"])


def case_cpu_fraction(loadgen, server, port):
    # loadgen_cpu_fraction is loadgen's CPU seconds over (window x the CPUs it may run on):
    # once pinned to one CPU and once with the affinity ctest gave it.
    cpus = sorted(os.sched_getaffinity(0))
    for allowed in ([cpus[-1]], cpus):
        status, report, _ = loadgen_run(loadgen, port, server.pid,
                                        ["chat", "--clients", "200", "--room-size", "10", "--rate", "50", "--duration-s", "1",
                                         "--warmup-s", "0.2"],
                                        timeout=30, preexec=lambda: os.sched_setaffinity(0, allowed))
        check(status == 0, "loadgen exited %d" % status)
        cpu = report["cpu"]
        want = (cpu["loadgen_user_s"] + cpu["loadgen_sys_s"]) / (cpu["window_s"] * len(allowed))
        check(abs(cpu["loadgen_cpu_fraction"] - want) < 1e-3, "loadgen_cpu_fraction %s, want %s on %d CPU(s)"
              % (cpu["loadgen_cpu_fraction"], want, len(allowed)))
        check(cpu["loadgen_saturated"] == (cpu["loadgen_cpu_fraction"] > 0.9), "loadgen_saturated %r" % cpu)
        check(cpu["server_cpu_fraction"] is not None and cpu["server_cpu_fraction"] >= 0, "server_cpu_fraction %r" % cpu)
        check_cores(cpu["cores"], "fixed rate")
        check_cores(report["rate_steps"][0]["cpu"]["cores"], "rate_steps[0]")
        # A whole is never smaller than its parts: the cores loadgen may use were busy at
        # least as long as loadgen ran, and all cores at least as long as both processes
        # (less a tick per core for each of the window's two readings).
        tick = 1 / os.sysconf("SC_CLK_TCK")
        busy_s = {core["cpu"]: core["busy"] * cpu["window_s"] for core in cpu["cores"]}
        loadgen_s = cpu["loadgen_user_s"] + cpu["loadgen_sys_s"]
        server_s = cpu["server_user_s"] + cpu["server_sys_s"]
        mine = sum(busy_s[c] for c in allowed)
        check(mine >= loadgen_s - 2 * tick * len(allowed),
              "CPUs %s busy %.3f s in the window, but loadgen alone ran %.3f s on them" % (allowed, mine, loadgen_s))
        check(sum(busy_s.values()) >= loadgen_s + server_s - 2 * tick * len(busy_s),
              "all cores busy %.3f s, less than loadgen's %.3f s and the server's %.3f s" % (sum(busy_s.values()), loadgen_s, server_s))
        check(report["ceiling"] is None, "a fixed-rate run has no ceiling")
        check(cpu["loadgen_throttled_s"] == 0, "no CPU quota, yet throttled %r" % cpu)


def cpu_cgroup(quota_fraction):
    """A new cgroup (v2, or v1's cpu hierarchy) under this process's own, holding its
    members to quota_fraction of one CPU; None where one cannot be made (not root)."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        own = next(l.split(":", 2)[2].strip() for l in open("/proc/self/cgroup") if l.startswith("0::"))
        parent = "/sys/fs/cgroup" + own.rstrip("/")
        limit = ("cpu.max", "%d 100000" % (quota_fraction * 100000))
    else:
        mount = next((f[1] for f in (l.split() for l in open("/proc/mounts"))
                      if f[2] == "cgroup" and "cpu" in f[3].split(",")), None)
        own = next((l.split(":", 2)[2].strip() for l in open("/proc/self/cgroup") if "cpu" in l.split(":")[1].split(",")), None)
        if mount is None or own is None:
            return None
        parent = mount + own.rstrip("/")
        limit = ("cpu.cfs_quota_us", "%d" % (quota_fraction * 100000))
    path = os.path.join(parent, "chatbench-throttle-%d" % os.getpid())
    try:
        os.mkdir(path)
        if os.path.exists(os.path.join(parent, "cgroup.subtree_control")):
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                f.write("+cpu")
        else:
            with open(os.path.join(path, "cpu.cfs_period_us"), "w") as f:
                f.write("100000")
        with open(os.path.join(path, limit[0]), "w") as f:
            f.write(limit[1])
    except OSError as error:
        print("cannot make a cgroup at %s: %s" % (path, error))
        if os.path.isdir(path):
            os.rmdir(path)
        return None
    return path


def case_throttled(loadgen, server, port):
    # A CPU quota holds loadgen back: the report says for how long, so that sends it made
    # late are held against loadgen, not excused as the machine's.
    cgroup = cpu_cgroup(0.1)
    if cgroup is None:
        print("SKIP: no cgroup with a CPU quota can be made here")
        sys.exit(77)
    try:
        def join():
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        status, report, _ = loadgen_run(loadgen, port, server.pid,
                                        ["chat", "--clients", "200", "--room-size", "10", "--rate", "50", "--duration-s", "1",
                                         "--warmup-s", "0.2"], timeout=60, preexec=join)
        check(status == 0, "loadgen exited %d" % status)
        cpu = report["cpu"]
        check(cpu["loadgen_throttled_s"] > 0, "held to 10%% of a CPU, yet not throttled: %r" % cpu)
        check(cpu["loadgen_cpu_fraction"] * len(os.sched_getaffinity(0)) <= 0.1 + 0.02, "over its quota: %r" % cpu)
    finally:
        os.rmdir(cgroup)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["search", "rate_list", "server_killed", "cpu_fraction", "throttled"])
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--server", required=True)
    args = parser.parse_args()
    server, port = start_server(args.server)
    try:
        globals()["case_" + args.case](args.loadgen, server, port)
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
    print("PASS", args.case)


if __name__ == "__main__":
    main()
