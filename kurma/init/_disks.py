"""Disks at boot: the OEM disk (part of the boot config) and the configured disks.

The OEM disk is found by its filesystem label, `KURMA-OEM` unless the kernel command line says
`kurma.oem=LABEL`, and mounted read-only on /run/kurma/oem; its `kurma.yml` is the OEM layer of
the boot config, and it stays mounted because that config names files on it (certificates,
keys). A configured disk is found by `LABEL=` or `UUID=`, given a filesystem only when `format`
is asked and the disk is blank (all zeroes where any filesystem or partition table starts:
`format` never wipes), and mounted where the config says. Devices may show up a little after
their driver loads (virtio probes asynchronously), so finding one waits a short while.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..runtime.linux import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, mount
from ._blockdev import DEV, SYS_BLOCK, Filesystem, find_filesystem, is_blank, read_head
from ._mounts import mounted_type
from .config import BootConfig, Disk, DiskRole

log = logging.getLogger(__name__)

OEM_LABEL = "KURMA-OEM"
OEM_DIR = "/run/kurma/oem"
OEM_FILE = "kurma.yml"
OEM_PARAM = "kurma.oem"
FIND_TIMEOUT = 3.0  # seconds a disk may take to appear after its driver loaded

_OEM_WORD = re.compile(r'(?<!\S)"?kurma\.oem(=("[^"]*"|\S*))?(?!\S)')


class DiskError(Exception):
    """A configured disk could not be made ready; the message says which and why."""


def oem_label(cmdline: str) -> tuple[str, str]:
    """(the OEM disk's label, the command line without `kurma.oem=`, which is no config key)."""
    from .config import split_cmdline

    label = OEM_LABEL
    for name, value in split_cmdline(cmdline):
        if name == OEM_PARAM and value:
            label = value
    return label, _OEM_WORD.sub("", cmdline)


def wait_for_filesystem(
    selector: str,
    timeout: float = FIND_TIMEOUT,
    sys_block: str = SYS_BLOCK,
    dev: str = DEV,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, Filesystem] | None:
    """find_filesystem, again every 0.1 s until `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        found = find_filesystem(selector, sys_block, dev)
        if found is not None or time.monotonic() >= deadline:
            return found
        sleep(0.1)


def mount_oem(
    label: str, target: str = OEM_DIR, timeout: float = FIND_TIMEOUT, **where: str
) -> str | None:
    """Mount the OEM disk read-only at `target`; its device path, or None when there is none."""
    if mounted_type(target) is not None:
        return target  # already there (a second run, or the test's own mount)
    found = wait_for_filesystem(f"LABEL={label}", timeout, **where)
    if found is None:
        return None
    device, fs = found
    os.makedirs(target, mode=0o755, exist_ok=True)
    mount(device, target, fs.fstype, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    return device


# --- configured disks ------------------------------------------------------------------------


@dataclass
class DiskReport:
    """What the `disks` step made ready: mount point per selector, and per role."""

    mounted: dict[str, str] = field(default_factory=dict)  # selector -> mount point
    roles: dict[DiskRole, str] = field(default_factory=dict)  # role -> mount point
    errors: dict[str, str] = field(default_factory=dict)  # selector -> what went wrong

    def summary(self) -> str:
        parts = [f"{sel} on {path}" for sel, path in self.mounted.items()]
        parts += [f"{sel}: {why}" for sel, why in self.errors.items()]
        return "; ".join(parts) or "no disks configured"


def find_device(
    selector: str, timeout: float = FIND_TIMEOUT, sys_block: str = SYS_BLOCK, dev: str = DEV
) -> tuple[str, Filesystem | None]:
    """The device for `selector`, with its filesystem (None: blank, may be formatted).

    A blank device is only found by its name under /dev (`LABEL=`/`UUID=` need a filesystem),
    so an unformatted disk is looked for as the device the selector's label names, e.g.
    `LABEL=vdb` when nothing carries that label yet; formatting labels it `vdb`, and the
    next boot finds it by that label.
    """
    found = wait_for_filesystem(selector, timeout, sys_block, dev)
    if found is not None:
        return found
    kind, _, value = selector.partition("=")
    path = os.path.join(dev, value)
    if kind == "LABEL" and os.path.exists(os.path.join(sys_block, value)):
        head = read_head(path)
        if head is not None and is_blank(head):
            return path, None
    raise DiskError(f"no disk with {selector}")


def make_filesystem(device: str, selector: str, disk: Disk) -> Filesystem:
    """mkfs.<fs> on a blank device, labelled or with the UUID the selector asks for."""
    fstype = disk.fs.value
    tool = shutil.which(f"mkfs.{fstype}")
    if tool is None:
        raise DiskError(f"{device} is blank and mkfs.{fstype} is not in this initrd")
    kind, _, value = selector.partition("=")
    argv = [tool]
    if kind == "UUID":
        if fstype not in ("ext4", "btrfs"):
            raise DiskError(f"cannot give a {fstype} filesystem the UUID {value}")
        argv += ["-U", value]
    else:  # labelled, so the next boot finds it by its label
        argv += ["-n" if fstype == "vfat" else "-L", value]
    if fstype in ("ext4", "xfs", "btrfs"):
        argv.append("-q")
    result = subprocess.run(
        [*argv, device], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        raise DiskError(f"{' '.join(argv)} {device} failed: {result.stderr.strip()[-300:]}")
    return Filesystem(fstype, value if kind == "LABEL" else "", value if kind == "UUID" else "")


def prepare_disk(
    selector: str, disk: Disk, timeout: float = FIND_TIMEOUT, **where: str
) -> str | None:
    """Find, format if asked and blank, mount; the mount point (None: not to be mounted)."""
    device, fs = find_device(selector, timeout, **where)
    if fs is None:
        if not disk.format:
            raise DiskError(f"{device} has no filesystem and format is not set")
        fs = make_filesystem(device, selector, disk)
    if disk.mount is None:
        return None
    if mounted_type(disk.mount) is None:
        os.makedirs(disk.mount, mode=0o755, exist_ok=True)
        # no nosuid/nodev: pods' trees live here, and the console's login is setuid
        mount(device, disk.mount, fs.fstype)
    return disk.mount


def prepare_disks(config: BootConfig, timeout: float = FIND_TIMEOUT, **where: str) -> DiskReport:
    """Every configured disk; a disk that fails is reported and the others still go on."""
    report = DiskReport()
    for selector, disk in config.disks.items():
        try:
            path = prepare_disk(selector, disk, timeout, **where)
        except (DiskError, OSError) as e:
            report.errors[selector] = str(e)
            log.error("disk %s: %s", selector, e)
            continue
        if path is None:
            continue
        report.mounted[selector] = path
        for role in disk.holds:
            if role is not DiskRole.OEM:
                report.roles[role] = path
    return report
