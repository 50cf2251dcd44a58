"""Pure cgroup logic, no I/O: mountinfo and /proc/PID/cgroup parsing, the per-controller
decision, and the unit conversions between what pods ask for and what the kernel files take.

Kept apart from the file writes so unit tests can feed it fixture text of a hybrid host and
of a pure cgroup2 system alike.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ...mountinfo import unescape as _unescape

CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer", "devices", "hugetlb")

# cgroup2 has no freezer, cpuacct or devices controller: freezing is the core cgroup.freeze
# file, CPU usage is in the core cpu.stat, device rules are eBPF programs. They are "on v2"
# wherever a v2 hierarchy exists and no v1 hierarchy claims them.
V2_CORE = frozenset({"freezer", "cpuacct", "devices"})

CFS_PERIOD_US = 100_000
CFS_QUOTA_MIN_US = 1_000
SHARES_MIN, SHARES_MAX = 2, 262_144
WEIGHT_MIN, WEIGHT_MAX = 1, 10_000


class Version(enum.IntEnum):
    """Which cgroup interface a controller is reached through."""

    V1 = 1
    V2 = 2


@dataclass(frozen=True)
class CgroupMount:
    """A cgroup or cgroup2 line of mountinfo: where it is mounted, what it carries."""

    mount_point: str
    root: str  # the hierarchy path mounted there ("/" unless bind-mounted or namespaced)
    version: Version
    options: frozenset[str]  # super options; for v1 these name the controllers


@dataclass(frozen=True)
class ProcCgroups:
    """A process's cgroup paths: one per v1 controller, and its single v2 path if any."""

    v1: dict[str, str]
    v2: str | None


@dataclass(frozen=True)
class Placement:
    """Where one controller lives for us: interface version, hierarchy mount, and our path."""

    version: Version
    mount_point: str
    base: str  # our own cgroup in that hierarchy, absolute within the hierarchy

    def directory(self, relpath: str = "") -> str:
        """The filesystem directory of `relpath` under our own cgroup in this hierarchy."""
        return posixpath.normpath(posixpath.join(self.mount_point, self.base.lstrip("/"), relpath))


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts of a /proc/PID/mountinfo text, in order."""
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        fields, tail_fields = head.split(), tail.split()
        if len(fields) < 5 or len(tail_fields) < 3 or tail_fields[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            CgroupMount(
                mount_point=_unescape(fields[4]),
                root=_unescape(fields[3]),
                version=Version.V2 if tail_fields[0] == "cgroup2" else Version.V1,
                options=frozenset(tail_fields[2].split(",")),
            )
        )
    return mounts


def parse_proc_cgroup(text: str) -> ProcCgroups:
    """Parse /proc/PID/cgroup: `id:controllers:path` lines, `0::path` being cgroup2."""
    v1: dict[str, str] = {}
    v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, path = parts
        if hierarchy_id == "0" and controllers == "":
            v2 = path
            continue
        for controller in controllers.split(","):
            if controller:
                v1[controller] = path
    return ProcCgroups(v1=v1, v2=v2)


def _relative_to_mount(path: str, mount_root: str) -> str:
    """A /proc/PID/cgroup path as seen below a mount whose root may not be the hierarchy's."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root) :] or "/"
    return path


def decide(
    mounts: Iterable[CgroupMount],
    proc: ProcCgroups,
    v2_controllers: Callable[[Placement], frozenset[str]],
    wanted: Iterable[str] = CONTROLLERS,
) -> dict[str, Placement]:
    """Decide per controller whether it is reached through v1 or v2, and where.

    A controller is v1 where a mounted v1 hierarchy carries it and the process has a path in
    it; otherwise v2 where our v2 cgroup offers it (`v2_controllers` reads cgroup.controllers
    of a placement) or it is a v2 core feature. Controllers found nowhere are left out.
    Never decided by "is cgroup2 mounted": this host has both.
    """
    mounts = list(mounts)
    v2_placement = None
    v2_mount = next((m for m in mounts if m.version is Version.V2), None)
    if v2_mount is not None and proc.v2 is not None:
        base = _relative_to_mount(proc.v2, v2_mount.root)
        v2_placement = Placement(Version.V2, v2_mount.mount_point, base)
    offered = v2_controllers(v2_placement) if v2_placement else frozenset()
    placements: dict[str, Placement] = {}
    for controller in wanted:
        v1_mount = next(
            (m for m in mounts if m.version is Version.V1 and controller in m.options), None
        )
        if v1_mount is not None and controller in proc.v1:
            base = _relative_to_mount(proc.v1[controller], v1_mount.root)
            placements[controller] = Placement(Version.V1, v1_mount.mount_point, base)
        elif v2_placement is not None and (controller in offered or controller in V2_CORE):
            placements[controller] = v2_placement
    return placements


def check_relpath(relpath: str) -> str:
    """A cgroup path below our own: relative, normalized, no `..`; ValueError otherwise."""
    norm = posixpath.normpath(relpath) if relpath else ""
    if not norm or norm == "." or norm.startswith("/") or norm.split("/")[0] == "..":
        raise ValueError(f"cgroup path must be relative and below our own: {relpath!r}")
    return norm


def cpu_quota(millicores: int, period_us: int = CFS_PERIOD_US) -> tuple[int, int]:
    """CFS (quota, period) in microseconds for a CPU limit in millicores (1000 = one CPU)."""
    if millicores <= 0:
        raise ValueError(f"cpu limit must be positive, got {millicores} millicores")
    return max(CFS_QUOTA_MIN_US, millicores * period_us // 1000), period_us


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000] (the OCI conversion)."""
    shares = min(max(shares, SHARES_MIN), SHARES_MAX)
    return 1 + (shares - SHARES_MIN) * (WEIGHT_MAX - 1) // (SHARES_MAX - SHARES_MIN)


def weight_to_shares(weight: int) -> int:
    """cgroup v2 cpu.weight back to v1 cpu.shares (inverse of shares_to_weight, rounded)."""
    weight = min(max(weight, WEIGHT_MIN), WEIGHT_MAX)
    return SHARES_MIN + (weight - 1) * (SHARES_MAX - SHARES_MIN) // (WEIGHT_MAX - 1)


def parse_keyed(text: str) -> dict[str, int]:
    """Flat keyed files (`key value` per line): memory.events, cpu.stat, memory.oom_control."""
    result = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            result[key] = int(value)
    return result


def parse_limit(text: str) -> int | None:
    """A single-value limit file: a number, or `max` (v2) / near-2**63 (v1) meaning none."""
    value = text.split()[0] if text.split() else "max"
    if value == "max":
        return None
    number = int(value)
    return None if number >= 2**62 else number


def parse_cpu_max(text: str) -> tuple[int | None, int]:
    """cpu.max (`max 100000` or `50000 100000`) as (quota or None, period)."""
    quota, period = text.split()
    return (None if quota == "max" else int(quota)), int(period)
