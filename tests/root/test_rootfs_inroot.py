"""Resolving mount targets inside a rootfs with chroot semantics (no mounts; no root needed)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kurma.runtime._inroot import Kind, ensure_in_root, open_in_root


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    base = tmp_path / "root"
    base.mkdir()
    fd = os.open(base, os.O_PATH | os.O_DIRECTORY)
    try:
        yield base, fd
    finally:
        os.close(fd)


def where(fd: int) -> str:
    """The real path an O_PATH fd refers to."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


@pytest.mark.parametrize("link", ["/", "..", "../../../..", "/../.."])
def test_links_out_of_the_root_resolve_inside(root: tuple[Path, int], link: str) -> None:
    base, fd = root
    (base / "x").symlink_to(link)
    assert where(ensure_in_root(fd, "/x/made/here", Kind.DIR)) == str(base / "made" / "here")
    assert not (base.parent / "made").exists()


def test_dangling_link_target_is_created_inside(root: tuple[Path, int]) -> None:
    base, fd = root
    (base / "etc").mkdir()
    (base / "etc" / "resolv.conf").symlink_to("../run/resolv.conf")
    assert where(ensure_in_root(fd, "/etc/resolv.conf", Kind.FILE)) == str(base / "run/resolv.conf")
    assert (base / "run" / "resolv.conf").is_file()


def test_existing_paths_take_the_fast_path(root: tuple[Path, int]) -> None:
    base, fd = root
    (base / "a" / "b").mkdir(parents=True)
    assert where(ensure_in_root(fd, "a/b", Kind.DIR)) == str(base / "a" / "b")
    assert where(ensure_in_root(fd, "/", Kind.DIR)) == str(base)


def test_symlink_loops_fail_with_eloop(root: tuple[Path, int]) -> None:
    base, fd = root
    (base / "loop").symlink_to("loop")
    with pytest.raises(OSError) as info:
        ensure_in_root(fd, "/loop/x", Kind.DIR)
    assert info.value.errno == 40


def test_a_file_in_the_middle_is_not_a_directory(root: tuple[Path, int]) -> None:
    base, fd = root
    (base / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        ensure_in_root(fd, "/f/x", Kind.DIR)


def test_open_in_root_reads_through_links_inside(root: tuple[Path, int]) -> None:
    base, fd = root
    (base / "data").write_text("inside")
    (base / "abs").symlink_to("/data")
    file_fd = open_in_root(fd, "/abs", os.O_RDONLY)
    try:
        assert os.read(file_fd, 100) == b"inside"
    finally:
        os.close(file_fd)
