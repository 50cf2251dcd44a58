"""A pod's resources are bounded and its processes end with it: memory limits OOM-kill,
a pids limit stops a fork bomb, cpu shares and quota reach the cgroup, and stopping or
destroying a pod leaves no process of it alive (background children, daemons, bombs)."""

from __future__ import annotations

import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from kurma.runtime._podrecord import PodState, process_start_time
from kurma.runtime._runtime import RuntimeConfig
from kurma.runtime.cgroups import Cgroup, Version, shares_to_weight

from ..waiting import wait_for
from .runtime_support import PodEnv, make_env
from .runtime_support import sh_app as _sh
from .runtime_support import start as _start

pytestmark = pytest.mark.root


def _marker() -> str:
    """A string only this test's processes carry on their command line."""
    return f"kurma-marker-{uuidlib.uuid4().hex}"


def _pgrep(marker: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def _alive(processes: dict[int, int | None]) -> list[int]:
    """The pids (with their start times) that still name the same, running process. A zombie
    has ended: podinit's may wait a moment for the launcher, its parent, to reap it."""
    return [
        p
        for p, start in processes.items()
        if start is not None and process_start_time(p) == start and not _zombie(p)
    ]


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return True
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] == b"Z"


def _snapshot(pids: set[int] | list[int]) -> dict[int, int | None]:
    return {p: process_start_time(p) for p in pids}


def _cgroup(pods: PodEnv, uuid: str, app: str | None = None) -> Cgroup:
    relpath = pods.runtime.get(uuid).cgroup
    assert relpath is not None
    return pods.runtime.cgroups.open(relpath if app is None else f"{relpath}/app-{app}")


def _read(cgroup: Cgroup, controller: str, v1: str, v2: str) -> str:
    placement = cgroup.system.placements[controller]
    name = v1 if placement.version is Version.V1 else v2
    directory = cgroup.directory(controller)
    assert directory is not None
    return Path(directory, name).read_text().strip()


MEMORY_32M = [{"name": "resource/memory", "value": {"limit": "32Mi"}}]
# `tail` keeps the last ten lines; /dev/zero has no newline, so it keeps everything. The
# pipeline runs in a subshell that marks itself (and so head and tail) the OOM killer's first
# choice (raising one's own score needs no privilege), so the app's shell around it survives
# to report, however the kernel weighs the processes. Not the shell itself: once tail is
# killed, head's next pipe write can invoke the OOM killer again before tail's memory is
# freed, and a shell that had raised its own score was now and then that second victim
# (the app then ended 137 with nothing in its log).
HOG = "(echo 1000 > /proc/self/oom_score_adj; head -c 200m /dev/zero | tail)"


# --- memory -------------------------------------------------------------------------------


def test_app_memory_limit_kills_an_allocation_above_it(pods: PodEnv) -> None:
    app, log = pods.sh(HOG, isolators=MEMORY_32M, timeout=60)
    assert app.exit_code == 137, log
    assert "Killed" in log  # the shell saw its pipeline die of SIGKILL


def test_oom_kill_is_counted_in_the_pods_cgroup(pods: PodEnv) -> None:
    uuid = _start(
        pods,
        _sh("hog", f"{HOG}; echo status=$?; echo ready; sleep 1000", isolators=MEMORY_32M),
        ready="ready",
    )
    record = pods.runtime.get(uuid)
    log = pods.log(record, "hog")
    assert "status=137" in log, log
    limit = int(_read(_cgroup(pods, uuid, "hog"), "memory", "memory.limit_in_bytes", "memory.max"))
    assert limit == 32 << 20
    assert _cgroup(pods, uuid).oom_kills() > 0
    assert pods.runtime.stop_pod(uuid, grace=1.0).state is PodState.EXITED


def test_pod_memory_limit_applies_to_its_apps(pods: PodEnv) -> None:
    record = pods.run(_sh("hog", HOG), isolators=MEMORY_32M, timeout=60)
    assert record.apps[0].exit_code == 137, pods.log(record, "hog")


def test_allocation_below_the_limit_is_fine(pods: PodEnv) -> None:
    app, log = pods.sh("head -c 4m /dev/zero | tail | wc -c", isolators=MEMORY_32M)
    assert app.exit_code == 0, log
    assert log.strip() == str(4 << 20)


# --- pids ------------------------------------------------------------------------------------


@pytest.fixture
def pids_limited(busybox_aci: Path) -> Iterator[PodEnv]:
    yield from make_env(busybox_aci, RuntimeConfig(stop_grace=2.0, pids_max=50))


def test_pids_limit_stops_a_fork_bomb_and_nothing_escapes(pids_limited: PodEnv) -> None:
    pods = pids_limited
    marker = _marker()
    # Every bomb process forks two more, then blocks in `read` (a builtin: no fork) for ever;
    # a shell whose fork fails exits. The bomb fills the pod up to the limit and stays there.
    bomb = f": {marker}; mkfifo /tmp/block; bomb() {{ bomb & bomb & read x <> /tmp/block; }}; bomb"
    uuid = _start(
        pods,
        _sh("keeper", "echo ready; exec sleep 1000"),  # keeps the pod up whatever the bomb does
        _sh("bomb", bomb),
        ready="ready",
    )
    record = pods.runtime.get(uuid)
    cgroup = _cgroup(pods, uuid)
    assert _read(cgroup, "pids", "pids.max", "pids.max") == "50"
    wait_for(lambda: "can't fork" in pods.log(record, "bomb"), "fork failures")
    seen: dict[int, int | None] = {}
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # at the limit, and it holds
        current = cgroup.stats().pids_current
        assert current is not None and current <= 50
        seen.update(_snapshot(_pgrep(marker)))
        time.sleep(0.05)
    assert len(seen) >= 10, f"only {len(seen)} bomb processes"
    assert "Resource temporarily unavailable" in pods.log(record, "bomb")
    began = time.monotonic()
    stopped = pods.runtime.stop_pod(uuid, grace=1.0)
    assert time.monotonic() - began < 5.0
    assert stopped.state is PodState.EXITED
    assert stopped.app("keeper").exit_code == 143
    pods.runtime.destroy_pod(uuid)
    assert _pgrep(marker) == []
    assert _alive(seen) == []


# --- cpu ------------------------------------------------------------------------------------


def _cpu_values(cgroup: Cgroup) -> tuple[str, str]:
    """(shares-or-weight, quota) as the hierarchy in use names them."""
    shares = _read(cgroup, "cpu", "cpu.shares", "cpu.weight")
    if cgroup.system.placements["cpu"].version is Version.V1:
        quota = (
            _read(cgroup, "cpu", "cpu.cfs_quota_us", "")
            + " "
            + _read(cgroup, "cpu", "cpu.cfs_period_us", "")
        )
    else:
        quota = _read(cgroup, "cpu", "", "cpu.max")
    return shares, quota


def _expected_shares(shares: int, cgroup: Cgroup) -> str:
    if cgroup.system.placements["cpu"].version is Version.V1:
        return str(shares)
    return str(shares_to_weight(shares))


CPU = [
    {"name": "resource/cpu", "value": {"limit": "500m"}},
    {"name": "os/linux/cpu-shares", "value": 512},
]


def test_pod_cpu_limit_and_shares_are_in_its_cgroup(pods: PodEnv) -> None:
    marker = _marker()
    uuid = _start(
        pods, _sh("busy", f"echo ready; sleep 1000; : {marker}"), ready="ready", isolators=CPU
    )
    cgroup = _cgroup(pods, uuid)
    assert _cpu_values(cgroup) == (_expected_shares(512, cgroup), "50000 100000")
    # the app runs in it
    assert set(_pgrep(marker)) <= cgroup.pids()
    assert _pgrep(marker)
    pods.runtime.stop_pod(uuid, grace=1.0)


def test_app_cpu_limit_and_shares_are_in_the_apps_cgroup(pods: PodEnv) -> None:
    marker = _marker()
    uuid = _start(
        pods,
        _sh("limited", f"echo ready; sleep 1000; : {marker}-a", isolators=CPU),
        _sh("free", f"sleep 1000; : {marker}-b"),
        ready="ready",
    )
    app_cgroup = _cgroup(pods, uuid, "limited")
    assert _cpu_values(app_cgroup) == (_expected_shares(512, app_cgroup), "50000 100000")
    limited = set(_pgrep(f"{marker}-a"))
    assert limited and limited <= app_cgroup.pids()
    wait_for(lambda: bool(_pgrep(f"{marker}-b")), "the free app")
    assert not set(_pgrep(f"{marker}-b")) & app_cgroup.pids()
    pod_cgroup = _cgroup(pods, uuid)
    assert _cpu_values(pod_cgroup)[1].split()[0] in ("-1", "max")  # the pod has no quota
    pods.runtime.stop_pod(uuid, grace=1.0)


# --- every process ends with the pod -----------------------------------------------------------


def _spawner(marker: str) -> str:
    """Three background children, a daemonised grandchild; each names the marker."""
    return (
        f"for i in 1 2 3; do sh -c 'sleep 1000; : {marker}' & done; "
        f"setsid sh -c '(sleep 1000; : {marker}) & : {marker}' </dev/null >/dev/null 2>&1; "
        f"echo ready; : {marker}; wait"
    )


def test_stop_and_destroy_kill_background_children_and_daemons(pods: PodEnv) -> None:
    marker = _marker()
    uuid = _start(pods, _sh("parent", _spawner(marker)), ready="ready")
    cgroup = _cgroup(pods, uuid)
    wait_for(lambda: len(_pgrep(marker)) >= 5, "every child")
    in_pod = _snapshot(cgroup.pids())
    assert set(_pgrep(marker)) <= set(in_pod)
    record = pods.runtime.stop_pod(uuid, grace=1.0)
    assert record.state is PodState.EXITED
    assert _pgrep(marker) == []  # stopped is stopped: nothing waits for the destroy
    assert _alive(in_pod) == []
    pods.runtime.destroy_pod(uuid, grace=1.0)
    assert _pgrep(marker) == []


def test_children_left_by_an_app_that_exits_end_with_the_pod(pods: PodEnv) -> None:
    marker = _marker()
    # Two children that ignore SIGTERM; the app exits once both have set their trap.
    script = (
        "for i in 1 2; do "
        f"sh -c \"trap '' TERM; touch /tmp/child-$i; sleep 1000; : {marker}\" & done; "
        "until [ -e /tmp/child-1 ] && [ -e /tmp/child-2 ]; do sleep 0.01; done; echo bye"
    )
    uuid = _start(pods, _sh("leaver", script), ready="bye")
    wait_for(lambda: len(_pgrep(marker)) >= 2, "the children")
    in_pod = _snapshot(set(_pgrep(marker)) | _cgroup(pods, uuid).pids())
    record = pods.runtime.wait(uuid, timeout=15)
    assert record.state is PodState.EXITED
    assert record.apps[0].exit_code == 0
    assert _pgrep(marker) == []
    assert _alive(in_pod) == []
