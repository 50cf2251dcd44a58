"""Reap orphans that end up with kurmad, the child subreaper, without stealing statuses.

kurmad's own child is the launcher (which reaps the pods it forks); processes re-parented
to kurmad are orphans, e.g. pods' init processes if the launcher died. A blanket
`waitpid(-1)` would also collect the launcher (and any helper a library spawns), so this
looks for zombies whose parent is us and reaps each by pid, leaving out the pids we keep.
"""

from __future__ import annotations

import os
from collections.abc import Collection


def zombie_children(proc: str = "/proc") -> list[int]:
    """Our children that have ended and wait to be reaped."""
    me = os.getpid()
    found = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 1 and fields[0] == b"Z" and int(fields[1]) == me:
            found.append(int(entry.name))
    return found


def reap_orphans(keep: Collection[int]) -> list[tuple[int, int]]:
    """Reap ended children not in `keep`; returns (pid, wait status) of each."""
    reaped = []
    for pid in zombie_children():
        if pid in keep:
            continue
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if got:
            reaped.append((got, status))
    return reaped
