"""The one thing /proc/PID/mountinfo parsers share: undoing its octal escapes.

Both PID 1 (which mounts) and the cgroup code (which finds its hierarchies) read mountinfo;
each keeps its own view of the fields, this keeps the escaping in one place.
"""

from __future__ import annotations


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
