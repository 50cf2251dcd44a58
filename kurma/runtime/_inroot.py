"""Resolve (and create) paths inside an app's rootfs as if it were `/`, never reaching the host.

An image may ship `/data -> /` or `/data -> ../../..`; a mount target looked up by name from
the host would follow that out of the rootfs and mount over the host's own directory. Every
target is therefore resolved to an O_PATH fd with chroot semantics and mounted onto that fd.

The fast path is one openat2(RESOLVE_IN_ROOT) call. Only when something is missing does a
component-by-component walk run (openat with O_NOFOLLOW, readlinkat, mkdirat), which creates
what is missing, including the target of a dangling symlink, always inside the root.
"""

from __future__ import annotations

import enum
import errno
import os
import stat

from ._mountapi import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2

_MAX_LINKS = 40  # the kernel's own limit (ELOOP)
_PATH = os.O_PATH | os.O_CLOEXEC


class Kind(enum.Enum):
    """What to create at a missing final component: a directory or an empty file."""

    DIR = "dir"
    FILE = "file"


def open_in_root(rootfd: int, path: str, flags: int = os.O_PATH) -> int:
    """Open `path` with `rootfd` as `/`: symlinks, `..` and absolute links stay inside it."""
    return openat2(rootfd, path.lstrip("/") or ".", flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)


def ensure_in_root(rootfd: int, path: str, kind: Kind, mode: int = 0o755) -> int:
    """An O_PATH fd for `path` inside the root, creating missing directories (and the file).

    The caller closes the fd. An existing final component is returned whatever its type;
    the mount that follows reports a mismatch.
    """
    try:
        return open_in_root(rootfd, path)
    except FileNotFoundError:
        return _walk(rootfd, path, kind, mode)


def _walk(rootfd: int, path: str, kind: Kind, mode: int) -> int:
    """Resolve `path` one component at a time under chroot rules, creating what is missing."""
    parts = [p for p in reversed(path.split("/")) if p]
    stack: list[int] = []  # fds of the directories walked, below the root
    links = 0
    try:
        while parts:
            name = parts.pop()
            here = stack[-1] if stack else rootfd
            if name == ".":
                continue
            if name == "..":
                if stack:
                    os.close(stack.pop())
                continue
            fd = _open_or_create(here, name, kind if not parts else Kind.DIR, mode, path)
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                target = os.readlink(name, dir_fd=here)
                os.close(fd)
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                if target.startswith("/"):
                    while stack:
                        os.close(stack.pop())
                parts.extend(p for p in reversed(target.split("/")) if p)
                continue
            if parts and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise NotADirectoryError(errno.ENOTDIR, "not a directory in the rootfs", path)
            stack.append(fd)
        return stack.pop() if stack else os.open(".", _PATH | os.O_DIRECTORY, dir_fd=rootfd)
    finally:
        for fd in stack:
            os.close(fd)


def _open_or_create(dirfd: int, name: str, kind: Kind, mode: int, path: str) -> int:
    """Open one component without following it; create it as `kind` if it does not exist."""
    try:
        return os.open(name, _PATH | os.O_NOFOLLOW, dir_fd=dirfd)
    except FileNotFoundError:
        pass
    try:
        if kind is Kind.DIR:
            os.mkdir(name, mode, dir_fd=dirfd)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(name, flags, mode & 0o666, dir_fd=dirfd))
    except FileExistsError:
        pass  # created meanwhile (another app of the pod on a shared volume): use it
    except OSError as e:
        raise OSError(e.errno, f"cannot create {name!r} in the rootfs: {e.strerror}", path) from e
    return os.open(name, _PATH | os.O_NOFOLLOW, dir_fd=dirfd)
