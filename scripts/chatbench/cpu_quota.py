"""A CPU quota for one server process: a cgroup of its own whose CPU controller lets it run
`quota` of each `period` per core it is given (docs/methodology.md, "Capacity per server
core"). cgroup v2 (`cpu.max` in a child of a cgroup2 mount whose `cgroup.controllers`
lists cpu) and v1 (`cpu.cfs_quota_us`, `cpu.cfs_period_us` in a child of the hierarchy
that holds cpu). Needs root.

    with CpuQuota(0.3, period_ms=10) as quota:
        subprocess.Popen(command, preexec_fn=quota.join)   # the child and all its threads

Every refusal is a QuotaError whose text is one line that says what to change."""
import math
import os
from pathlib import Path

MOUNTS = "/proc/mounts"
KERNEL_MIN_US = 1000        # the kernel refuses a quota or a period under 1 ms (EINVAL)
KERNEL_MAX_PERIOD_US = 1_000_000
PREFIX = "chatbench-quota-"  # every cgroup made here is named so; the tests look for leftovers


class QuotaError(Exception):
    """A quota that cannot be set up, with the one line that says why."""


class UsageError(QuotaError):
    """A quota or period out of range: a bad command line (exit 2)."""


def check_quota(quota, period_ms, cores=1):
    """(quota_us, period_us) of the cgroup for `quota` of each of `cores` cores per period,
    or UsageError: quota outside (0, 1] per core, a period outside [1 ms, 1 s], or a
    quota per period under the kernel's 1 ms minimum (naming the shortest period that works)."""
    if not (0 < quota <= 1):
        raise UsageError(f"--quota {quota:g} is not a fraction of a core in (0, 1]")
    if not (KERNEL_MIN_US <= period_ms * 1000 <= KERNEL_MAX_PERIOD_US):
        raise UsageError(f"--period-ms {period_ms:g} is outside the kernel's [1, 1000] ms")
    period_us = round(period_ms * 1000)
    quota_us = round(quota * cores * period_us)
    if quota_us < KERNEL_MIN_US:
        shortest = math.ceil(KERNEL_MIN_US / (quota * cores) / 1000)
        raise UsageError(f"--quota {quota:g} of --period-ms {period_ms:g} is {quota_us} µs per period, under the "
                         f"kernel's 1 ms minimum: use --period-ms {shortest} or more")
    return quota_us, period_us


class Controller:
    """Where the CPU controller is: its hierarchy's mount point and the cgroup version."""

    def __init__(self, mount, version):
        self.mount, self.version = Path(mount), version

    def __repr__(self):
        return f"cgroup v{self.version} at {self.mount}"


def find_controller(mounts=MOUNTS):
    """The hierarchy holding the CPU controller, from the mount table: a cgroup2 mount whose
    cgroup.controllers lists cpu, else a cgroup (v1) mount with the cpu option. QuotaError
    naming every place looked at when there is none."""
    looked = []
    v1 = None
    for line in Path(mounts).read_text().splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        _device, mount, kind, options = fields[:4]
        if kind == "cgroup2":
            controllers = Path(mount) / "cgroup.controllers"
            listed = controllers.read_text().split() if controllers.exists() else []
            if "cpu" in listed:
                return Controller(mount, 2)
            looked.append(f"{controllers} lists {' '.join(listed) or 'nothing'}")
        elif kind == "cgroup":
            if "cpu" in options.split(","):
                v1 = v1 or Controller(mount, 1)
            else:
                looked.append(f"{mount} ({options.split(',')[-1]})")
    if v1:
        return v1
    raise QuotaError("no cgroup CPU controller: no cgroup2 mount lists cpu in cgroup.controllers and no cgroup v1 "
                     f"mount has the cpu option (looked in {mounts}: {'; '.join(looked) or 'no cgroup mount'})")


def require_root():
    if os.geteuid() != 0:
        raise QuotaError(f"a CPU quota needs root to create a cgroup (running as uid {os.geteuid()})")


class CpuQuota:
    """One cgroup with a CPU quota: create() makes it, join() (as a preexec_fn) or add(pid)
    puts a process in it with all its threads, remove() moves what is still in it back to
    the parent and deletes it. A context manager does create() and remove()."""

    def __init__(self, quota, period_ms, cores=1, name=None, controller=None, mounts=MOUNTS):
        self.quota, self.period_ms, self.cores = quota, period_ms, cores
        self.quota_us, self.period_us = check_quota(quota, period_ms, cores)
        self.name = PREFIX + (name or str(os.getpid()))
        self.controller = controller
        self.mounts = mounts
        self.path = None

    def create(self):
        require_root()
        self.controller = self.controller or find_controller(self.mounts)
        parent = self.controller.mount
        path = parent / self.name
        try:
            path.mkdir()
        except OSError as e:
            raise QuotaError(f"cannot create the cgroup {path}: {e.strerror}") from e
        self.path = path
        try:
            if self.controller.version == 2:
                control = parent / "cgroup.subtree_control"
                if "cpu" not in control.read_text().split():
                    control.write_text("+cpu")
                (path / "cpu.max").write_text(f"{self.quota_us} {self.period_us}")
            else:
                (path / "cpu.cfs_period_us").write_text(str(self.period_us))
                (path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        except OSError as e:
            self.remove()
            raise QuotaError(f"cannot set the quota in {path}: {e.strerror}") from e
        return path

    def join(self):
        """Puts the calling process in the cgroup: a preexec_fn, so that the command it
        becomes and every thread it starts run under the quota from the first instruction."""
        self.add(os.getpid())

    def add(self, pid):
        """Moves a process with all its threads (cgroup.procs) into the cgroup."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self):
        """Moves any process still in the cgroup back to the parent, then deletes it."""
        if self.path is None:
            return
        procs = self.path / "cgroup.procs"
        if procs.exists():
            for pid in procs.read_text().split():
                try:
                    (self.controller.mount / "cgroup.procs").write_text(pid)
                except OSError:
                    pass  # exited meanwhile
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass
        self.path = None

    def __enter__(self):
        self.create()
        return self

    def __exit__(self, *_exc):
        self.remove()

    @property
    def stall_ms(self):
        """How long a process that used its quota waits, at worst, per period: the part of
        the period the quota leaves (period − quota × period) is time it cannot run."""
        return (self.period_us - self.quota_us / self.cores) / 1000
