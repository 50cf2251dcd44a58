"""A pod's directory, `<pods_dir>/<uuid>/`: what is in it, how it is made and removed.

    pod.json            the record (`_podrecord`), the first file written
    pids/ exits/        podinit's protocol (`_podinit`): registrations and exit records
    logs/<app>.log      the apps' output, rotated by podinit
    apps/<app>/         overlay upper, work and rootfs (a tmpfs of its own when the pods
                        dir is not one, see `mount_apps_tmpfs`)
    volumes/            empty volumes
    hosts resolv.conf   `_etc`
    api/                the pod's API socket with host/api-access (kurmad's, bound at
                        /run/kurma in every app)

A directory without a readable pod.json is an orphan (a daemon died while creating it):
`_adoption.reconcile` removes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid as uuidlib
from pathlib import Path

from ..errors import ValidationError
from ._live import LivePod
from .linux import MNT_DETACH, MS_NODEV, MS_NOSUID, mount, umount2

API_DIR = "api"  # <pod_dir>/api: the pod's API socket lives here, bound at /run/kurma
APPS_TMPFS_OPTIONS = "mode=0711"


def is_pod_dir_name(name: str) -> bool:
    """Whether `name` is one the runtime gives a pod's directory (its UUID)."""
    try:
        return str(uuidlib.UUID(name)) == name
    except ValueError:
        return False


def check_pod_name(name: str) -> None:
    """The pod name is its hostname: 1-63 of [a-z0-9-], not starting or ending with '-'."""
    ok = 0 < len(name) <= 63 and name[0] != "-" and name[-1] != "-"
    if not ok or any(not (c.isascii() and (c.islower() or c.isdigit() or c == "-")) for c in name):
        raise ValidationError(
            "name", f"{name!r} is not a valid pod name (a hostname: up to 63 of a-z, 0-9 and '-')"
        )


def mount_apps_tmpfs(pod_dir: Path) -> None:
    """A tmpfs on `pod_dir/apps` for the apps' overlay upper and work dirs.

    Overlayfs tests its upper filesystem at every mount (xattrs, whiteouts, O_TMPFILE):
    5-6 ms on ext4, 0.2 ms on tmpfs. An app's writes to its root land in RAM there,
    charged to the pod's memory cgroup like any tmpfs page it writes; data that must
    outlive the pod belongs in a volume. Mounted in the daemon's (the launcher's) mount
    namespace, which every app's namespace copies; `remove_pod_dir` unmounts it.
    """
    apps = pod_dir / "apps"
    apps.mkdir(mode=0o711)
    mount("tmpfs", str(apps), "tmpfs", MS_NOSUID | MS_NODEV, APPS_TMPFS_OPTIONS)


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem `path` is on, from the mount table (the longest mount
    point that contains it)."""
    real = os.path.realpath(path)
    best, fstype = "", None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, fstype = point, fields[fields.index("-") + 1]
    return fstype


def unmount_apps_tmpfs(pod_dir: Path) -> None:
    """Unmount the apps' tmpfs, if it is mounted (a pod on a tmpfs pods dir has none)."""
    with contextlib.suppress(OSError):  # EINVAL: not a mount point
        umount2(str(pod_dir / "apps"), MNT_DETACH)


def remove_pod_dir(pod_dir: Path) -> None:
    """Unmount the apps' tmpfs (if mounted) and remove the pod's directory."""
    unmount_apps_tmpfs(pod_dir)
    shutil.rmtree(pod_dir, ignore_errors=True)


def pids_from_registrations(live: LivePod) -> None:
    """Fill in app pids the record missed (a restart before the pipe was read): the
    registrations in pids/ hold the app names of the apps still running."""
    missing = {a.name: a for a in live.record.apps if a.pid is None}
    if not missing:
        return
    try:
        entries = list(os.scandir(live.pod_dir / "pids"))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                name = Path(entry.path).read_text().strip()
                if name in missing:
                    missing[name].pid = int(entry.name)
