"""/proc/<pid>/stat, as PID 1 reads it (no psutil in PID 1)."""

from __future__ import annotations


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat from the 3rd (state) on, after "pid (comm) ", whose
    comm may hold spaces and parentheses; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()
