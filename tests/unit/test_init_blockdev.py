"""Finding disks by label or UUID from their superblocks, on real filesystem images."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from kurma.init._blockdev import Filesystem, find_filesystem, is_blank, matches, probe, probe_device

needs_mkfs_ext4 = pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="no mkfs.ext4")
needs_mkfs_vfat = pytest.mark.skipif(shutil.which("mkfs.vfat") is None, reason="no dosfstools")


def image(path: Path, size_mb: int, *mkfs: str) -> Path:
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    if mkfs:
        subprocess.run([*mkfs, str(path)], check=True, capture_output=True)
    return path


def fake_disks(tmp_path: Path, **images: Path) -> tuple[str, str]:
    """A /sys/class/block and a /dev with one entry per image (name -> image file)."""
    sys_block, dev = tmp_path / "sys", tmp_path / "dev"
    for name, img in images.items():
        (sys_block / name).mkdir(parents=True)
        (sys_block / name / "size").write_text(f"{img.stat().st_size // 512}\n")
        dev.mkdir(exist_ok=True)
        (dev / name).symlink_to(img)
    return str(sys_block), str(dev)


@needs_mkfs_ext4
def test_ext4_label_and_uuid_are_read_from_the_superblock(tmp_path: Path) -> None:
    """What `mkfs.ext4 -L -U` wrote is what the probe reads, as blkid would show it."""
    given = str(uuid.uuid4())
    img = image(tmp_path / "a.img", 8, "mkfs.ext4", "-q", "-L", "KURMA-OEM", "-U", given)
    fs = probe_device(str(img))
    assert fs is not None
    assert (fs.fstype, fs.label, fs.uuid) == ("ext4", "KURMA-OEM", given)
    assert matches(fs, "LABEL=KURMA-OEM") and matches(fs, f"UUID={given.upper()}")
    assert not matches(fs, "LABEL=kurma-oem")


@needs_mkfs_vfat
@pytest.mark.parametrize(("fat", "size_mb"), [("16", 20), ("32", 40)])
def test_vfat_label_and_serial(tmp_path: Path, fat: str, size_mb: int) -> None:
    """FAT16 and FAT32 keep the label at different offsets; the serial is the UUID."""
    img = image(tmp_path / "v.img", size_mb, "mkfs.vfat", "-F", fat, "-n", "OEM", "-i", "1234ABCD")
    fs = probe_device(str(img))
    assert fs is not None
    assert (fs.fstype, fs.label, fs.uuid) == ("vfat", "OEM", "1234-ABCD")
    assert matches(fs, "LABEL=oem"), "FAT labels are upper case on disk"
    assert matches(fs, "UUID=1234-abcd")


def test_zeroes_are_blank_and_no_filesystem() -> None:
    """A new disk: nothing found, and blank, so `format` may use it."""
    head = bytes(0x10200)
    assert probe(head) is None and is_blank(head)
    assert not is_blank(head[:-1] + b"\x01")


def test_a_partition_table_is_not_blank() -> None:
    """An MBR is no filesystem, but it is data: never formatted over."""
    head = bytearray(0x10200)
    head[510:512] = b"\x55\xaa"
    assert probe(bytes(head)) is None and not is_blank(bytes(head))


def test_bad_selector_is_named() -> None:
    with pytest.raises(ValueError, match="PARTLABEL=x"):
        matches(Filesystem("ext4", "x", ""), "PARTLABEL=x")


@needs_mkfs_ext4
def test_find_filesystem_scans_block_devices_in_order(tmp_path: Path) -> None:
    """The device whose filesystem matches; empty devices (size 0) are not read."""
    blank = image(tmp_path / "blank.img", 1)
    data = image(tmp_path / "data.img", 8, "mkfs.ext4", "-q", "-L", "data")
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    sys_block, dev = fake_disks(tmp_path, vda=blank, vdb=data, vdc=empty)
    found = find_filesystem("LABEL=data", sys_block, dev)
    assert found is not None and found[0] == f"{dev}/vdb" and found[1].label == "data"
    assert find_filesystem("LABEL=other", sys_block, dev) is None
