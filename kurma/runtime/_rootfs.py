"""An app's root filesystem: from a rendered image tree to a process inside its own root.

`prepare_app_rootfs` runs in the forked child that will exec the app: single-threaded, in a
mount namespace of its own (already unshared) and in the pod's other namespaces (for /proc to
show the pod's processes the child must be *in* the pod's pid namespace, not just have
setns()ed into it). The order of the steps matters:

1. every mount private, so nothing propagates back to the host (the VM's `/` is shared);
2. an overlay: lowerdir = the rendered tree (never written), upper/work = a fresh directory
   per run; the mount sits on `<run_dir>/rootfs` inside this namespace only;
3. /proc (+ masks and read-only parts), /sys, /dev, /etc/hosts, /etc/resolv.conf, volumes,
   each target resolved inside the new root (see `_inroot`) and mounted onto an fd;
4. readOnlyRootFS: the overlay mount becomes read-only only now, after targets were created;
5. pivot_root into it, detach the old root, chdir to the working directory.

Speed: no tree walks, no subprocesses, one syscall per mount where the API allows it;
fresh filesystems use mount(2), binds the fd-based API (see `_mountapi`).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass

from ..aci import (
    App,
    DevicesIsolator,
    NamespacesIsolator,
    PodManifest,
    PrivilegedIsolator,
    RuntimeApp,
)
from ._cgroupfs import mount_own_cgroups, read_own_cgroup_binds
from ._devices import setup_dev
from ._etc import EtcFiles
from ._inroot import Kind, ensure_in_root, open_in_root
from ._mountapi import (
    AT_FDCWD,
    AT_RECURSIVE,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    OPEN_TREE_CLONE,
    bind_clone,
    fd_path,
    mount_setattr,
    move_mount,
    open_tree,
)
from ._volumes import VolumeBind, mount_volume, plan_volumes
from .linux import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    make_rprivate,
    mount,
    pivot_root,
    umount2,
)

_FS_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC


def _present_in_proc(*names: str) -> tuple[str, ...]:
    """The names this kernel's procfs has, looked up once at import (in the launcher, before
    it forks), so no app start pays for failed mounts; all of them if /proc is not mounted."""
    if not os.path.isdir("/proc/self"):
        return names
    return tuple(n for n in names if os.path.lexists(f"/proc/{n}"))


# Masked like runc's defaults: kernel memory, keyrings, timer and scheduler internals.
_PROC_MASKED_FILES = _present_in_proc(
    "kcore", "keys", "timer_list", "sched_debug", "latency_stats", "timer_stats"
)
_PROC_MASKED_DIRS = _present_in_proc("acpi", "scsi")
_PROC_READ_ONLY = _present_in_proc("sys", "sysrq-trigger", "irq", "bus", "fs", "asound")
_BIND_RO = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC


@dataclass(frozen=True)
class RootfsSpec:
    """Everything `prepare_app_rootfs` needs, resolved by the launcher beforehand.

    `run_dir` is created and holds `upper`, `work` and the `rootfs` mount point; if it
    exists (a post-stop handler after its app) its upper is reused. It must not be on
    overlayfs; in the booted initrd it must be on a tmpfs (the initramfs has no xattrs).
    The runtime removes it with the pod.
    """

    app_name: str
    tree: str
    run_dir: str
    volumes: tuple[VolumeBind, ...] = ()
    etc: EtcFiles | None = None
    read_only: bool = False
    working_directory: str = "/"
    own_netns: bool = True
    privileged: bool = False
    devices: tuple[str, ...] = ()
    console: str | None = None

    @property
    def own_cgroups(self) -> bool:
        """Whether the app gets its own cgroups writable at /sys/fs/cgroup and a cgroup
        namespace rooted there (see `_cgroupfs`): privileged, with a sysfs of its own (with
        the host's netns it has the host's /sys, cgroupfs and all, already)."""
        return self.privileged and self.own_netns


def rootfs_spec(
    pod: PodManifest,
    app: RuntimeApp,
    image_app: App | None,
    *,
    tree: str,
    run_dir: str,
    volumes_dir: str,
    etc: EtcFiles | None,
    console: str | None = None,
) -> RootfsSpec:
    """The spec of one app from its pod manifest (isolators of the pod and the app count).

    Raises ValidationError when a mount point is not satisfied (see `plan_volumes`).
    """
    effective = app.app or image_app
    isolators = (*pod.isolators, *(effective.isolators if effective else ()))
    privileged = any(isinstance(i, PrivilegedIsolator) and i.privileged for i in isolators)
    devices = tuple(d for i in isolators if isinstance(i, DevicesIsolator) for d in i.devices)
    host_ns = {ns for i in isolators if isinstance(i, NamespacesIsolator) for ns in i.host}
    return RootfsSpec(
        app_name=app.name,
        tree=tree,
        run_dir=run_dir,
        volumes=plan_volumes(pod, app, image_app, volumes_dir, tree),
        etc=etc,
        read_only=app.read_only_root_fs,
        working_directory=(effective.working_directory if effective else None) or "/",
        own_netns="net" not in host_ns,
        privileged=privileged,
        devices=tuple(dict.fromkeys(devices)),
        console=console,
    )


def prepare_app_rootfs(spec: RootfsSpec) -> None:
    """Build the app's root and pivot into it; the caller then sets its identity and execs.

    Raises OSError naming what failed (a volume, a target, the working directory). On error
    the process must exit: its mount namespace is half built and goes away with it.
    """
    old_umask = os.umask(0)
    try:
        make_rprivate("/")
        rootfs = mount_overlay(spec.tree, spec.run_dir)
        rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _populate(rootfd, spec)
            if spec.read_only:
                mount_setattr(rootfd, MOUNT_ATTR_RDONLY, what=rootfs)
            enter_root(rootfd)
        finally:
            os.close(rootfd)
    finally:
        os.umask(old_umask)
    change_directory(spec.app_name, spec.working_directory)


def _populate(rootfd: int, spec: RootfsSpec) -> None:
    """The kernel filesystems, generated /etc files and volumes, in mount order."""
    mount_proc(rootfd, masked=not spec.privileged)
    mount_sys(rootfd, own_netns=spec.own_netns, writable=spec.privileged)
    if spec.own_cgroups:
        mount_own_cgroups(rootfd, read_own_cgroup_binds())
    setup_dev(rootfd, privileged=spec.privileged, devices=spec.devices, console=spec.console)
    if spec.etc is not None:
        bind_file_read_only(rootfd, spec.etc.hosts, "/etc/hosts")
        bind_file_read_only(rootfd, spec.etc.resolv_conf, "/etc/resolv.conf")
    # Parents before children, so /data/sub lands on the volume at /data, not beneath it.
    for bind in sorted(spec.volumes, key=lambda b: b.target.rstrip("/").count("/")):
        mount_volume(rootfd, bind, nodev=not spec.privileged)


def mount_overlay(tree: str, run_dir: str) -> str:
    """Mount tree (read-only lower) + a fresh upper under `run_dir`; returns the mount point."""
    for path in (tree, run_dir):
        if any(c in path for c in ",:\\"):
            raise ValueError(f"overlay paths cannot hold ',', ':' or '\\': {path!r}")
    upper, work, rootfs = (os.path.join(run_dir, n) for n in ("upper", "work", "rootfs"))
    try:
        _mkdir_with_parent(run_dir, 0o700)
    except FileExistsError:
        # A handler after its app (post-stop): the same upper, so it sees what the app
        # wrote. A volatile overlay leaves work/incompat/volatile, which refuses a remount.
        shutil.rmtree(work)
        os.mkdir(work, 0o755)
    else:
        for path in (upper, work, rootfs):
            os.mkdir(path, 0o755)
    # volatile: the upper dir is thrown away after the run, so skip every sync of it.
    data = f"lowerdir={tree},upperdir={upper},workdir={work},volatile"
    mount("overlay", rootfs, "overlay", MS_NODEV, data)
    return rootfs


def _mkdir_with_parent(path: str, mode: int) -> None:
    """mkdir, creating the parent first if it is missing (the pod's apps/ on first use)."""
    try:
        os.mkdir(path, mode)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        os.mkdir(path, mode)


def mount_proc(rootfd: int, *, masked: bool = True) -> None:
    """A new procfs for the pod's pid namespace, with runc's masks and read-only parts.

    `masked=False` (a privileged pod, as Docker's --privileged): no masks, /proc/sys
    writable. Such a pod holds every capability and the host's /dev already, and a kurma
    running inside it (kurma in kurma) writes its own pods' sysctls through /proc/sys.
    """
    target = ensure_in_root(rootfd, "/proc", Kind.DIR)
    try:
        mount("proc", fd_path(target), "proc", _FS_FLAGS)
    finally:
        os.close(target)
    if not masked:
        return
    procfd = open_in_root(rootfd, "/proc")  # the new procfs: its content is the kernel's
    try:
        base = fd_path(procfd)
        for name in _PROC_MASKED_FILES:
            _mount_if_present("/dev/null", f"{base}/{name}", None, MS_BIND)
        for name in _PROC_MASKED_DIRS:
            _mount_if_present("tmpfs", f"{base}/{name}", "tmpfs", _FS_FLAGS | MS_RDONLY)
        for name in _PROC_READ_ONLY:
            path = f"{base}/{name}"
            if _mount_if_present(path, path, None, MS_BIND | MS_REC):
                mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _FS_FLAGS)
    finally:
        os.close(procfd)


def mount_sys(rootfd: int, *, own_netns: bool, writable: bool = False) -> None:
    """sysfs, read-only unless privileged; the host's /sys when the pod has the host's netns.

    A new sysfs shows the network devices of the mounting process's netns, so a pod in the
    host's netns gets the host's /sys (recursively, with cgroupfs and friends) instead.
    """
    target = ensure_in_root(rootfd, "/sys", Kind.DIR)
    try:
        if own_netns:
            flags = _FS_FLAGS if writable else _FS_FLAGS | MS_RDONLY
            mount("sysfs", fd_path(target), "sysfs", flags)
            return
        tree = open_tree(AT_FDCWD, "/sys", OPEN_TREE_CLONE | AT_RECURSIVE)
        try:
            if not writable:
                mount_setattr(tree, _BIND_RO, recursive=True, what="/sys")
            move_mount(tree, target, "/sys")
        finally:
            os.close(tree)
    finally:
        os.close(target)


def bind_file_read_only(rootfd: int, source: str, target: str) -> None:
    """Bind a host file read-only over `target` in the rootfs (created in the upper if missing)."""
    src = os.open(source, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst = ensure_in_root(rootfd, target, Kind.FILE, 0o644)
        try:
            bind_clone(src, dst, recursive=False, attrs=_BIND_RO, what=target)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def enter_root(rootfd: int) -> None:
    """pivot_root into `rootfd` and detach the old root (pivot_root(".", ".") needs no dir)."""
    os.fchdir(rootfd)
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/")


def change_directory(app_name: str, working_directory: str) -> None:
    """chdir to the app's working directory inside its root; appc requires that it exists."""
    try:
        os.chdir(working_directory or "/")
    except OSError as e:
        raise OSError(
            e.errno,
            f"app {app_name!r}: working directory {working_directory!r}: {e.strerror}",
            working_directory,
        ) from None


def _mount_if_present(
    source: str, target: str, fstype: str | None, flags: int, data: str | None = None
) -> bool:
    """mount(2) onto something this kernel may lack (sched_debug, acpi); False if missing."""
    try:
        mount(source, target, fstype, flags, data)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
        return False
    return True
