"""Atomic file writes: every write goes to a temporary name and is renamed into place.

A crash leaves either the old file or the new one, never a half-written one; stray
temporaries carry a recognisable prefix so that the store can sweep them on open.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..atomic import TEMP_PREFIX as TEMP_PREFIX
from ..atomic import fsync_dir as fsync_dir
from ..atomic import write_atomic as write_atomic


def make_temp_name(parent: Path, label: str) -> Path:
    """A fresh, not-yet-existing path under `parent` for staging a directory."""
    return Path(tempfile.mktemp(prefix=f"{TEMP_PREFIX}{label}-", dir=parent))
