"""An app's /dev: the appc minimal set on a small tmpfs, host devices, or the host's whole /dev.

The minimal /dev (appc executor): null zero full random urandom tty, console when the app has
a terminal, ptmx -> pts/ptmx over a private devpts instance, shm, mqueue, and the fd/std*
links.

No device node an app makes can be opened (CAP_MKNOD is in appc's default set, so an app
could otherwise make a node for the host's disk and read it): the tmpfs is `nodev`, and so
are shm and mqueue (devpts makes no nodes). The minimal nodes are therefore the host's own
nodes, each bound on its own (a bind is a mount of its own, without nodev), read-only: an
app's root may not chmod or chown the host's /dev/null through it, while reads and writes
of the device work as ever. `DEFAULT_DEVICE_RULES` is the same set (with the ptys) as
devices-cgroup rules, `device_rules` those of granted nodes, for the pod's cgroups
(`cgroups.Cgroup.restrict_devices`: cgroup v1's devices controller, or a
BPF_CGROUP_DEVICE program on cgroup2; see kurma/runtime/README.md).

Kurma's `os/linux/devices` binds chosen host nodes (e.g. /dev/ttyS0, /dev/kmsg) into that
tmpfs (read-write binds: a getty chowns its tty); `os/linux/privileged` binds the host's
whole /dev recursively instead (it is then the host's devtmpfs: nothing is created in it,
and nothing is restricted).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence

from ._inroot import Kind, ensure_in_root, open_in_root
from ._mountapi import (
    AT_FDCWD,
    AT_RECURSIVE,
    MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    OPEN_TREE_CLONE,
    bind_clone,
    fd_path,
    move_mount,
    open_tree,
)
from .linux import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_STRICTATIME, mount

# name, major, minor (devices.txt); mode 0666 like every container runtime
_NODES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
_LINKS = (
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)
_DEVPTS_OPTIONS = "newinstance,ptmxmode=0666,mode=620,gid=5"  # gid 5: tty in every distro
_DEV_OPTIONS = "mode=755,size=65536k,nr_inodes=4096"
_SHM_OPTIONS = "mode=1777,size=65536k"
# The minimal nodes' binds: read-only (no chmod/chown of the host's node), never nodev.
_NODE_ATTRS = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# What every unprivileged pod may open (devices cgroup, `type major:minor access`): the
# minimal nodes, /dev/console, the ptmx of its devpts instance and its ptys, as runc and
# crun allow. Nothing may be made (no `m`) but these: mknod of another node is EPERM.
DEFAULT_DEVICE_RULES = (
    *(f"c {major}:{minor} rwm" for _, major, minor in _NODES),
    "c 5:1 rwm",  # console
    "c 5:2 rwm",  # ptmx
    "c 136:* rwm",  # the ptys (UNIX98_PTY_SLAVE_MAJOR)
)

MINIMAL_DEV = frozenset(
    [n for n, _, _ in _NODES] + [n for n, _ in _LINKS] + ["pts", "shm", "mqueue"]
)
"""What a minimal /dev holds, besides `console` when the app has a terminal."""


def setup_dev(
    rootfd: int,
    *,
    privileged: bool = False,
    devices: Sequence[str] = (),
    console: str | None = None,
) -> None:
    """Mount the app's /dev inside the rootfs (umask must be 0 for the node modes)."""
    target = ensure_in_root(rootfd, "/dev", Kind.DIR)
    try:
        if privileged:
            _bind_host_dev(target)
            return
        flags = MS_NOSUID | MS_NODEV | MS_STRICTATIME
        mount("tmpfs", fd_path(target), "tmpfs", flags, _DEV_OPTIONS)
    finally:
        os.close(target)
    devfd = open_in_root(rootfd, "/dev")  # the tmpfs now, not the directory beneath it
    try:
        _populate(devfd)
        if console is not None:
            bind_device(devfd, console, "console")
        for device in devices:
            bind_device(devfd, device, device.removeprefix("/dev/"))
    finally:
        os.close(devfd)


def _bind_host_dev(target: int) -> None:
    """Privileged: the host's /dev and everything mounted under it, as it is."""
    tree = open_tree(AT_FDCWD, "/dev", OPEN_TREE_CLONE | AT_RECURSIVE)
    try:
        move_mount(tree, target, "/dev")
    finally:
        os.close(tree)


def _populate(devfd: int) -> None:
    """Nodes, links and the pts/shm/mqueue mounts of a fresh (nodev) /dev tmpfs."""
    for name, major, minor in _NODES:
        _bind_minimal_node(devfd, name, os.makedev(major, minor))
    for name, link in _LINKS:
        os.symlink(link, name, dir_fd=devfd)
    base = fd_path(devfd)
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(name, 0o755, dir_fd=devfd)
    mount("devpts", f"{base}/pts", "devpts", MS_NOSUID | MS_NOEXEC, _DEVPTS_OPTIONS)
    mount("shm", f"{base}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, _SHM_OPTIONS)
    try:
        mount("mqueue", f"{base}/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as e:
        if e.errno != errno.ENODEV:  # a kernel without POSIX message queues
            raise
        os.rmdir("mqueue", dir_fd=devfd)


def _bind_minimal_node(devfd: int, name: str, rdev: int) -> None:
    """Bind the host's /dev/`name`, which must be the char device `rdev`, read-only."""
    host_path = f"/dev/{name}"
    source = os.open(host_path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(source)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != rdev:
            raise OSError(
                errno.ENODEV,
                f"not the char device {os.major(rdev)}:{os.minor(rdev)} on the host",
                host_path,
            )
        # The tmpfs is fresh and ours: the file is made directly (no lookup in the root).
        target = os.open(name, _NEW_FILE, 0o666, dir_fd=devfd)
        try:
            bind_clone(source, target, recursive=False, attrs=_NODE_ATTRS, what=host_path)
        finally:
            os.close(target)
    finally:
        os.close(source)


def device_rules(devices: Iterable[str]) -> tuple[str, ...]:
    """Devices-cgroup allow rules (`rwm`) for granted host nodes, by their numbers now.

    A granted path that is missing or not a device node on the host adds nothing: the
    app's start fails on it anyway (`bind_device`)."""
    rules = []
    for path in devices:
        try:
            st = os.lstat(path)  # bind_device refuses a symlink too
        except OSError:
            continue
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else None
        if kind is not None:
            rules.append(f"{kind} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} rwm")
    return tuple(dict.fromkeys(rules))


def bind_device(devfd: int, host_path: str, name: str) -> None:
    """Bind the host node `host_path` to `name` under the app's /dev (a char or block device).

    The host path is opened without following a final symlink, so a link placed in the
    host's /dev cannot turn a device grant into a bind of some other file.
    """
    try:
        source = os.open(host_path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, "device does not exist on the host", host_path
        ) from None
    try:
        mode = os.fstat(source).st_mode
        if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            raise OSError(errno.ENODEV, "not a device node on the host", host_path)
        target = ensure_in_root(devfd, name, Kind.FILE, 0o600)
        try:
            mount(fd_path(source), fd_path(target), None, MS_BIND)
        finally:
            os.close(target)
    finally:
        os.close(source)
