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
    out = Path(path)
    with open(out, "wb") as f:
        _write_gzip_bomb(f, head.getvalue(), zero_bytes)
    return out


def zero_bomb_layer(zero_bytes: int) -> bytes:
    """A gzip OCI layer blob: one file `zero` of `zero_bytes` (a multiple of 1 MiB) zeros;
    4 GiB of them take about 4 MB. (Its diff_id is left to the caller: a bomb is meant to
    be stopped long before its end, where the diff_id would be checked.)"""
    assert zero_bytes % MiB == 0
    out = io.BytesIO()
    _write_gzip_bomb(out, _tar_header("zero", zero_bytes), zero_bytes)
    return out.getvalue()


def _write_gzip_bomb(f: io.RawIOBase | io.BufferedIOBase | object, prefix: bytes,
                     zero_bytes: int) -> None:  # fmt: skip
    """gzip of `prefix`, `zero_bytes` zeros, and a tar's end blocks, written to `f`."""
    tail = bytes(1024 + (-(len(prefix) + zero_bytes + 1024) % 10240))  # end blocks, record
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(_ZEROS) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    write = f.write  # type: ignore[attr-defined]
    write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # gzip, no name, no mtime
    write(first)
    write(block)  # the first MiB's compressed form, as compressed above
    crc = zlib.crc32(_ZEROS, crc)
    for _ in range(zero_bytes // MiB - 1):
        write(block)
        crc = zlib.crc32(_ZEROS, crc)
    write(compressor.compress(tail) + compressor.flush(zlib.Z_FINISH))
    crc = zlib.crc32(tail, crc)
    total = len(prefix) + zero_bytes + len(tail)
    write(struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF))
