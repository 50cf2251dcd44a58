"""mountinfo parsing, the system mount list, and enabling cgroup controllers (on plain files)."""

from __future__ import annotations

from pathlib import Path

from kurma.init._mounts import (
    SYSTEM_MOUNTS,
    enable_controllers,
    mounted_type,
    on_initramfs,
    parse_mountinfo,
)

MOUNTINFO = r"""1 1 0:2 / / rw - rootfs rootfs rw
20 1 0:20 / /proc rw,nosuid - proc proc rw
21 1 0:21 / /mnt/with\040space rw - tmpfs none rw
30 1 0:2 / / rw - rootfs rootfs rw
"""


def test_mountinfo_fields_and_escapes() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert [(e.mount_id, e.parent_id, e.mountpoint, e.fstype) for e in entries] == [
        (1, 1, "/", "rootfs"),
        (20, 1, "/proc", "proc"),
        (21, 1, "/mnt/with space", "tmpfs"),
        (30, 1, "/", "rootfs"),
    ]
    assert entries[2].source == "none"


def test_the_topmost_mount_decides_the_type() -> None:
    entries = parse_mountinfo(MOUNTINFO + "31 30 0:40 / /proc rw - tmpfs tmpfs rw\n")
    assert mounted_type("/proc", entries) == "tmpfs"
    assert mounted_type("/sys", entries) is None


def test_system_mounts_cover_the_design() -> None:
    """DESIGN.md: /dev, /proc, /sys, /run, /tmp, cgroup2; the required ones are not optional."""
    required = {m.target: m.fstype for m in SYSTEM_MOUNTS if not m.optional}
    assert required == {
        "/proc": "proc",
        "/sys": "sysfs",
        "/dev": "devtmpfs",
        "/dev/pts": "devpts",
        "/dev/shm": "tmpfs",
        "/run": "tmpfs",
        "/tmp": "tmpfs",
        "/sys/fs/cgroup": "cgroup2",
    }
    targets = [m.target for m in SYSTEM_MOUNTS]
    assert targets.index("/dev") < targets.index("/dev/pts")
    assert targets.index("/sys") < targets.index("/sys/fs/cgroup")


def test_every_available_controller_is_enabled(tmp_path: Path) -> None:
    """One `+name` write per controller of cgroup.controllers (plain files stand in here)."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    control = tmp_path / "cgroup.subtree_control"
    control.write_text("")
    assert enable_controllers(str(tmp_path)) == ["cpuset", "cpu", "io", "memory", "pids"]
    assert control.read_text() == "+pids", "each write replaces a plain file; the kernel adds"


def test_on_initramfs_only_before_the_root_was_left() -> None:
    """The kernel's rootfs is its own parent; once /init (or kurma-init) has bound it onto
    itself, / is a rootfs bind whose parent is hidden: nothing left to leave."""
    first = "1 1 0:2 / / rw - rootfs rootfs rw\n"
    left = "25 1 0:2 / / rw - rootfs rootfs rw\n26 25 0:5 / /dev rw - devtmpfs devtmpfs rw\n"
    disk = "30 20 8:1 / / rw - ext4 /dev/sda1 rw\n"
    assert on_initramfs(parse_mountinfo(first))
    assert not on_initramfs(parse_mountinfo(left))
    assert not on_initramfs(parse_mountinfo(disk))
