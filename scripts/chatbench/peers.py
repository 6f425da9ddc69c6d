"""The reference servers (run_all.sh --peers, docs/methodology.md "Peers: reference servers
in the same run"): their Debian packages, their config templates, and their processes."""
import os
import resource
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
        return f"package {package} not installed (scripts/setup.sh --peers {peer})"
    if not os.access(binary, os.X_OK):
        return f"{binary} missing although {package} is installed"
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
        self.proc = subprocess.Popen(["taskset", "-c", self.config.server_cpus, PEER_BY_NAME[peer].binary] + args,
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
