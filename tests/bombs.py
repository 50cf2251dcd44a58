"""Decompression bombs for the import limits: an ACI whose rootfs holds one file of zeros,
gzip-compressed a thousand to one, written without ever holding (or compressing) the
zeros: one MiB of zeros is deflated once after a full flush (which resets the window), so
every further MiB is the same compressed bytes, repeated."""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import zlib
from pathlib import Path

MiB = 1 << 20
_ZEROS = bytes(MiB)


def _tar_header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info.tobuf(format=tarfile.GNU_FORMAT)  # GNU: sizes past 8 GiB use base-256


def zero_bomb_aci(
    path: os.PathLike[str] | str, zero_bytes: int, name: str = "example.com/bomb"
) -> Path:
    """Write a valid gzip ACI with `rootfs/zero`, `zero_bytes` (a multiple of 1 MiB) of
    zeros, to `path`; a 4 GiB one is about 4 MB."""
    assert zero_bytes % MiB == 0
    manifest = json.dumps(
        {
            "acKind": "ImageManifest",
            "acVersion": "0.8.11",
            "name": name,
            "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
        }
    ).encode()
    head = io.BytesIO()
    head.write(_tar_header("manifest", len(manifest)))
    head.write(manifest + bytes(-len(manifest) % 512))
    head.write(_tar_header("rootfs", 0, tarfile.DIRTYPE))
    head.write(_tar_header("rootfs/zero", zero_bytes))
    prefix = head.getvalue()
    tail = bytes(1024 + (-(len(prefix) + zero_bytes + 1024) % 10240))  # end blocks, record
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(_ZEROS) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    out = Path(path)
    with open(out, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # gzip, no name, no mtime
        f.write(first)
        f.write(block)  # the first MiB's compressed form, as compressed above
        crc = zlib.crc32(_ZEROS, crc)
        for _ in range(zero_bytes // MiB - 1):
            f.write(block)
            crc = zlib.crc32(_ZEROS, crc)
        f.write(compressor.compress(tail) + compressor.flush(zlib.Z_FINISH))
        crc = zlib.crc32(tail, crc)
        total = len(prefix) + zero_bytes + len(tail)
        f.write(struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF))
    return out
