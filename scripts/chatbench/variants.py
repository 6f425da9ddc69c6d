"""The registry of server variants and reference servers: every Python list of them (the
matrix, the plots' colours, the report, the tests) comes from here.

Also a command, for the shell scripts and tests that do not import Python modules:
  scripts/chatbench/variants.py [--bin DIR]   the registry as JSON, commands with DIR as bin/
  scripts/chatbench/variants.py --targets     the build targets of the compiled variants
It imports nothing of the package, so that it runs as a file too."""
import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODES = ("idle", "broadcast", "chat", "ceiling")  # what the matrix measures per variant


@dataclass(frozen=True)
class Variant:
    name: str
    colour: str                # its colour in every plot
    source: str = ""           # its code: servers/<source>/ (its name unless built from another's)
    script: str = ""           # a Python server: its path in the tree; else build/bin/chat-<name>
    args: tuple = ()           # given on every start
    stack_size: bool = False   # takes --stack-size
    # How it runs on N server cores (run_all.sh --server-threads, docs/methodology.md "Server
    # threads"): "--threads" (--threads N), "pinned" (a thread per connection already runs on
    # every core it is given), "GOMAXPROCS" (GOMAXPROCS=N); "" with one_core, why it cannot.
    cores: str = "--threads"
    one_core: str = ""
    modes: tuple = MODES
    connect_rate: int = 0      # loadgen --connect-rate, where the server needs its connects paced
    stats: bool = True         # answers /stats (docs/protocol.md)
    optional: str = ""         # a part of the tree or the build a machine may lack: run where present
    deployable: bool = True    # ranked as a variant to deploy

    @property
    def directory(self):
        return self.source or self.name

    @property
    def compiled(self):
        return not self.script

    def executable(self, bin_dir):
        """Its program (bin_dir: the build's bin/), or its script for a Python server."""
        return ROOT / self.script if self.script else Path(bin_dir) / f"chat-{self.name}"

    def command(self, bin_dir):
        """The command that starts it, without --port."""
        return (["/usr/bin/python3"] if self.script else []) + [str(self.executable(bin_dir)), *self.args]


ONE_PROCESS = "one process by design"
VARIANTS = (
    Variant("threads", "#d62728", stack_size=True, cores="pinned"),
    Variant("fibers", "#ff7f0e", stack_size=True),
    Variant("asio", "#1f77b4"),
    Variant("coro", "#2ca02c"),
    Variant("uring", "#17becf", cores="", one_core="one io_uring ring on one thread by design"),
    # Built from another's source on Asio's io_uring backend.
    Variant("asio-uring", "#aec7e8", source="asio"),
    Variant("coro-uring", "#98df8a", source="coro"),
    Variant("eventlet", "#9467bd", script="servers/eventlet/chat_server.py", cores="", one_core=ONE_PROCESS),
    Variant("go", "#bcbd22", cores="GOMAXPROCS", optional="Debian's golang-go, to build chat-go"),
    # The seed's server as written (servers/seed/): no rooms, no commands, no /stats, no
    # protocol limits; measured in idle and broadcast only, and never a variant to deploy.
    # It listens with eventlet's default backlog of 50: a connect completes in the kernel
    # before the server accepts it, so loadgen's connects would outrun its accepts, the
    # accept queue overflow, and the dropped SYNs come back only after a second or more
    # (receivers then miss the broadcast). A rate the seed keeps up with, the seed unchanged.
    Variant("seed", "#8c564b", script="servers/seed/chat_server.py", args=("--bind", "127.0.0.1"),
            cores="", one_core=ONE_PROCESS, modes=("idle", "broadcast"), connect_rate=1000, stats=False,
            optional="servers/seed/ in the tree", deployable=False),
)
NAMES = [v.name for v in VARIANTS]
BY_NAME = {v.name: v for v in VARIANTS}
SEED = "seed"
SEED_NOTE = "the seed as written: no protocol limits"


@dataclass(frozen=True)
class Peer:
    """A reference server (run_all.sh --peers): Debian's build of a server a reader knows,
    beside the variants and never ranked as one to deploy. nginx holds idle connections
    only; a broker (with a protocol) is what people deploy instead of writing a chat server,
    measured in every mode through loadgen --protocol (docs/methodology.md "Peers")."""
    name: str
    package: str   # Debian's package (scripts/setup.sh --peers installs the same)
    binary: str
    colour: str    # greys, told apart by their dashes: muted beside the variants' colours
    dashes: object
    protocol: str = ""  # loadgen --protocol of a broker; "": no bytes sent, idle only
    env: tuple = ()     # (NAME, VALUE) pairs set on every start
    stop_signal: str = "SIGTERM"  # its graceful stop, the one that exits 0
    connect_rate: int = 0  # loadgen --connect-rate, where its accept queue needs the connects paced

    @property
    def broker(self):
        return bool(self.protocol)

    @property
    def modes(self):
        return MODES if self.broker else ("idle",)


PEERS = (
    Peer("nginx", "nginx", "/usr/sbin/nginx", "#6e6e6e", ":"),
    # mosquitto listens with a backlog of 100: at loadgen's ~1 000 connects/s its accept
    # queue overflowed, SYN cookies stood in, and 0.5-10% of the clients were reset once
    # their first bytes came (measured: nstat ListenOverflows 280, SyncookiesFailed 5 for
    # 5 clients lost of 1 000). At 500/s none overflowed, at 1 000 and 10 000 clients.
    Peer("mosquitto", "mosquitto", "/usr/sbin/mosquitto", "#8c8c8c", "--", protocol="mqtt", connect_rate=500),
    Peer("redis", "redis-server", "/usr/bin/redis-server", "#a8a8a8", "-.", protocol="redis"),
    # One Go processor: the one server core the variants get (go's GOMAXPROCS=1 likewise).
    # nats-server shuts down alike on SIGTERM and SIGINT, but exits 1 on SIGTERM.
    Peer("nats", "nats-server", "/usr/sbin/nats-server", "#7a7a7a", (0, (1, 4)), protocol="nats",
         env=(("GOMAXPROCS", "1"),), stop_signal="SIGINT"),
)
PEER_NAMES = [p.name for p in PEERS]
PEER_BY_NAME = {p.name: p for p in PEERS}
PEER_NOTE = "reference servers, not chat servers: nginx idle only, the brokers in their own protocol"
BROKER_NOTE = "broker, not a chat server"
# Where a broker's protocol does not do what the chat protocol does (docs/methodology.md "Peers").
BROKER_DIFFERENCES = {
    "redis": "Redis delivers a line to its sender too: K writes per line in a room of K where the others "
             "make K − 1 (loadgen drops the copy, lines.own_copies)",
    "mosquitto": "MQTT QoS 0: a subscriber more than max_queued_messages (1000) behind loses lines silently, "
                 "counted lost; the others disconnect a slow subscriber",
    "nats": "NATS slows a publisher whose subscriber falls behind, then disconnects that subscriber after its "
            "10 s write deadline (or 64 MiB pending)",
}


def available(bin_dir):
    """The variants a run measures by default: every one, those that are optional only where
    their server is present. Returns (names, [why each left out])."""
    names, notes = [], []
    for v in VARIANTS:
        if v.optional and not v.executable(bin_dir).exists():
            notes.append(f"{v.executable(bin_dir)} missing (needs {v.optional}): {v.name} skipped")
        else:
            names.append(v.name)
    return names, notes


# ---------------------------------------------------------------------------------------
# Configurations: a variant with a stack size and a number of server cores

# A configuration whose server ran on N > 1 cores (run_all.sh --server-threads) is its own
# series, named variant + "-tN" (asio-t2), drawn and shown as "asio ×2"; at N = 1 the name is
# the variant's, as before the option existed.
THREADS_SUFFIX = "-t"


def config_name(variant, stack="", server_threads=1):
    return variant + (f"@{stack}" if stack else "") + (f"{THREADS_SUFFIX}{server_threads}"
                                                       if server_threads > 1 else "")


def split_threads(config):
    """("asio", 2) for "asio-t2"; (config, 1) for a configuration on one server core."""
    base, sep, n = config.rpartition(THREADS_SUFFIX)
    if sep and n.isdigit() and base.split("@")[0] in BY_NAME:
        return base, int(n)
    return config, 1


def config_label(config):
    """A configuration's name in plots: "fibers stack 128K", "asio ×2"."""
    base, n = split_threads(config)
    return base.replace("@", " stack ") + (f" ×{n}" if n > 1 else "")


def main():
    p = argparse.ArgumentParser(prog="scripts/chatbench/variants.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", default=str(ROOT / "build" / "bin"), help="the build's bin/ (default build/bin)")
    p.add_argument("--targets", action="store_true",
                   help="print the build targets of the compiled variants every build has")
    a = p.parse_args()
    if a.targets:
        print(" ".join(f"chat-{v.name}" for v in VARIANTS if v.compiled and not v.optional))
        return 0
    print(json.dumps({"variants": [dict(asdict(v), compiled=v.compiled, command=v.command(a.bin))
                                   for v in VARIANTS],
                      "peers": [asdict(p) for p in PEERS]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
