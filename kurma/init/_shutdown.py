"""The end of a machine's life, after kurmad has stopped the services: kill what is left,
sync, unmount everything, so the reboot(2) that follows loses no data.

Kill: SIGTERM to every process but PID 1 (and kernel threads, which ignore it), a short wait
while the reaper collects them, then SIGKILL to whatever is still there. Unmount: in reverse
mountinfo order (children before their parents); a busy mount is detached lazily, and one
that cannot be unmounted at all (/ itself, or EINVAL/EPERM) is remounted read-only instead.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..runtime.linux import MNT_DETACH, MS_RDONLY, MS_REMOUNT, mount, umount2
from ._mounts import read_mountinfo
from ._procstat import stat_fields

log = logging.getLogger(__name__)

_PF_KTHREAD = 0x00200000


def _needs_no_signal(pid: int) -> bool:
    """Kernel threads ignore signals; zombies are dead already (the reaper collects them)."""
    fields = stat_fields(pid)
    if fields is None:
        return True  # gone already
    return fields[0] in (b"Z", b"X") or bool(int(fields[6]) & _PF_KTHREAD)  # 9: flags


def other_processes() -> list[int]:
    """Every live user-space process of this PID namespace except PID 1 and the caller."""
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, me) and not _needs_no_signal(int(entry)):
            pids.append(int(entry))
    return sorted(pids)


def _signal_all(sig: int) -> int:
    sent = 0
    for pid in other_processes():
        try:
            os.kill(pid, sig)
            sent += 1
        except ProcessLookupError:
            pass
    return sent


def kill_all(
    grace: float, reap: Callable[[], object], clock: Callable[[], float] = time.monotonic
) -> tuple[int, int]:
    """SIGTERM to all, wait up to `grace` s (calling `reap`), SIGKILL to the rest.

    Returns (processes sent SIGTERM, processes that needed SIGKILL).
    """
    termed = _signal_all(signal.SIGTERM)
    deadline = clock() + grace
    while other_processes() and clock() < deadline:
        reap()
        time.sleep(0.05)
    killed = _signal_all(signal.SIGKILL)
    deadline = clock() + 1.0
    while other_processes() and clock() < deadline:
        reap()
        time.sleep(0.02)
    reap()
    return termed, killed


@dataclass
class UnmountReport:
    unmounted: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    read_only: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = (
            f"{len(self.unmounted)} unmounted, {len(self.detached)} detached, "
            f"{len(self.read_only)} read-only"
        )
        if self.failed:
            text += "; failed: " + ", ".join(f"{m} ({why})" for m, why in self.failed.items())
        return text


def unmount_all(under: str = "/") -> UnmountReport:
    """Unmount every mount at or below `under`, deepest first; `under` itself goes read-only
    when it is / (it cannot be unmounted)."""
    report = UnmountReport()
    prefix = under.rstrip("/") + "/"
    for entry in reversed(read_mountinfo()):
        target = entry.mountpoint
        if target != under and not target.startswith(prefix):
            continue
        if target == "/":
            _remount_read_only(target, report)
            continue
        try:
            umount2(target)
            report.unmounted.append(target)
        except OSError as e:
            if e.errno == errno.EBUSY:
                _detach(target, report)
            elif e.errno == errno.EINVAL:
                continue  # not a mount any more: its parent was detached with it
            else:
                _remount_read_only(target, report)
    return report


def _detach(target: str, report: UnmountReport) -> None:
    # flush it before it leaves sight; files open for writing refuse (EBUSY): then the lazy
    # unmount finishes once they are closed
    with contextlib.suppress(OSError):
        mount(None, target, None, MS_REMOUNT | MS_RDONLY)
    try:
        umount2(target, MNT_DETACH)
        report.detached.append(target)
    except OSError as e:
        report.failed[target] = e.strerror or str(e)


def _remount_read_only(target: str, report: UnmountReport) -> None:
    try:
        mount(None, target, None, MS_REMOUNT | MS_RDONLY)
        report.read_only.append(target)
    except OSError as e:
        report.failed.setdefault(target, e.strerror or str(e))
