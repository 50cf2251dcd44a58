"""Configured disks on image files: found, formatted only when blank, roles recorded."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kurma.init._blockdev import probe_device
from kurma.init._disks import OEM_LABEL, DiskError, oem_label, prepare_disk, prepare_disks
from kurma.init.config import BootConfig, Disk, DiskRole, FsType

needs_mkfs_ext4 = pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="no mkfs.ext4")


def test_the_oem_label_comes_from_the_command_line() -> None:
    """`kurma.oem=LABEL` picks the label and is taken out of what the config reads."""
    assert oem_label("console=ttyS0 quiet") == (OEM_LABEL, "console=ttyS0 quiet")
    label, rest = oem_label('quiet kurma.oem=MY-OEM kurma.hostname=x "kurma.oem=OTHER"')
    assert label == "OTHER"
    assert rest.split() == ["quiet", "kurma.hostname=x"]
    assert oem_label("kurma.oemx=1")[1] == "kurma.oemx=1"


def disks(tmp_path: Path, **sizes: int) -> dict[str, str]:
    """Blank image files as block devices: name -> size in MiB."""
    sys_block, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    for name, size in sizes.items():
        (sys_block / name).mkdir(parents=True)
        (sys_block / name / "size").write_text(f"{size << 11}\n")
        with open(dev / name, "wb") as f:
            f.truncate(size << 20)
    return {"sys_block": str(sys_block), "dev": str(dev)}


@needs_mkfs_ext4
def test_a_blank_disk_is_formatted_and_labelled_when_asked(tmp_path: Path) -> None:
    """LABEL=vdb names a blank device; formatting labels it, so the next boot finds it so."""
    where = disks(tmp_path, vdb=8)
    assert prepare_disk("LABEL=vdb", Disk(format=True), 0, **where) is None  # mount: null
    fs = probe_device(f"{where['dev']}/vdb")
    assert fs is not None and (fs.fstype, fs.label) == ("ext4", "vdb")


def test_a_blank_disk_is_left_alone_unless_format_is_set(tmp_path: Path) -> None:
    where = disks(tmp_path, vdb=8)
    with pytest.raises(DiskError, match="vdb has no filesystem and format is not set"):
        prepare_disk("LABEL=vdb", Disk(), 0, **where)


def test_format_never_touches_data(tmp_path: Path) -> None:
    """A disk with bytes on it (here a partition table) is not blank: not found, not wiped."""
    where = disks(tmp_path, vdb=8)
    with open(f"{where['dev']}/vdb", "r+b") as f:
        f.seek(510)
        f.write(b"\x55\xaa")
    with pytest.raises(DiskError, match="no disk with LABEL=vdb"):
        prepare_disk("LABEL=vdb", Disk(format=True), 0, **where)


def test_a_missing_mkfs_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An initrd without e2fsprogs: the disk fails with a message, nothing else happens."""
    where = disks(tmp_path, vdb=8)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DiskError, match=r"mkfs\.ext4 is not in this initrd"):
        prepare_disk("LABEL=vdb", Disk(format=True, fs=FsType.EXT4), 0, **where)


def test_every_disk_is_tried_and_failures_reported(tmp_path: Path) -> None:
    """One disk missing does not stop the others; roles point at mount points."""
    where = disks(tmp_path)
    config = BootConfig(
        disks={
            "LABEL=gone": Disk(mount="/var/lib/kurma", holds=(DiskRole.IMAGES,)),
            "UUID=0b7f2e36-3b8e-4b0b-9d2f-0d7d8a9b1c2d": Disk(),
        }
    )
    report = prepare_disks(config, 0, **where)
    assert report.mounted == {} and report.roles == {}
    assert set(report.errors) == {"LABEL=gone", "UUID=0b7f2e36-3b8e-4b0b-9d2f-0d7d8a9b1c2d"}
    assert "LABEL=gone: no disk with LABEL=gone" in report.summary()


@needs_mkfs_ext4
def test_an_existing_filesystem_is_found_by_uuid(tmp_path: Path) -> None:
    uuid = "0b7f2e36-3b8e-4b0b-9d2f-0d7d8a9b1c2d"
    where = disks(tmp_path, vdc=8)
    subprocess.run(["mkfs.ext4", "-q", "-U", uuid, f"{where['dev']}/vdc"], check=True)
    assert prepare_disk(f"UUID={uuid}", Disk(), 0, **where) is None
