#!/usr/bin/python3
"""Runs `scripts/run_all.sh --quick` into a temporary directory and checks what it wrote:
every variant and mode in the CSV with measured rows, the keys docs/loadgen.md gives every
loadgen report in each one (read from the run's raw.tar.xz), machine.json's fields, the
plots and the report.
Usage: check_quick.py SOURCE_DIR BUILD_DIR (with PYTHONPATH=SOURCE_DIR/scripts)"""
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from chatbench import raw_files, variants

MODES = ["idle", "broadcast", "chat"]
PLOTS = ["memory_per_connection.png", "server_memory.png", "server_host_memory.png", "broadcast_latency.png",
         "latency_spectrum.png", "chat_throughput.png", "ceiling.png", "microbench.png"]
# docs/loadgen.md: the keys every loadgen report has (nested with dots; [] = every list element).
REPORT_KEYS = [
    "mode", "clients_requested", "clients_connected", "limit_hit",
    "machine.cpu", "machine.cores", "machine.kernel", "machine.compiler", "machine.boost",
    "machine.git_commit", "machine.limits",
    *[f"memory.steps[].{k}" for k in ["clients", "rss_bytes", "pss_bytes", "vsz_bytes", "threads",
                                      "mem_available_bytes", "kernel_stack_bytes", "slab_bytes",
                                      "sock_mem_bytes"]],
    *[f"memory.per_connection.{k}" for k in ["rss_bytes", "pss_bytes", "vsz_bytes", "system_bytes"]],
    *[f"latency_us.{k}" for k in ["p50", "p90", "p99", "p999", "max", "count"]],
    *[f"lines.{k}" for k in ["sent", "delivered", "expected", "lost", "duplicated", "reordered"]],
    "throughput.sent_per_s", "throughput.deliveries_per_s",
    *[f"cpu.{k}" for k in ["server_user_s", "server_sys_s", "loadgen_user_s", "loadgen_sys_s"]],
]
BROADCAST_KEYS = [f"broadcast_completion_us.{k}" for k in ["p50", "p95", "p99", "max"]]
# Idle reports: the server host's parts, its whole and the client's end (docs/loadgen.md).
IDLE_KEYS = [*[f"memory.server_host.{k}" for k in ["rss_bytes", "pte_bytes", "kernel_stack_bytes", "socket_bytes",
                                                    "other_kernel_bytes", "parts_bytes", "whole_bytes",
                                                    "whole_meminfo_bytes", "mem_available_bytes", "flags"]],
             "memory.client_end"]
MACHINE_KEYS = ["cpu", "cores", "kernel", "compiler", "compiler_flags", "boost", "packages",
                "git_commit", "limits", "pinning", "command", "verification"]

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


def has_key(doc, dotted):
    """Whether dotted (a.b[].c) is present; a null parent counts only if the key is the leaf."""
    head, _, rest = dotted.partition(".")
    is_list = head.endswith("[]")
    head = head.removesuffix("[]")
    if not isinstance(doc, dict) or head not in doc:
        return False
    if not rest:
        return True
    value = doc[head]
    if value is None:  # "a key that a mode cannot measure is null"
        return True
    if is_list:
        return bool(value) and all(has_key(item, rest) for item in value)
    return has_key(value, rest)


def quick_run_variants(build):
    """The variants the quick run measures in every mode: what run_all.sh runs by default
    (the registry's, those a machine may lack where present) less those measured in some
    modes only (the seed: idle and broadcast, checked on its own in check_seed_and_ceilings)."""
    return [v for v in variants.available(build / "bin")[0] if set(MODES) <= set(variants.BY_NAME[v].modes)]


def check_seed_and_ceilings(build, rows, report, measured):
    """The seed's rows where servers/seed/ is in the tree (its modes only, idle and broadcast,
    marked in the report); a ceiling row per chat variant where loadgen has --find-ceiling;
    and one repeat never ranks."""
    seed = variants.BY_NAME[variants.SEED]
    if seed.executable(build / "bin").exists():
        for m in seed.modes:
            check(any(r["variant"] == seed.name and r["mode"] == m and r["status"] == "ok" for r in rows),
                  f"no measured seed × {m} row")
        check(not any(r["variant"] == seed.name and r["mode"] in set(variants.MODES) - set(seed.modes) for r in rows),
              "the seed ran in chat")
        check(variants.SEED_NOTE in report, "report.md does not mark the seed")
    help_text = subprocess.run([str(build / "bin/loadgen"), "chat", "--help"],
                               capture_output=True, text=True).stdout
    if "--find-ceiling" in help_text:
        for v in measured:
            check(any(r["variant"] == v and r["mode"] == "ceiling" and r["status"] == "ok" for r in rows),
                  f"no measured {v} ceiling row")
        check("## Chat ceilings" in report, "report.md has no chat ceilings")
    check("not enough repeats to rank" in report, "report.md ranks with one repeat")
    for v in measured:  # a default mode of run_all.sh (docs/methodology.md "Efficiency")
        check(any(r["variant"] == v and r["mode"] == "efficiency" and r["status"] == "ok" for r in rows),
              f"no measured {v} efficiency row")
    check("## Efficiency" in report, "report.md has no efficiency section")


def main():
    source, build = Path(sys.argv[1]), Path(sys.argv[2])
    measured = quick_run_variants(build)
    out = Path(tempfile.mkdtemp(prefix="run_all_quick."))
    env = dict(os.environ, BUILD_DIR=str(build))
    rc = subprocess.run([str(source / "scripts/run_all.sh"), "--quick", "--no-setup", "--no-build",
                         "--out", str(out)], env=env, timeout=550).returncode
    check(rc == 0, f"run_all.sh exited {rc}")

    rows = list(csv.DictReader(open(out / "results.csv"))) if (out / "results.csv").exists() else []
    check(rows, "results.csv missing or empty")
    for v in measured:
        for m in MODES:
            mine = [r for r in rows if r["variant"] == v and r["mode"] == m]
            check(mine, f"no {v} × {m} row in results.csv")
            check(any(r["status"] == "ok" for r in mine),
                  f"no measured {v} × {m} row: " + "; ".join(r["why"] for r in mine))
    check(any(r["mode"] == "microbench" and r["status"] == "ok" for r in rows), "no microbench rows")
    for stacked in ["threads@", "fibers@"]:
        check(any(r["config"].startswith(stacked) and r["status"] == "ok" for r in rows),
              f"no {stacked}<stack> idle rows")

    # The raw files are packed into one archive at the end of the run.
    check(not (out / raw_files.DIRECTORY).exists(), "raw/ left unpacked after the run")
    check((out / raw_files.ARCHIVE).is_file(), f"no {raw_files.ARCHIVE}")
    with raw_files.RawFiles(out) as raw:
        names = raw.names()
        missing = {r["json"] for r in rows if r["json"]} - set(names)
        check(not missing, f"results.csv's json names files not in the raw files: {sorted(missing)[:3]}")
        reports = [name for name in names if name.endswith("-r1.json")]
        check(len(reports) >= len(measured) * len(MODES), f"only {len(reports)} loadgen reports in the raw files")
        for name in reports:
            doc = json.loads(raw.read_bytes(name))
            extra = {"broadcast": BROADCAST_KEYS, "idle": IDLE_KEYS}.get(doc.get("mode"), [])
            for key in REPORT_KEYS + extra:
                check(has_key(doc, key), f"{name}: no {key}")

    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").exists() else {}
    for key in MACHINE_KEYS:
        check(key in machine, f"machine.json: no {key}")
    for plot in PLOTS:
        path = out / plot
        check(path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{plot} missing or not a PNG")
    report = (out / "report.md").read_text() if (out / "report.md").exists() else ""
    check("## Which variant to deploy" in report, "report.md missing or without its deploy section")
    for v in measured:
        check(f"| {v} |" in report, f"report.md has no table row for {v}")

    check_seed_and_ceilings(build, rows, report, measured)

    for p in problems:
        print("FAIL:", p)
    print(f"{'FAILED' if problems else 'passed'}; results in {out}")
    if not problems:
        subprocess.run(["rm", "-rf", str(out)])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
