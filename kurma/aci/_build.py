"""Reproducible building of an ACI from a rootfs directory and manifest bytes.

Same input, same bytes: entries are written in sorted order (`manifest`, `rootfs`, then a
depth-first walk sorted by name), in PAX format with numeric owners only (user and group
names differ between hosts), hardlinks are detected in that same order, and the gzip
header carries mtime 0 and no file name. `mtime` and `owner` override every entry's, so
a tree copied with new timestamps still builds the same image. The image ID is hashed
while writing; `out` appears only complete, by rename.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from ..atomic import open_atomic
from ._compression import Compression, compressed_writer
from ._ids import image_id_from_digest


class _HashingWriter:
    """A write-only file that hashes what passes through it on the way to `sink`."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.digest = hashlib.sha512()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self._sink.write(data)
        return len(data)


def walk_sorted(root: str, rel: str = "") -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(relative path, entry) for everything under `root`, depth-first, sorted by name.

    Symlinks are listed, never followed.
    """
    with os.scandir(os.path.join(root, rel) if rel else root) as it:
        children = sorted(it, key=lambda e: os.fsencode(e.name))
    for child in children:
        path = f"{rel}/{child.name}" if rel else child.name
        yield path, child
        if child.is_dir(follow_symlinks=False):
            yield from walk_sorted(root, path)


class _Builder:
    """Adds entries to a PAX tar with the overrides applied."""

    def __init__(self, tar: tarfile.TarFile, mtime: int | None, owner: tuple[int, int] | None):
        self._tar = tar
        self._mtime = mtime
        self._owner = owner

    def _normalise(self, info: tarfile.TarInfo, st_mtime: float) -> tarfile.TarInfo:
        info.mtime = self._mtime if self._mtime is not None else int(st_mtime)
        if self._owner is not None:
            info.uid, info.gid = self._owner
        info.uname = info.gname = ""
        return info

    def add_manifest(self, data: bytes, default_mtime: float) -> None:
        info = tarfile.TarInfo("manifest")
        info.size, info.mode = len(data), 0o644
        info.uid = info.gid = 0
        self._tar.addfile(self._normalise(info, default_mtime), _BytesReader(data))

    def add_path(self, path: str, arcname: str) -> None:
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode):
            return  # sockets cannot be archived; a live socket belongs to no image
        info = self._normalise(self._tar.gettarinfo(path, arcname), st.st_mtime)
        for key, value in _xattrs(path, st):
            info.pax_headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
        if info.isreg():
            with open(path, "rb") as f:
                self._tar.addfile(info, f)
        else:
            self._tar.addfile(info)


class _BytesReader:
    """Just enough of a file for tarfile.addfile."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, n: int = -1) -> bytes:
        n = len(self._data) if n < 0 else n
        chunk, self._data = self._data[:n], self._data[n:]
        return bytes(chunk)


def _xattrs(path: str, st: os.stat_result) -> list[tuple[str, bytes]]:
    if stat.S_ISLNK(st.st_mode):
        return []  # the unpacker cannot set xattrs on symlinks, so they are not packed
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    return [(n, os.getxattr(path, n, follow_symlinks=False)) for n in sorted(names)]


def build_aci(
    rootfs: os.PathLike[str] | str,
    manifest_bytes: bytes,
    out: os.PathLike[str] | str,
    *,
    compression: Compression = Compression.GZIP,
    mtime: int | None = None,
    owner: tuple[int, int] | None = None,
) -> str:
    """Write an ACI of `rootfs` with `manifest_bytes` to `out`; return its image ID.

    Without `mtime`, entries keep their own mtimes and the manifest takes the rootfs's.
    """
    rootfs, out = os.fspath(rootfs), os.fspath(out)
    root_st = os.stat(rootfs)
    if not stat.S_ISDIR(root_st.st_mode):
        raise NotADirectoryError(f"rootfs {rootfs!r} is not a directory")
    with open_atomic(out) as raw:
        digest = _write_archive(raw, rootfs, manifest_bytes, compression, mtime, owner)
    return image_id_from_digest(digest)


def _write_archive(
    raw: BinaryIO,
    rootfs: str,
    manifest_bytes: bytes,
    compression: Compression,
    mtime: int | None,
    owner: tuple[int, int] | None,
) -> str:
    compressed = compressed_writer(raw, compression)
    hashing = _HashingWriter(compressed)
    with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        builder = _Builder(tar, mtime, owner)
        builder.add_manifest(manifest_bytes, os.stat(rootfs).st_mtime)
        builder.add_path(rootfs, "rootfs")
        for rel, _entry in walk_sorted(rootfs):
            builder.add_path(os.path.join(rootfs, rel), "rootfs/" + rel)
    compressed.close()
    return hashing.digest.hexdigest()
