"""Atomic file writes: the one implementation for the whole tree.

A write goes to a temporary name in the same directory (so the rename cannot cross a
filesystem), is fsynced, and renamed over the target: a reader sees the old file or the new
one, never half of one. A crash can leave a temporary behind; they all start with
`TEMP_PREFIX`, so an owner of a directory can sweep them (the image store does on open).

Callers differ in what they need, so these are choices, not copies:
- `sync=False` skips the file's fsync (a file in tmpfs, or rewritten many times a second,
  where losing it in a power cut is harmless);
- `sync_dir=True` fsyncs the directory too, so the rename itself survives a power cut;
- `mode` is set before the rename (0644 by default; None keeps the replaced file's mode and
  owner, for editing someone else's file in place); `owner` = (uid, gid) chowns it;
- `dir_fd` makes `path` relative to an open directory (a caller in another mount namespace);
- `replace=False` only creates: the finished file is linked into place, and if `path`
  exists already it stays (whoever links first wins: a key made once, by racing callers);
- `open_atomic` is the same for a writer that streams (an archive) instead of handing bytes.

Pure stdlib: every layer imports it (PID 1, the runtime, the store, kurmad, build scripts).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from typing import BinaryIO

TEMP_PREFIX = ".tmp-"
_serial = itertools.count()  # with the pid, a temporary name no other writer uses now


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | str,
    mode: int | None = 0o644,
    *,
    sync: bool = True,
    sync_dir: bool = False,
    owner: tuple[int, int] | None = None,
    dir_fd: int | None = None,
    replace: bool = True,
) -> None:
    """Replace `path` with `data` (text is written as UTF-8) atomically (module docstring)."""
    payload = data.encode() if isinstance(data, str) else data
    with open_atomic(
        path, mode, sync=sync, sync_dir=sync_dir, owner=owner, dir_fd=dir_fd, replace=replace
    ) as f:
        f.write(payload)


@contextlib.contextmanager
def open_atomic(
    path: str | os.PathLike[str],
    mode: int | None = 0o644,
    *,
    sync: bool = True,
    sync_dir: bool = False,
    owner: tuple[int, int] | None = None,
    dir_fd: int | None = None,
    replace: bool = True,
) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content into (a writer that streams: an
    archive); it replaces `path` when the block ends, and is removed if the block raises."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    if mode is None:
        mode, keep = _existing(path, dir_fd)
        owner = owner or keep
    tmp, fd = _create_temporary(directory, name, dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(fd, mode)  # not the umask's say: what the caller asked for
            if owner is not None:
                os.fchown(fd, *owner)
            if sync:
                os.fsync(fd)
        if replace:
            os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.unlink(tmp, dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    if sync_dir:
        fsync_dir(directory or ".", dir_fd=dir_fd)


def _create_temporary(directory: str, name: str, dir_fd: int | None) -> tuple[str, int]:
    """A new file beside the target, 0600 until the writer is done, and its name.

    The name is the pid and a counter, not random bytes (an app's registration runs in a
    pod's process that may have neither getrandom(2) nor /dev/urandom); O_EXCL makes it
    ours alone, past a crashed writer's leftover or a namesake in another pid namespace."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(100):
        tmp = os.path.join(directory, f"{TEMP_PREFIX}{name}.{os.getpid()}.{next(_serial)}")
        try:
            return tmp, os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {os.path.join(directory, name)}")


def fsync_dir(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> None:
    """Make a rename (or a new entry) inside the directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _existing(path: str, dir_fd: int | None) -> tuple[int, tuple[int, int] | None]:
    """The mode and owner of the file being replaced; 0644 and None for a new one."""
    try:
        st = os.stat(path, dir_fd=dir_fd)
    except FileNotFoundError:
        return 0o644, None
    return st.st_mode & 0o7777, (st.st_uid, st.st_gid)
