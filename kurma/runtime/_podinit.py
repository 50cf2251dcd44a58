"""kurma-podinit, the C program that is PID 1 of every pod: find or build it, read what it writes.

The protocol (registration in `POD_DIR/pids/`, records in `POD_DIR/exits/`, lines on fd 3) is
described in `kurma/runtime/podinit/README.md`. The records are the truth; the fd 3 lines are
hints that may be lost when the reader is slow or gone.
"""

from __future__ import annotations

import enum
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SOURCE_DIR = Path(__file__).parent / "podinit"
BINARY = SOURCE_DIR / "kurma-podinit"
BUILD_COMMAND = f"make -C {SOURCE_DIR}"


def podinit_path() -> Path:
    """The built kurma-podinit; FileNotFoundError naming the build command if it is missing."""
    if not os.access(BINARY, os.X_OK):
        raise FileNotFoundError(
            f"kurma-podinit is not built: run `{BUILD_COMMAND}` (part of `make deps`)"
        )
    return BINARY


def build_podinit() -> Path:
    """Build kurma-podinit with its Makefile (a no-op when it is up to date); returns its path."""
    proc = subprocess.run(
        ["make", "-s", "-C", str(SOURCE_DIR)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"`{BUILD_COMMAND}` failed:\n{proc.stdout}{proc.stderr}")
    return podinit_path()


def register_app(pod_dir: Path, pid: int, name: str) -> None:
    """Register `pid` (as seen inside the pod) as app `name`.

    Must run before the process can be re-parented to podinit, i.e. in its in-pod parent
    before that parent exits. The name is for people; podinit only checks the file exists.
    """
    tmp = pod_dir / "pids" / f".{pid}.tmp"
    tmp.write_text(name + "\n")
    tmp.rename(pod_dir / "pids" / str(pid))


def read_exit_records(pod_dir: Path) -> dict[int, int]:
    """The exit codes podinit recorded, by in-pod pid: 0-255, or 128+N for signal N."""
    records: dict[int, int] = {}
    try:
        entries = list(os.scandir(pod_dir / "exits"))
    except FileNotFoundError:
        return records
    for entry in entries:
        if entry.name.isdigit():
            try:
                records[int(entry.name)] = int(Path(entry.path).read_text())
            except (FileNotFoundError, ValueError):
                continue  # consumed meanwhile, or not a record
    return records


class Event(enum.Enum):
    """What a notification line reports."""

    READY = "ready"  # podinit is up: pids/ and exits/ exist, the initial app is registered
    EXIT = "exit"  # a registered app ended; its record is already in exits/


@dataclass(frozen=True)
class Notification:
    """One line from podinit's fd 3; pid and code are set for EXIT only."""

    event: Event
    pid: int = 0
    code: int = 0


def parse_notification(line: bytes) -> Notification:
    """Parse `ready` or `exit <pid> <code>` (trailing newline optional); ValueError otherwise."""
    fields = line.rstrip(b"\n").split(b" ")
    if fields == [b"ready"]:
        return Notification(Event.READY)
    if len(fields) == 3 and fields[0] == b"exit" and fields[1].isdigit() and fields[2].isdigit():
        return Notification(Event.EXIT, int(fields[1]), int(fields[2]))
    raise ValueError(f"not a podinit notification: {line!r}")
