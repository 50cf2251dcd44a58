"""Killing every process of a cgroup subtree, with no escapee, not even a fork bomb's.

Signalling the pids we read races with fork: a child born after the read survives. So:
- where a v2 hierarchy offers cgroup.kill (Linux 5.14+), the kernel kills the whole subtree
  atomically; this works on a hybrid host too, as long as the process was added to our v2
  directory as well (Cgroup.add_process adds it to every hierarchy);
- otherwise freeze the subtree (v1 freezer.state or v2 cgroup.freeze), SIGKILL every pid
  while nothing can fork, and thaw so the frozen tasks get to die (v1 tasks die only thawed);
- without any freezer, repeat kill rounds until the subtree is empty.
Each way loops until cgroup.procs is empty everywhere or the deadline passes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import signal
import time
from typing import TYPE_CHECKING

from ._parse import Version, parse_keyed
from ._system import read_file, write_file

if TYPE_CHECKING:
    from ._cgroup import Cgroup

_POLL = 0.01
_FREEZE_WAIT = 1.0


def kill_all(cgroup: Cgroup, timeout: float) -> None:
    """SIGKILL the subtree until it is empty; OSError(EBUSY) if it is not by `timeout`."""
    deadline = time.monotonic() + timeout
    kill_dir = _kill_file_directory(cgroup)
    while True:
        remaining = cgroup.pids()
        if not remaining:
            return
        if time.monotonic() >= deadline:
            raise OSError(
                errno.EBUSY,
                f"kill_all failed: {len(remaining)} processes remain ({sorted(remaining)[:10]})",
                cgroup.relpath,
            )
        if kill_dir is not None:
            write_file(kill_dir, "cgroup.kill", 1)
        else:
            _freeze_kill_thaw(cgroup)
        _wait_empty(cgroup, min(deadline, time.monotonic() + 0.5))


def _kill_file_directory(cgroup: Cgroup) -> str | None:
    for placement, directory in cgroup.directories():
        if placement.version is Version.V2 and os.path.exists(
            posixpath.join(directory, "cgroup.kill")
        ):
            return directory
    return None


def _wait_empty(cgroup: Cgroup, until: float) -> None:
    while cgroup.pids() and time.monotonic() < until:
        time.sleep(_POLL)


def _freeze_kill_thaw(cgroup: Cgroup) -> None:
    placement = cgroup.system.placements.get("freezer")
    directory = cgroup.directory("freezer")
    if placement is not None and directory is not None:
        set_frozen(placement.version, directory, True)
    try:
        for pid in cgroup.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    finally:
        if placement is not None and directory is not None:
            set_frozen(placement.version, directory, False)


def set_frozen(version: Version, directory: str, frozen: bool) -> bool:
    """Freeze or thaw a subtree; True once the kernel reports it done (waits up to 1 s)."""
    if version is Version.V1:
        write_file(directory, "freezer.state", "FROZEN" if frozen else "THAWED")
    else:
        write_file(directory, "cgroup.freeze", int(frozen))
    until = time.monotonic() + _FREEZE_WAIT
    while True:
        if is_frozen(version, directory) == frozen:
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(_POLL)


def is_frozen(version: Version, directory: str) -> bool:
    """Whether the subtree is completely frozen (not merely freezing)."""
    if version is Version.V1:
        return read_file(directory, "freezer.state").strip() == "FROZEN"
    return parse_keyed(read_file(directory, "cgroup.events")).get("frozen") == 1
