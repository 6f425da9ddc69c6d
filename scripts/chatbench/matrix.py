"""The measurement matrix (docs/methodology.md "What the run does, in order"): what to
measure and in which order, the quiet-machine wait before an idle point, one measurement
(a fresh server, one loadgen run), and the whole run into a results directory.

Each measurement starts a fresh server pinned to CPU 0 and loadgen pinned to CPU 1; with
--server-threads N, the server on CPUs 0..N-1 and loadgen on the next N
(server_process.server_cores). A measurement that fails (server did not start, deadline
passed, loadgen error, limit hit before the point) is a row with status "failed" and its
reason; the run goes on."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from chatbench import machine, raw_files, results_csv
from chatbench.cpu_quota import CpuQuota, QuotaError
from chatbench.machine import FD_MARGIN, LOADGEN_CPU, SERVER_CPU, meminfo, read, run_text
from chatbench.peers import PeerConfig, peer_config, peer_missing, peer_version
from chatbench.server_process import Config, capacity_cores, raise_nofile, server_configs, server_cores, verify
from chatbench.variants import BY_NAME, NAMES, PEER_BY_NAME, ROOT, config_name


def registered(config):
    """A configuration's entry in the registry: its variant's, or its peer's."""
    return BY_NAME.get(config.variant) or PEER_BY_NAME[config.variant]

# What loadgen's exit statuses mean (docs/exit-status.md), for a failed row's reason.
LOADGEN_STATUS = {1: "loadgen error", 2: "bad loadgen command line", 3: "no client connected",
                  4: "server died during the ceiling search"}


class Measurement:
    """One loadgen run against a fresh server; with a quota (quota per server core,
    period in ms), the server runs under that CPU quota (chatbench.cpu_quota)."""

    def __init__(self, config, mode, point, repeat, estimate_s, loadgen_args, deadline_s, quota=None):
        self.config, self.mode, self.point, self.repeat = config, mode, point, repeat
        self.estimate_s, self.loadgen_args, self.deadline_s = estimate_s, loadgen_args, deadline_s
        self.quota = quota

    @property
    def cell(self):
        """The quota's part of the label and of what is not retried: "-q0.3-p5", or ""."""
        return f"-q{self.quota[0]:g}-p{self.quota[1]:g}" if self.quota else ""

    @property
    def label(self):
        return f"{self.config.name}-{self.mode}-{self.point}{self.cell}-r{self.repeat}"


class Curve:
    """What the chat measurements learn as the run goes: each configuration's measured
    ceilings (rate per client), from which later searches start and the fixed-rate curve
    takes its top rates. The curve's rates are fixed at the first chat measurement, after
    repeat 1's searches, so every variant and repeat has the same points."""

    MAX_DOUBLINGS = 5  # how far past --chat-rates the curve may extend (each costs a step)

    def __init__(self, args):
        self.args, self.ceilings, self.rates = args, {}, None

    def found(self, config, rows):
        for r in rows:
            if r.get("status") == "ok" and r.get("rate_per_client"):
                self.ceilings.setdefault(config, []).append(float(r["rate_per_client"]))

    def start_rate(self, config):
        """Repeat 1 starts at --ceiling-start-rate; later ones at half the first ceiling,
        which saves the geometric steps the first search already climbed."""
        first = self.ceilings.get(config)
        return f"{max(self.args.ceiling_start_rate, first[0] / 2) if first else self.args.ceiling_start_rate:g}"

    def chat_rates(self):
        """--chat-rates, doubled past the highest ceiling measured so far (1.25x) so the
        curve shows every variant's ceiling."""
        if self.rates is None:
            rates = list(self.args.chat_rates)
            top = max((max(v) for v in self.ceilings.values()), default=0)
            for _ in range(self.MAX_DOUBLINGS):
                if not rates or rates[-1] >= 1.25 * top:
                    break
                rates.append(rates[-1] * 2)
            self.rates = rates
        return ",".join(f"{x:g}" for x in self.rates)


def pacing(c):
    """loadgen --connect-rate for a server whose accept queue needs its connects paced
    (the registry's connect_rate), in every mode."""
    rate = registered(c).connect_rate
    return ["--connect-rate", rate] if rate else []


def chat_measurement(args, c, r, curve):
    warm = 0.5
    rates = len(args.chat_rates) + Curve.MAX_DOUBLINGS
    est = 2 + len(args.chat_rates) * (args.chat_duration_s + warm) + 2
    return Measurement(c, "chat", args.chat_clients, r, est,
                       ["chat", "--clients", args.chat_clients, "--room-size", args.room_size,
                        "--rate", curve.chat_rates, "--duration-s", args.chat_duration_s,
                        "--warmup-s", warm, "--size", 64] + pacing(c),
                       deadline_s=60 + (4 + rates * (args.chat_duration_s + warm)) * 2)


def ceiling_measurement(args, c, r, curve):
    """loadgen's ceiling search (docs/loadgen.md): a fresh window per step; the estimate
    assumes about 10 steps with a drain of a second or two each."""
    warm = 0.5
    step = args.chat_duration_s + warm + 1.5
    est = 2 + (10 if r == 1 else 6) * step
    return Measurement(c, "ceiling", args.chat_clients, r, est,
                       ["chat", "--find-ceiling", "--clients", args.chat_clients,
                        "--room-size", args.room_size, "--rate", lambda: curve.start_rate(c.name),
                        "--p99-bar-ms", f"{args.p99_bar_ms:g}", "--duration-s", args.chat_duration_s,
                        "--warmup-s", warm, "--size", 64] + pacing(c)
                       # A smoke run brackets coarsely: ten variants' searches must fit in minutes.
                       + (["--ceiling-max-steps", 6] if args.quick else []),
                       deadline_s=60 + 30 * step)


def efficiency_measurement(args, c, r):
    """Chat at the fixed --efficiency-rates, stepped up in one run (docs/methodology.md
    "Efficiency"): the server's CPU per delivered line where its cores have room."""
    warm = 0.5
    rates = args.efficiency_rates
    return Measurement(c, "efficiency", args.chat_clients, r, 2 + len(rates) * (args.chat_duration_s + warm) + 2,
                       ["chat", "--clients", args.chat_clients, "--room-size", args.room_size,
                        "--rate", ",".join(f"{x:g}" for x in rates), "--duration-s", args.chat_duration_s,
                        "--warmup-s", warm, "--size", 64] + pacing(c),
                       deadline_s=60 + (4 + len(rates) * (args.chat_duration_s + warm)) * 2)


class CapacityCurve:
    """Where each capacity search starts: half the first ceiling of the same configuration
    and quota; else a prediction from the configuration's per-core figure so far (its
    quota's share of it, halved); else --ceiling-start-rate. Each saves the steps an earlier
    search climbed; the search's result does not depend on where it starts."""

    def __init__(self, args):
        self.args, self.ceilings, self.per_core = args, {}, {}

    def found(self, config, quota, rows):
        for r in rows:
            if r.get("status") == "ok" and r.get("rate_per_client"):
                self.ceilings.setdefault((config.name, quota), []).append(float(r["rate_per_client"]))
            if r.get("status") == "ok" and r.get("deliveries_per_server_core_s"):
                self.per_core.setdefault(config.name, []).append(float(r["deliveries_per_server_core_s"]))

    def start_rate(self, config, quota):
        a = self.args
        if (config.name, quota) in self.ceilings:
            return f"{self.ceilings[(config.name, quota)][0] / 2:g}"
        if config.name in self.per_core:
            fan_out = a.chat_clients * (min(a.room_size, a.chat_clients) - 1)
            return f"{max(1.0, self.per_core[config.name][0] * quota[0] * config.threads / fan_out / 2):.3g}"
        return f"{a.ceiling_start_rate:g}"


def capacity_measurement(args, c, r, quota, curve):
    """loadgen's ceiling search with the server under a CPU quota (quota per server core,
    period in ms) and its cgroup named to loadgen (docs/methodology.md "Capacity per server
    core"). The p99 bar is --p99-bar-ms plus the stall the quota adds at worst per period:
    the latency the quota itself causes is not held against the server."""
    warm = 0.5
    step = args.chat_duration_s + warm + 1.5
    stall_ms = quota[1] * (1 - quota[0])
    return Measurement(c, "capacity", args.chat_clients, r, 2 + 8 * step,
                       ["chat", "--find-ceiling", "--clients", args.chat_clients,
                        "--room-size", args.room_size, "--rate", lambda: curve.start_rate(c, quota),
                        "--p99-bar-ms", f"{args.p99_bar_ms + stall_ms:g}", "--duration-s", args.chat_duration_s,
                        "--warmup-s", warm, "--size", 64] + pacing(c)
                       + (["--ceiling-max-steps", 6] if args.quick else []),
                       deadline_s=60 + 30 * step, quota=quota)


def capacity_cells(args, configs):
    """[(config, (quota, period_ms))] the capacity mode measures each repeat: every
    configuration at --capacity-quota/--capacity-period-ms; with --capacity-validate, the
    --capacity-validate-variants at every quota x period of the grid too. (The
    configurations --capacity-threads adds are measured at the default cell only.)"""
    default = (args.capacity_quota, args.capacity_period_ms)
    cells = [(c, default) for c in configs]
    if args.capacity_validate:
        grid = [(q, p) for q in args.capacity_validate_quotas for p in args.capacity_validate_periods]
        cells += [(c, cell) for c in configs if c.variant in args.capacity_validate_variants
                  for cell in grid if cell != default]
    return cells


def capacity_core_configs(args, configs, cores):
    """The configurations --capacity-threads adds (N > 1), and [(variant, N, why)] of
    those that cannot run here."""
    out, skipped = [], []
    for n in [n for n in args.capacity_threads if n > 1]:
        pinning = capacity_cores(n, cores)
        for c in configs:
            if c.threads != 1:
                continue
            if BY_NAME[c.variant].one_core:
                skipped.append((c.variant, n, f"{BY_NAME[c.variant].one_core}: runs on one core only"))
            elif pinning[0] is None:
                skipped.append((c.variant, n, pinning[1]))
            else:
                out.append(Config(c.variant, threads=n, pinning=pinning))
    return out, skipped


def loadgen_finds_ceilings(build_dir):
    """Whether this loadgen has the ceiling search (`chat --find-ceiling`)."""
    text = run_text([str(Path(build_dir) / "bin" / "loadgen"), "chat", "--help"])
    return "--find-ceiling" in text


# The modes a variant must have (variants.Variant.modes) for the modes built on them.
MODE_BASE = {"efficiency": "chat", "capacity": "ceiling"}


def plan(args, target, configs, curve, peers=(), capacity=((), None)):
    """The matrix, repeat-major so that drift of the machine spreads over all variants.
    Within a repeat the ceiling searches come before the fixed-rate chat curve, whose top
    rates follow from the ceilings; then the efficiency runs and the capacity searches,
    which have their own repeat counts. The extra stack sizes run on one server core only.
    The peers follow the variants in each mode they measure: nginx idle, the brokers every
    one. capacity: ([(config, cell)], CapacityCurve) from capacity_cells."""
    one_core = {c.variant for c in configs if c.threads == 1}
    stacks = {"threads": args.thread_small_stack, "fibers": args.fiber_big_stack}
    extra = [Config(v, stacks[v]) for v in NAMES  # in the registry's order: threads, fibers
             if stacks.get(v) and v in one_core and BY_NAME[v].stack_size]
    peer_configs = [PeerConfig(x) for x in peers]
    hold = 1 if args.quick else 2

    def variant(c):  # None for a peer
        return BY_NAME.get(c.variant)

    def runs(mode, extra=()):
        """The variants that measure mode (or the mode it is built on), then extra
        configurations, then the peers that do."""
        base = MODE_BASE.get(mode, mode)
        return ([c for c in configs if base in variant(c).modes] + list(extra)
                + [c for c in peer_configs if base in registered(c).modes])

    out = []
    for r in range(1, args.repeats + 1):
        if "idle" in args.modes:
            for c in runs("idle", extra):
                slow = 3 if variant(c) and variant(c).script else 1  # a Python server
                est = (2 + args.idle_steps * 0.6 + target / 4000) * slow
                out.append(Measurement(c, "idle", target, r, est,
                                       ["idle", "--clients", target, "--steps", args.idle_steps,
                                        "--hold-s", hold] + pacing(c),
                                       deadline_s=60 + args.idle_steps * (hold + 12)))
        if "broadcast" in args.modes:
            for c in runs("broadcast"):  # the seed included (its model's fan-out is the comparison), the brokers
                for n in args.broadcast_clients:
                    send_s = args.broadcast_messages * args.broadcast_interval_ms / 1000
                    est = 1.5 + send_s + n / 3000
                    out.append(Measurement(c, "broadcast", n, r, est,
                                           ["broadcast", "--clients", n,
                                            "--messages", args.broadcast_messages,
                                            "--interval-ms", args.broadcast_interval_ms,
                                            "--size", 64] + pacing(c),
                                           deadline_s=60 + send_s * 2))
        if "ceiling" in args.modes:
            out += [ceiling_measurement(args, c, r, curve) for c in runs("ceiling")]
        if "chat" in args.modes:
            out += [chat_measurement(args, c, r, curve) for c in runs("chat")]
    return out + efficiency_and_capacity_plan(args, runs("efficiency"), *capacity)


def efficiency_and_capacity_plan(args, chat_configs, cells, capacity_curve):
    """After the main matrix, the efficiency runs and capacity searches, each with its
    own repeat count, repeat-major: every configuration's (and cell's) repeat r before any
    repeat r + 1, so that drift of the machine spreads over them all."""
    out = []
    for r in range(1, max(args.efficiency_repeats, args.capacity_repeats) + 1):
        if "efficiency" in args.modes and r <= args.efficiency_repeats:
            out += [efficiency_measurement(args, c, r) for c in chat_configs]
        if "capacity" in args.modes and r <= args.capacity_repeats:
            out += [capacity_measurement(args, c, r, cell, capacity_curve) for c, cell in cells]
    return out


# The quiet-machine check before an idle point: TIME_WAIT sockets of earlier points hold
# kernel memory and are freed while the next point measures. loadgen resets its connections
# (SO_LINGER 0), so few are expected; memory still returning from the last point shows as
# MemFree and Slab that keep moving.
QUIET_TIME_WAIT = 100                 # a few hundred bytes each: noise below this
QUIET_WINDOW_S = 2.0                  # memory is settled when, over this long,
QUIET_MEM_FREE_RANGE = 1 << 20        # MemFree moved less than this (10 000 connections
QUIET_SLAB_RANGE = 256 << 10          # take ~50 MiB) and Slab less than this


def wait_quiet(bound_s):
    """Waits (at most bound_s) until TIME_WAIT sockets are at most QUIET_TIME_WAIT and
    free memory (MemFree and the per-CPU lists) and Slab have settled. Returns what it
    found, with a problem text if it gave up."""
    begin = time.monotonic()
    window = []  # (time, MemFree, Slab) over the last QUIET_WINDOW_S
    while True:
        now = time.monotonic()
        info = meminfo()
        free = info["MemFree"] + machine.per_cpu_free_bytes()  # free memory, parked pages included
        # Keep one sample older than the window, so that it spans the whole window (with
        # samples every 0.25 s, keeping only those inside it left it short of full forever).
        window.append((now, free, info["Slab"]))
        while len(window) > 1 and now - window[1][0] >= QUIET_WINDOW_S:
            window.pop(0)
        tw = machine.time_wait_count()
        full = now - window[0][0] >= QUIET_WINDOW_S
        free_range = max(w[1] for w in window) - min(w[1] for w in window)
        slab_range = max(w[2] for w in window) - min(w[2] for w in window)
        settled = full and free_range < QUIET_MEM_FREE_RANGE and slab_range < QUIET_SLAB_RANGE
        if (settled and tw <= QUIET_TIME_WAIT) or now - begin >= bound_s:
            problems = []
            if tw > QUIET_TIME_WAIT:
                problems.append(f"{tw} sockets in TIME_WAIT")
            if not settled:
                problems.append(f"memory not settled (free memory moved {free_range >> 10} KiB, "
                                f"Slab {slab_range >> 10} KiB in {QUIET_WINDOW_S:g} s)")
            return {"time_wait": tw, "wait_s": round(now - begin, 1), "settled": settled,
                    "problem": ("machine not quiet after %.0f s: " % bound_s + ", ".join(problems))
                    if problems else ""}
        time.sleep(0.25)


def run_measurement(m, build_dir, raw):
    """One fresh server, one loadgen run. Returns (status, why, json_path)."""
    json_path = raw / f"{m.label}.json"
    quota = None
    if m.quota:  # the server's own cgroup, made before it starts and removed after it stops
        quota = CpuQuota(*m.quota, cores=m.config.threads, name=f"{os.getpid()}-{m.label}")
        try:
            quota.create()
        except QuotaError as e:
            return "failed", f"no CPU quota: {e}", None
    server = m.config.server(build_dir, raw / f"{m.label}.server.log")
    why = ""
    try:
        server.start()
        if quota:  # the whole process, every thread it has started and will start (cgroup.procs)
            quota.add(server.proc.pid)
    except (OSError, RuntimeError) as e:
        server.stop()
        if quota:
            quota.remove()
        return "failed", f"server did not start{' under its quota' if server.port else ''}: {e}", None
    cmd = ["taskset", "-c", m.config.loadgen_cpus, str(Path(build_dir) / "bin" / "loadgen")]
    cmd += [str(x() if callable(x) else x) for x in m.loadgen_args]  # callables: learnt so far
    if getattr(m.config, "protocol", ""):  # a broker: loadgen speaks its protocol, in every mode
        cmd += ["--protocol", m.config.protocol]
    cmd += ["--port", str(server.port), "--server-pid", str(server.proc.pid),
            "--threads", str(m.config.threads), "--quiet", "--json", str(json_path)]
    if quota:
        cmd += ["--server-cgroup", str(quota.path)]
    try:
        with open(raw / f"{m.label}.loadgen.log", "wb") as log:
            log.write((" ".join(cmd) + "\n").encode())
            log.flush()
            try:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=m.deadline_s, preexec_fn=raise_nofile).returncode
                if rc != 0:
                    why = f"loadgen exited {rc}: {LOADGEN_STATUS.get(rc, 'see the log')}"
            except subprocess.TimeoutExpired:
                why = f"deadline of {m.deadline_s:.0f} s passed"
    finally:  # also when the run is interrupted: no server outlives it, nor its cgroup
        note = server.stop()
        if quota:
            quota.remove()
    if why or not json_path.exists():
        return "failed", why or "loadgen wrote no report", None
    report = json.loads(json_path.read_text())
    # The point is reached when every client connected; receivers the server disconnected
    # later (slow receivers at saturation) are part of the measurement, noted, not a failure.
    requested = report.get("clients_requested") or 0
    connected = (report.get("ramp") or {}).get("connected", report.get("clients_connected")) or 0
    reasons = []
    if report.get("limit_hit"):
        reasons.append(f"limit hit: {report['limit_hit']}")
    if connected < requested:
        reasons.append(f"{connected}/{requested} clients connected")
    closed = report.get("closed_by_server") or 0
    if closed:  # a server that timed clients out has not held them: no measurement
        reasons.append(f"server closed {closed} idle connections during the run")
    disconnected = (report.get("lines") or {}).get("receivers_disconnected")
    if disconnected:
        reasons.append(f"server disconnected {disconnected} receivers")
    if note:
        reasons.append(note)
    return ("failed" if connected < requested or closed else "ok"), "; ".join(reasons), json_path


def run_microbench(args, build_dir, raw):
    out = raw / "microbench.json"
    cmd = ["taskset", "-c", f"{SERVER_CPU},{LOADGEN_CPU}", str(Path(build_dir) / "bin" / "microbench"),
           "--benchmark_out=" + str(out), "--benchmark_out_format=json"]
    if args.quick:
        cmd += ["--smoke", "--benchmark_min_time=0.01"]
    with open(raw / "microbench.log", "wb") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=300,
                                preexec_fn=raise_nofile).returncode
        except subprocess.TimeoutExpired:
            return "deadline of 300 s passed"
    if not out.exists():
        return f"microbench exited {rc} without a report"
    return None if rc == 0 else f"microbench exited {rc}"


# ---------------------------------------------------------------------------------------
# Progress


def fmt_s(s):
    s = int(max(0, s))
    return f"{s // 60:d}:{s % 60:02d}"


class Progress:
    """Elapsed and estimated remaining time: each planned measurement's estimate, scaled by
    how the measurements of its mode done so far compared with theirs (all modes' ratio
    until one of that mode is done)."""

    def __init__(self, planned):
        self.start = time.monotonic()
        self.left = list(planned)  # (mode, estimate_s) not yet done
        self.estimated, self.actual = {}, {}

    def elapsed(self):
        return time.monotonic() - self.start

    def scale(self, mode):
        if self.estimated.get(mode):
            return self.actual[mode] / self.estimated[mode]
        total = sum(self.estimated.values())
        return sum(self.actual.values()) / total if total else 1.0

    def remaining(self):
        return sum(est * self.scale(mode) for mode, est in self.left)

    def done(self, mode, estimate_s, actual_s):
        self.left.remove((mode, estimate_s))
        self.estimated[mode] = self.estimated.get(mode, 0) + estimate_s
        self.actual[mode] = self.actual.get(mode, 0) + actual_s

    def line(self, text):
        print(f"[{fmt_s(self.elapsed())} elapsed, ~{fmt_s(self.remaining())} left] {text}", flush=True)


# ---------------------------------------------------------------------------------------
# The run

class Interrupted(Exception):
    """SIGINT or SIGTERM during the run: what was measured is kept (results.csv, the raw
    files packed), and the run ends with 128 + the signal's number, as if killed by it."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum, _frame):
    raise Interrupted(signum)


def run(args, build_dir, out):
    """The whole run into the results directory out (absolute: peers are started in their
    own directory and read their config by this path); then plot.py and report.py."""
    for tool in ["taskset"]:
        if not shutil.which(tool):
            sys.exit(f"run_matrix: {tool} is missing (scripts/setup.sh installs it)")
    for binary in ["loadgen"] + (["microbench"] if "microbench" in args.modes else []):
        if not (build_dir / "bin" / binary).exists():
            sys.exit(f"run_matrix: {build_dir}/bin/{binary} missing: build first (scripts/build.sh)")
    (out / raw_files.DIRECTORY).mkdir(parents=True, exist_ok=True)
    handlers = {signum: signal.getsignal(signum) for signum in [signal.SIGINT, signal.SIGTERM]}
    for signum, handler in handlers.items():
        if handler is not signal.SIG_IGN:  # e.g. SIGINT in a background job
            signal.signal(signum, _interrupt)
    try:
        try:
            progress = measure(args, build_dir, out)
        finally:  # whatever ends the measurements, their raw files go into one archive
            archive = raw_files.pack(out)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
    except Interrupted as e:
        print(f"run_matrix: interrupted by {e}: {out / 'results.csv'} has the points measured so far, "
              f"{archive} their raw files", file=sys.stderr)
        sys.exit(128 + e.signum)
    print(f"run_matrix: raw files in {archive}")
    for script in ["plot.py", "report.py"]:
        rc = subprocess.run(["/usr/bin/python3", str(ROOT / "scripts" / script), str(out)]).returncode
        if rc != 0:
            sys.exit(f"run_matrix: {script} failed ({rc})")
    print(f"run_matrix: done in {fmt_s(progress.elapsed())}: {out / 'report.md'}")


def measure(args, build_dir, out):
    """Everything measured, into out: machine.json, plan.json, results.csv (rewritten after
    each measurement) and the raw files under out/raw/. Returns the Progress."""
    raw = out / raw_files.DIRECTORY
    desc = machine.describe_machine(args, build_dir)
    print(f"run_matrix: results in {out}")
    target = idle_target(args, desc, build_dir)

    # --server-threads: what runs on how many cores, and what cannot run here (and why).
    planned, skipped = server_configs(args.variants, args.server_threads, desc["cores"] or 1)
    capacity_configs, capacity_skipped = [], []
    if "capacity" in args.modes:
        desc["cpu_quota"] = probe_quota(args)
        capacity_configs, capacity_skipped = capacity_core_configs(
            args, [c for c in planned if "ceiling" in BY_NAME[c.variant].modes], desc["cores"] or 1)
        planned += capacity_configs
        for v, n, why in capacity_skipped:
            print(f"skip   {config_name(v, '', n):9s} capacity: {why}", flush=True)
    by_n = desc["pinning"]["server_threads"] = {}
    for n in args.server_threads:
        cpus, loadgen = server_cores(n, desc["cores"] or 1) if n > 1 else (SERVER_CPU, LOADGEN_CPU)
        by_n[str(n)] = ({"server_cpus": cpus, "loadgen_cpus": loadgen, "loadgen_threads": n} if cpus
                        else {"skipped": loadgen})
    for v, n, why in skipped:
        print(f"skip   {config_name(v, '', n):9s} {why}", flush=True)

    # Verification before anything is timed.
    configs, failures = [], {}
    for c in planned:
        why = verify(c, build_dir, raw / f"verify-{c.name}.log")
        print(f"verify {c.name:9s} {'ok' if why is None else 'FAILED: ' + why}", flush=True)
        if why is None:
            configs.append(c)
        else:
            failures[c] = why
    desc["verification"] = {c.name: failures.get(c, "ok") for c in planned}
    peers, desc["peers"] = peers_to_run(args, raw)

    if "ceiling" in args.modes and not loadgen_finds_ceilings(build_dir):
        # A loadgen without the search: the run goes on without it, and says so.
        args.modes.remove("ceiling")
        desc["ceiling_search"] = "not run: this loadgen has no `chat --find-ceiling`"
        print("  note: " + desc["ceiling_search"])
    curve, capacity_curve = Curve(args), CapacityCurve(args)
    # The configurations --capacity-threads added are measured in the capacity mode only.
    main = [c for c in configs if c not in capacity_configs]
    searched = [c for c in main if c.threads == 1 and "ceiling" in BY_NAME[c.variant].modes]
    searched += [PeerConfig(p) for p in peers if "ceiling" in PEER_BY_NAME[p].modes]  # the brokers
    cells = capacity_cells(args, searched)
    cells += [(c, (args.capacity_quota, args.capacity_period_ms)) for c in configs if c in capacity_configs]
    measurements = plan(args, target, main, curve, peers, (cells, capacity_curve))
    micro_estimate = (20 if args.quick else 60) if "microbench" in args.modes else 0
    write_plan(out, args, target, configs, skipped, peers, measurements)
    (out / "machine.json").write_text(json.dumps(desc, indent=1))

    progress = Progress([(m.mode, m.estimate_s) for m in measurements]
                        + ([("microbench", micro_estimate)] if micro_estimate else []))

    def modes_of(variant):
        return [m for m in args.modes if m != "microbench" and MODE_BASE.get(m, m) in BY_NAME[variant].modes]
    rows = []
    for c, why in failures.items():
        for mode in modes_of(c.variant):
            rows.append(results_csv.failed_row(c.name, c.variant, "", mode, "", 0,
                                               "verification failed: " + why, server_threads=c.threads))
    for v, n, why in skipped:
        rows += [results_csv.skipped_row(config_name(v, "", n), v, n, mode, why)
                 for mode in modes_of(v)]
    rows += [results_csv.skipped_row(config_name(v, "", n), v, n, "capacity", why) for v, n, why in capacity_skipped]
    # A point a configuration could not reach is not retried in later repeats: it would
    # cost another deadline to learn the same thing.
    unreachable = {}
    for i, m in enumerate(measurements, 1):
        key = (m.config.name, m.mode, m.point, m.cell)
        progress.line(f"{i}/{len(measurements)} {m.config.name} {m.mode} {m.point} repeat {m.repeat}")
        begin = time.monotonic()
        quiet = None
        if key in unreachable:
            status, why, path = "failed", f"skipped: {unreachable[key]} in an earlier repeat", None
        else:
            quiet = wait_quiet(args.quiet_wait_s) if m.mode == "idle" else None
            if quiet and quiet["problem"]:
                print(f"    {quiet['problem']}", flush=True)
            status, why, path = run_measurement(m, build_dir, raw)
        actual = time.monotonic() - begin
        progress.done(m.mode, m.estimate_s, actual)
        if status != "ok":
            unreachable.setdefault(key, why)
            print(f"    FAILED ({actual:.1f} s): {why}", flush=True)
        elif why:
            print(f"    note: {why}", flush=True)
        new = results_csv.rows_from_report(m.config.name, m.config.variant, m.config.stack, m.mode,
                                           m.point, m.repeat, status, why, path, out,
                                           server_threads=m.config.threads)
        results_csv.add_quiet(new, quiet)
        if m.quota:
            results_csv.add_quota(new, *m.quota, p99_bar_ms=args.p99_bar_ms + m.quota[1] * (1 - m.quota[0]))
            capacity_curve.found(m.config, m.quota, new)
        rows.extend(new)
        if m.mode == "ceiling":
            curve.found(m.config.name, new)
        results_csv.write_csv(out / "results.csv", rows)

    if "microbench" in args.modes:
        progress.line("microbench")
        begin = time.monotonic()
        why = run_microbench(args, build_dir, raw)
        progress.done("microbench", micro_estimate, time.monotonic() - begin)
        if why:
            print(f"    microbench: {why}", flush=True)
        rows.extend(results_csv.rows_from_microbench(raw / "microbench.json", why))
    results_csv.write_csv(out / "results.csv", rows)

    if curve.rates is not None:
        desc["chat_rates_used"] = curve.rates
    desc["loadavg_end"] = read("/proc/loadavg")
    desc["duration_s"] = round(progress.elapsed(), 1)
    (out / "machine.json").write_text(json.dumps(desc, indent=1))
    progress.line(f"measurements done: {out / 'results.csv'} ({len(rows)} rows)")
    return progress


def probe_quota(args):
    """Whether this machine can hold a server to a CPU quota (root, a cgroup CPU
    controller that takes the quota asked for): a cgroup made and removed at once. Exits
    with the reason (status 1) before anything is measured if not; returns where the
    controller is, for machine.json."""
    try:
        with CpuQuota(args.capacity_quota, args.capacity_period_ms, name=f"{os.getpid()}-probe") as quota:
            return str(quota.controller)
    except QuotaError as e:
        sys.exit(f"run_matrix: --modes capacity: {e}")


def idle_target(args, desc, build_dir):
    """The idle ramp's target (what the machine's limits allow, or the command line's), with
    the limits, the one that binds and what may disturb the run, printed and into desc
    (machine.json)."""
    limits = desc["limits"]
    target, binding, caps = machine.idle_capacity(limits)
    if args.quick:
        target, binding = min(target, 400), "--quick"
    if args.idle_max:
        target, binding = args.idle_max, "--idle-max"
    biggest = max([target] + args.broadcast_clients + [args.chat_clients])

    print(f"machine: {desc['cpu']}, {desc['cores']} cores, {desc['kernel']}, "
          f"load {desc['loadavg_start']}, "
          + ("CPUs busy unknown" if desc.get("cpu_busy_start") is None else f"{desc['cpu_busy_start']:.2f} cores busy"))
    for name, cap in sorted(caps.items(), key=lambda kv: kv[1]):
        print(f"  cap {cap:>8} connections: {name}")
    print(f"  -> idle ramp to {target} (set by {binding})")
    warnings = []
    if (desc["cores"] or 1) < 2:
        warnings.append("fewer than 2 cores: server and loadgen share one, numbers mean little")
    low, high = limits["ip_local_port_range"]
    if biggest > (high - low) and biggest > 1000:
        warnings.append(f"{biggest} connections exceed one source address's {high - low} ports: "
                        "loadgen spreads over 127.0.0.x")
    if limits["ulimit_n_hard"] < biggest + FD_MARGIN:
        warnings.append(f"ulimit -n hard {limits['ulimit_n_hard']} is below {biggest} connections")
    if desc["build_type"] != "Release":
        warnings.append(f"{build_dir} is a '{desc['build_type']}' build, not Release")
    busy = desc.get("cpu_busy_start")
    if busy is not None and busy > machine.BUSY_WARN_CORES:
        warnings.append(f"{busy:.2f} cores busy at start ({machine.BUSY_WINDOW_S:g} s before the matrix): "
                        "other work on the machine disturbs the numbers")
    for w in warnings:
        print("  warning: " + w)
    desc["warnings"] = warnings
    desc["idle_target"] = {"clients": target, "binding_limit": binding, "caps": caps}
    return target


def peers_to_run(args, raw):
    """The peers to measure, and what machine.json says of each: no relay verification (a
    peer answers no /stats); nginx in idle only, a broker in every mode asked for, in its
    own protocol. One whose package is missing is skipped, and the report says why, with
    the command that installs it."""
    peers, info = [], {}
    for x in args.peers:
        peer = PEER_BY_NAME[x]
        modes = [m for m in args.modes if m in peer.modes]
        if not modes:
            print(f"peer   {x:9s} not run: it measures {', '.join(peer.modes)} only, and --modes has none of them",
                  flush=True)
            continue
        why = peer_missing(x)
        info[x] = {"package": peer.package, "version": peer_version(x), "protocol": peer.protocol or None,
                   "modes": modes, "setting": peer_config(x, 0, raw)[2], "skipped": why or ""}
        print(f"peer   {x:9s} " + (f"skipped: {why}" if why else f"{peer.package} {info[x]['version']}, "
                                    + ", ".join(modes)), flush=True)
        if not why:
            peers.append(x)
    return peers, info


def write_plan(out, args, target, configs, skipped, peers, measurements):
    (out / "plan.json").write_text(json.dumps({
        "variants": args.variants, "verified": [c.name for c in configs], "peers": peers,
        "repeats": args.repeats,
        "server_threads": {"counts": args.server_threads, "loadgen_cores": "as many as the server's",
                           "skipped": {config_name(v, "", n): why for v, n, why in skipped},
                           "remote_load": "not built: run_matrix runs loadgen on this machine only "
                                          "(scripts/run_distributed.sh is a single chat run)"},
        "idle": {"clients": target, "steps": args.idle_steps},
        "broadcast": {"clients": args.broadcast_clients, "messages": args.broadcast_messages,
                      "interval_ms": args.broadcast_interval_ms, "size": 64},
        "chat": {"clients": args.chat_clients, "room_size": args.room_size,
                 "rates": args.chat_rates, "duration_s": args.chat_duration_s, "warmup_s": 0.5,
                 "size": 64, "extends_past_ceilings": "ceiling" in args.modes},
        "ceiling": {"start_rate": args.ceiling_start_rate, "p99_bar_ms": args.p99_bar_ms}
        if "ceiling" in args.modes else None,
        "efficiency": {"rates": args.efficiency_rates, "repeats": args.efficiency_repeats,
                       "clients": args.chat_clients, "room_size": args.room_size,
                       "duration_s": args.chat_duration_s}
        if "efficiency" in args.modes else None,
        "capacity": {"quota": args.capacity_quota, "period_ms": args.capacity_period_ms,
                     "repeats": args.capacity_repeats, "p99_bar_ms": args.p99_bar_ms,
                     "p99_bar": "p99_bar_ms + the quota's stall, period x (1 - quota)",
                     "validate": {"quotas": args.capacity_validate_quotas,
                                  "periods_ms": args.capacity_validate_periods,
                                  "variants": args.capacity_validate_variants}
                     if args.capacity_validate else None,
                     "threads": args.capacity_threads,
                     "threads_pinning": "server on CPUs 0..N-1 under N x quota, loadgen on every CPU "
                                        "with --threads N"}
        if "capacity" in args.modes else None,
        "stacks": {"threads": args.thread_small_stack, "fibers": args.fiber_big_stack},
        "modes": args.modes, "quick": args.quick,
        "measurements": [m.label for m in measurements],
    }, indent=1))
