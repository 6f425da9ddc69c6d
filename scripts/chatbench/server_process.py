"""Starting, pinning, verifying and stopping one server process of the matrix: a variant's
configuration on its cores (docs/methodology.md "What the run does, in order", "Server
threads")."""
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import time
from pathlib import Path

from chatbench.machine import LOADGEN_CPU, SERVER_CPU, read
from chatbench.variants import BY_NAME, config_name


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
            if n > 1 and BY_NAME[v].one_core:
                skipped.append((v, n, f"{BY_NAME[v].one_core}: runs at --server-threads 1 only"))
            elif cpus is None:
                skipped.append((v, n, why))
            else:
                run.append(Config(v, threads=n, cores=cores))
    return run, skipped


class Config:
    """One server configuration: a variant, possibly with a non-default stack size, on
    `threads` server cores (loadgen on as many): variants.config_name names it."""

    def __init__(self, variant, stack="", threads=1, cores=None, pinning=None):
        self.variant, self.stack, self.threads = variant, stack, threads
        self.name = config_name(variant, stack, threads)
        # One core: as before --server-threads, also on a one-core machine (with a warning).
        # pinning: (server CPUs, loadgen CPUs) chosen by the caller (capacity_cores).
        self.server_cpus, self.loadgen_cpus = pinning or ((SERVER_CPU, LOADGEN_CPU) if threads == 1
                                                          else server_cores(threads, cores or os.cpu_count() or 1))

    def command(self, build_dir):
        v = BY_NAME[self.variant]
        cmd = v.command(Path(build_dir) / "bin")
        if v.cores == "GOMAXPROCS":  # one processor per server core (docs/servers.md)
            cmd = ["env", f"GOMAXPROCS={self.threads}"] + cmd
        cmd += ["--port", "0"]
        if self.stack:
            cmd += ["--stack-size", self.stack]
        if self.threads > 1 and v.cores == "--threads":
            cmd += ["--threads", str(self.threads)]
        return ["taskset", "-c", self.server_cpus] + cmd

    def server(self, build_dir, log_path):
        return Server(self, build_dir, log_path)


def capacity_cores(n, cores):
    """(server CPUs, loadgen CPUs) for a server on n cores under a CPU quota
    (docs/methodology.md "Capacity per server core", on several cores), or (None, why):
    the server on CPUs 0..n-1, loadgen on every CPU. A server held to a quota leaves
    most of its cores' time free, and that is loadgen's."""
    if n > cores:
        return None, f"{n} server cores; this machine has {cores}"
    span = lambda first, count: str(first) if count == 1 else f"{first}-{first + count - 1}"  # noqa: E731
    return span(0, n), span(0, cores)


class Server:
    """A fresh server process; start() waits for its `listening on` line."""

    stop_signal = signal.SIGTERM  # how it is stopped: as a service manager would

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
        """stop_signal; returns a note if it did not exit 0 in 5 s."""
        if not self.proc:
            return ""
        note, name = "", self.stop_signal.name
        if self.proc.poll() is not None:
            note = f"server had exited with {self.proc.returncode}"
        else:
            self.proc.send_signal(self.stop_signal)
            try:
                rc = self.proc.wait(timeout=5)
                if rc != 0:
                    note = f"server exited {rc} on {name}"
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                note = f"server did not exit within 5 s of {name} (killed)"
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()
        return note


VERIFY_LINE = b"verify 1 2 3\n"


def verify(config, build_dir, log_path):
    """The verification step: a fresh server, two clients, one line relayed from the first
    to the second. Returns None or why not."""
    relay = relay_counted if BY_NAME[config.variant].stats else relay_unannounced
    server = Server(config, build_dir, log_path)
    try:
        server.start()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as a, \
                socket.create_connection(("127.0.0.1", server.port), timeout=5) as b:
            return relay(a, b)
    except (OSError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        server.stop()


def relay_counted(a, b):
    """A server may register a connection after connect() returns: wait until /stats
    counts both, so the line cannot race the registration; then it must arrive whole."""
    reply = b""
    for _ in range(50):
        b.sendall(b"/stats\n")
        reply = receive_line(b)
        if reply is None:
            return "server closed the connection on /stats"
        if b" clients=2 " in reply:
            break
        time.sleep(0.1)
    else:
        return f"/stats never showed 2 clients: {reply!r}"
    a.sendall(VERIFY_LINE)
    got = receive_line(b)
    if got is None:
        return "receiver closed before the line arrived"
    if got != VERIFY_LINE:
        return f"receiver got {got!r} instead of the line sent"
    return None


def relay_unannounced(a, b):
    """A server without /stats (the seed): the first client sends the line every 100 ms
    until the second receives it, since nothing says when the server has registered the
    second; what arrives must be that line, whole, once or more."""
    b.settimeout(0.1)
    got = b""
    for _ in range(50):
        a.sendall(VERIFY_LINE)
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
    got = receive_line(b, got)
    if got is None:
        return "receiver closed in the middle of the line"
    if got.replace(VERIFY_LINE, b"") != b"":
        return f"receiver got {got!r} instead of the line sent"
    return None


def receive_line(sock, got=b""):
    """What sock receives (after got) up to a newline at its end; None if it closes first."""
    while not got.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            return None
        got += chunk
    return got
