"""Cgroup: one cgroup path across every hierarchy, with limits, stats and lifecycle.

Each operation asks the system which hierarchy serves the controller it touches and writes
that interface's files: memory.limit_in_bytes on v1, memory.max on v2, and so on. A process
is added to the cgroup in every hierarchy, so its children inherit all of them.
"""

from __future__ import annotations

import errno
import os
import posixpath
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _devbpf
from ._kill import kill_all
from ._parse import (
    Placement,
    Version,
    cpu_quota,
    parse_keyed,
    shares_to_weight,
)
from ._system import read_file, write_file

if TYPE_CHECKING:
    from ._system import CgroupSystem


@dataclass(frozen=True)
class CgroupStats:
    """Usage of a cgroup and its descendants; None where the controller is not available."""

    memory_current: int | None
    memory_peak: int | None
    cpu_usage_ns: int | None
    pids_current: int | None


class Cgroup:
    """A cgroup at `relpath` below our own cgroup, in every hierarchy the system uses."""

    def __init__(self, system: CgroupSystem, relpath: str) -> None:
        self.system = system
        self.relpath = relpath

    def __repr__(self) -> str:
        return f"Cgroup({self.relpath!r})"

    def directory(self, controller: str) -> str | None:
        """Our directory in the hierarchy serving `controller`, or None if it is unavailable."""
        placement = self.system.placements.get(controller)
        return placement.directory(self.relpath) if placement else None

    def directories(self) -> list[tuple[Placement, str]]:
        """One (placement, directory) per hierarchy."""
        return [(p, p.directory(self.relpath)) for p in self.system.hierarchies]

    def _require(self, controller: str, what: str) -> tuple[Version, str]:
        placement = self.system.placements.get(controller)
        if placement is None:
            raise OSError(errno.ENODEV, f"{what} failed: no {controller} controller", self.relpath)
        return placement.version, placement.directory(self.relpath)

    def child(self, name: str) -> Cgroup:
        """Create a child cgroup, nested so our limits bound it (a child pod's cgroup)."""
        return self.system.create(posixpath.join(self.relpath, name))

    def exists(self) -> bool:
        """Whether the cgroup's directory exists in any hierarchy."""
        return any(os.path.isdir(d) for _, d in self.directories())

    def add_process(self, pid: int) -> None:
        """Move a process (all its threads) into this cgroup in every hierarchy."""
        for _, directory in self.directories():
            write_file(directory, "cgroup.procs", pid)

    def set_limits(
        self,
        memory_bytes: int | None = None,
        cpu_millicores: int | None = None,
        cpu_shares: int | None = None,
        pids_max: int | None = None,
    ) -> None:
        """Write the limits given; None leaves a limit as it is.

        Memory limits swap too (v1 memsw = limit, v2 swap.max = 0), so a limit holds on a
        host with swap. A missing controller raises OSError(ENODEV).
        """
        if memory_bytes is not None:
            self._set_memory(memory_bytes)
        if cpu_millicores is not None:
            version, directory = self._require("cpu", "set cpu limit")
            quota, period = cpu_quota(cpu_millicores)
            if version is Version.V1:
                write_file(directory, "cpu.cfs_period_us", period)
                write_file(directory, "cpu.cfs_quota_us", quota)
            else:
                write_file(directory, "cpu.max", f"{quota} {period}")
        if cpu_shares is not None:
            version, directory = self._require("cpu", "set cpu shares")
            if version is Version.V1:
                write_file(directory, "cpu.shares", cpu_shares)
            else:
                write_file(directory, "cpu.weight", shares_to_weight(cpu_shares))
        if pids_max is not None:
            _, directory = self._require("pids", "set pids limit")
            write_file(directory, "pids.max", pids_max)

    def restrict_devices(self, allow: Iterable[str]) -> bool:
        """Deny every device but the `allow` rules (`c 1:3 rwm`, `c 136:* rwm` ...): opening
        or making any other node fails with EPERM for the processes in this cgroup. Replaces
        an earlier restriction. Returns False where the host has no way (no devices
        controller, no cgroup2, a kernel without bpf(2)).

        v1: `a` to devices.deny, then one write per rule; the cgroup must have no children
        (v1 refuses `a` then, EINVAL) and each rule must be allowed to its parent (EPERM).
        cgroup2: a BPF_CGROUP_DEVICE program attached to the cgroup (`_devbpf`), which no
        descendant can add to: meant for leaves.
        """
        placement = self.system.placements.get("devices")
        if placement is None:
            return False
        directory = placement.directory(self.relpath)
        if placement.version is Version.V2:
            try:
                _devbpf.attach(directory, tuple(allow))
            except OSError as e:
                if e.errno != errno.ENOSYS:  # a kernel without bpf(2): nodev alone
                    raise
                return False
            return True
        write_file(directory, "devices.deny", "a")
        for rule in allow:
            write_file(directory, "devices.allow", rule)
        return True

    def allow_all_devices(self) -> None:
        """Lift `restrict_devices` (v1: no children then, and a parent allowing all)."""
        placement = self.system.placements.get("devices")
        if placement is None:
            return
        directory = placement.directory(self.relpath)
        if placement.version is Version.V2:
            _devbpf.detach(directory)
        else:
            write_file(directory, "devices.allow", "a")

    def _set_memory(self, limit: int) -> None:
        version, directory = self._require("memory", "set memory limit")
        if version is Version.V2:
            write_file(directory, "memory.max", limit)
            if os.path.exists(posixpath.join(directory, "memory.swap.max")):
                write_file(directory, "memory.swap.max", 0)
            return
        memsw = os.path.exists(posixpath.join(directory, "memory.memsw.limit_in_bytes"))
        # v1 insists memory.limit <= memsw.limit at every moment: raise memsw first when the
        # new limit is above it, lower the plain limit first otherwise.
        try:
            write_file(directory, "memory.limit_in_bytes", limit)
        except OSError as e:
            if not (memsw and e.errno == errno.EINVAL):
                raise
            write_file(directory, "memory.memsw.limit_in_bytes", limit)
            write_file(directory, "memory.limit_in_bytes", limit)
        if memsw:
            write_file(directory, "memory.memsw.limit_in_bytes", limit)

    def walk(self) -> Iterator[str]:
        """Every directory of this cgroup and its descendants, in every hierarchy, top-down."""
        for _, directory in self.directories():
            for dirpath, _, _ in os.walk(directory):
                yield dirpath

    def pids(self) -> set[int]:
        """Every process in this cgroup or below, across all hierarchies."""
        found: set[int] = set()
        for directory in self.walk():
            try:
                found.update(int(p) for p in read_file(directory, "cgroup.procs").split())
            except FileNotFoundError:
                continue  # a descendant removed while we walked
        return found

    def stats(self) -> CgroupStats:
        """Memory current/peak, CPU time and process count of the whole subtree."""
        return CgroupStats(
            memory_current=self._read_int("memory", "memory.usage_in_bytes", "memory.current"),
            memory_peak=self._read_int("memory", "memory.max_usage_in_bytes", "memory.peak"),
            cpu_usage_ns=self._cpu_usage_ns(),
            pids_current=self._read_int("pids", "pids.current", "pids.current"),
        )

    def _read_int(self, controller: str, v1_file: str, v2_file: str) -> int | None:
        placement = self.system.placements.get(controller)
        if placement is None:
            return None
        name = v1_file if placement.version is Version.V1 else v2_file
        try:
            return int(read_file(placement.directory(self.relpath), name))
        except FileNotFoundError:
            return None  # e.g. memory.peak before Linux 5.19

    def _cpu_usage_ns(self) -> int | None:
        placement = self.system.placements.get("cpuacct")
        if placement is None:
            return None
        directory = placement.directory(self.relpath)
        if placement.version is Version.V1:
            return int(read_file(directory, "cpuacct.usage"))
        return parse_keyed(read_file(directory, "cpu.stat"))["usage_usec"] * 1000

    def oom_kills(self) -> int:
        """How many processes the OOM killer killed in this cgroup's subtree.

        v2's memory.events counts the subtree already; v1 counts each memcg alone, so we
        add up memory.oom_control of every descendant.
        """
        version, directory = self._require("memory", "read oom kills")
        if version is Version.V2:
            return parse_keyed(read_file(directory, "memory.events")).get("oom_kill", 0)
        total = 0
        for dirpath, _, _ in os.walk(directory):
            total += parse_keyed(read_file(dirpath, "memory.oom_control")).get("oom_kill", 0)
        return total

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL every process in the subtree and wait until it is empty (see _kill)."""
        kill_all(self, timeout)

    def remove(self, timeout: float = 5.0) -> None:
        """rmdir the subtree bottom-up in every hierarchy, retrying while processes exit.

        Does not kill: call kill_all() first. A cgroup already gone is not an error.
        """
        deadline = time.monotonic() + timeout
        for _, directory in self.directories():
            for dirpath, _, _ in os.walk(directory, topdown=False):
                _rmdir_retrying(dirpath, deadline)


def _rmdir_retrying(path: str, deadline: float) -> None:
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise OSError(e.errno, f"rmdir failed: {e.strerror}", path) from e
            time.sleep(0.01)
