"""unpack_aci keeps what a legitimate image says about its files (needs root for owners,
trusted.* xattrs and file capabilities) and never creates device nodes or fifos."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from kurma.aci import unpack_aci
from tests.archives import TarBuilder

pytestmark = pytest.mark.root

T1, T2, T3 = 1_234_567_890, 1_111_111_111, 1_333_333_333
# A file capability blob (VFS_CAP_REVISION_2, cap_net_raw permitted+effective).
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")


def unpack(tmp_path: Path, builder: TarBuilder) -> tuple[Path, object]:
    (tmp_path / "img.aci").write_bytes(builder.data())
    result = unpack_aci(tmp_path / "img.aci", tmp_path / "dest")
    return tmp_path / "dest" / "rootfs", result


def test_modes_owners_and_special_bits(tmp_path: Path) -> None:
    """setuid, setgid, sticky and plain modes survive; owners are the tar's numbers, not
    the names (uname 'root' with uid 1234 gives uid 1234)."""
    root, _ = unpack(tmp_path, TarBuilder().base()
        .file("rootfs/suid", b"x", mode=0o4755, uid=1234, gid=5678, uname="root", gname="root")
        .file("rootfs/sgid", b"x", mode=0o2711, uid=1, gid=2)
        .dir("rootfs/tmp", mode=0o1777)
        .dir("rootfs/private", mode=0o700, uid=999, gid=999)
        .file("rootfs/private/f", b"x", mode=0o400, uid=999, gid=999)
        .symlink("rootfs/lnk", "suid", uid=42, gid=43))  # fmt: skip
    checks = {
        "suid": (0o4755, 1234, 5678),
        "sgid": (0o2711, 1, 2),
        "tmp": (0o1777, 0, 0),
        "private": (0o700, 999, 999),
        "private/f": (0o400, 999, 999),
    }
    for rel, (mode, uid, gid) in checks.items():
        st = os.lstat(root / rel)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid), rel
    st = os.lstat(root / "lnk")
    assert stat.S_ISLNK(st.st_mode) and (st.st_uid, st.st_gid) == (42, 43)


def test_mtimes_of_files_dirs_and_symlinks(tmp_path: Path) -> None:
    """Directory mtimes are set after their children are written, so they stick."""
    root, _ = unpack(tmp_path, TarBuilder().manifest()
        .dir("rootfs", mtime=T3)
        .dir("rootfs/d", mtime=T1)
        .file("rootfs/d/f", b"x", mtime=T2)
        .symlink("rootfs/d/l", "f", mtime=T3))  # fmt: skip
    assert os.lstat(root / "d").st_mtime == T1
    assert os.lstat(root / "d/f").st_mtime == T2
    assert os.lstat(root / "d/l").st_mtime == T3
    assert os.lstat(root).st_mtime == T3


def test_pax_mtime_with_nanoseconds(tmp_path: Path) -> None:
    b = TarBuilder()
    b.manifest().dir("rootfs")
    info = tarfile.TarInfo("rootfs/precise")
    info.pax_headers["mtime"] = "1234567890.123456789"
    b._tar.addfile(info)
    root, _ = unpack(tmp_path, b)
    assert os.lstat(root / "precise").st_mtime_ns == 1_234_567_890_123_456_789


def test_xattrs_and_file_capabilities(tmp_path: Path) -> None:
    """SCHILY.xattr.* records become xattrs: user.*, trusted.*, security.capability (set
    after chown, which would clear it) and binary values."""
    root, result = unpack(tmp_path, TarBuilder().base()
        .file("rootfs/ping", b"x", mode=0o755, uid=0, gid=0,
              xattrs={"security.capability": CAP_NET_RAW, "user.bin": b"\x00\xff\x80"})
        .dir("rootfs/d", xattrs={"trusted.kurma": b"dir-value"}))  # fmt: skip
    assert os.getxattr(root / "ping", "security.capability") == CAP_NET_RAW
    assert os.getxattr(root / "ping", "user.bin") == b"\x00\xff\x80"
    assert os.getxattr(root / "d", "trusted.kurma") == b"dir-value"
    assert result.skipped == ()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "label"),
    [(tarfile.CHRTYPE, "character device"), (tarfile.BLKTYPE, "block device"),
     (tarfile.FIFOTYPE, "fifo")],
)  # fmt: skip
def test_device_nodes_and_fifos_are_skipped(tmp_path: Path, kind: bytes, label: str) -> None:
    """An image cannot hand a pod a device: the node is not created, and is reported."""
    root, result = unpack(
        tmp_path,
        TarBuilder()
        .base()
        .dir("rootfs/dev")
        .node("rootfs/dev/node", kind, 8, 0)
        .file("rootfs/after", b"ok"),
    )
    assert not os.path.lexists(root / "dev" / "node")
    assert (root / "after").read_bytes() == b"ok"
    skipped = result.skipped  # type: ignore[attr-defined]
    assert len(skipped) == 1 and "rootfs/dev/node" in skipped[0] and label in skipped[0]


def test_read_only_directory_gets_its_children(tmp_path: Path) -> None:
    """A 0555 directory is made read-only only after its children exist."""
    root, _ = unpack(
        tmp_path, TarBuilder().base().dir("rootfs/ro", mode=0o555).file("rootfs/ro/f", b"x")
    )
    assert stat.S_IMODE(os.lstat(root / "ro").st_mode) == 0o555
    assert (root / "ro" / "f").read_bytes() == b"x"
