#!/usr/bin/python3
"""End-to-end checks of loadgen against a real server on loopback.

Usage: e2e.py CASE --loadgen PATH --server PATH [--engine uring|epoll]
Each case starts the server on --port 0, reads the port from its "listening on" line,
runs loadgen with --json (and --engine), and checks the report. Exit status 0 means the
case passed.
"""
import argparse
import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

# Every key docs/loadgen.md ("The JSON report") requires in every report (values may be null when a mode cannot measure them).
REQUIRED = {
    "mode": None, "clients_requested": None, "clients_connected": None, "limit_hit": None,
    "machine": ["cpu", "cores", "kernel", "compiler", "boost", "git_commit", "limits"],
    "memory": ["steps", "per_connection"],
    "latency_us": None, "lines": None, "throughput": None,
    "cpu": ["server_user_s", "server_sys_s", "loadgen_user_s", "loadgen_sys_s"],
    "broadcast_completion_us": None, "engine": None, "engine_fallback": None,
}
STEP_KEYS = ["clients", "rss_bytes", "pss_bytes", "vsz_bytes", "threads", "mem_available_bytes",
             "kernel_stack_bytes", "slab_bytes", "sock_mem_bytes"]
PER_CONNECTION_KEYS = ["rss_bytes", "pss_bytes", "vsz_bytes", "system_bytes"]
LATENCY_KEYS = ["p50", "p90", "p99", "p999", "max", "count"]
LINES_KEYS = ["sent", "delivered", "expected", "lost", "duplicated", "reordered"]


ENGINE = None  # --engine: every run names it, and every report must say it ran on it


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def start_server(path):
    server = subprocess.Popen([path, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()  # the server prints it once it is ready
    check(line.startswith("listening on "), "server did not announce itself: %r" % line)
    port = int(line.split()[2].rsplit(":", 1)[1])
    return server, port


def run_loadgen(args, loadgen, port, server_pid, extra, timeout=30, preexec=None, during=None):
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "report.json")
        command = [loadgen, *extra, "--port", str(port), "--server-pid", str(server_pid),
                   "--json", report_path, "--quiet"]
        if ENGINE:
            command += ["--engine", ENGINE]
        started = time.monotonic()
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
        if during:
            during(run)
        out, err = run.communicate(timeout=timeout)
        elapsed = time.monotonic() - started
        sys.stdout.write(out)
        sys.stderr.write(err)
        check(run.returncode == 0, "loadgen exited %d" % run.returncode)
        with open(report_path) as f:
            report = json.load(f)
    check_schema(report)
    if ENGINE:
        check(report["engine"] == ENGINE and report["engine_fallback"] is None,
              "engine %s, fallback %s" % (report["engine"], report["engine_fallback"]))
    return report, elapsed


def check_schema(report):
    for key, inner in REQUIRED.items():
        check(key in report, "missing key %s" % key)
        for sub in inner or []:
            check(sub in report[key], "missing key %s.%s" % (key, sub))
    for step in report["memory"]["steps"]:
        for key in STEP_KEYS:
            check(key in step, "missing memory.steps[].%s" % key)
    for key in PER_CONNECTION_KEYS:
        check(key in report["memory"]["per_connection"], "missing memory.per_connection.%s" % key)
    for block, keys in (("latency_us", LATENCY_KEYS), ("lines", LINES_KEYS), ("throughput", ["sent_per_s", "deliveries_per_s"])):
        if report[block] is not None:
            for key in keys:
                check(key in report[block], "missing %s.%s" % (block, key))


def case_idle(loadgen, server, port):
    report, _ = run_loadgen(None, loadgen, port, server.pid, ["idle", "--clients", "500", "--steps", "2", "--hold-s", "1"])
    check(report["mode"] == "idle", "mode")
    check(report["clients_connected"] == 500, "connected %s of 500" % report["clients_connected"])
    check(report["limit_hit"] is None, "limit_hit %s" % report["limit_hit"])
    steps = report["memory"]["steps"]
    check([s["clients"] for s in steps] == [0, 250, 500], "steps %s" % [s["clients"] for s in steps])
    per = report["memory"]["per_connection"]
    check(per["rss_bytes"] is not None and per["rss_bytes"] > 0, "rss per connection %s" % per["rss_bytes"])
    check(report["latency_us"] is None and report["lines"] is None, "idle measures no latency or lines")


def case_connect_rate(loadgen, server, port):
    # 150 clients at 300 connects/s: the ramp takes at least half a second (the first
    # connect starts at once), however fast the server accepts, and every client connects.
    report, _ = run_loadgen(None, loadgen, port, server.pid,
                            ["idle", "--clients", "150", "--steps", "1", "--hold-s", "0.2", "--connect-rate", "300"])
    check(report["clients_connected"] == 150 and report["limit_hit"] is None, "connected %s, limit %s" %
          (report["clients_connected"], report["limit_hit"]))
    check(report["options"]["connect_rate"] == 300, "options %s" % report["options"])
    check(report["ramp"]["seconds"] >= 0.49, "a ramp paced at 300/s took %.3f s" % report["ramp"]["seconds"])


def case_broadcast(loadgen, server, port):
    report, _ = run_loadgen(None, loadgen, port, server.pid,
                            ["broadcast", "--clients", "100", "--messages", "50", "--interval-ms", "5", "--size", "100"])
    lines = report["lines"]
    check(report["clients_connected"] == 100, "connected")
    check(lines["sent"] == 50 and lines["expected"] == 50 * 99, "sent/expected %s" % lines)
    check(lines["lost"] == 0 and lines["delivered"] == lines["expected"], "loss %s" % lines)
    check(lines["duplicated"] == 0 and lines["reordered"] == 0, "order %s" % lines)
    check(report["latency_us"]["count"] == 50 * 99, "latency samples %s" % report["latency_us"])
    completion = report["broadcast_completion_us"]
    check(completion is not None and completion["count"] == 50, "completion %s" % completion)
    check(completion["max"] >= completion["p50"] > 0, "completion order %s" % completion)
    check_receive_times(report)


def check_receive_times(report):
    # Every read came with the kernel's receive time (docs/loadgen.md, "Receive times").
    untimed = [w for w in report["warnings"] if "receive time" in w]
    check(not untimed, "reads without a receive time: %s" % untimed)


def case_chat(loadgen, server, port):
    report, _ = run_loadgen(None, loadgen, port, server.pid,
                            ["chat", "--clients", "60", "--room-size", "7", "--rate", "20", "--duration-s", "1.5",
                             "--warmup-s", "0.5", "--threads", "2"])
    lines = report["lines"]
    # 60 clients in rooms of 7: eight rooms of 7 and one of 4.
    check(lines["sent"] > 0 and lines["lost"] == 0 and lines["outstanding"] == 0, "loss %s" % lines)
    check(lines["delivered"] == lines["expected"], "delivered %s" % lines)
    throughput = report["throughput"]
    check(throughput["deliveries_per_s"] > 0 and throughput["window_arrivals"] > 0, "throughput %s" % throughput)
    per_line = lines["sent"] / 60  # every client sent the same number of lines
    check(lines["expected"] == round(per_line * (8 * 7 * 6 + 4 * 3)), "expected from room sizes %s" % lines)
    check(lines["server_lines_out"] == lines["delivered"], "server lines_out %s" % lines)
    check(report["server_stats"]["lines_in_delta"] == lines["sent"], "server lines_in %s" % report["server_stats"])
    check(report["latency_us"]["count"] > 0, "latency")
    check(report["cpu"]["server_user_s"] is not None, "server cpu")
    check_receive_times(report)


def case_tick(loadgen, server, port):
    # A 50 ms tick: sends fall on a 50 ms grid, their lines arrive just after it, and the
    # io_uring engine reads them at the next grid point. Latency ends when the line reached
    # the socket (the kernel's receive time), so that wait must not show: a median latency
    # timed at the read is a whole tick (50.7 ms measured). (The epoll engine reads when a socket is
    # readable, so there it shows that the grid itself costs no latency.)
    report, _ = run_loadgen(None, loadgen, port, server.pid,
                            ["chat", "--clients", "40", "--room-size", "8", "--rate", "20", "--duration-s", "2",
                             "--warmup-s", "0.5", "--tick-us", "50000"])
    lines = report["lines"]
    check(lines["sent"] > 0 and lines["lost"] == 0 and lines["delivered"] == lines["expected"], "loss %s" % lines)
    check(report["options"]["tick_us"] == 50000, "options %s" % report["options"])
    check_receive_times(report)
    p50_ms = report["latency_us"]["p50"] / 1000
    check(p50_ms < 12.5, "median latency %.1f ms includes loadgen's wait for the next tick" % p50_ms)


def wait_for_lines_in(port, count, timeout=15):
    """Polls the server's /stats from a client of our own until it has relayed count lines."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port)) as probe:
        reader = probe.makefile("rb")
        while time.monotonic() < deadline:
            probe.sendall(b"/stats\n")
            line = reader.readline()
            while line and not line.startswith(b"/stats "):
                line = reader.readline()
            stats = dict(f.split(b"=", 1) for f in line.split()[1:] if b"=" in f)
            if int(stats.get(b"lines_in", b"0")) >= count:
                return
            time.sleep(0.05)


def case_stalled(loadgen, server, port):
    # Sends made late because loadgen was kept off its core (here: stopped by a signal,
    # as a VM's late wake-up or another task would) are counted apart from sends made late
    # by loadgen's own work; the ceiling search does not hold them against it.
    def stop_now_and_then(run):
        wait_for_lines_in(port, 200)
        for _ in range(5):
            run.send_signal(signal.SIGSTOP)
            time.sleep(0.06)
            run.send_signal(signal.SIGCONT)
            time.sleep(0.2)

    report, _ = run_loadgen(None, loadgen, port, server.pid,
                            ["chat", "--clients", "20", "--room-size", "10", "--rate", "100", "--duration-s", "4",
                             "--warmup-s", "0.2"], during=stop_now_and_then)
    step = report["rate_steps"][0]
    # Five 60 ms stops at 2 000 sends/s: about 600 sends made late while stopped. (On a
    # loaded machine, catching up after a stop can make a few more late by loadgen's own
    # work, which is what they are, so the bound is on the stalled ones.)
    check(step["late_sends_stalled"] >= 250,
          "%d of %d late sends counted as made late while stopped" % (step["late_sends_stalled"], step["late_sends"]))
    check(step["late_sends_stalled"] <= step["late_sends"], "more stalled than late: %r" % step)


def case_server_killed(loadgen, server, port):
    def kill_soon(_loadgen):
        # Kill once the server has relayed some lines, however slow the build (a sanitized
        # loadgen takes longer to connect).
        wait_for_lines_in(port, 100)
        # Stop the server before killing it, so that lines are certainly in flight: what
        # loadgen sends meanwhile waits unread in the server's sockets and dies with it.
        # A plain SIGKILL may land between two sends, with nothing in flight to lose.
        server.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        server.send_signal(signal.SIGKILL)

    report, elapsed = run_loadgen(None, loadgen, port, server.pid,
                                  ["chat", "--clients", "40", "--room-size", "10", "--rate", "50", "--duration-s", "3",
                                   "--warmup-s", "0", "--drain-s", "2"], during=kill_soon)
    lines = report["lines"]
    check(elapsed < 20, "took %.1f s" % elapsed)
    check(lines["receivers_disconnected"] == 40, "disconnected %s" % lines)
    check(lines["lost"] > 0, "loss counted %s" % lines)
    # A receiver the server closed can get nothing more: its missing lines are lost, not outstanding.
    check(lines["outstanding"] == 0, "outstanding %s" % lines)
    check(lines["lost"] + lines["delivered"] == lines["expected"], "lost + delivered = expected %s" % lines)
    check(lines["server_lines_out"] is None, "no /stats from a dead server")
    check(report["clients_connected"] == 0, "connected %s" % report["clients_connected"])


def case_fd_limit(loadgen, server, port):
    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    report, _ = run_loadgen(None, loadgen, port, server.pid, ["idle", "--clients", "500", "--steps", "1", "--hold-s", "0.5"],
                            preexec=low_fd_limit)
    check(report["limit_hit"] is not None and report["limit_hit"].startswith("fd limit"), "limit_hit %s" % report["limit_hit"])
    check(150 < report["clients_connected"] < 200, "connected %s" % report["clients_connected"])
    check(any("fd limit" in w for w in report["warnings"]), "preflight warning %s" % report["warnings"])


def case_few_buffers(loadgen, server, port):
    # The io_uring engine with 4 receive buffers for 1000 receivers: receives run out of
    # buffers (ENOBUFS) all the time, end, and are re-armed. loadgen is also stopped again
    # and again, so on resuming each receiver has a backlog longer than a buffer and lines
    # cross buffer boundaries. Not a byte may be lost or reordered meanwhile. (The epoll
    # engine ignores --uring-buffers; it runs the same case.)
    def stall(run):
        while run.poll() is None:
            run.send_signal(signal.SIGSTOP)
            time.sleep(0.04)
            run.send_signal(signal.SIGCONT)
            time.sleep(0.02)

    report, _ = run_loadgen(None, loadgen, port, server.pid,
                            ["broadcast", "--clients", "1000", "--messages", "100", "--interval-ms", "5", "--size", "1000",
                             # Stopped two thirds of the time, and slower still under a
                             # sanitizer beside other tests: time to read it all. A byte
                             # that was never read stays outstanding however long it waits.
                             "--uring-buffers", "4", "--drain-s", "30"], timeout=55, during=stall)
    lines = report["lines"]
    check(report["clients_connected"] == 1000, "connected %s" % report["clients_connected"])
    check(lines["sent"] == 100 and lines["expected"] == 100 * 999, "sent/expected %s" % lines)
    check(lines["lost"] == 0 and lines["delivered"] == lines["expected"], "loss %s" % lines)
    check(lines["duplicated"] == 0 and lines["reordered"] == 0 and lines["unknown"] == 0, "order %s" % lines)


def time_wait_sockets(port):
    """TCP sockets in TIME_WAIT (state 06) with the server's end 127.0.0.1:port at either end."""
    server = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        rows = [row.split() for row in f][1:]
    return [tuple(row[1:3]) for row in rows if row[3] == "06" and server in (row[1], row[2])]


def case_no_time_wait(loadgen, server, port):
    # loadgen ends every connection with a reset, so a run leaves no TIME_WAIT behind on
    # either end (the next point's memory measurement starts clean).
    before = time_wait_sockets(port)  # another process's leftovers on a reused port number
    report, _ = run_loadgen(None, loadgen, port, server.pid, ["idle", "--clients", "300", "--steps", "1", "--hold-s", "0.2"])
    check(report["clients_connected"] == 300, "connected %s" % report["clients_connected"])
    left = [entry for entry in time_wait_sockets(port) if entry not in before]
    check(not left, "%d sockets in TIME_WAIT after the run: %s" % (len(left), left[:5]))


def block_io_uring():
    """preexec_fn: a seccomp filter under which io_uring_setup fails with ENOSYS, as on a
    kernel built without io_uring. The filter is inherited by loadgen only."""
    libc = ctypes.CDLL(None, use_errno=True)
    # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}: load the syscall number; if it is
    # io_uring_setup (425 on every architecture) return ERRNO(ENOSYS), else allow.
    program = [(0x20, 0, 0, 0), (0x15, 0, 1, 425), (0x06, 0, 0, 0x00050000 | 38), (0x06, 0, 0, 0x7FFF0000)]
    filters = (ctypes.c_uint64 * len(program))(*[code | jt << 16 | jf << 24 | k << 32 for code, jt, jf, k in program])

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "prctl no_new_privs")
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(Program(len(program), ctypes.cast(filters, ctypes.c_void_p))), 0, 0) == 0,
          "seccomp filter: errno %d" % ctypes.get_errno())


def case_engine_fallback(loadgen, server, port):
    # Without io_uring the default engine falls back to epoll and says why ...
    report, _ = run_loadgen(None, loadgen, port, server.pid, ["idle", "--clients", "50", "--steps", "1", "--hold-s", "0.2"],
                            preexec=block_io_uring)
    check(report["engine"] == "epoll", "engine %s" % report["engine"])
    check(report["engine_fallback"] is not None and "ENOSYS" in report["engine_fallback"], "fallback %s" % report["engine_fallback"])
    check(report["clients_connected"] == 50, "connected %s" % report["clients_connected"])
    # ... while asking for io_uring there is an error: exit 1 and a one-line message.
    run = subprocess.run([loadgen, "idle", "--engine", "uring", "--port", str(port), "--clients", "5", "--quiet"],
                         capture_output=True, text=True, preexec_fn=block_io_uring, timeout=20)
    check(run.returncode == 1, "--engine uring without io_uring exited %d" % run.returncode)
    check(run.stderr.count("\n") == 1 and "--engine uring" in run.stderr and "ENOSYS" in run.stderr, "stderr %r" % run.stderr)
    # A bad engine name is a usage error.
    run = subprocess.run([loadgen, "idle", "--engine", "kqueue", "--port", str(port)], capture_output=True, text=True, timeout=20)
    check(run.returncode != 0 and "engine" in run.stderr, "--engine kqueue: %d %r" % (run.returncode, run.stderr))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["idle", "connect_rate", "broadcast", "chat", "tick", "stalled", "server_killed", "fd_limit", "few_buffers",
                                         "no_time_wait", "engine_fallback"])
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--engine", choices=["uring", "epoll"])
    args = parser.parse_args()
    global ENGINE
    ENGINE = args.engine
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
