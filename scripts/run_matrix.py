#!/usr/bin/python3
"""Runs every server variant through one measurement matrix and writes a results directory.

Called by scripts/run_all.sh after setup and build; can be run on its own. Layout of the
output (docs/methodology.md defines every number):

  OUT/machine.json   the machine, the build, the limits, the pinning, the exact command
  OUT/plan.json      the matrix as planned (counts, rates, repeats, deadlines)
  OUT/raw/*.json     one loadgen report per measurement, microbench's JSON
  OUT/raw/*.log      each server's stderr (its final /stats) and loadgen's stdout
  OUT/results.csv    tidy: one row per variant x mode x point x repeat
  OUT/*.png, OUT/report.md   from scripts/plot.py and scripts/report.py (CSV/JSON only)

Each measurement starts a fresh server pinned to CPU 0 and loadgen pinned to CPU 1; with
--server-threads N, the server on CPUs 0..N-1 and loadgen on the next N (server_cores()).
A measurement that fails (server did not start, deadline passed, loadgen error, limit
hit before the point) is a row with status "failed" and its reason; the run goes on.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import results_lib  # noqa: E402  (scripts/ is not a package)

SERVER_CPU, LOADGEN_CPU = "0", "1"  # one server core (the default), and peers
# --server-threads N: how each variant uses N cores (docs/methodology.md "Server threads").
THREADS_OPTION = {"fibers", "asio", "asio-uring", "coro", "coro-uring"}  # --threads N
ONE_THREAD = {"uring": "one io_uring ring on one thread by design",
              "eventlet": "one process by design", results_lib.SEED: "one process by design"}
# threads: a thread per connection already runs on every core it is given: pinned to the N.
# go: GOMAXPROCS=N.
# What loadgen's exit statuses mean (docs/exit-status.md), for a failed row's reason.
LOADGEN_STATUS = {1: "loadgen error", 2: "bad loadgen command line", 3: "no client connected",
                  4: "server died during the ceiling search"}
FD_MARGIN = 100  # descriptors each process keeps for itself (listener, epoll, stdio, files)


# ---------------------------------------------------------------------------------------
# Configuration

def env_default(name, default):
    return os.environ.get("CHATBENCH_" + name, default)


def int_list(text):
    return [int(x) for x in str(text).split(",") if x]


def float_list(text):
    return [float(x) for x in str(text).split(",") if x]


def parse_args():
    # prog: run_all.sh passes its own name, so that help and errors name what was typed.
    p = argparse.ArgumentParser(
        prog=os.environ.get("CHATBENCH_PROG"),
        description="Run the chatbench matrix (SPEC §4). Every option also reads "
                    "CHATBENCH_<NAME> from the environment, e.g. CHATBENCH_REPEATS=5.")
    p.add_argument("--quick", action="store_true", default=env_default("QUICK", "") != "",
                   help="smoke run: small counts, one repeat, microbench --smoke (< 2 min)")
    p.add_argument("--variants", default=env_default("VARIANTS", ",".join(default_variants())),
                   help="comma-separated subset of " + ",".join(results_lib.VARIANTS)
                        + " (seed: idle and broadcast only)")
    p.add_argument("--peers", default=env_default("PEERS", ""),
                   help="reference servers measured in idle beside the variants: a "
                        "comma-separated subset of " + ",".join(results_lib.PEERS)
                        + ", or all (Debian's packages: scripts/setup.sh --peers)")
    p.add_argument("--out", default=env_default("OUT", ""),
                   help="results directory (default results/<date>-<host>)")
    p.add_argument("--repeats", type=int, default=env_default("REPEATS", None),
                   help="repeats per point (default 4, the fewest whose ranking can pass "
                        "the noise test; quick 1)")
    p.add_argument("--idle-max", type=int, default=env_default("IDLE_MAX", None),
                   help="idle ramp target (default: what the machine's limits allow)")
    p.add_argument("--idle-steps", type=int, default=env_default("IDLE_STEPS", None),
                   help="idle ramp steps (default 10, quick 4)")
    p.add_argument("--broadcast-clients", default=env_default("BROADCAST_CLIENTS", None),
                   help="broadcast points (default 100,1000,5000,10000)")
    p.add_argument("--broadcast-messages", type=int, default=env_default("BROADCAST_MESSAGES", None),
                   help="messages per broadcast point (default 40, quick 10)")
    p.add_argument("--broadcast-interval-ms", type=int,
                   default=env_default("BROADCAST_INTERVAL_MS", "100"),
                   help="time between broadcast messages (default 100)")
    p.add_argument("--chat-clients", type=int, default=env_default("CHAT_CLIENTS", None),
                   help="chat clients, in rooms of --room-size (default 1000, quick 100)")
    p.add_argument("--room-size", type=int, default=env_default("ROOM_SIZE", "10"))
    p.add_argument("--chat-rates", default=env_default("CHAT_RATES", None),
                   help="lines/s per client, stepped up in one loadgen run "
                        "(default 1,5,10,20,40,80,160)")
    p.add_argument("--chat-duration-s", type=float, default=env_default("CHAT_DURATION_S", None),
                   help="measured window per rate (default 2, quick 1)")
    p.add_argument("--thread-small-stack", default=env_default("THREAD_SMALL_STACK", "64K"),
                   help="extra idle runs of threads at this --stack-size ('' for none)")
    p.add_argument("--fiber-big-stack", default=env_default("FIBER_BIG_STACK", "128K"),
                   help="extra idle runs of fibers at this --stack-size ('' for none)")
    p.add_argument("--ceiling-start-rate", type=float, default=env_default("CEILING_START_RATE", None),
                   help="chat ceiling search: first rate per client (default 10, quick 100); "
                        "later repeats start at half the first repeat's ceiling")
    p.add_argument("--p99-bar-ms", type=float, default=env_default("P99_BAR_MS", "100"),
                   help="chat ceiling search: the p99 bar (default 100)")
    p.add_argument("--quiet-wait-s", type=float, default=env_default("QUIET_WAIT_S", None),
                   help="longest wait before an idle point for TIME_WAIT sockets to go and "
                        "memory to settle (default 60, quick 5)")
    p.add_argument("--modes", default=env_default("MODES", "idle,broadcast,chat,ceiling,microbench"),
                   help="ceiling runs only where loadgen has --find-ceiling")
    p.add_argument("--server-threads", default=env_default("SERVER_THREADS", "1"),
                   help="server core counts N, comma-separated (default 1): at each N the "
                        "server runs on CPUs 0..N-1 (asio, coro, fibers and their uring "
                        "builds with --threads N, threads pinned there, go with GOMAXPROCS=N) "
                        "and loadgen on the next N with --threads N; an N the machine has "
                        "no 2N cores for, and uring, eventlet and seed above 1, are recorded "
                        "as skipped with the reason")
    p.add_argument("--command", default=" ".join(sys.argv), help=argparse.SUPPRESS)
    p.add_argument("--no-setup", action="store_true", help="run_all.sh: do not run scripts/setup.sh")
    p.add_argument("--no-build", action="store_true", help="run_all.sh: use the binaries already built")
    p.add_argument("--check-args", action="store_true", help=argparse.SUPPRESS)  # run_all.sh
    a = p.parse_args()

    q = a.quick
    try:  # the lists, and defaults from the environment, are read here: a usage error too
        a.repeats = int(a.repeats or (1 if q else 4))
        a.ceiling_start_rate = float(a.ceiling_start_rate or (100 if q else 10))
        a.idle_steps = int(a.idle_steps or (4 if q else 10))
        a.broadcast_clients = int_list(a.broadcast_clients or ("50,200" if q else "100,1000,5000,10000"))
        a.broadcast_messages = int(a.broadcast_messages or (10 if q else 40))
        a.chat_clients = int(a.chat_clients or (100 if q else 1000))
        a.chat_rates = float_list(a.chat_rates or ("5,20" if q else "1,5,10,20,40,80,160"))
        a.chat_duration_s = float(a.chat_duration_s or (1 if q else 2))
        a.quiet_wait_s = float(a.quiet_wait_s if a.quiet_wait_s is not None else (5 if q else 60))
        a.server_threads = int_list(a.server_threads)
    except ValueError as e:
        p.error(f"not a number (in a count, a comma-separated list or a CHATBENCH_* variable): {e}")
    a.variants = [v for v in a.variants.split(",") if v]
    unknown = set(a.variants) - set(results_lib.VARIANTS)
    if unknown:
        p.error("unknown variant(s): " + ",".join(sorted(unknown)))
    a.peers = results_lib.PEERS if a.peers == "all" else [x for x in a.peers.split(",") if x]
    unknown = set(a.peers) - set(results_lib.PEERS)
    if unknown:
        p.error("unknown peer(s): " + ",".join(sorted(unknown)) + " (known: "
                + ",".join(results_lib.PEERS) + ", or all)")
    a.modes = [m for m in a.modes.split(",") if m]
    if not a.server_threads or min(a.server_threads) < 1 or len(set(a.server_threads)) != len(a.server_threads):
        p.error("--server-threads: distinct core counts of 1 or more, e.g. 1,2,4")
    if a.check_args:
        sys.exit(0)
    return a


def default_variants():
    """Every variant, the seed only where its server is in the tree, chat-go only where it
    was built (it needs Debian's golang-go)."""
    build_dir = Path(os.environ.get("BUILD_DIR", ROOT / "build"))
    variants = []
    for v in results_lib.VARIANTS:
        if v == results_lib.SEED and not (ROOT / "servers/seed/chat_server.py").exists():
            continue
        if v == "go" and not (build_dir / "bin/chat-go").exists():
            print(f"run_matrix: {build_dir}/bin/chat-go missing (no go toolchain?): go skipped",
                  file=sys.stderr)
            continue
        variants.append(v)
    return variants


# ---------------------------------------------------------------------------------------
# The machine

def read(path, default=""):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def run_text(cmd, cwd=None):
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def meminfo():
    out = {}
    for line in read("/proc/meminfo").splitlines():
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) * 1024
    return out


def machine_limits():
    nofile_soft, nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low, high = (int(x) for x in read("/proc/sys/net/ipv4/ip_local_port_range").split())
    return {
        "ulimit_n_soft": nofile_soft,
        "ulimit_n_hard": nofile_hard,
        "ulimit_s_bytes": resource.getrlimit(resource.RLIMIT_STACK)[0],
        "ip_local_port_range": [low, high],
        "pid_max": int(read("/proc/sys/kernel/pid_max", "0")),
        "threads_max": int(read("/proc/sys/kernel/threads-max", "0")),
        "max_map_count": int(read("/proc/sys/vm/max_map_count", "0")),
        "somaxconn": int(read("/proc/sys/net/core/somaxconn", "0")),
        "tcp_mem_pages": read("/proc/sys/net/ipv4/tcp_mem"),
        "mem_total_bytes": meminfo().get("MemTotal", 0),
        "mem_available_bytes": meminfo().get("MemAvailable", 0),
        "cores": os.cpu_count(),
    }


def idle_capacity(limits):
    """The largest idle count every variant can reach, and each limit's own cap, so the
    report can say which one binds. Each process needs one descriptor per connection;
    threads need one task each (pid_max, threads-max) and two mappings (stack and its
    guard page: max_map_count), as do fibers' protected stacks; memory is budgeted at a
    generous 200 KiB per connection for both ends together."""
    caps = {
        "fd limit (ulimit -n hard, per process)": limits["ulimit_n_hard"] - FD_MARGIN,
        "pid_max (a thread per connection)": limits["pid_max"] - 2000,
        "threads-max": limits["threads_max"] - 2000,
        "max_map_count (2 mappings per stack)": limits["max_map_count"] // 2 - 1000,
        "memory (200 KiB per connection)": limits["mem_available_bytes"] // (200 * 1024),
    }
    binding = min(caps, key=caps.get)
    target = caps[binding] // 1000 * 1000 if caps[binding] >= 2000 else caps[binding]
    return target, binding, caps


def cmake_cache(build_dir):
    cache = {}
    for line in read(Path(build_dir) / "CMakeCache.txt").splitlines():
        m = re.match(r"^([A-Za-z_]+):[A-Z]+=(.*)$", line)
        if m:
            cache[m.group(1)] = m.group(2)
    return cache


def package_versions():
    names = ["python3", "python3-eventlet", "python3-greenlet", "python3-matplotlib",
             "python3-numpy", "libboost1.81-dev", "g++", "cmake", "libbenchmark-dev"]
    out = {}
    for n in names:
        v = run_text(["dpkg-query", "-W", "-f=${Version}", n])
        out[n] = v or None
    return out


def code_lines(directory):
    """Non-blank lines that are not only a comment, in a directory's C++, Python and Go files."""
    return sum(code_lines_of(f) for f in sorted(Path(directory).rglob("*"))
               if f.suffix in (".cpp", ".hpp", ".py", ".go") and "__pycache__" not in f.parts)


def net_lines_used(directory):
    """Lines of the servers/net headers a variant's sources include, directly or through
    each other: since asio and coro keep their shared code there (chat/loop.hpp), their
    own directories alone would make them look far smaller than they are."""
    net = ROOT / "servers/net/chat"
    include = re.compile(r'#include ["<]chat/([A-Za-z0-9_]+\.hpp)[">]')
    todo = [f for f in Path(directory).rglob("*") if f.suffix in (".cpp", ".hpp")]
    used = set()
    while todo:
        for name in include.findall(todo.pop().read_text(errors="replace")):
            if (net / name).is_file() and name not in used:
                used.add(name)
                todo.append(net / name)
    return sum(code_lines_of(net / name) for name in used)


def code_lines_of(f):
    comment = "#" if f.suffix == ".py" else "//"
    return sum(1 for line in f.read_text(errors="replace").splitlines()
               if line.strip() and not line.strip().startswith(comment))


def describe_machine(args, build_dir):
    cache = cmake_cache(build_dir)
    build_type = cache.get("CMAKE_BUILD_TYPE", "")
    cpu = next((l.split(":", 1)[1].strip() for l in read("/proc/cpuinfo").splitlines()
                if l.startswith("model name")), platform.processor())
    boost = re.search(r'BOOST_LIB_VERSION "([^"]+)"', read("/usr/include/boost/version.hpp"))
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": " ".join(platform.uname()[2:4]),
        "os": read("/etc/debian_version") and "Debian " + read("/etc/debian_version"),
        "compiler": (run_text([cache.get("CMAKE_CXX_COMPILER", "c++"), "--version"]).splitlines() or [""])[0],
        "compiler_flags": " ".join(x for x in [cache.get("CMAKE_CXX_FLAGS", ""),
                                               cache.get("CMAKE_CXX_FLAGS_" + build_type.upper(), ""),
                                               "-std=c++20 -Wall -Wextra -Wpedantic"] if x),
        "build_type": build_type,
        "build_dir": str(build_dir),
        "boost": boost.group(1).replace("_", ".") if boost else None,
        "python": platform.python_version(),
        "packages": package_versions(),
        "git_commit": run_text(["git", "rev-parse", "HEAD"], cwd=ROOT),
        "git_dirty": run_text(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT) != "",
        "limits": machine_limits(),
        "pinning": {"server_cpus": SERVER_CPU, "loadgen_cpus": LOADGEN_CPU, "tool": "taskset -c"},
        "loadavg_start": read("/proc/loadavg"),
        "command": args.command,
        "code_lines": dict({v: {"own": code_lines(ROOT / "servers" / source),
                                "net_used": net_lines_used(ROOT / "servers" / source)}
                            for v in results_lib.VARIANTS
                            for source in [results_lib.SOURCE_DIRS.get(v, v)]},
                           shared={"common": code_lines(ROOT / "servers/common"),
                                   "net": code_lines(ROOT / "servers/net")}),
    }


# ---------------------------------------------------------------------------------------
# Servers

def server_cores(n, cores):
    """(server CPUs, loadgen CPUs) as taskset lists for a server on n cores, or (None, why)
    when the machine has too few. loadgen gets as many cores as the server: at one core
    each, loadgen's core was already 59-66% busy at asio's, coro's and fibers' ceilings
    and stopped their searches (limited_by loadgen, results/2026-11-29-vm), so one loadgen
    core against n server cores would measure loadgen, not the server."""
    if 2 * n > cores:
        return None, f"{n} server cores and as many for loadgen need {2 * n}; this machine has {cores}"
    span = lambda first, count: str(first) if count == 1 else f"{first}-{first + count - 1}"  # noqa: E731
    return span(0, n), span(n, n)


def server_configs(variants, server_threads, cores):
    """The configurations to run at each --server-threads N, and [(variant, N, why)] of
    those that cannot run here. N = 1 always runs, as before the option existed."""
    run, skipped = [], []
    for n in server_threads:
        cpus, why = server_cores(n, cores) if n > 1 else (SERVER_CPU, None)
        for v in variants:
            if n > 1 and v in ONE_THREAD:
                skipped.append((v, n, f"{ONE_THREAD[v]}: runs at --server-threads 1 only"))
            elif cpus is None:
                skipped.append((v, n, why))
            else:
                run.append(Config(v, threads=n, cores=cores))
    return run, skipped


class Config:
    """One server configuration: a variant, possibly with a non-default stack size, on
    `threads` server cores (loadgen on as many): results_lib.config_name names it."""

    def __init__(self, variant, stack="", threads=1, cores=None):
        self.variant, self.stack, self.threads = variant, stack, threads
        self.name = results_lib.config_name(variant, stack, threads)
        # One core: as before --server-threads, also on a one-core machine (with a warning).
        self.server_cpus, self.loadgen_cpus = (SERVER_CPU, LOADGEN_CPU) if threads == 1 \
            else server_cores(threads, cores or os.cpu_count() or 1)

    def command(self, build_dir):
        if self.variant == "eventlet":
            cmd = ["/usr/bin/python3", str(ROOT / "servers/eventlet/chat_server.py")]
        elif self.variant == results_lib.SEED:
            cmd = ["/usr/bin/python3", str(ROOT / "servers/seed/chat_server.py"),
                   "--bind", "127.0.0.1"]
        else:
            cmd = [str(Path(build_dir) / "bin" / f"chat-{self.variant}")]
        if self.variant == "go":  # one processor per server core (docs/servers.md)
            cmd = ["env", f"GOMAXPROCS={self.threads}"] + cmd
        cmd += ["--port", "0"]
        if self.stack:
            cmd += ["--stack-size", self.stack]
        if self.threads > 1 and self.variant in THREADS_OPTION:
            cmd += ["--threads", str(self.threads)]
        return ["taskset", "-c", self.server_cpus] + cmd

    def server(self, build_dir, log_path):
        return Server(self, build_dir, log_path)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """A fresh server process; start() waits for its `listening on` line."""

    def __init__(self, config, build_dir, log_path):
        self.config, self.build_dir, self.log_path = config, build_dir, log_path
        self.proc, self.port = None, None

    def start(self, timeout_s=10):
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.config.command(self.build_dir), stdout=subprocess.PIPE,
                                     stderr=self.log, preexec_fn=raise_nofile)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        line = b""
        deadline = time.monotonic() + timeout_s
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RuntimeError(f"no 'listening on' line within {timeout_s} s")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                rc = self.proc.wait()
                self.log.flush()
                said = read(self.log_path).splitlines()[-1:] or ["nothing on stderr"]
                raise RuntimeError(f"server exited ({rc}) before listening: {said[0][:200]}")
            line += chunk
        m = re.match(rb"listening on [0-9.]+:(\d+) variant=(\S+)", line)
        if not m:
            raise RuntimeError(f"unexpected first line {line!r}")
        self.port = int(m.group(1))
        return self

    def stop(self):
        """SIGTERM, as a service manager would; returns a note if it did not exit 0 in 2 s."""
        if not self.proc:
            return ""
        note = ""
        if self.proc.poll() is not None:
            note = f"server had exited with {self.proc.returncode}"
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=5)
                if rc != 0:
                    note = f"server exited {rc} on SIGTERM"
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                note = "server did not exit within 5 s of SIGTERM (killed)"
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()
        return note


# ---------------------------------------------------------------------------------------
# Peers: reference servers from Debian's packages (run_all.sh --peers)

def peer_binary(peer):
    return {"nginx": "/usr/sbin/nginx", "mosquitto": "/usr/sbin/mosquitto",
            "redis": "/usr/bin/redis-server", "nats": "/usr/sbin/nats-server"}[peer]


def peer_version(peer):
    """The Debian package's version, or None when it is not installed."""
    text = run_text(["dpkg-query", "-W", "-f=${Status} ${Version}", results_lib.PEER_PACKAGES[peer]])
    return text.split()[-1] if text.startswith("install ok installed") else None


def peer_missing(peer):
    """Why a peer cannot run here, or None."""
    package = results_lib.PEER_PACKAGES[peer]
    if peer_version(peer) is None:
        return f"package {package} not installed (scripts/setup.sh --peers {peer})"
    if not os.access(peer_binary(peer), os.X_OK):
        return f"{peer_binary(peer)} missing although {package} is installed"
    return None


def nofile_hard():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def peer_config(peer, port, directory):
    """(config file name, its text, the setting that sizes its start-up memory). One
    process or worker, loopback only, room for the whole ramp, no idle timeout within a
    run, and nothing written outside `directory`."""
    d, fds = directory, nofile_hard()
    if peer == "nginx":
        # master_process off: the one process measured is the one that holds the
        # connections. nginx allocates its connection and event arrays for all of
        # worker_connections at start: that is its intercept. client_header_timeout (60 s
        # by default) would close a connection that sends no request. Once fewer than
        # worker_connections / 16 are free, nginx closes idle connections to make room
        # (19 900 for 19 000 clients lost 352 of them), so twice the descriptors: the
        # arrays are sized by this, the descriptors stay capped by worker_rlimit_nofile.
        conns = 2 * fds
        temp = "\n".join(f"  {k}_temp_path {d}/{k};" for k in
                         ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
        return "nginx.conf", f"""daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {fds};
pid {d}/nginx.pid;
error_log stderr;
events {{ worker_connections {conns}; }}
http {{
  access_log off;
{temp}
  client_header_timeout 1h;
  keepalive_timeout 1h;
  server {{ listen 127.0.0.1:{port}; return 204; }}
}}
""", f"worker_connections {conns}"
    if peer == "redis":
        # redis needs maxclients + 32 descriptors; timeout 0 never closes an idle client.
        # Protected mode would refuse loadgen's connections from 127.0.0.2 and up (it takes
        # only 127.0.0.1 for loopback); bind keeps the server on loopback.
        clients = fds - 100
        return "redis.conf", f"""port {port}
bind 127.0.0.1
protected-mode no
daemonize no
dir {d}
logfile ""
save ""
appendonly no
maxclients {clients}
timeout 0
""", f"maxclients {clients}"
    if peer == "mosquitto":
        # No pid_file when not a daemon; persistence off: nothing written.
        return "mosquitto.conf", f"""listener {port} 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
max_connections -1
""", "max_connections -1 (unlimited)"
    # nats: a client that never sends CONNECT is dropped after the authorization timeout,
    # and one that answers no PING after ping_max of them: both pushed past any run.
    return "nats.conf", f"""listen: 127.0.0.1:{port}
max_connections: {fds - 100}
ping_interval: "1h"
authorization {{ timeout: 3600 }}
""", f"max_connections {fds - 100}"


class PeerConfig:
    """A reference server: idle only, no /stats, no relay to verify."""

    def __init__(self, peer):
        self.variant = self.name = peer
        self.stack, self.threads = "", 1
        self.server_cpus, self.loadgen_cpus = SERVER_CPU, LOADGEN_CPU

    def server(self, build_dir, log_path):
        return PeerServer(self, log_path)


class PeerServer(Server):
    """A peer started from its package with a config written beside its log; ready when a
    connect succeeds."""

    def __init__(self, config, log_path):
        self.config, self.log_path = config, log_path
        self.proc, self.port = None, None

    def start(self, timeout_s=10):
        peer = self.config.variant
        with socket.socket() as s:  # a free port; the peer binds it a moment later
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        directory = Path(str(self.log_path).removesuffix(".server.log") + ".peer")
        directory.mkdir(parents=True, exist_ok=True)
        name, text, _ = peer_config(peer, self.port, directory)
        (directory / name).write_text(text)
        conf = str(directory / name)
        args = {"nginx": ["-p", str(directory), "-e", "stderr", "-c", conf],
                "redis": [conf], "mosquitto": ["-c", conf], "nats": ["-c", conf]}[peer]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["taskset", "-c", self.config.server_cpus, peer_binary(peer)] + args,
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=directory,
                                     preexec_fn=raise_nofile)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                self.log.flush()
                said = read(self.log_path).splitlines()[-1:] or ["nothing on stderr"]
                raise RuntimeError(f"{peer} exited ({self.proc.returncode}) before listening: {said[0][:200]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{peer} accepted no connection within {timeout_s} s")
                time.sleep(0.05)


def verify(config, build_dir, log_path):
    """The verification step: two clients, one line relayed. Returns None or why not."""
    if config.variant == results_lib.SEED:
        return verify_relay_only(config, build_dir, log_path)
    server = Server(config, build_dir, log_path)
    try:
        server.start()
        a = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        b = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        # A server may register a connection after connect() returns: wait until it
        # counts both, so the test line cannot race the registration.
        reply = b""
        for _ in range(50):
            b.sendall(b"/stats\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = b.recv(4096)
                if not chunk:
                    return "server closed the connection on /stats"
                reply += chunk
            if b" clients=2 " in reply:
                break
            time.sleep(0.1)
        else:
            return f"/stats never showed 2 clients: {reply!r}"
        a.sendall(b"verify 1 2 3\n")
        got = b""
        while not got.endswith(b"\n"):
            chunk = b.recv(4096)
            if not chunk:
                return "receiver closed before the line arrived"
            got += chunk
        if got != b"verify 1 2 3\n":
            return f"receiver got {got!r} instead of the line sent"
        a.close()
        b.close()
        return None
    except (OSError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        server.stop()


def verify_relay_only(config, build_dir, log_path):
    """Verification of a server without /stats (the seed): the first client sends the line
    every 100 ms until the second receives it, since nothing says when the server has
    registered the second; what arrives must be that line, whole, once or more."""
    server = Server(config, build_dir, log_path)
    line = b"verify 1 2 3\n"
    try:
        server.start()
        a = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        b = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        b.settimeout(0.1)
        got = b""
        for _ in range(50):
            a.sendall(line)
            try:
                chunk = b.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                return "receiver closed before the line arrived"
            got += chunk
            break
        else:
            return "the line never arrived in 5 s"
        b.settimeout(1)
        while not got.endswith(b"\n"):
            chunk = b.recv(4096)
            if not chunk:
                return "receiver closed in the middle of the line"
            got += chunk
        if got.replace(line, b"") != b"":
            return f"receiver got {got!r} instead of the line sent"
        a.close()
        b.close()
        return None
    except (OSError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------
# Measurements

class Measurement:
    def __init__(self, config, mode, point, repeat, estimate_s, loadgen_args, deadline_s,
                 exit_reasons=None):
        self.config, self.mode, self.point, self.repeat = config, mode, point, repeat
        self.estimate_s, self.loadgen_args, self.deadline_s = estimate_s, loadgen_args, deadline_s
        self.exit_reasons = exit_reasons or {}  # loadgen exit status -> what it means

    @property
    def label(self):
        return f"{self.config.name}-{self.mode}-{self.point}-r{self.repeat}"


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


def chat_measurement(args, c, r, curve):
    warm = 0.5
    rates = len(args.chat_rates) + Curve.MAX_DOUBLINGS
    est = 2 + len(args.chat_rates) * (args.chat_duration_s + warm) + 2
    return Measurement(c, "chat", args.chat_clients, r, est,
                       ["chat", "--clients", args.chat_clients, "--room-size", args.room_size,
                        "--rate", curve.chat_rates, "--duration-s", args.chat_duration_s,
                        "--warmup-s", warm, "--size", 64],
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
                        "--warmup-s", warm, "--size", 64]
                       # A smoke run brackets coarsely: ten variants' searches must fit in minutes.
                       + (["--ceiling-max-steps", 6] if args.quick else []),
                       deadline_s=60 + 30 * step,
                       exit_reasons={4: ": the server died during the ceiling search"})


def loadgen_finds_ceilings(build_dir):
    """Whether this loadgen has the ceiling search (`chat --find-ceiling`)."""
    text = run_text([str(Path(build_dir) / "bin" / "loadgen"), "chat", "--help"])
    return "--find-ceiling" in text


def plan(args, target, configs, curve, peers=()):
    """The matrix, repeat-major so that drift of the machine spreads over all variants.
    Within a repeat the ceiling searches come before the fixed-rate chat curve, whose top
    rates follow from the ceilings. The extra stack sizes run on one server core only."""
    one_core = {c.variant for c in configs if c.threads == 1}
    extra = []
    if "threads" in one_core and args.thread_small_stack:
        extra.append(Config("threads", args.thread_small_stack))
    if "fibers" in one_core and args.fiber_big_stack:
        extra.append(Config("fibers", args.fiber_big_stack))
    hold = 1 if args.quick else 2
    # The seed listens with eventlet's default backlog of 50. A connect completes in the
    # kernel before the server accepts it, so loadgen's connects outrun its accepts, the
    # accept queue overflows, and the dropped SYNs come back only after a second or more
    # (receivers then miss the broadcast). A rate the seed keeps up with, the seed unchanged.
    def pacing(c):
        return ["--connect-rate", 1000] if c.variant == results_lib.SEED else []

    out = []
    for r in range(1, args.repeats + 1):
        if "idle" in args.modes:
            for c in configs + extra + [PeerConfig(x) for x in peers]:
                slow = 3 if c.variant in ("eventlet", results_lib.SEED) else 1
                est = (2 + args.idle_steps * 0.6 + target / 4000) * slow
                out.append(Measurement(c, "idle", target, r, est,
                                       ["idle", "--clients", target, "--steps", args.idle_steps,
                                        "--hold-s", hold] + pacing(c),
                                       deadline_s=60 + args.idle_steps * (hold + 12)))
        if "broadcast" in args.modes:
            for c in configs:  # the seed included: its model's fan-out is the comparison
                for n in args.broadcast_clients:
                    send_s = args.broadcast_messages * args.broadcast_interval_ms / 1000
                    est = 1.5 + send_s + n / 3000
                    out.append(Measurement(c, "broadcast", n, r, est,
                                           ["broadcast", "--clients", n,
                                            "--messages", args.broadcast_messages,
                                            "--interval-ms", args.broadcast_interval_ms,
                                            "--size", 64] + pacing(c),
                                           deadline_s=60 + send_s * 2))
        chat_configs = [c for c in configs if c.variant != results_lib.SEED]
        if "ceiling" in args.modes:
            out += [ceiling_measurement(args, c, r, curve) for c in chat_configs]
        if "chat" in args.modes:
            out += [chat_measurement(args, c, r, curve) for c in chat_configs]
    return out


def time_wait_count():
    """TCP sockets in TIME_WAIT on this host (/proc/net/sockstat "tw")."""
    for line in read("/proc/net/sockstat").splitlines():
        if line.startswith("TCP:"):
            fields = line.split()[1:]
            return int(dict(zip(fields[::2], fields[1::2])).get("tw", 0))
    return 0


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
    free memory (MemFree and the per-CPU lists) and Slab have settled. Returns what it found, with a problem text if it gave up."""
    begin = time.monotonic()
    window = []  # (time, MemFree, Slab) over the last QUIET_WINDOW_S
    while True:
        now = time.monotonic()
        info = meminfo()
        free = info["MemFree"] + results_lib.per_cpu_free_bytes()  # free memory, parked pages included
        # Keep one sample older than the window, so that it spans the whole window (with
        # samples every 0.25 s, keeping only those inside it left it short of full forever).
        window.append((now, free, info["Slab"]))
        while len(window) > 1 and now - window[1][0] >= QUIET_WINDOW_S:
            window.pop(0)
        tw = time_wait_count()
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
    server = m.config.server(build_dir, raw / f"{m.label}.server.log")
    why = ""
    try:
        server.start()
    except (OSError, RuntimeError) as e:
        server.stop()
        return "failed", f"server did not start: {e}", None
    cmd = ["taskset", "-c", m.config.loadgen_cpus, str(Path(build_dir) / "bin" / "loadgen")]
    cmd += [str(x() if callable(x) else x) for x in m.loadgen_args]  # callables: learnt so far
    cmd += ["--port", str(server.port), "--server-pid", str(server.proc.pid),
            "--threads", str(m.config.threads), "--quiet", "--json", str(json_path)]
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
    note = server.stop()
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

def main():
    args = parse_args()
    build_dir = Path(os.environ.get("BUILD_DIR", ROOT / "build"))
    host = socket.gethostname()
    # Absolute: peers are started in their own directory and read their config by this path.
    out = Path(args.out or ROOT / "results" / f"{datetime.date.today().isoformat()}-{host}").resolve()
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    for tool in ["taskset"]:
        if not shutil.which(tool):
            sys.exit(f"run_matrix: {tool} is missing (scripts/setup.sh installs it)")
    for binary in ["loadgen"] + (["microbench"] if "microbench" in args.modes else []):
        if not (build_dir / "bin" / binary).exists():
            sys.exit(f"run_matrix: {build_dir}/bin/{binary} missing: build first (scripts/build.sh)")

    machine = describe_machine(args, build_dir)
    limits = machine["limits"]
    target, binding, caps = idle_capacity(limits)
    if args.quick:
        target, binding = min(target, 400), "--quick"
    if args.idle_max:
        target, binding = args.idle_max, "--idle-max"
    biggest = max([target] + args.broadcast_clients + [args.chat_clients])

    print(f"run_matrix: results in {out}")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['kernel']}, "
          f"load {machine['loadavg_start']}")
    for name, cap in sorted(caps.items(), key=lambda kv: kv[1]):
        print(f"  cap {cap:>8} connections: {name}")
    print(f"  -> idle ramp to {target} (set by {binding})")
    warnings = []
    if (machine["cores"] or 1) < 2:
        warnings.append("fewer than 2 cores: server and loadgen share one, numbers mean little")
    low, high = limits["ip_local_port_range"]
    if biggest > (high - low) and biggest > 1000:
        warnings.append(f"{biggest} connections exceed one source address's {high - low} ports: "
                        "loadgen spreads over 127.0.0.x")
    if limits["ulimit_n_hard"] < biggest + FD_MARGIN:
        warnings.append(f"ulimit -n hard {limits['ulimit_n_hard']} is below {biggest} connections")
    if machine["build_type"] != "Release":
        warnings.append(f"{build_dir} is a '{machine['build_type']}' build, not Release")
    load1 = float(machine["loadavg_start"].split()[0] or 0)
    if load1 >= 0.5:
        warnings.append(f"load average {load1} at start: other work on the machine disturbs the numbers")
    for w in warnings:
        print("  warning: " + w)
    machine["warnings"] = warnings
    machine["idle_target"] = {"clients": target, "binding_limit": binding, "caps": caps}

    # --server-threads: what runs on how many cores, and what cannot run here (and why).
    planned, skipped = server_configs(args.variants, args.server_threads, machine["cores"] or 1)
    by_n = machine["pinning"]["server_threads"] = {}
    for n in args.server_threads:
        cpus, loadgen = server_cores(n, machine["cores"] or 1) if n > 1 else (SERVER_CPU, LOADGEN_CPU)
        by_n[str(n)] = ({"server_cpus": cpus, "loadgen_cpus": loadgen, "loadgen_threads": n} if cpus
                        else {"skipped": loadgen})
    for v, n, why in skipped:
        print(f"skip   {results_lib.config_name(v, '', n):9s} {why}", flush=True)

    # Verification before anything is timed.
    configs, failures = [], {}
    for c in planned:
        why = verify(c, build_dir, raw / f"verify-{c.name}.log")
        print(f"verify {c.name:9s} {'ok' if why is None else 'FAILED: ' + why}", flush=True)
        if why is None:
            configs.append(c)
        else:
            failures[c] = why
    machine["verification"] = {c.name: failures.get(c, "ok") for c in planned}

    # Peers: idle only, no verification (they speak no chat protocol); one whose package
    # is missing is skipped, and the report says why.
    peers, machine["peers"] = [], {}
    if args.peers and "idle" not in args.modes:
        print("  note: --peers run in idle only, and --modes has no idle: no peer measured")
    for x in args.peers if "idle" in args.modes else []:
        why = peer_missing(x)
        info = {"package": results_lib.PEER_PACKAGES[x], "version": peer_version(x),
                "setting": peer_config(x, 0, out / "raw")[2], "skipped": why or ""}
        machine["peers"][x] = info
        print(f"peer   {x:9s} " + (f"skipped: {why}" if why else f"{info['package']} {info['version']}"),
              flush=True)
        if not why:
            peers.append(x)

    if "ceiling" in args.modes and not loadgen_finds_ceilings(build_dir):
        # A loadgen without the search: the run goes on without it, and says so.
        args.modes.remove("ceiling")
        machine["ceiling_search"] = "not run: this loadgen has no `chat --find-ceiling`"
        print("  note: " + machine["ceiling_search"])
    curve = Curve(args)
    measurements = plan(args, target, configs, curve, peers)
    micro_estimate = (20 if args.quick else 60) if "microbench" in args.modes else 0
    (out / "plan.json").write_text(json.dumps({
        "variants": args.variants, "verified": [c.name for c in configs], "peers": peers,
        "repeats": args.repeats,
        "server_threads": {"counts": args.server_threads, "loadgen_cores": "as many as the server's",
                           "skipped": {results_lib.config_name(v, "", n): why for v, n, why in skipped},
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
        "stacks": {"threads": args.thread_small_stack, "fibers": args.fiber_big_stack},
        "modes": args.modes, "quick": args.quick,
        "measurements": [m.label for m in measurements],
    }, indent=1))
    (out / "machine.json").write_text(json.dumps(machine, indent=1))

    progress = Progress([(m.mode, m.estimate_s) for m in measurements]
                        + ([("microbench", micro_estimate)] if micro_estimate else []))

    def modes_of(variant):
        return [m for m in args.modes if m != "microbench"
                and (variant != results_lib.SEED or m in results_lib.SEED_MODES)]
    rows = []
    for c, why in failures.items():
        for mode in modes_of(c.variant):
            rows.append(results_lib.failed_row(c.name, c.variant, "", mode, "", 0,
                                               "verification failed: " + why, server_threads=c.threads))
    for v, n, why in skipped:
        rows += [results_lib.skipped_row(results_lib.config_name(v, "", n), v, n, mode, why)
                 for mode in modes_of(v)]
    # A point a configuration could not reach is not retried in later repeats: it would
    # cost another deadline to learn the same thing.
    unreachable = {}
    for i, m in enumerate(measurements, 1):
        key = (m.config.name, m.mode, m.point)
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
        new = results_lib.rows_from_report(m.config.name, m.config.variant, m.config.stack, m.mode,
                                           m.point, m.repeat, status, why, path, out,
                                           server_threads=m.config.threads)
        results_lib.add_quiet(new, quiet)
        rows.extend(new)
        if m.mode == "ceiling":
            curve.found(m.config.name, new)
        results_lib.write_csv(out / "results.csv", rows)

    if "microbench" in args.modes:
        progress.line("microbench")
        begin = time.monotonic()
        why = run_microbench(args, build_dir, raw)
        progress.done("microbench", micro_estimate, time.monotonic() - begin)
        if why:
            print(f"    microbench: {why}", flush=True)
        rows.extend(results_lib.rows_from_microbench(raw / "microbench.json", why))
    results_lib.write_csv(out / "results.csv", rows)

    if curve.rates is not None:
        machine["chat_rates_used"] = curve.rates
    machine["loadavg_end"] = read("/proc/loadavg")
    machine["duration_s"] = round(progress.elapsed(), 1)
    (out / "machine.json").write_text(json.dumps(machine, indent=1))
    progress.line(f"measurements done: {out / 'results.csv'} ({len(rows)} rows)")

    for script in ["plot.py", "report.py"]:
        rc = subprocess.run(["/usr/bin/python3", str(ROOT / "scripts" / script), str(out)]).returncode
        if rc != 0:
            sys.exit(f"run_matrix: {script} failed ({rc})")
    print(f"run_matrix: done in {fmt_s(progress.elapsed())}: {out / 'report.md'}")


if __name__ == "__main__":
    main()
