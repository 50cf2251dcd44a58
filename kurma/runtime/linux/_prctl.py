"""prctl(2) helpers: subreaper, no_new_privs, parent-death signal, keepcaps, bounding, ambient.

Each helper names one option so call sites read as what they do; the raw `prctl()` stays
available for the rare option without one.
"""

from __future__ import annotations

import ctypes

from ._syscalls import _libc, check

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

_OPTION_NAMES = {
    PR_SET_PDEATHSIG: "PR_SET_PDEATHSIG",
    PR_SET_KEEPCAPS: "PR_SET_KEEPCAPS",
    PR_CAPBSET_READ: "PR_CAPBSET_READ",
    PR_CAPBSET_DROP: "PR_CAPBSET_DROP",
    PR_SET_CHILD_SUBREAPER: "PR_SET_CHILD_SUBREAPER",
    PR_SET_NO_NEW_PRIVS: "PR_SET_NO_NEW_PRIVS",
    PR_CAP_AMBIENT: "PR_CAP_AMBIENT",
}


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Raw prctl(2); raises OSError naming the option, returns the call's result."""
    args = (ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5))
    result = _libc.prctl(ctypes.c_int(option), *args)
    return check(result, "prctl", _OPTION_NAMES.get(option, str(option)))


def set_child_subreaper(enabled: bool = True) -> None:
    """Orphaned descendants are re-parented to us instead of PID 1, so we can reap them."""
    prctl(PR_SET_CHILD_SUBREAPER, int(enabled))


def is_child_subreaper() -> bool:
    """Whether the caller is a child subreaper."""
    value = ctypes.c_int(0)
    check(
        _libc.prctl(ctypes.c_int(PR_GET_CHILD_SUBREAPER), ctypes.byref(value)),
        "prctl",
        "PR_GET_CHILD_SUBREAPER",
    )
    return bool(value.value)


def set_no_new_privs() -> None:
    """No exec from here on can gain privileges (setuid bits, file caps). Irreversible."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def get_no_new_privs() -> bool:
    """Whether no_new_privs is set on the caller."""
    return bool(prctl(PR_GET_NO_NEW_PRIVS))


def set_pdeathsig(signum: int) -> None:
    """Get `signum` when the parent thread dies (0 clears it). Cleared again by fork."""
    prctl(PR_SET_PDEATHSIG, signum)


def set_keepcaps(enabled: bool) -> None:
    """Keep the permitted set across a setuid() away from root (effective is still cleared)."""
    prctl(PR_SET_KEEPCAPS, int(enabled))


def capbset_read(cap: int) -> bool:
    """Whether `cap` is in the caller's bounding set."""
    return bool(prctl(PR_CAPBSET_READ, cap))


def capbset_drop(cap: int) -> None:
    """Remove `cap` from the bounding set; needs CAP_SETPCAP in the effective set."""
    prctl(PR_CAPBSET_DROP, cap)


def ambient_raise(cap: int) -> None:
    """Add `cap` to the ambient set; it must be in both permitted and inheritable."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def ambient_clear_all() -> None:
    """Empty the ambient set."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def ambient_is_set(cap: int) -> bool:
    """Whether `cap` is in the ambient set."""
    return bool(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap))
