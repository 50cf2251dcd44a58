"""A deterministic cpio "newc" writer for initramfs images, in Python (no cpio(1), no mknod).

Entries carry fixed inode numbers, mtime 0 and the modes given, so the same entries give the
same bytes. Device nodes are plain header entries: nothing is created on the host. Regular
files with the same content, mode and owner become hard links of one inode whose data is
stored once (the kernel's unpacker links them), so a tree that holds the same files twice
(the initrd's Python and the `python` image layer in its store) costs them once.

    a = Archive()
    a.add_dir("dev")
    a.add_device("dev/console", "c", 5, 1, 0o600)
    a.add_file("init", b"#!/bin/busybox sh\\n...", 0o755)
    data = a.to_bytes()               # the uncompressed archive
    write_gzip(Path("initrd.gz"), data)  # gzip with mtime 0 and no file name
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

S_IFMT = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}


@dataclass
class Entry:
    name: str
    mode: int  # file type bits included
    data: bytes = b""
    uid: int = 0
    gid: int = 0
    rdev: tuple[int, int] = (0, 0)


class Archive:
    """Entries in the order added; parents are added first on demand (mode 0755)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    @staticmethod
    def _norm(name: str) -> str:
        name = os.path.normpath("/" + str(name)).lstrip("/")
        if not name or name == ".":
            raise ValueError("empty path")
        return name

    def _parents(self, name: str) -> None:
        parent = os.path.dirname(name)
        if parent and parent not in self.entries:
            self.add_dir(parent)

    def _add(self, entry: Entry) -> None:
        self._parents(entry.name)
        self.entries[entry.name] = entry  # a later entry of the same name replaces it

    def add_dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        name = self._norm(name)
        self._add(Entry(name, stat.S_IFDIR | mode, uid=uid, gid=gid))

    def add_file(
        self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        name = self._norm(name)
        self._add(Entry(name, stat.S_IFREG | mode, bytes(data), uid, gid))

    def add_path(self, name: str, source: Path | str, mode: int | None = None) -> None:
        """A regular file copied from the host (its permission bits unless `mode` is given)."""
        st = os.stat(source)
        self.add_file(
            name, Path(source).read_bytes(), stat.S_IMODE(st.st_mode) if mode is None else mode
        )

    def add_tree(self, prefix: str, root: Path | str) -> int:
        """Everything under `root` (sorted; modes, owners, symlinks kept) under `prefix`;
        returns the number of entries. Only directories, regular files and symlinks."""
        root = Path(root)
        count = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            here = Path(dirpath)
            for name in sorted([*dirnames, *filenames]):
                path = here / name
                rel = f"{prefix}/{path.relative_to(root).as_posix()}"
                st = os.lstat(path)
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    self.add_symlink(rel, os.readlink(path))
                elif stat.S_ISDIR(st.st_mode):
                    self.add_dir(rel, mode, st.st_uid, st.st_gid)
                elif stat.S_ISREG(st.st_mode):
                    self.add_file(rel, path.read_bytes(), mode, st.st_uid, st.st_gid)
                else:
                    raise ValueError(f"{path}: not a directory, file or symlink")
                count += 1
        return count

    def add_symlink(self, name: str, target: str) -> None:
        name = self._norm(name)
        self._add(Entry(name, stat.S_IFLNK | 0o777, target.encode()))

    def add_device(self, name: str, kind: str, major: int, minor: int, mode: int = 0o600) -> None:
        name = self._norm(name)
        self._add(Entry(name, S_IFMT[kind] | mode, rdev=(major, minor)))

    def _links(self) -> dict[str, tuple[int, int, bool]]:
        """name -> (inode, link count, carries the data) for every entry."""
        first: dict[tuple, str] = {}
        groups: dict[str, list[str]] = {}
        for e in self.entries.values():
            if stat.S_ISREG(e.mode) and e.data:
                key = (hashlib.sha256(e.data).digest(), len(e.data), e.mode, e.uid, e.gid)
                owner = first.setdefault(key, e.name)
                groups.setdefault(owner, []).append(e.name)
        links: dict[str, tuple[int, int, bool]] = {}
        for ino, name in enumerate(self.entries, start=1):
            if name in links:
                continue
            members = groups.get(name, [name])
            for i, member in enumerate(members):
                links[member] = (ino, len(members), i == 0)
        return links

    def to_bytes(self) -> bytes:
        out = bytearray()
        links = self._links()
        for e in [*self.entries.values(), None]:
            if e is None:
                e, ino, nlink, data = Entry("TRAILER!!!", 0), 0, 1, b""
            else:
                ino, nlink, carries = links[e.name]
                data = e.data if carries else b""
                if stat.S_ISDIR(e.mode):
                    nlink = 2
            name = e.name.encode() + b"\0"
            fields = (
                ino, e.mode, e.uid, e.gid, nlink,
                0,  # mtime
                len(data), 0, 0, e.rdev[0], e.rdev[1], len(name), 0,
            )  # fmt: skip
            out += b"070701" + b"".join(b"%08X" % f for f in fields) + name
            out += b"\0" * (-len(out) % 4)
            out += data
            out += b"\0" * (-len(out) % 4)
        out += b"\0" * (-len(out) % 512)
        return bytes(out)


def write_gzip(path: Path | str, data: bytes, level: int = 9) -> None:
    """gzip without a name or a timestamp in its header (same input, same bytes)."""
    from kurma.atomic import open_atomic  # the repository is importable wherever this runs

    with (
        open_atomic(path, sync=False) as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0) as gz,
    ):
        gz.write(data)
