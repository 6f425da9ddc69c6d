"""The reference servers (run_all.sh --peers, docs/methodology.md "Peers: reference servers
in the same run"): their Debian packages, their config templates, and their processes. The
brokers' configs are what a user who knows them would deploy for this load, their
slow-consumer limits written out at their defaults (docs/reliability.md "Brokers")."""
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

from chatbench.machine import LOADGEN_CPU, SERVER_CPU, read, run_text
from chatbench.server_process import Server, raise_nofile
from chatbench.variants import PEER_BY_NAME


def peer_version(peer):
    """The Debian package's version, or None when it is not installed."""
    text = run_text(["dpkg-query", "-W", "-f=${Status} ${Version}", PEER_BY_NAME[peer].package])
    return text.split()[-1] if text.startswith("install ok installed") else None


def peer_missing(peer):
    """Why a peer cannot run here, or None."""
    package, binary = PEER_BY_NAME[peer].package, PEER_BY_NAME[peer].binary
    if peer_version(peer) is None:
        return f"package {package} not installed (scripts/setup.sh --peers {peer}, or apt-get install {package})"
    if not os.access(binary, os.X_OK):
        return f"{binary} missing although {package} is installed"
    return None


def nofile_hard():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def peer_config(peer, port, directory, monitor_port=0):
    """(config file name, its text, the setting that sizes its start-up memory). One
    process or worker, loopback only, room for the whole ramp, no idle timeout within a
    run, and nothing written outside `directory`. monitor_port: nats's HTTP monitoring
    (/varz counts what it received and delivered); 0 for none."""
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
# A subscriber whose output buffer passes 32 MB, or stays above 8 MB for 60 s, is
# disconnected (Redis's default, written out).
client-output-buffer-limit pubsub 32mb 8mb 60
""", f"maxclients {clients}"
    if peer == "mosquitto":
        # No pid_file when not a daemon; persistence off: nothing written. No log line per
        # connection (a ramp of thousands); Nagle off, as every variant has it.
        return "mosquitto.conf", f"""listener {port} 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
log_dest stderr
connection_messages false
max_connections -1
# QoS 0 lines for a subscriber this many behind are dropped, silently (the default, written out).
max_queued_messages 1000
""", "max_connections -1 (unlimited)"
    # nats: a client that never sends CONNECT is dropped after the authorization timeout,
    # and one that answers no PING after ping_max of them: both pushed past any run (loadgen
    # --protocol nats sends CONNECT and answers PINGs, but not every tool does).
    monitor = f"http: 127.0.0.1:{monitor_port}\n" if monitor_port else ""
    return "nats.conf", f"""listen: 127.0.0.1:{port}
{monitor}max_connections: {fds - 100}
ping_interval: "1h"
authorization {{ timeout: 3600 }}
# A subscriber more than 64 MiB behind, or whose writes stall for 10 s, is disconnected as a
# slow consumer (the defaults, written out).
max_pending: 64MB
write_deadline: "10s"
""", f"max_connections {fds - 100}"


class PeerConfig:
    """A reference server: no /stats, no relay to verify; a broker speaks its own protocol
    (protocol: loadgen --protocol), nginx none (idle only)."""

    def __init__(self, peer):
        self.variant = self.name = peer
        self.protocol = PEER_BY_NAME[peer].protocol
        self.stack, self.threads = "", 1
        self.server_cpus, self.loadgen_cpus = SERVER_CPU, LOADGEN_CPU

    def server(self, build_dir, log_path):
        return PeerServer(self, log_path)


def free_port():
    """A free loopback port; whoever binds it next does so a moment later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeerServer(Server):
    """A peer started from its package with a config written beside its log; ready when a
    connect succeeds. settings: lines added to the config (a test lowering a limit);
    monitor_port: nats's monitoring port, when it is nats."""

    def __init__(self, config, log_path, settings=""):
        self.config, self.log_path, self.settings = config, log_path, settings
        self.proc, self.port, self.monitor_port = None, None, 0
        self.stop_signal = signal.Signals[PEER_BY_NAME[config.variant].stop_signal]

    def start(self, timeout_s=10):
        peer = self.config.variant
        self.port = free_port()
        self.monitor_port = free_port() if peer == "nats" else 0
        directory = Path(str(self.log_path).removesuffix(".server.log") + ".peer")
        directory.mkdir(parents=True, exist_ok=True)
        name, text, _ = peer_config(peer, self.port, directory, self.monitor_port)
        (directory / name).write_text(text + self.settings)
        conf = str(directory / name)
        args = {"nginx": ["-p", str(directory), "-e", "stderr", "-c", conf],
                "redis": [conf], "mosquitto": ["-c", conf], "nats": ["-c", conf]}[peer]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["taskset", "-c", self.config.server_cpus, PEER_BY_NAME[peer].binary] + args,
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=directory,
                                     env=dict(os.environ, **dict(PEER_BY_NAME[peer].env)),
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
