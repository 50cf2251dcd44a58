"""Atomic file writes: every write goes to a temporary name and is renamed into place.

A crash leaves either the old file or the new one, never a half-written one; stray
temporaries carry a recognisable prefix so that the store can sweep them on open.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def make_temp_name(parent: Path, label: str) -> Path:
    """A fresh, not-yet-existing path under `parent` for staging a directory."""
    return Path(tempfile.mktemp(prefix=f"{TEMP_PREFIX}{label}-", dir=parent))


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
