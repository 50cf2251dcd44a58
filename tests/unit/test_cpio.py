"""The initramfs writer (build/vm/cpio.py): newc entries, same input same bytes, and
identical files stored once as hard links, the way the kernel's unpacker links them."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "build"))

from vm import cpio  # noqa: E402  (build/vm/cpio.py)


def read_newc(data: bytes) -> list[dict]:
    """A minimal newc reader: every entry's header fields, name and data, in order."""
    entries, pos = [], 0
    names = ("ino", "mode", "uid", "gid", "nlink", "mtime", "size", "dmaj", "dmin",
             "rdevmaj", "rdevmin", "namesize", "check")  # fmt: skip
    while True:
        assert data[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = {n: int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i, n in enumerate(names)}
        pos += 110
        name = data[pos : pos + fields["namesize"] - 1].decode()
        pos += fields["namesize"]
        pos += -pos % 4
        body = data[pos : pos + fields["size"]]
        pos += fields["size"]
        pos += -pos % 4
        if name == "TRAILER!!!":
            return entries
        entries.append({**fields, "name": name, "data": body})


def test_identical_files_become_one_inode_with_the_data_once(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "b").mkdir()
    (tree / "a/lib.so").write_bytes(b"x" * 1000)
    (tree / "b/lib.so").write_bytes(b"x" * 1000)  # same content, mode, owner: one inode
    (tree / "b/other").write_bytes(b"x" * 1000)
    os.chmod(tree / "b/other", 0o755)  # same content, other mode: a file of its own
    os.symlink("../a/lib.so", tree / "b/link")
    a = cpio.Archive()
    assert a.add_tree("root", tree) == 6
    entries = {e["name"]: e for e in read_newc(a.to_bytes())}
    first, second = entries["root/a/lib.so"], entries["root/b/lib.so"]
    other = entries["root/b/other"]
    assert first["ino"] == second["ino"] != other["ino"]
    assert first["nlink"] == second["nlink"] == 2 and other["nlink"] == 1
    assert (first["data"], second["size"]) == (b"x" * 1000, 0)  # the data once, with the first
    assert other["data"] == b"x" * 1000 and stat.S_IMODE(other["mode"]) == 0o755
    assert stat.S_ISLNK(entries["root/b/link"]["mode"])
    assert entries["root/b/link"]["data"] == b"../a/lib.so"
    assert all(e["mtime"] == 0 for e in entries.values())
    assert stat.S_ISDIR(entries["root/a"]["mode"]) and entries["root/a"]["nlink"] == 2


def test_same_entries_same_bytes(tmp_path: Path) -> None:
    """Reproducible: nothing of the build machine's clock or inode numbers gets in."""

    def build() -> bytes:
        a = cpio.Archive()
        a.add_device("dev/console", "c", 5, 1, 0o600)
        a.add_file("init", b"#!/bin/sh\n", 0o755)
        a.add_file("etc/x", b"y")
        return a.to_bytes()

    first = build()
    assert first == build()
    assert len(first) % 512 == 0
    console = next(e for e in read_newc(first) if e["name"] == "dev/console")
    assert stat.S_ISCHR(console["mode"]) and (console["rdevmaj"], console["rdevmin"]) == (5, 1)
