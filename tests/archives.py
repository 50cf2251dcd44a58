"""Crafting ACIs for tests, hostile ones included: tars that try to escape their target.

`TarBuilder` writes whatever it is told (absolute names, `..`, links out, duplicates,
devices) because `tarfile` does not sanitise on write. `hostile_archives(outside)` lists
the attacks by name, each aimed at the directory `outside` that sits beside the target.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from collections.abc import Callable

import zstandard

from kurma.aci import Compression

MANIFEST = b'{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/test"}'
MTIME = 1_600_000_000


class TarBuilder:
    """An in-memory tar, one call per entry; `data()` returns the uncompressed bytes."""

    def __init__(self, fmt: int = tarfile.PAX_FORMAT) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=fmt)  # noqa: SIM115 - closed by data()

    def _add(self, info: tarfile.TarInfo, data: bytes | None = None, **meta: object) -> None:
        info.mtime = int(meta.get("mtime", MTIME))  # type: ignore[call-overload]
        info.mode = int(meta.get("mode", info.mode))  # type: ignore[call-overload]
        info.uid = int(meta.get("uid", 0))  # type: ignore[call-overload]
        info.gid = int(meta.get("gid", 0))  # type: ignore[call-overload]
        info.uname = str(meta.get("uname", ""))
        info.gname = str(meta.get("gname", ""))
        xattrs: dict[str, bytes] = meta.get("xattrs", {})  # type: ignore[assignment]
        for key, value in xattrs.items():
            info.pax_headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
        if data is not None:
            info.size = len(data)
            self._tar.addfile(info, io.BytesIO(data))
        else:
            self._tar.addfile(info)

    def manifest(self, data: bytes = MANIFEST) -> TarBuilder:
        return self.file("manifest", data)

    def file(self, name: str, data: bytes = b"", mode: int = 0o644, **meta: object) -> TarBuilder:
        self._add(tarfile.TarInfo(name), data, mode=mode, **meta)
        return self

    def dir(self, name: str, mode: int = 0o755, **meta: object) -> TarBuilder:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        self._add(info, mode=mode, **meta)
        return self

    def symlink(self, name: str, target: str, **meta: object) -> TarBuilder:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        self._add(info, mode=0o777, **meta)
        return self

    def hardlink(self, name: str, target: str) -> TarBuilder:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.LNKTYPE, target
        self._add(info, mode=0o644)
        return self

    def node(self, name: str, kind: bytes, major: int = 1, minor: int = 3) -> TarBuilder:
        """A device node or fifo: kind is tarfile.CHRTYPE, BLKTYPE or FIFOTYPE."""
        info = tarfile.TarInfo(name)
        info.type, info.devmajor, info.devminor = kind, major, minor
        self._add(info, mode=0o666)
        return self

    def base(self) -> TarBuilder:
        """The usual start: manifest and the rootfs directory."""
        return self.manifest().dir("rootfs")

    def data(self, trailer: bytes = b"") -> bytes:
        """The uncompressed archive (end-of-archive blocks included), plus `trailer`."""
        self._tar.close()
        return self._buf.getvalue() + trailer


def compress(data: bytes, kind: Compression) -> bytes:
    """`data` compressed as `kind`, with the standard libraries (independent of kurma)."""
    if kind is Compression.GZIP:
        return gzip.compress(data, mtime=0)
    if kind is Compression.BZIP2:
        return bz2.compress(data)
    if kind is Compression.XZ:
        return lzma.compress(data)
    if kind is Compression.ZSTD:
        return zstandard.ZstdCompressor().compress(data)
    return data


def hostile_archives(outside: str) -> dict[str, tuple[Callable[[], bytes], str]]:
    """name -> (archive factory, the member the error must name); `outside` is absolute."""

    def base() -> TarBuilder:
        return TarBuilder().base()

    return {
        "dotdot": (lambda: base().file("rootfs/../../outside/evil", b"x").data(),
                   "rootfs/../../outside/evil"),
        "dotdot-in-middle": (lambda: base().file("rootfs/a/../../../outside/e", b"x").data(),
                             "rootfs/a/../../../outside/e"),
        "absolute": (lambda: base().file(f"{outside}/evil", b"x").data(), f"{outside}/evil"),
        "symlink-out-then-write-through": (
            lambda: base().symlink("rootfs/link", "../../outside")
            .file("rootfs/link/evil", b"x").data(), "rootfs/link/evil"),
        "absolute-symlink-then-write-through": (
            lambda: base().symlink("rootfs/link", outside)
            .file("rootfs/link/evil", b"x").data(), "rootfs/link/evil"),
        "symlinked-dir-component-deeper": (
            lambda: base().dir("rootfs/a").symlink("rootfs/a/b", "../../../outside")
            .file("rootfs/a/b/c/evil", b"x").data(), "rootfs/a/b/c/evil"),
        "symlink-replaced-by-file": (
            lambda: base().symlink("rootfs/link", f"{outside}/secret")
            .file("rootfs/link", b"x").data(), "rootfs/link"),
        "symlink-replaced-by-dir": (
            lambda: base().symlink("rootfs/link", outside).dir("rootfs/link")
            .file("rootfs/link/evil", b"x").data(), "rootfs/link"),
        "implicit-dir-replaced-by-symlink": (
            lambda: base().file("rootfs/a/f", b"x").symlink("rootfs/a", outside)
            .file("rootfs/a/evil", b"x").data(), "rootfs/a"),
        "hardlink-outside-relative": (
            lambda: base().hardlink("rootfs/h", "../outside/secret").data(), "rootfs/h"),
        "hardlink-outside-absolute": (
            lambda: base().hardlink("rootfs/h", f"{outside}/secret").data(), "rootfs/h"),
        "hardlink-to-outward-symlink": (
            lambda: base().symlink("rootfs/s", f"{outside}/secret")
            .hardlink("rootfs/h", "rootfs/s").data(), "rootfs/h"),
        "hardlink-to-later-file": (
            lambda: base().hardlink("rootfs/h", "rootfs/f").file("rootfs/f", b"x").data(),
            "rootfs/h"),
        "hardlink-to-manifest": (lambda: base().hardlink("rootfs/h", "manifest").data(),
                                 "rootfs/h"),
        "duplicate-file": (lambda: base().file("rootfs/f", b"1").file("rootfs/f", b"2").data(),
                           "rootfs/f"),
        "duplicate-manifest": (lambda: base().manifest(b"{}").data(), "manifest"),
        "duplicate-dot-slash": (lambda: base().file("rootfs/f").file("./rootfs//f").data(),
                                "./rootfs//f"),
        "outside-rootfs": (lambda: base().file("etc/passwd", b"x").data(), "etc/passwd"),
        "rootfs-prefix-lookalike": (lambda: base().file("rootfsx/evil", b"x").data(),
                                    "rootfsx/evil"),
        "manifest-symlink": (
            lambda: TarBuilder().symlink("manifest", f"{outside}/secret").dir("rootfs").data(),
            "manifest"),
        "rootfs-symlink": (
            lambda: TarBuilder().manifest().symlink("rootfs", outside)
            .file("rootfs/evil", b"x").data(), "rootfs"),
        "manifest-too-big": (
            lambda: TarBuilder().manifest(b" " * (1024 * 1024 + 1)).dir("rootfs").data(),
            "manifest"),
    }  # fmt: skip
