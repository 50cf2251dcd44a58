"""An app's volumes: which pod volume lands where (pure), empty volume dirs, and the binds.

Matching (pods.md v0.8.11): each `mounts` entry of the runtime app names a volume (or brings an
`appVolume`) and a path in the app's filesystem. Every `mountPoints` entry of the app must be
satisfied by such a mount, either at the same path or naming the mount point's name; the spec
lets an executor fail otherwise, and we do, naming the mount point. A volume's `readOnly`, when
set, overrides the mount point's. `recursive` defaults to true ("SHOULD default to recursive").

Host sources a pod chose (recursion, `_confine`) are never mounted by name. Such a bind keeps
`source` = the root of the volume an admin (or kurma, for an empty volume) chose, and in
`beneath` the relative paths below it, one per level of pods that handed it down. At mount
time (`open_source`, in the app's process) the root is opened, each step is resolved beneath
the fd before it with openat2(2) `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` (and
`RESOLVE_NO_XDEV` where the volume it lies in is bound non-recursively: the pod never saw the
mounts below it), and the bind is cloned from the last fd (open_tree(OPEN_TREE_CLONE) +
move_mount, `_mountapi.bind_clone`). So a directory swapped for a symlink, a `..`, an
absolute symlink or a magic link that leads out of the volume is refused (EXDEV/ELOOP)
whenever it happens, and what is checked is what is mounted: no path string is looked up
twice. Kernel features: openat2 with RESOLVE_BENEATH/NO_MAGICLINKS/NO_XDEV (Linux 5.6) and
the new mount API (5.2; mount_setattr for read-only binds, 5.12). Without them the syscalls
fail (ENOSYS) and so does the app's start: there is no fallback to a path-based mount.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..aci import App, MountPoint, PodManifest, RuntimeApp, Volume, VolumeKind
from ..errors import ValidationError
from ._inroot import Kind, ensure_in_root
from ._mountapi import (
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_RDONLY,
    RESOLVE_BENEATH,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_XDEV,
    bind_clone,
    openat2,
)

Steps = tuple[tuple[str, bool], ...]
_APP_VOLUME_SEPARATOR = "~"  # not allowed in an AC Name, so never clashes with a pod volume


@dataclass(frozen=True)
class VolumeBind:
    """One bind of an app: a host directory or file onto a path inside the app's rootfs.

    `beneath` (pods that pods create): the steps from `source`, the root of the volume an
    admin chose, to what is mounted: (relative path, whether the volume it is resolved in
    is recursive), each resolved beneath the one before at mount time (see the module).
    """

    volume: str
    kind: VolumeKind
    source: str
    target: str
    read_only: bool = False
    recursive: bool = True
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    beneath: Steps = ()

    @property
    def shown(self) -> str:
        """The host path as a string (for messages and the manifest; never opened)."""
        return posixpath.join(self.source, *(rel for rel, _ in self.beneath))


Beneath = Mapping[str, tuple[str, Steps]]
"""What a created pod's host sources are: the manifest's source -> (root, steps)."""


def place_beneath(binds: tuple[VolumeBind, ...], beneath: Beneath | None) -> tuple[VolumeBind, ...]:
    """The binds with each host source replaced by its root and steps (`beneath` None: a pod
    the host created, whose sources are an admin's paths). A host source with no entry is
    refused: it was never checked against the creator's volumes."""
    if beneath is None:
        return binds
    placed = []
    for bind in binds:
        if bind.kind is VolumeKind.HOST:
            if bind.source not in beneath:
                raise ValidationError(
                    f"volume {bind.volume!r}",
                    f"host source {bind.source} was not checked against the creating pod's volumes",
                )
            root, steps = beneath[bind.source]
            bind = replace(bind, source=root, beneath=tuple((r, bool(c)) for r, c in steps))
        placed.append(bind)
    return tuple(placed)


def plan_volumes(
    pod: PodManifest,
    app: RuntimeApp,
    image_app: App | None,
    volumes_dir: str,
    tree: str | None = None,
) -> tuple[VolumeBind, ...]:
    """The binds of one app, parents before children; empty volumes live in `volumes_dir`.
    A mount point no mount satisfies gets an implicit empty volume of the app's own, with
    the mode and owner of the image's directory at that path (in `tree`), as docker gives.

    Raises ValidationError naming the app and the mount that cannot be met.
    """
    effective = app.app or image_app
    mount_points: Sequence[MountPoint] = effective.mount_points if effective else ()
    by_path = {posixpath.normpath(mp.path): mp for mp in mount_points}
    by_name = {mp.name: mp for mp in mount_points}
    volumes = {v.name: v for v in pod.volumes}
    binds: list[VolumeBind] = []
    satisfied: set[str] = set()
    for i, mount in enumerate(app.mounts):
        target = posixpath.normpath(mount.path)
        point = by_path.get(target) or by_name.get(mount.volume)
        if point is not None:
            satisfied.add(point.name)
        volume = mount.app_volume or volumes.get(mount.volume)
        if volume is None:
            raise ValidationError(
                f"app {app.name!r} mounts[{i}]", f"no pod volume is named {mount.volume!r}"
            )
        app_owned = None if mount.app_volume is None else app.name
        default_ro = point.read_only if point is not None else False
        binds.append(_bind(volume, target, default_ro, volumes_dir, app_owned))
    for point in mount_points:
        if point.name not in satisfied:
            # As rkt does (and docker for an image's VOLUME): a mount point the pod leaves
            # alone gets an empty volume of its own, private to this app.
            target = posixpath.normpath(point.path)
            implicit = _implicit_volume(point.name, tree, target)
            binds.append(_bind(implicit, target, point.read_only, volumes_dir, app.name))
    return tuple(sorted(binds, key=lambda b: b.target.rstrip("/").count("/")))


def _implicit_volume(name: str, tree: str | None, target: str) -> Volume:
    """An empty volume shaped like the image's directory at `target`, looked up beneath the
    tree as if it were `/` (a symlink in the image never leads out), else root's 0755."""
    if tree is not None:
        from ._mountapi import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2

        root = os.open(tree, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = openat2(root, target.lstrip("/") or ".", os.O_PATH | os.O_CLOEXEC,
                         RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)  # fmt: skip
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                mode = f"{stat.S_IMODE(st.st_mode):04o}"
                return Volume(name, VolumeKind.EMPTY, mode=mode, uid=st.st_uid, gid=st.st_gid)
        except OSError:
            pass  # not in the image (or not reachable): the default
        finally:
            os.close(root)
    return Volume(name, VolumeKind.EMPTY)


def _bind(
    volume: Volume, target: str, default_ro: bool, volumes_dir: str, app_owned: str | None
) -> VolumeBind:
    read_only = default_ro if volume.read_only is None else volume.read_only
    if volume.kind is VolumeKind.HOST:
        assert volume.source is not None
        recursive = True if volume.recursive is None else volume.recursive
        return VolumeBind(volume.name, volume.kind, volume.source, target, read_only, recursive)
    name = volume.name if app_owned is None else f"{app_owned}{_APP_VOLUME_SEPARATOR}{volume.name}"
    return VolumeBind(
        volume.name,
        volume.kind,
        os.path.join(volumes_dir, name),
        target,
        read_only,
        recursive=False,
        mode=volume.mode_bits,
        uid=volume.uid or 0,
        gid=volume.gid or 0,
    )


def ensure_empty_volume(bind: VolumeBind) -> None:
    """Create an empty volume's directory once, with its mode and owner; later apps reuse it.

    Only the creator sets mode and owner, so an app that changed them (as it may) keeps them.
    """
    try:
        os.mkdir(bind.source, 0o700)
    except FileExistsError:
        return
    except FileNotFoundError:
        os.makedirs(os.path.dirname(bind.source), 0o755, exist_ok=True)
        try:
            os.mkdir(bind.source, 0o700)
        except FileExistsError:
            return
    os.chown(bind.source, bind.uid, bind.gid)
    os.chmod(bind.source, bind.mode)


def open_source(bind: VolumeBind) -> int:
    """An O_PATH fd of a bind's host source; a missing or symlinked source is an error, and
    so is a step of `beneath` that leads out of the volume it lies in.

    A symlink at the root is refused rather than followed: the admin named that path, and a
    symlink there could be swapped to point anywhere between check and mount. The steps
    are resolved beneath it (see the module): symlinks that stay inside are followed.
    """
    try:
        fd = os.open(bind.source, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"volume {bind.volume!r}: host source does not exist", bind.source
        ) from None
    if stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.ELOOP, f"volume {bind.volume!r}: host source is a symlink", bind.source)
    for rel, recursive in bind.beneath:
        try:
            fd = _step(fd, rel, recursive)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT, f"volume {bind.volume!r}: host source does not exist", bind.shown
            ) from None
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ELOOP):
                raise OSError(e.errno, f"volume {bind.volume!r}: {e.strerror}", bind.shown) from e
            raise OSError(
                e.errno,
                f"volume {bind.volume!r}: host source leads outside the volume it lies in "
                f"(a symlink, `..`, a magic link or a mount on the way)",
                bind.shown,
            ) from e
    return fd


def _step(dirfd: int, rel: str, recursive: bool) -> int:
    """openat2 `rel` beneath `dirfd` (which it closes); the new O_PATH fd."""
    resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | (0 if recursive else RESOLVE_NO_XDEV)
    try:
        return openat2(dirfd, rel, os.O_PATH, resolve)
    finally:
        os.close(dirfd)


def mount_volume(rootfd: int, bind: VolumeBind, *, nodev: bool = True) -> None:
    """Bind one volume into the rootfs at its target, resolved inside the root, never outside.

    `nodev` (every app but a privileged one's): no device node on the volume opens, and
    neither on a mount below it (a recursive bind), so a node an app makes there, or finds
    there, gives it no device."""
    if bind.kind is VolumeKind.EMPTY:
        ensure_empty_volume(bind)
    source = open_source(bind)
    try:
        kind = Kind.DIR if stat.S_ISDIR(os.fstat(source).st_mode) else Kind.FILE
        target = ensure_in_root(rootfd, bind.target, kind)
        try:
            what = f"volume {bind.volume!r} at {bind.target}"
            if os.path.samestat(os.fstat(target), os.fstat(rootfd)):
                # `/data -> /` in the image: covering the app's whole root is never meant.
                raise OSError(errno.EINVAL, f"{what}: the target resolves to the rootfs itself")
            attrs = (MOUNT_ATTR_RDONLY if bind.read_only else 0) | (
                MOUNT_ATTR_NODEV if nodev else 0
            )
            bind_clone(source, target, recursive=bind.recursive, attrs=attrs, what=what)
        finally:
            os.close(target)
    finally:
        os.close(source)
