"""cgroups on this host's real kernel: limits that bite, fork bombs contained, nothing left.

Every test cgroup is named `kurma-test-<random>` below our own cgroup and is killed and
removed by the fixture's finalizer, pass or fail. Workloads run in forked children that move
themselves into the cgroup before they start. The fork bomb runs under a subreaper child of
ours that reaps it, so no zombie is left to the host's PID 1.
"""

from __future__ import annotations

import os
import select
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import pytest

from kurma.runtime import linux
from kurma.runtime.cgroups import CONTROLLERS, Cgroup, CgroupSystem, Version

from ..waiting import wait_for

pytestmark = pytest.mark.root

MiB = 1 << 20
# Without hugetlb the system has no v2 directory here, so kill_all must use the v1 freezer.
KILL_PATHS = {
    "cgroup.kill": CONTROLLERS,
    "freezer": tuple(c for c in CONTROLLERS if c != "hugetlb"),
}


@pytest.fixture(params=sorted(KILL_PATHS))
def system(request: pytest.FixtureRequest) -> CgroupSystem:
    """The host's cgroups; parametrized over the way kill_all has to work."""
    return CgroupSystem.detect(controllers=KILL_PATHS[request.param])


@pytest.fixture
def cgroup(system: CgroupSystem) -> Iterator[Cgroup]:
    """A fresh test cgroup, killed and removed afterwards whatever happens."""
    cg = system.create(f"kurma-test-{uuid.uuid4().hex[:12]}")
    try:
        yield cg
    finally:
        try:
            cg.kill_all()
        finally:
            cg.remove()
        assert not cg.exists()


@dataclass
class Child:
    """A forked child; `wait()` reaps it once, the context manager kills it if still alive."""

    pid: int
    status: int | None = field(default=None)

    def wait(self, timeout: float = 20.0) -> int:
        """Reap the child and return its exit code (-N for signal N)."""

        def reaped() -> bool:
            if self.status is None:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.status = os.waitstatus_to_exitcode(status)
            return self.status is not None

        wait_for(reaped, f"child {self.pid} to end", timeout, every=0.01)
        assert self.status is not None
        return self.status


@contextmanager
def child_in(cgroup: Cgroup | None, work: Callable[[], object]) -> Iterator[Child]:
    """Fork a child that joins `cgroup`, says ready, and runs `work` (exit 0, or 1 on error)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            if cgroup is not None:
                cgroup.add_process(os.getpid())
            os.write(w, b"r")
            os.close(w)
            work()
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    child = Child(pid)
    try:
        assert select.select([r], [], [], 10)[0] and os.read(r, 1) == b"r", "child not ready"
        yield child
    finally:
        os.close(r)
        if child.status is None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            child.wait()


def allocate(total: int) -> None:
    """Touch `total` bytes of fresh memory, 4 MiB at a time."""
    chunks = [b"\x01" * (4 * MiB) for _ in range(total // (4 * MiB))]
    assert chunks


def test_this_host_is_decided_per_controller(system: CgroupSystem) -> None:
    """memory/pids/cpu/cpuacct/freezer/devices are v1 here; hugetlb (if asked) is v2."""
    for controller in ("memory", "pids", "cpu", "cpuacct", "freezer", "devices"):
        assert system.version(controller) is Version.V1, controller
    assert system.version("hugetlb") in (Version.V2, None)
    with open("/proc/self/cgroup") as f:
        own_memory = next(line.split(":")[2] for line in f if ":memory:" in line).strip()
    assert system.placements["memory"].base == own_memory


def test_add_process_joins_every_hierarchy(cgroup: Cgroup) -> None:
    """The child shows up in pids() and its /proc/PID/cgroup names our path everywhere."""
    with child_in(cgroup, lambda: time.sleep(30)) as child:
        assert cgroup.pids() == {child.pid}
        with open(f"/proc/{child.pid}/cgroup") as f:
            lines = f.read().splitlines()
        for placement, _ in cgroup.directories():
            expected = os.path.join(placement.base, cgroup.relpath)
            assert any(line.endswith(":" + expected) for line in lines), (expected, lines)


def test_limits_land_in_the_v1_files(cgroup: Cgroup) -> None:
    """Memory, CPU quota, shares and pids map to their v1 files with the right units."""
    cgroup.set_limits(memory_bytes=64 * MiB, cpu_millicores=500, cpu_shares=512, pids_max=10)

    def read(controller: str, name: str) -> str:
        directory = cgroup.directory(controller)
        assert directory
        with open(os.path.join(directory, name)) as f:
            return f.read().strip()

    assert read("memory", "memory.limit_in_bytes") == str(64 * MiB)
    assert read("memory", "memory.memsw.limit_in_bytes") == str(64 * MiB)
    assert read("cpu", "cpu.cfs_quota_us") == "50000"
    assert read("cpu", "cpu.cfs_period_us") == "100000"
    assert read("cpu", "cpu.shares") == "512"
    assert read("pids", "pids.max") == "10"
    cgroup.set_limits(memory_bytes=128 * MiB)  # raising: memsw must move first
    assert read("memory", "memory.limit_in_bytes") == str(128 * MiB)


def test_memory_limit_oom_kills_and_is_counted(cgroup: Cgroup) -> None:
    """A child allocating past the memory limit is OOM-killed; oom_kills() sees it."""
    cgroup.set_limits(memory_bytes=64 * MiB)
    assert cgroup.oom_kills() == 0
    with child_in(cgroup, lambda: allocate(256 * MiB)) as child:
        assert child.wait() == -signal.SIGKILL
    assert cgroup.oom_kills() >= 1


def bomb() -> None:
    """Fork forever; every process keeps forking."""
    while True:
        with suppress(OSError):
            os.fork()


def reaper_of(cgroup: Cgroup, work: Callable[[], None]) -> Callable[[], None]:
    """A subreaper that runs `work` in a child inside `cgroup` and reaps all it leaves."""

    def reap() -> None:
        linux.set_child_subreaper()
        if os.fork() == 0:  # pragma: no cover - the worker
            try:
                cgroup.add_process(os.getpid())
                work()
            finally:
                os._exit(1)
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return

    return reap


def test_pids_max_contains_a_fork_bomb_and_kill_all_ends_it(cgroup: Cgroup) -> None:
    """A fork bomb stops at pids.max; kill_all leaves no process, and none escaped."""
    cgroup.set_limits(pids_max=16, memory_bytes=512 * MiB)
    with child_in(None, reaper_of(cgroup, bomb)) as reaper:
        wait_for(lambda: cgroup.stats().pids_current == 16, "condition")
        time.sleep(0.3)
        assert len(cgroup.pids()) <= 16
        cgroup.kill_all()
        assert cgroup.pids() == set()
        assert reaper.wait() == 0  # it reaped every bomb process, so all of them are gone


def test_kill_all_stops_a_fork_bomb_while_it_grows(cgroup: Cgroup) -> None:
    """Killed mid-growth, before pids.max stops it, the bomb still leaves no survivor."""
    cgroup.set_limits(pids_max=256, memory_bytes=1024 * MiB)
    with child_in(None, reaper_of(cgroup, bomb)) as reaper:
        wait_for(lambda: (cgroup.stats().pids_current or 0) >= 8, "condition")
        cgroup.kill_all()
        assert cgroup.pids() == set()
        assert reaper.wait() == 0


def test_a_nested_cgroup_is_bounded_by_its_parent(cgroup: Cgroup) -> None:
    """The parent's memory and pids limits hold for a child cgroup that has none of its own."""
    cgroup.set_limits(memory_bytes=64 * MiB, pids_max=4)
    nested = cgroup.child("pod-b")
    with child_in(nested, lambda: allocate(256 * MiB)) as child:
        assert child.wait() == -signal.SIGKILL
    assert nested.oom_kills() >= 1 and cgroup.oom_kills() >= 1

    def fork_sleepers() -> None:
        forked = 0
        with suppress(OSError):
            for _ in range(10):
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                forked += 1
        os._exit(forked)

    with child_in(nested, fork_sleepers) as child:
        assert child.wait() == 3  # itself plus three make the parent's four
    cgroup.kill_all()


def test_stats_read_sane_numbers(cgroup: Cgroup) -> None:
    """Memory current/peak, CPU time and process count reflect a busy, allocating child."""

    def work() -> None:
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        data = b"\x01" * (32 * MiB)
        time.sleep(30)
        assert data

    with child_in(cgroup, work):
        wait_for(lambda: (cgroup.stats().memory_peak or 0) >= 32 * MiB, "condition")
        stats = cgroup.stats()
    assert stats.pids_current == 1
    assert stats.memory_current is not None and 32 * MiB <= stats.memory_current < 512 * MiB
    assert stats.cpu_usage_ns is not None and stats.cpu_usage_ns >= 250_000_000


def test_remove_leaves_nothing_behind(system: CgroupSystem) -> None:
    """Killing and removing a tree with live processes in a nested cgroup empties every
    hierarchy of it, retrying while the killed processes exit."""
    cg = system.create(f"kurma-test-{uuid.uuid4().hex[:12]}")
    try:
        nested = cg.child("a").child("b")
        with child_in(nested, lambda: time.sleep(30)):
            cg.kill_all()
            cg.remove()
        for _, directory in cg.directories():
            assert not os.path.exists(directory)
    finally:
        if cg.exists():
            cg.kill_all()
            cg.remove()
