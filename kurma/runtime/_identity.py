"""The uid, gid and supplementary gids an app runs as, resolved against its image (appc spec).

`user` and `group` are, in this order of preference: a name in the image's /etc/passwd or
/etc/group, a decimal number, or an absolute path meaning the owner (uid or gid) of that file
in the image. Files are read from the rendered tree with symlinks resolved inside the tree,
so an image's `/etc/passwd -> /etc/shadow-of-the-host` reads nothing of the host's.

The parsers are pure; `resolve_identity` opens at most the two files plus one per `/path`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..aci import App
from ..errors import ValidationError
from ._inroot import open_in_root

_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to setresuid, never a real id
_MAX_DB_BYTES = 4 << 20


@dataclass(frozen=True)
class Identity:
    """Who an app runs as: setresgid(gid), setgroups(groups), setresuid(uid)."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def parse_passwd(text: str) -> dict[str, int]:
    """User names to uids from passwd(5) text; malformed lines are skipped, first entry wins."""
    return _parse_db(text, min_fields=3)


def parse_group(text: str) -> dict[str, int]:
    """Group names to gids from group(5) text; malformed lines are skipped, first entry wins."""
    return _parse_db(text, min_fields=3)


def _parse_db(text: str, min_fields: int) -> dict[str, int]:
    ids: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < min_fields or not fields[0] or fields[0].startswith(("#", "+", "-")):
            continue
        number = _number(fields[2])
        if number is not None:
            ids.setdefault(fields[0], number)
    return ids


def _number(value: str) -> int | None:
    """A decimal id in range, or None."""
    if not value.isdigit() or not value.isascii():
        return None
    number = int(value)
    return number if number <= _MAX_ID else None


def resolve_identity(tree: str, app_name: str, app: App) -> Identity:
    """Resolve `app.user`, `app.group` and `app.supplementaryGIDs` against the rendered tree.

    Raises ValidationError naming the app and the field when a value matches nothing.
    """
    treefd = os.open(tree, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        uid = _resolve(treefd, app_name, "user", app.user, "etc/passwd", parse_passwd, 0)
        gid = _resolve(treefd, app_name, "group", app.group, "etc/group", parse_group, 1)
    finally:
        os.close(treefd)
    return Identity(uid, gid, tuple(dict.fromkeys(app.supplementary_gids)))


def _resolve(
    treefd: int,
    app_name: str,
    field: str,
    value: str,
    db_path: str,
    parse: Callable[[str], dict[str, int]],
    owner_index: int,
) -> int:
    """One of user/group: a name in the image's database, else a number, else a path's owner."""
    where = f"app {app_name!r} {field}"
    if value.startswith("/"):
        return _owner(treefd, value, owner_index, where)
    text = _read_in_tree(treefd, db_path, where)
    if text is not None:
        found = parse(text).get(value)
        if found is not None:
            return found
    number = _number(value)
    if number is not None:
        return number
    if text is None:
        raise ValidationError(where, f"{value!r} is not a number and the image has no /{db_path}")
    raise ValidationError(where, f"{value!r} is not a number and not in the image's /{db_path}")


def _owner(treefd: int, path: str, index: int, where: str) -> int:
    """The uid (index 0) or gid (index 1) owning `path` inside the tree."""
    try:
        fd = open_in_root(treefd, path)
    except OSError as e:
        raise ValidationError(where, f"cannot use the owner of {path!r}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return st.st_gid if index else st.st_uid


def _read_in_tree(treefd: int, path: str, where: str) -> str | None:
    """A small text file of the tree, symlinks resolved inside it; None if it is missing."""
    try:
        fd = open_in_root(treefd, path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            data = os.read(fd, _MAX_DB_BYTES)
        finally:
            os.close(fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:  # a symlink loop, a directory or a FIFO where the file belongs
        raise ValidationError(where, f"cannot read the image's /{path}: {e.strerror}") from e
    return data.decode("utf-8", errors="replace")
