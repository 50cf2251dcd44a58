"""CgroupSystem: which hierarchy serves each controller for us, and creating cgroups there.

Detection reads /proc/self/mountinfo and /proc/self/cgroup once and decides per controller
(see `_parse.decide`); everything after that is plain file I/O under the mount points found.
On v2, creating a cgroup enables the needed controllers in the subtree_control of every
ancestor below our own cgroup. That runs into the no-internal-process rule: a cgroup with
controllers enabled for its children may hold no processes itself, so a pod's own processes
go into a leaf (`<pod>/self`) and its child pods beside that leaf.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ._parse import (
    CONTROLLERS,
    Placement,
    Version,
    check_relpath,
    decide,
    parse_mountinfo,
    parse_proc_cgroup,
)

if TYPE_CHECKING:
    from ._cgroup import Cgroup

# The v2 controllers we write limits for; only these are enabled in subtree_control.
V2_LIMITED = ("cpu", "memory", "pids")


def read_file(directory: str, name: str) -> str:
    """Read a cgroup file; an OSError names the file and what failed."""
    path = posixpath.join(directory, name)
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise OSError(e.errno, f"read failed: {e.strerror}", path) from e


def write_file(directory: str, name: str, value: object) -> None:
    """Write one value to a cgroup file in a single write(2), as the kernel wants it."""
    path = posixpath.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise OSError(e.errno, f"write {value!r} failed: {e.strerror}", path) from e


def _v2_controllers(placement: Placement) -> frozenset[str]:
    try:
        return frozenset(read_file(placement.directory(), "cgroup.controllers").split())
    except OSError:
        return frozenset()


class CgroupSystem:
    """The cgroup hierarchies a process lives in, decided per controller.

    `placements` maps each available controller to its v1 hierarchy or the v2 one, with our
    own cgroup there as the base that every relpath is created under.
    """

    def __init__(self, placements: Mapping[str, Placement]) -> None:
        self.placements = dict(placements)

    @classmethod
    def detect(
        cls,
        proc_root: str = "/proc",
        pid: int | str = "self",
        controllers: Iterable[str] = CONTROLLERS,
    ) -> CgroupSystem:
        """Read mountinfo and the cgroup file of `pid` under `proc_root`; decide per controller."""
        with open(f"{proc_root}/{pid}/mountinfo") as f:
            mounts = parse_mountinfo(f.read())
        with open(f"{proc_root}/{pid}/cgroup") as f:
            proc = parse_proc_cgroup(f.read())
        return cls(decide(mounts, proc, _v2_controllers, controllers))

    def version(self, controller: str) -> Version | None:
        """v1, v2, or None when the controller is not available here."""
        placement = self.placements.get(controller)
        return placement.version if placement else None

    @property
    def hierarchies(self) -> list[Placement]:
        """One placement per distinct hierarchy (v1 mounts may carry several controllers)."""
        seen: dict[str, Placement] = {}
        for placement in self.placements.values():
            seen.setdefault(placement.mount_point, placement)
        return list(seen.values())

    def open(self, relpath: str) -> Cgroup:
        """The cgroup at `relpath` below our own, without creating anything (re-adoption)."""
        from ._cgroup import Cgroup

        return Cgroup(self, check_relpath(relpath))

    def create(self, relpath: str) -> Cgroup:
        """Create `relpath` below our own cgroup in every hierarchy; existing dirs are kept."""
        cgroup = self.open(relpath)
        for placement in self.hierarchies:
            if placement.version is Version.V1:
                os.makedirs(placement.directory(cgroup.relpath), exist_ok=True)
            else:
                self._create_v2(placement, cgroup.relpath)
        return cgroup

    def _create_v2(self, placement: Placement, relpath: str) -> None:
        """mkdir level by level, enabling our limited controllers in each parent first."""
        wanted = [c for c in V2_LIMITED if self.placements.get(c) == placement]
        parent = ""
        for part in relpath.split("/"):
            if wanted:
                enable_controllers(placement.directory(parent), wanted)
            parent = posixpath.join(parent, part)
            with contextlib.suppress(FileExistsError):
                os.mkdir(placement.directory(parent))

    def __repr__(self) -> str:
        parts = (f"{c}=v{p.version}:{p.directory()}" for c, p in self.placements.items())
        return f"CgroupSystem({', '.join(parts)})"


def enable_controllers(directory: str, controllers: Iterable[str]) -> None:
    """Enable in `directory`'s subtree_control those of `controllers` it offers and lacks.

    EBUSY here means the cgroup holds processes itself (the no-internal-process rule): move
    them into a leaf first. The error says so.
    """
    offered = set(read_file(directory, "cgroup.controllers").split())
    enabled = set(read_file(directory, "cgroup.subtree_control").split())
    missing = [c for c in controllers if c in offered and c not in enabled]
    if not missing:
        return
    try:
        write_file(directory, "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
        raise OSError(
            e.errno,
            "enable controllers failed: the cgroup has processes of its own "
            "(no-internal-process rule); move them into a leaf cgroup first",
            directory,
        ) from e
