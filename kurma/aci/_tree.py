"""Creating files under a directory without ever following a symlink.

Strategy: every path is resolved one component at a time with `openat(O_NOFOLLOW |
O_DIRECTORY)` from a directory fd, so a symlink (or a file) where a directory is expected
fails with ELOOP/ENOTDIR instead of being followed; and every creation is exclusive
(`O_CREAT|O_EXCL`, `mkdirat`, `symlinkat`, `linkat` without AT_SYMLINK_FOLLOW), so nothing
that exists is ever replaced or written through. Because nothing is replaced, a directory fd
stays valid for its path for the whole unpack, so resolved directories are cached (LRU,
bounded to keep far below the fd limit) and most entries cost one `openat` of their own.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict

from kurma.errors import ArchiveError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
IMPLICIT_DIR_MODE = 0o755
# Directories are created owner-only and get their real mode at the end of the unpack,
# so a read-only directory in the image cannot block writing its children.
NEW_DIR_MODE = 0o700


def path_error(exc: OSError, member: str) -> ArchiveError | None:
    """An ArchiveError when `exc` means the archive tried something unsafe or conflicting."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return ArchiveError("path goes through a symlink or a non-directory", member)
    if exc.errno == errno.EEXIST:
        return ArchiveError("entry conflicts with an existing entry", member)
    if exc.errno == errno.ENAMETOOLONG:
        return ArchiveError("path name too long", member)
    return None


class SafeTree:
    """Directory fds under one root, resolved without following symlinks."""

    def __init__(self, root_fd: int, max_open: int = 256) -> None:
        self._root = root_fd
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._max_open = max_open
        self.implicit: set[str] = set()  # created only to hold children; no entry yet

    def dir_fd(self, rel: str) -> int:
        """An fd of directory `rel` ("" is the root), creating missing ones as 0755.

        The fd belongs to the cache: use it before the next call, or `os.dup` it.
        """
        if not rel:
            return self._root
        fd = self._cache.get(rel)
        if fd is not None:
            self._cache.move_to_end(rel)
            return fd
        # Walk up to the nearest cached ancestor, then open downwards from there.
        missing = [rel]
        parent = rel.rpartition("/")[0]
        while parent and parent not in self._cache:
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        fd = self._cache[parent] if parent else self._root
        for path in reversed(missing):
            fd = self._open_child(fd, path)
        return fd

    def _open_child(self, parent_fd: int, path: str) -> int:
        name = path.rpartition("/")[2]
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            os.mkdir(name, IMPLICIT_DIR_MODE, dir_fd=parent_fd)
            self.implicit.add(path)
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        self._remember(path, fd)
        return fd

    def _remember(self, path: str, fd: int) -> None:
        self._cache[path] = fd
        if len(self._cache) > self._max_open:
            _, old = self._cache.popitem(last=False)
            os.close(old)

    def make_dir(self, rel: str) -> None:
        """Create directory `rel` for an explicit entry; claims an implicit one."""
        if not rel:
            return
        parent, _, name = rel.rpartition("/")
        pfd = self.dir_fd(parent)
        try:
            os.mkdir(name, NEW_DIR_MODE, dir_fd=pfd)
        except FileExistsError:
            if rel not in self.implicit:
                raise
            self.implicit.discard(rel)

    def close(self) -> None:
        """Close every fd, the root's included (the tree owns it)."""
        while self._cache:
            os.close(self._cache.popitem()[1])
        os.close(self._root)
