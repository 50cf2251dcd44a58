"""What went wrong in one layer of the boot config: its source, the key's path, the reason.

Problems are data, not exceptions: PID 1 must boot whatever the config says, so every fault is
recorded, the faulty value is left out, and the value of the layer below stands in for it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

CMDLINE = "kernel command line"
"""The source name of the `kurma.KEY=VALUE` layer."""

DEFAULTS = "defaults"
"""The source name of the built-in defaults (only cross-key checks ever name it)."""


class ProblemKind(enum.Enum):
    """Why a value was left out; the message says what exactly."""

    UNREADABLE = "unreadable"  # the whole layer: cannot read, not YAML, not a mapping
    UNKNOWN_KEY = "unknown key"  # no such key at that place (a typo, most likely)
    BAD_VALUE = "bad value"  # wrong type or format; the lower layer's value stands
    SECRET_REFUSED = "secret refused"  # a secret in the initrd file, which every machine shares
    INCOMPLETE = "incomplete"  # after merging, an entry lacks a required key or breaks a rule


@dataclass(frozen=True)
class ConfigProblem:
    """One reported fault. `path` looks like `network.interfaces.eth0.addresses[1]`."""

    source: str
    path: str
    message: str
    kind: ProblemKind = ProblemKind.BAD_VALUE

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where}: {self.message}"


PathPart = str | int
Path = tuple[PathPart, ...]

_PLAIN_KEY = re.compile(r"[^.\[\]\"\s]+")


def format_path(path: Iterable[PathPart]) -> str:
    """`("disks", "LABEL=data", "holds", 0)` -> `disks.LABEL=data.holds[0]`.

    Keys that a dotted path cannot show (with dots, brackets, quotes or spaces) are written
    `["eth0.100"]`, the JSON-path way `kurma.errors.ValidationError` paths use.
    """
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            escaped = part.replace("\\", "\\\\").replace('"', '\\"')
            text += f'["{escaped}"]'
    return text
