"""Finding a disk by its filesystem label or UUID, in pure Python (no blkid in the initrd).

The superblock formats read here, as far as a label and a UUID go:
- ext2/3/4: superblock at byte 1024; magic 0xEF53 (le16) at +56, UUID at +104 (16 bytes),
  volume name at +120 (16 bytes, NUL padded).
- vfat: boot sector; 0x55AA at 510; FAT32 when the 16-bit sectors-per-FAT (0x16) is 0, then
  the extended boot signature 0x29 at 0x42, serial at 0x43, label at 0x47; FAT12/16 have them
  at 0x26, 0x27, 0x2B. `NO NAME` means no label. The UUID is the serial as `XXXX-XXXX`.
- iso9660: primary volume descriptor at 0x8000 (`\\x01CD001`), volume id at 0x8028 (32 bytes).
- xfs: `XFSB` at 0, UUID at 0x20, label at 0x6C (12 bytes); btrfs: `_BHRfS_M` at 0x10040,
  UUID at 0x10020, label at 0x1012B (256 bytes). Known so that `format` never wipes them.

A device is blank (`format` may make a filesystem on it) only when every probed byte is zero:
that also keeps partition tables and filesystems not known here safe.

Devices are the entries of /sys/class/block (whole disks and partitions alike), read through
/dev/NAME; both directories are parameters so tests can use image files.
"""

from __future__ import annotations

import logging
import os
import struct
import uuid
from dataclasses import dataclass

log = logging.getLogger(__name__)

SYS_BLOCK = "/sys/class/block"
DEV = "/dev"
_PROBE_BYTES = 0x10200  # up to the btrfs superblock's label


@dataclass(frozen=True)
class Filesystem:
    """What a device's superblock says: type, label ('' if none) and UUID ('' if none)."""

    fstype: str
    label: str
    uuid: str


def probe(head: bytes) -> Filesystem | None:
    """The filesystem whose superblock starts `head` (a device's first bytes), or None."""
    return _ext(head) or _xfs(head) or _btrfs(head) or _iso9660(head) or _vfat(head)


def is_blank(head: bytes) -> bool:
    """No data at all where any filesystem or partition table would start."""
    return not head.strip(b"\0")


def _xfs(head: bytes) -> Filesystem | None:
    if head[0:4] != b"XFSB" or len(head) < 0x78:
        return None
    label = head[0x6C:0x78].split(b"\0", 1)[0].decode("utf-8", "replace")
    return Filesystem("xfs", label, str(uuid.UUID(bytes=head[0x20:0x30])))


def _btrfs(head: bytes) -> Filesystem | None:
    sb = head[0x10000:0x10200]
    if len(sb) < 0x22B or sb[0x40:0x48] != b"_BHRfS_M":
        return None
    label = sb[0x12B:0x22B].split(b"\0", 1)[0].decode("utf-8", "replace")
    return Filesystem("btrfs", label, str(uuid.UUID(bytes=sb[0x20:0x30])))


def _ext(head: bytes) -> Filesystem | None:
    sb = head[1024:2048]
    if len(sb) < 136 or struct.unpack_from("<H", sb, 56)[0] != 0xEF53:
        return None
    label = sb[120:136].split(b"\0", 1)[0].decode("utf-8", "replace")
    return Filesystem("ext4", label, str(uuid.UUID(bytes=sb[104:120])))


def _iso9660(head: bytes) -> Filesystem | None:
    pvd = head[0x8000:0x8800]
    if len(pvd) < 0x48 or pvd[0:6] != b"\x01CD001":
        return None
    return Filesystem("iso9660", pvd[0x28:0x48].decode("ascii", "replace").rstrip(" \0"), "")


def _vfat(head: bytes) -> Filesystem | None:
    if len(head) < 512 or head[510:512] != b"\x55\xaa" or head[0] not in (0xEB, 0xE9):
        return None
    bytes_per_sector = struct.unpack_from("<H", head, 0x0B)[0]
    if bytes_per_sector not in (512, 1024, 2048, 4096) or head[0x0D] == 0:
        return None  # an MBR or some other boot sector, not a FAT one
    fat32 = struct.unpack_from("<H", head, 0x16)[0] == 0
    sig, serial_at, label_at = (0x42, 0x43, 0x47) if fat32 else (0x26, 0x27, 0x2B)
    if head[sig] != 0x29:
        return Filesystem("vfat", "", "")
    label = head[label_at : label_at + 11].decode("ascii", "replace").rstrip(" \0")
    serial = struct.unpack_from("<I", head, serial_at)[0]
    return Filesystem(
        "vfat", "" if label == "NO NAME" else label, f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"
    )


def read_head(path: str) -> bytes | None:
    """The first bytes of a device (or image file), as many as probing needs; None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        log.debug("cannot open %s: %s", path, e)
        return None
    try:
        return os.pread(fd, _PROBE_BYTES, 0)
    except OSError as e:
        log.debug("cannot read %s: %s", path, e)
        return None
    finally:
        os.close(fd)


def probe_device(path: str) -> Filesystem | None:
    """The filesystem on the device (or image file) at `path`; None when unreadable or unknown."""
    head = read_head(path)
    return None if head is None else probe(head)


def matches(fs: Filesystem, selector: str) -> bool:
    """`LABEL=name` or `UUID=id` (the config's normalised form) against a probed filesystem."""
    kind, _, value = selector.partition("=")
    if kind == "UUID":
        return bool(fs.uuid) and fs.uuid.lower() == value.lower()
    if kind == "LABEL":
        # FAT labels are upper case on disk, whatever was asked for when it was made
        return fs.label == value or (fs.fstype == "vfat" and fs.label == value.upper())
    raise ValueError(f"disk selector must be LABEL=<label> or UUID=<uuid>, got {selector!r}")


def block_devices(sys_block: str = SYS_BLOCK, dev: str = DEV) -> list[str]:
    """Paths of the block devices that have data (size > 0), partitions after their disk."""
    try:
        names = sorted(os.listdir(sys_block))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        try:
            with open(os.path.join(sys_block, name, "size")) as f:
                if int(f.read().strip() or 0) == 0:
                    continue
        except (OSError, ValueError):
            pass  # no size file: try the device all the same
        found.append(os.path.join(dev, name))
    return found


def find_filesystem(
    selector: str, sys_block: str = SYS_BLOCK, dev: str = DEV
) -> tuple[str, Filesystem] | None:
    """The first device whose filesystem matches `selector`, with what it holds; or None."""
    for path in block_devices(sys_block, dev):
        fs = probe_device(path)
        if fs is not None and matches(fs, selector):
            return path, fs
    return None
