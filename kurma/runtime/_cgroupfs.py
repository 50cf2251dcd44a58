"""A privileged pod's cgroups: its own subtree of every hierarchy, writable at /sys/fs/cgroup.

Why: a privileged pod may run a kurma of its own (kurma in kurma). That nested kurmad finds
its cgroups the way every kurmad does (`CgroupSystem.detect`: /proc/self/mountinfo plus
/proc/self/cgroup) and must create its pods' cgroups below its own, so the outer pod's limits
bound everything it starts and destroying the outer pod (its cgroup killed and removed) takes
everything with it. A privileged pod with its own network namespace gets a fresh sysfs,
which has no cgroup mounts; so, for each cgroup hierarchy mounted at or below
/sys/fs/cgroup here, the app's own cgroup directory in it is bound read-write at the same
mount point inside the app's root (a tmpfs at /sys/fs/cgroup holds the mount points of a
hybrid or v1 layout). The app then gets a cgroup namespace rooted at its cgroup (see
`_app.prepare_process`), so /proc/self/cgroup says `/` and mountinfo shows each mount's root
as `/`: detection inside finds its own cgroup at the mount point and creates below it. A
process joining the pod without that namespace (exec) sees full paths on both sides, which
detection handles the same way.

Only its own subtree is bound: a privileged pod could mount the whole hierarchy itself (it
holds CAP_SYS_ADMIN), but a nested kurmad should not be handed more than it uses.
Non-privileged pods get none of this (their /sys is read-only and has no cgroupfs).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from ._inroot import Kind, ensure_in_root
from ._mountapi import MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, bind_clone, fd_path
from .cgroups._parse import Version, parse_mountinfo, parse_proc_cgroup
from .linux import MS_NODEV, MS_NOEXEC, MS_NOSUID, mount

CGROUP_ROOT = "/sys/fs/cgroup"
_BIND_ATTRS = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC


@dataclass(frozen=True)
class CgroupBind:
    """One hierarchy: our own cgroup's directory here (`source`) and its mount point."""

    source: str
    target: str


def own_cgroup_binds(mountinfo: str, proc_cgroup: str) -> tuple[CgroupBind, ...]:
    """The binds of a process's own cgroups, from its mountinfo and /proc/PID/cgroup text.

    Hierarchies mounted outside /sys/fs/cgroup, or in which the process's cgroup is not
    below the mount's root, are left out (nothing there the process could reach)."""
    proc = parse_proc_cgroup(proc_cgroup)
    binds: dict[str, CgroupBind] = {}
    for m in parse_mountinfo(mountinfo):
        target = posixpath.normpath(m.mount_point)
        if target != CGROUP_ROOT and not target.startswith(CGROUP_ROOT + "/"):
            continue
        if m.version is Version.V2:
            path = proc.v2
        else:
            path = next((proc.v1[o] for o in sorted(m.options) if o in proc.v1), None)
        if path is None:
            continue
        root = m.root.rstrip("/")
        if path != m.root and not path.startswith(root + "/"):
            continue
        relative = path[len(root) :].lstrip("/")
        binds[target] = CgroupBind(posixpath.join(target, relative).rstrip("/"), target)
    return tuple(binds.values())


def read_own_cgroup_binds() -> tuple[CgroupBind, ...]:
    """`own_cgroup_binds` of the calling process (read before it pivots or unshares cgroupns)."""
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read()
    with open("/proc/self/cgroup") as f:
        proc_cgroup = f.read()
    return own_cgroup_binds(mountinfo, proc_cgroup)


def mount_own_cgroups(rootfd: int, binds: tuple[CgroupBind, ...]) -> None:
    """Bind each of `binds` read-write at its mount point inside the root at `rootfd`.

    Unless one of them is /sys/fs/cgroup itself (pure cgroup2), a tmpfs goes there first to
    hold the mount points (a fresh sysfs has an empty, read-only /sys/fs/cgroup)."""
    if not binds:
        return
    if all(b.target != CGROUP_ROOT for b in binds):
        target = ensure_in_root(rootfd, CGROUP_ROOT, Kind.DIR)
        try:
            mount("tmpfs", fd_path(target), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
        finally:
            os.close(target)
    for bind in sorted(binds, key=lambda b: b.target.count("/")):
        src = os.open(bind.source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dst = ensure_in_root(rootfd, bind.target, Kind.DIR)
            try:
                bind_clone(src, dst, recursive=False, attrs=_BIND_ATTRS, what=bind.target)
            finally:
                os.close(dst)
        finally:
            os.close(src)
