"""A daemon in a delegated cgroup2 subtree moves itself into a leaf before making pods.

Why: cgroup2's no-internal-process rule lets a cgroup enable controllers for its children
only while it holds no processes itself. kurmad creates its pods' cgroups below its own
and enables memory, cpu and pids there, which its own presence forbids, except in the
hierarchy's root cgroup (exempt: kurmad under kurma-init lives there). A kurmad handed a
delegated subtree instead (a nested kurmad in a privileged pod, whose app cgroup is the
root of its cgroup namespace; kurmad under systemd with Delegate=yes) moves itself into
`<own>/kurmad` first, as systemd's delegation rules ask, and keeps its pods beside that
leaf: the CgroupSystem detected before the move still has the delegated cgroup as its base.
Only the daemon moves (before it forks its launcher): other processes of the cgroup are not
its to move, and if any remain, enabling the controllers later says why it failed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from ._parse import Version
from ._system import V2_LIMITED, CgroupSystem, write_file

DAEMON_LEAF = "kurmad"


def enter_leaf(
    system: CgroupSystem, name: str = DAEMON_LEAF, controllers: Iterable[str] = V2_LIMITED
) -> str | None:
    """Move the calling process into `<own v2 cgroup>/<name>` if it must (see the module
    docstring); returns the leaf's directory, or None when nothing had to move: no v2
    hierarchy, none of `controllers` on it, or our cgroup is the hierarchy's root (which has
    no cgroup.type file, even when a cgroup namespace makes another cgroup look like `/`)."""
    placement = next((p for p in system.hierarchies if p.version is Version.V2), None)
    if placement is None or not any(system.placements.get(c) == placement for c in controllers):
        return None
    own = placement.directory()
    if not os.path.exists(os.path.join(own, "cgroup.type")):
        return None
    leaf = os.path.join(own, name)
    with contextlib.suppress(FileExistsError):
        os.mkdir(leaf)
    write_file(leaf, "cgroup.procs", "0")
    return leaf
