"""kurma.atomic, the tree's one atomic writer, and kurma.backoff, its one retry policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kurma.atomic import TEMP_PREFIX, write_atomic
from kurma.backoff import Backoff


def test_bytes_and_text_replace_the_file_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"one\n", 0o600)
    assert target.read_bytes() == b"one\n" and target.stat().st_mode & 0o7777 == 0o600
    before = target.stat().st_ino
    write_atomic(str(target), "twø\n", sync_dir=True)  # text is UTF-8; 0644 by default
    assert target.read_text("utf-8") == "twø\n" and target.stat().st_mode & 0o7777 == 0o644
    assert target.stat().st_ino != before  # a new file renamed over: readers see one or other
    assert os.listdir(tmp_path) == ["f"]  # no temporary left


def test_mode_none_keeps_the_replaced_files_mode_and_owner(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old")
    os.chmod(target, 0o640)
    if os.geteuid() == 0:
        os.chown(target, 1234, 4321)
    owner = (target.stat().st_uid, target.stat().st_gid)
    write_atomic(target, b"new", None, sync=False)
    st = target.stat()
    assert st.st_mode & 0o7777 == 0o640 and (st.st_uid, st.st_gid) == owner
    write_atomic(tmp_path / "fresh", b"x", None)
    assert (tmp_path / "fresh").stat().st_mode & 0o7777 == 0o644


def test_relative_to_a_directory_descriptor(tmp_path: Path) -> None:
    (tmp_path / "pids").mkdir()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_atomic("pids/42", "app\n", sync=False, dir_fd=fd)
    finally:
        os.close(fd)
    assert (tmp_path / "pids/42").read_text() == "app\n"
    assert os.listdir(tmp_path / "pids") == ["42"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(TEMP_PREFIX)]


def test_backoff_grows_caps_and_says_when_the_count_resets() -> None:
    b = Backoff(initial=1.0, maximum=8.0, factor=2.0)
    assert [b.delay(n) for n in range(7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert b.reset_after == 16.0 and Backoff(maximum=300).reset_after == 60.0
    assert Backoff(reset=5.0).reset_after == 5.0
    assert Backoff(factor=10.0).delay(10_000) == 60.0  # no float overflow


def test_create_only_keeps_what_is_there(tmp_path: Path) -> None:
    """`replace=False`: the first writer's file stays; a later one is dropped, no temporary."""
    target = tmp_path / "key"
    write_atomic(target, b"first", 0o600, replace=False)
    write_atomic(target, b"second", 0o600, replace=False)
    assert target.read_bytes() == b"first" and target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["key"]


def test_a_leftover_temporary_is_stepped_over(tmp_path: Path) -> None:
    """A crashed writer's temporary with the name this one would pick is left alone."""
    from kurma import atomic

    following = next(atomic._serial) + 1
    leftover = tmp_path / f"{TEMP_PREFIX}f.{os.getpid()}.{following}"
    leftover.write_bytes(b"stale")
    write_atomic(tmp_path / "f", b"new")
    assert (tmp_path / "f").read_bytes() == b"new" and leftover.read_bytes() == b"stale"
