"""build_aci: reproducible archives that unpack back to the same tree."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from kurma.aci import Compression, build_aci, image_id_of, unpack_aci
from tests.archives import MANIFEST

MTIME = 1_500_000_000


def make_tree(root: Path) -> Path:
    """A small rootfs with every kind of entry an image carries."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "usr/bin/tool", 0o4755)
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-alias")
    (root / "etc/hostname").write_text("kurma\n")
    os.setxattr(root / "etc/hostname", "user.kurma", b"\x00\xffbinary")
    (root / "big").write_bytes(os.urandom(300_000))
    (root / "empty").touch()
    os.symlink("usr/bin", root / "bin")
    os.symlink("/nonexistent/abs", root / "dangling")
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    (root / "ü-ñame").write_text("utf8")
    return root


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything build and unpack must preserve, per path (dirs' mtimes included)."""
    result: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + ([""] if dirpath == str(root) else []):
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                extra: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                extra = None
            xattrs = () if stat.S_ISLNK(st.st_mode) else user_xattrs(path)
            rel = os.path.relpath(path, root)
            result[rel] = (st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime), st.st_nlink,
                           extra, xattrs)  # fmt: skip
    return result


def user_xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    names = sorted(n for n in os.listxattr(path) if n.startswith("user."))
    return tuple((n, os.getxattr(path, n)) for n in names)


@pytest.mark.parametrize("kind", list(Compression))
def test_two_builds_are_byte_identical(tmp_path: Path, kind: Compression) -> None:
    """Same tree and manifest -> same bytes and the same image ID, for every compression."""
    tree = make_tree(tmp_path / "tree")
    id1 = build_aci(tree, MANIFEST, tmp_path / "a.aci", compression=kind)
    id2 = build_aci(tree, MANIFEST, tmp_path / "b.aci", compression=kind)
    assert id1 == id2
    assert (tmp_path / "a.aci").read_bytes() == (tmp_path / "b.aci").read_bytes()
    assert image_id_of(tmp_path / "a.aci") == id1


def test_overrides_make_copies_with_new_times_identical(tmp_path: Path) -> None:
    """With mtime and owner given, a copy of the tree with fresh timestamps builds the same."""
    tree = make_tree(tmp_path / "tree")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(tree), str(copy)], check=True)
    os.utime(copy / "etc/hostname", (1, 1))
    kw = {"mtime": MTIME, "owner": (0, 0)}
    a = build_aci(tree, MANIFEST, tmp_path / "a.aci", **kw)  # type: ignore[arg-type]
    b = build_aci(copy, MANIFEST, tmp_path / "b.aci", **kw)  # type: ignore[arg-type]
    assert a == b
    assert (tmp_path / "a.aci").read_bytes() == (tmp_path / "b.aci").read_bytes()


def test_built_archive_layout(tmp_path: Path) -> None:
    """manifest first, then rootfs, entries sorted; numeric owners only; hardlinks kept."""
    tree = make_tree(tmp_path / "tree")
    build_aci(tree, MANIFEST, tmp_path / "a.aci", mtime=MTIME, owner=(7, 8))
    with tarfile.open(tmp_path / "a.aci") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["manifest", "rootfs"]
    assert names[2:] == ["rootfs/" + n for n in depth_first_sorted(tree)]
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert all((m.uid, m.gid, m.mtime) == (7, 8, MTIME) for m in members)
    alias = next(m for m in members if m.name == "rootfs/usr/bin/tool-alias")
    assert alias.islnk() and alias.linkname == "rootfs/usr/bin/tool"


def depth_first_sorted(root: Path, rel: str = "") -> list[str]:
    """Expected entry order: each directory's names by byte value, children after parent."""
    out: list[str] = []
    for name in sorted(os.listdir(root / rel), key=os.fsencode):
        path = f"{rel}/{name}" if rel else name
        out.append(path)
        if (root / path).is_dir() and not (root / path).is_symlink():
            out.extend(depth_first_sorted(root, path))
    return out


def test_build_then_unpack_gives_the_same_tree(tmp_path: Path) -> None:
    """A built ACI unpacks to a tree equal to its source: modes, owners, times, xattrs."""
    tree = make_tree(tmp_path / "tree")
    os.utime(tree / "etc", (MTIME, MTIME))
    os.utime(tree, (MTIME, MTIME))
    image_id = build_aci(tree, MANIFEST, tmp_path / "a.aci")
    result = unpack_aci(tmp_path / "a.aci", tmp_path / "out")
    assert result.image_id == image_id
    assert result.manifest_bytes == MANIFEST
    assert snapshot(tmp_path / "out" / "rootfs") == snapshot(tree)


def test_build_writes_atomically_and_cleans_up_on_error(tmp_path: Path) -> None:
    """A failed build leaves no temp file and no output; a good one leaves only `out`."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(FileNotFoundError):
        build_aci(tmp_path / "missing", MANIFEST, out_dir / "a.aci")
    assert os.listdir(out_dir) == []
    build_aci(make_tree(tmp_path / "tree"), MANIFEST, out_dir / "a.aci")
    assert os.listdir(out_dir) == ["a.aci"]
