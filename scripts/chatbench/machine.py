"""The machine a run measures on: its description for machine.json, its limits and what
they allow, and the /proc readings the matrix and memcheck.py take."""
import datetime
import os
import platform
import re
import resource
import socket
import subprocess
import time
from pathlib import Path

from chatbench.variants import ROOT, VARIANTS

# Each measurement's server on CPU 0 and loadgen on CPU 1 (one server core, the default,
# and the peers); --server-threads N: chatbench.server_process.server_cores.
SERVER_CPU, LOADGEN_CPU = "0", "1"
FD_MARGIN = 100  # descriptors each process keeps for itself (listener, epoll, stdio, files)


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
        "cpu_busy_start": cpu_busy(BUSY_WINDOW_S),
        "command": args.command,
        "code_lines": dict({v.name: {"own": code_lines(ROOT / "servers" / v.directory),
                                     "net_used": net_lines_used(ROOT / "servers" / v.directory)}
                            for v in VARIANTS},
                           shared={"common": code_lines(ROOT / "servers/common"),
                                   "net": code_lines(ROOT / "servers/net")}),
    }


# ---------------------------------------------------------------------------------------
# /proc readers


def per_cpu_free_bytes():
    """Free pages parked in the kernel's per-CPU page lists (the "count:" of every pageset
    in /proc/zoneinfo). MemFree leaves them out; since Linux 6.7 those lists grow to hold
    what was just freed (tens of MB on a 2-core VM) and hand it back over seconds, so free
    memory is MemFree plus these (docs/methodology.md, "Memory per connection")."""
    counts = re.findall(r"^\s+count:\s+(\d+)$", Path("/proc/zoneinfo").read_text(), re.M)
    return sum(int(c) for c in counts) * os.sysconf("SC_PAGE_SIZE")


# Whether other work runs when the matrix starts. The load average cannot say: it decays
# over minutes, so it still counts run_all.sh's own build (load 2 after a fresh build) or a
# 19 000-thread server of the run before. The CPUs' busy time over a short window can.
BUSY_WINDOW_S = 2.0
BUSY_WARN_CORES = 0.1  # a tenth of a core: more than this machine's daemons take


def cpu_times():
    """(busy, total) jiffies of all CPUs, from /proc/stat's "cpu" line (idle and iowait
    are not busy); None where it cannot be read."""
    lines = read("/proc/stat").splitlines()
    if not lines or not lines[0].startswith("cpu "):
        return None
    fields = [int(x) for x in lines[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest and guest_nice are already counted in user and nice
    total = sum(fields[:8])
    return total - idle, total


def cpu_busy(window_s):
    """Cores' worth of CPU busy over the next window_s seconds, all processes included;
    None where /proc/stat cannot be read."""
    before = cpu_times()
    time.sleep(window_s)
    after = cpu_times()
    if before is None or after is None:
        return None
    (busy0, total0), (busy1, total1) = before, after
    cores = os.cpu_count() or 1
    return round(cores * (busy1 - busy0) / max(1, total1 - total0), 3)


def time_wait_count():
    """TCP sockets in TIME_WAIT on this host (/proc/net/sockstat "tw")."""
    for line in read("/proc/net/sockstat").splitlines():
        if line.startswith("TCP:"):
            fields = line.split()[1:]
            return int(dict(zip(fields[::2], fields[1::2])).get("tw", 0))
    return 0


def slabinfo():
    """name -> active_objs x objsize (bytes); empty when not readable (needs root)."""
    try:
        lines = Path("/proc/slabinfo").read_text().splitlines()[2:]
    except OSError:
        return {}
    out = {}
    for line in lines:
        f = line.split()
        out[f[0]] = out.get(f[0], 0) + int(f[1]) * int(f[3])
    return out


def process_status(pid):
    """VmRSS, VmPTE (bytes) and Threads of a process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmPTE"):
            out[key] = int(value.split()[0]) * 1024
        elif key == "Threads":
            out[key] = int(value)
    return out
