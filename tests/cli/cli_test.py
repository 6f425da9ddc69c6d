"""Every command fails well (docs/exit-status.md): each executable run with bad
input, one case per ctest test (cli.<command>.<case>).

  cli_test.py COMMAND CASE --bin BUILD/bin --root SOURCE_DIR

Checked for each case: the exit status (2: bad command line, 1: could not start, 3:
loadgen connected no client), the message (for the C++ executables one line on stderr
that names the option and what it accepts; "chat-VARIANT: cannot listen on ADDR:PORT:
REASON" for a server that cannot start), and that nothing was left behind: the port the
command was given is free again, and no process of its session is left.
"""
import argparse
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SKIP = 77  # ctest's SKIP_RETURN_CODE for this suite


class Failed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failed(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Run:
    """One finished run of a command: status, stdout, stderr."""

    def __init__(self, command, timeout=30, env=None, preexec=None):
        self.command = command
        # A session of its own, so that whatever it started can be found afterwards.
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env=env, preexec_fn=preexec)
        try:
            self.out, self.err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise Failed(f"{' '.join(command)} still running after {timeout} s")
        self.status = proc.returncode
        self.session = proc.pid
        print(f"$ {' '.join(command)}\nexit {self.status}\nstdout: {self.out!r}\nstderr: {self.err!r}")

    def left_nothing(self, port=None):
        try:
            os.killpg(self.session, 0)
            leftover = True
        except ProcessLookupError:
            leftover = False
        check(not leftover, "a process of the command's session is still running")
        if port is not None:
            check(port_is_free(port), f"port {port} is still taken after the command exited")

    def usage_error(self, *patterns, one_line=True):
        """Exit 2; stderr names what is wrong (each regex in patterns). One line on
        stderr and nothing on stdout, for the C++ executables."""
        check(self.status == 2, f"exit status {self.status}, expected 2 (bad command line)")
        lines = self.err.strip().splitlines()
        if one_line:
            check(len(lines) == 1, f"{len(lines)} lines on stderr, expected one")
            check(self.out == "", "output on stdout")
            check(len(lines[0]) <= 200, f"a line of {len(lines[0])} characters")
        check("/usr/include" not in self.err and ".hpp:" not in self.err and ".cpp:" not in self.err,
              "a source path in the message")
        for pattern in patterns:
            check(re.search(pattern, self.err), f"stderr does not match {pattern!r}")


def registry(args, variant):
    """The variant's entry in the registry (scripts/chatbench/variants.py, run as a command):
    its command, and whether it is compiled (the C++ executables' and chat-go's one-line
    messages) or a Python server."""
    described = subprocess.run(["/usr/bin/python3", str(args.root / "scripts/chatbench/variants.py"),
                                "--bin", str(args.bin)], capture_output=True, text=True, check=True).stdout
    return next(v for v in json.loads(described)["variants"] if v["name"] == variant)


def server_command(args, variant):
    return registry(args, variant)["command"]


# ---- servers -----------------------------------------------------------------------------

def server_bad_value(args, variant):
    port = free_port()
    run = Run(server_command(args, variant) + ["--port", str(port), "--max-line", "0"])
    cpp = registry(args, variant)["compiled"]
    run.usage_error(r"--max-line", *([r"'0' is not an integer from 1 to \d+"] if cpp else []), one_line=cpp)
    run.left_nothing(port)


def server_bad_port(args, variant):
    run = Run(server_command(args, variant) + ["--port", "abc"])
    cpp = registry(args, variant)["compiled"]
    run.usage_error(r"--port", *([r"'abc' is not an integer from 0 to 65535"] if cpp else []), one_line=cpp)
    run.left_nothing()


def server_unknown_option(args, variant):
    port = free_port()
    run = Run(server_command(args, variant) + ["--port", str(port), "--frobnicate"])
    run.usage_error(r"--frobnicate", one_line=registry(args, variant)["compiled"])
    run.left_nothing(port)


def server_help(args, variant):
    run = Run(server_command(args, variant) + ["--help"])
    check(run.status == 0, f"--help exited {run.status}")
    check(re.search(r"docs/\S+\.md", run.out), "--help does not say which doc to read next")


def expect_cannot_listen(run, variant, address, port, reason):
    check(run.status == 1, f"exit status {run.status}, expected 1 (could not start)")
    expected = f"chat-{variant}: cannot listen on {address}:{port}: {reason}"
    check(run.err.strip() == expected, f"stderr is not exactly {expected!r}")
    check("listening on" not in run.out, "it said it was listening")


def server_address_in_use(args, variant):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = Run(server_command(args, variant) + ["--port", str(port)])
        expect_cannot_listen(run, variant, "127.0.0.1", port, "Address already in use")
        run.left_nothing()


def server_no_such_address(args, variant):
    port = free_port()
    # 192.0.2.0/24 is TEST-NET-1: no interface here has it; nothing is sent.
    run = Run(server_command(args, variant) + ["--bind", "192.0.2.1", "--port", str(port)])
    expect_cannot_listen(run, variant, "192.0.2.1", port, "Cannot assign requested address")
    run.left_nothing(port)


def server_permission_denied(args, variant):
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 1:
        print("port 1 needs no privilege on this machine: nothing to refuse")
        sys.exit(SKIP)
    preexec = None
    command = server_command(args, variant)
    if os.geteuid() == 0:  # root may listen on port 1: run the server as nobody
        def preexec():
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        for path in [Path(c).parent for c in command if c.startswith("/")]:  # nobody must reach the server
            for d in [path.resolve(), *path.resolve().parents]:
                if d.stat().st_mode & 0o005 != 0o005:
                    print(f"nobody may not enter {d}")
                    sys.exit(SKIP)
    run = Run(command + ["--port", "1"], preexec=preexec)
    expect_cannot_listen(run, variant, "127.0.0.1", 1, "Permission denied")
    run.left_nothing()


def server_stack_size_below_minimum(args, variant):
    size = {"threads": "8K", "fibers": "4K"}[variant]
    port = free_port()
    run = Run(server_command(args, variant) + ["--port", str(port), "--stack-size", size])
    run.usage_error(rf"--stack-size: '{size}' is below the minimum of 16K")
    run.left_nothing(port)


def server_stack_size_not_an_option(args, variant):
    # An option that does not apply to a variant is a usage error (docs/exit-status.md).
    port = free_port()
    run = Run(server_command(args, variant) + ["--port", str(port), "--stack-size", "64K"])
    run.usage_error(r"--stack-size")
    run.left_nothing(port)


def without_io_uring(error):
    """A preexec function: a seccomp filter that fails io_uring_setup, io_uring_enter and
    io_uring_register (425-427, the same number on every architecture) with `error`, as
    a kernel built without io_uring (ENOSYS) or kernel.io_uring_disabled (EPERM) would,
    for this process only. Raises OSError if the kernel takes no filter."""
    import ctypes
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    ld_nr, jge, jgt, ret = 0x20, 0x35, 0x25, 0x06  # BPF_LD|W|ABS, BPF_JMP|JGE|K, JGT|K, BPF_RET|K
    program = b"".join(struct.pack("HBBI", *op) for op in [
        (ld_nr, 0, 0, 0),               # seccomp_data.nr
        (jge, 0, 2, 425),               # below io_uring_setup: allow
        (jgt, 1, 0, 427),               # above io_uring_register: allow
        (ret, 0, 0, 0x00050000 | error),  # SECCOMP_RET_ERRNO
        (ret, 0, 0, 0x7FFF0000),        # SECCOMP_RET_ALLOW
    ])
    code = ctypes.create_string_buffer(program)

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    def preexec():
        filter_program = Program(len(program) // 8, ctypes.cast(code, ctypes.c_void_p))
        # PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER.
        if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(filter_program), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "seccomp filter")
    return preexec


def server_io_uring_unavailable(args, variant):
    """The io_uring builds where the kernel gives no ring: exit 1 (could not start), and
    one line that says io_uring is unavailable and what may refuse it, not a bare errno."""
    for error, cause in [(errno.ENOSYS, "the kernel is built without it, or a seccomp filter blocks it"),
                         (errno.EPERM, "disabled by sysctl kernel.io_uring_disabled, or a seccomp filter blocks it")]:
        port = free_port()
        try:
            run = Run(server_command(args, variant) + ["--port", str(port)], preexec=without_io_uring(error))
        except subprocess.SubprocessError as e:  # the filter could not be installed
            print(f"no seccomp filter here: {e}")
            sys.exit(SKIP)
        check(run.status == 1, f"exit status {run.status}, expected 1 (could not start)")
        expected = f"chat-{variant}: io_uring is unavailable: {cause} (io_uring_setup: {os.strerror(error)})"
        check(run.err.strip() == expected, f"stderr is not exactly {expected!r}")
        check("listening on" not in run.out, "it said it was listening")
        run.left_nothing(port)


def vm_size(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise Failed("no VmSize")


def stats(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"/stats\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            check(chunk, "the server closed without answering /stats")
            reply += chunk
    return dict(field.split("=", 1) for field in reply.decode().split()[1:])


def server_stack_size_stated(args, variant):
    """A size that is not whole pages is rounded up, stderr says so, /stats says what the
    connections got, and VSZ grows by that per connection (plus one guard page)."""
    page = os.sysconf("SC_PAGESIZE")
    sanitized = os.environ.get("CHATBENCH_SANITIZED")
    asked = 1_000_000 if sanitized else 20_000  # a sanitizer's frames need more stack
    stated = (asked + page - 1) // page * page
    server = subprocess.Popen(server_command(args, variant) + ["--port", "0", "--stack-size", str(asked)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients = []
    try:
        line = server.stdout.readline()
        match = re.fullmatch(rf"listening on 127\.0\.0\.1:(\d+) variant={variant}\n", line)
        check(match, f"no listening line: {line!r}")
        port = int(match.group(1))
        fields = stats(port)
        check(fields.get("stack_size") == str(stated), f"/stats stack_size={fields.get('stack_size')}, expected {stated}")

        def connect(count):  # idle connections, each with its own thread or fiber
            for _ in range(count):
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            deadline = time.monotonic() + 20
            while stats(port)["clients"] != str(len(clients) + 1):  # + the /stats connection
                check(time.monotonic() < deadline, "the server did not take the connections")
                time.sleep(0.05)
            # The last /stats connection's thread or fiber ends, and its stack goes, a moment
            # after the reply: read VSZ once it stays put, or a stack freed between the two
            # readings below would count against the 200 connections.
            size = vm_size(server.pid)
            while True:
                time.sleep(0.05)
                again = vm_size(server.pid)
                if again == size:
                    return size
                check(time.monotonic() < deadline, "the server's VSZ did not settle")
                size = again

        if sanitized:
            print("sanitized build: VSZ is the sanitizer's, not checked")
        else:
            base = connect(20)
            grown = connect(200)
            per_connection = (grown - base) / 200
            print(f"VSZ per connection: {per_connection:.0f} bytes for a stated stack of {stated}")
            # The stack and its guard page; allow one page of other mappings in the mean.
            check(stated + page <= per_connection <= stated + 2 * page,
                  f"VSZ grows {per_connection:.0f} bytes per connection, not the stated {stated} + a guard page")
    finally:
        for c in clients:
            c.close()
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=10)
        print(f"server stderr: {err!r}")
    check(f"--stack-size {asked} rounded up to {stated}" in err, "stderr does not say the size was rounded up")
    check(server.returncode == 0, f"server exited {server.returncode} on SIGTERM")
    check(f"stack_size={stated}" in err.splitlines()[-1], "the final /stats line has no stack_size")


# ---- loadgen -----------------------------------------------------------------------------

def loadgen(args, *argv, **kwargs):
    return Run([str(args.bin / "loadgen"), *argv], **kwargs)


def loadgen_no_mode(args):
    loadgen(args).usage_error(r"needs one of: idle, broadcast, chat")


def loadgen_unknown_mode(args):
    loadgen(args, "nosuchmode").usage_error(r"'nosuchmode' is not one of: idle, broadcast, chat")


def loadgen_negative_rate(args):
    run = loadgen(args, "chat", "--port", str(free_port()), "--rate", "-1")
    run.usage_error(r"--rate: '-1' is not a number above 0, at most \d+")
    check("1797693" not in run.err, "DBL_MAX in the message")


def loadgen_zero_clients(args):
    loadgen(args, "idle", "--port", str(free_port()), "--clients", "0").usage_error(
        r"--clients: '0' is not an integer from 1 to \d+")


def loadgen_negative_connect_rate(args):
    loadgen(args, "idle", "--port", str(free_port()), "--connect-rate", "-5").usage_error(
        r"--connect-rate: '-5' is not a number at least 0, at most \d+")


def loadgen_tick_too_long(args):
    loadgen(args, "chat", "--port", str(free_port()), "--tick-us", "100001").usage_error(
        r"--tick-us: '100001' is not an integer from 0 to 100000")


def loadgen_missing_value(args):
    loadgen(args, "broadcast", "--messages").usage_error(r"--messages: needs a value")


def loadgen_no_such_process(args):
    # A pid above pid_max: never a process.
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    loadgen(args, "idle", "--server-pid", str(pid_max + 1)).usage_error(r"--server-pid")


def loadgen_not_a_cgroup(args):
    with tempfile.TemporaryDirectory() as directory:  # a directory, but no cgroup's cpu.stat
        loadgen(args, "chat", "--server-cgroup", directory).usage_error(
            r"--server-cgroup: '.*' is not a cgroup of the CPU controller")


def loadgen_json_directory_missing(args):
    loadgen(args, "idle", "--json", "/nonexistent-dir/report.json").usage_error(
        r"--json: no directory /nonexistent-dir")


def loadgen_no_client_connected(args):
    """Nothing listens on the port: the report is still written, and the status says
    that nobody connected (3)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        run = loadgen(args, "idle", "--port", str(port), "--clients", "3", "--steps", "1",
                      "--hold-s", "0", "--quiet", "--json", str(report))
        check(run.status == 3, f"exit status {run.status}, expected 3 (no client connected)")
        check(re.search(r"no client connected", run.err), "stderr does not say no client connected")
        check(report.exists(), "no report written")
        doc = json.loads(report.read_text())
        check(doc["clients_connected"] == 0, f"clients_connected {doc['clients_connected']}")
        check(doc["limit_hit"], "limit_hit does not say why")
    run.left_nothing(port)


def loadgen_help(args):
    run = loadgen(args, "chat", "--help")
    check(run.status == 0, f"--help exited {run.status}")
    check("docs/loadgen.md" in run.out and "docs/exit-status.md" in run.out, "--help names no doc")


# ---- microbench ---------------------------------------------------------------------------

def microbench_unknown_flag(args):
    run = Run([str(args.bin / "microbench"), "--frobnicate"])
    check(run.status == 2, f"exit status {run.status}, expected 2")
    check("--frobnicate" in run.err, "the message does not name the flag")


def microbench_help(args):
    run = Run([str(args.bin / "microbench"), "--help"])
    check(run.status == 0, f"--help exited {run.status}")
    check("--smoke" in run.out and "docs/microbench.md" in run.out, "--help names neither --smoke nor the doc")


# ---- scripts -----------------------------------------------------------------------------

def script_command(args, script):
    path = args.root / "scripts" / script
    return ["/usr/bin/python3", str(path)] if script.endswith(".py") else [str(path)]


def script_bad_argument(args, script):
    """A bad command line: exit 2 and a usage line naming the script, at once (no setup,
    no build, no run: the output is only the complaint)."""
    env = dict(os.environ, BUILD_DIR=tempfile.mkdtemp(prefix="cli-test-"))  # were it to build
    try:
        run = Run(script_command(args, script) + ["--frobnicate"], env=env, timeout=60)
        check(run.status == 2, f"exit status {run.status}, expected 2")
        check(re.search(rf"usage: \S*{re.escape(script)}", run.err), f"no usage line naming {script}")
        check("--frobnicate" in run.err, "the message does not name the bad argument")
        check(run.out == "", "it did something before refusing (output on stdout)")
        check(not any(Path(env["BUILD_DIR"]).iterdir()), "it started a build")
        run.left_nothing()
    finally:
        shutil.rmtree(env["BUILD_DIR"])


def script_help(args, script):
    run = Run(script_command(args, script) + ["--help"], timeout=60)
    check(run.status == 0, f"--help exited {run.status}")
    check(re.search(rf"usage: \S*{re.escape(script)}", run.out), f"the usage does not name {script}")
    others = {"run_all.sh": "run_matrix.py"}
    if script in others:
        check(others[script] not in run.out.splitlines()[0], f"the usage names {others[script]}")


# ---- scripts/cpu_quota.py (docs/methodology.md "Capacity per server core") -----------------

def quota_refused(args, script, status, pattern, *options, preexec=None):
    """cpu_quota.py run with these options refuses before running anything: the status,
    one line naming what is wrong (plus argparse's usage line for a bad command line), and
    no cgroup made."""
    marker = Path(tempfile.mkdtemp(prefix="cli-quota-")) / "ran"
    try:
        run = Run(script_command(args, script) + [*options, "--", "/bin/touch", str(marker)], preexec=preexec)
        check(run.status == status, f"exit status {run.status}, expected {status}")
        check(re.search(pattern, run.err), f"stderr does not match {pattern!r}")
        lines = [line for line in run.err.strip().splitlines() if not line.startswith("usage:")]
        check(len(lines) == 1, f"{len(lines)} lines on stderr besides the usage, expected one")
        check(not marker.exists(), "the command ran")
        check(not list(Path("/sys/fs/cgroup").glob(f"*/chatbench-quota-{run.session}*")), "a cgroup was made")
        run.left_nothing()
    finally:
        shutil.rmtree(marker.parent)


def script_quota_out_of_range(args, script):
    for quota in ["1.5", "0", "-0.2"]:
        quota_refused(args, script, 2, r"--quota .* is not a fraction of a core in \(0, 1\]",
                      "run", "--quota", quota, "--period-ms", "10")


def script_period_too_short(args, script):
    # The kernel takes no quota under 1 ms: 0.2 of a 1 ms period is 200 µs.
    quota_refused(args, script, 2, r"under the kernel's 1 ms minimum: use --period-ms 5 or more",
                  "run", "--quota", "0.2", "--period-ms", "1")
    quota_refused(args, script, 2, r"--period-ms 2000 is outside", "run", "--quota", "0.2", "--period-ms", "2000")


def not_root(args):
    """(preexec, uid): a preexec that drops root to nobody, or None when not root; skips
    (77) where nobody cannot reach the scripts."""
    if os.geteuid() != 0:
        return None, os.geteuid()
    for d in [args.root.resolve(), *args.root.resolve().parents]:
        if d.stat().st_mode & 0o005 != 0o005:
            print(f"nobody may not enter {d}")
            sys.exit(SKIP)

    def as_nobody():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    return as_nobody, 65534


def script_not_root(args, script):
    preexec, uid = not_root(args)
    quota_refused(args, script, 1, rf"^cpu_quota: a CPU quota needs root to create a cgroup \(running as uid {uid}\)$",
                  "run", "--quota", "0.3", "--period-ms", "10", preexec=preexec)


def script_capacity_not_root(args, script):
    """run_matrix.py --capacity without root: exit 1 with the reason at once, before run_all.sh's
    setup and build, not a failed row per search after them."""
    preexec, uid = not_root(args)
    run = Run(script_command(args, script) + ["--check-args", "--capacity"], preexec=preexec)
    check(run.status == 1, f"exit status {run.status}, expected 1")
    check(run.err.strip().endswith(f"run_matrix: --modes capacity: a CPU quota needs root to create a cgroup "
                                   f"(running as uid {uid})"), "stderr does not say root is needed")
    run.left_nothing()


def script_no_controller(args, script):
    with tempfile.TemporaryDirectory() as root:
        mounts = Path(root) / "mounts"
        (Path(root) / "unified").mkdir()
        (Path(root) / "unified" / "cgroup.controllers").write_text("memory pids\n")
        mounts.write_text(f"cgroup2 {root}/unified cgroup2 rw 0 0\ncgroup {root}/memory cgroup rw,memory 0 0\n")
        quota_refused(args, script, 1, r"no cgroup CPU controller.*looked in .*unified/cgroup.controllers lists memory pids",
                      "--mounts", str(mounts), "run", "--quota", "0.3", "--period-ms", "10")


# ---- main --------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", help="chat-VARIANT, loadgen, microbench or a script's name")
    p.add_argument("case")
    p.add_argument("--bin", type=Path, required=True)
    p.add_argument("--root", type=Path, required=True)
    a = p.parse_args()
    if a.command.startswith("chat-"):
        case, extra = globals()["server_" + a.case], (a.command[len("chat-"):],)
    elif a.command in ("loadgen", "microbench"):
        case, extra = globals()[f"{a.command}_{a.case}"], ()
    else:
        case, extra = globals()["script_" + a.case], (a.command,)
    try:
        case(a, *extra)
    except Failed as e:
        print(f"FAILED: {e}")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
