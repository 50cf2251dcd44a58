"""Capabilities by name: the Capability enum, capget/capset, and dropping to a keep-set.

`drop_capabilities(keep)` is what an app process calls just before exec. It sets all five
sets so the exec'd program holds exactly `keep`, whether it runs as root or not:

- bounding: everything else dropped, so nothing outside `keep` comes back by exec,
  even for root with its all-capable file sets;
- permitted, effective, inheritable: `keep`;
- ambient: `keep`, because a non-root program without file capabilities gets its
  permitted set after exec from the ambient set alone.

Order matters: dropping the bounding set needs CAP_SETPCAP in the effective set, so it
happens before capset() gives that up. When the process also changes its uid, do that first
with `set_keepcaps(True)` (setuid then clears only the effective set, which we raise again).
"""

from __future__ import annotations

import ctypes
import enum
import errno
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from ._prctl import ambient_clear_all, ambient_raise, capbset_drop, capbset_read
from ._syscalls import _libc, check

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class Capability(enum.IntEnum):
    """Every capability of current kernels (up to 6.x), named as in <linux/capability.h>."""

    CAP_CHOWN = 0
    CAP_DAC_OVERRIDE = 1
    CAP_DAC_READ_SEARCH = 2
    CAP_FOWNER = 3
    CAP_FSETID = 4
    CAP_KILL = 5
    CAP_SETGID = 6
    CAP_SETUID = 7
    CAP_SETPCAP = 8
    CAP_LINUX_IMMUTABLE = 9
    CAP_NET_BIND_SERVICE = 10
    CAP_NET_BROADCAST = 11
    CAP_NET_ADMIN = 12
    CAP_NET_RAW = 13
    CAP_IPC_LOCK = 14
    CAP_IPC_OWNER = 15
    CAP_SYS_MODULE = 16
    CAP_SYS_RAWIO = 17
    CAP_SYS_CHROOT = 18
    CAP_SYS_PTRACE = 19
    CAP_SYS_PACCT = 20
    CAP_SYS_ADMIN = 21
    CAP_SYS_BOOT = 22
    CAP_SYS_NICE = 23
    CAP_SYS_RESOURCE = 24
    CAP_SYS_TIME = 25
    CAP_SYS_TTY_CONFIG = 26
    CAP_MKNOD = 27
    CAP_LEASE = 28
    CAP_AUDIT_WRITE = 29
    CAP_AUDIT_CONTROL = 30
    CAP_SETFCAP = 31
    CAP_MAC_OVERRIDE = 32
    CAP_MAC_ADMIN = 33
    CAP_SYSLOG = 34
    CAP_WAKE_ALARM = 35
    CAP_BLOCK_SUSPEND = 36
    CAP_AUDIT_READ = 37
    CAP_PERFMON = 38
    CAP_BPF = 39
    CAP_CHECKPOINT_RESTORE = 40

    @classmethod
    def from_name(cls, name: str) -> Capability:
        """Look up `CAP_NET_ADMIN`, `net_admin` or `NET_ADMIN`; ValueError names the bad one."""
        key = name.strip().upper()
        if not key.startswith("CAP_"):
            key = "CAP_" + key
        try:
            return cls[key]
        except KeyError:
            raise ValueError(f"unknown capability {name!r}") from None


def caps_from_mask(mask: int) -> frozenset[Capability]:
    """The capabilities whose bits are set in `mask`; bits of unknown capabilities are ignored."""
    return frozenset(c for c in Capability if mask >> c & 1)


def caps_to_mask(caps: Iterable[int]) -> int:
    """The bit mask of a set of capabilities."""
    mask = 0
    for cap in caps:
        mask |= 1 << int(cap)
    return mask


@dataclass(frozen=True)
class CapSets:
    """A thread's effective, permitted and inheritable sets, as capget(2) reports them."""

    effective: frozenset[Capability]
    permitted: frozenset[Capability]
    inheritable: frozenset[Capability]


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def capget(pid: int = 0) -> CapSets:
    """Read the capability sets of a thread (0: the caller)."""
    header = _Header(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_Data * 2)()
    check(_libc.capget(ctypes.byref(header), data), "capget", f"pid {pid}")

    def join(field: str) -> frozenset[Capability]:
        return caps_from_mask(getattr(data[0], field) | getattr(data[1], field) << 32)

    return CapSets(join("effective"), join("permitted"), join("inheritable"))


def capset(effective: Iterable[int], permitted: Iterable[int], inheritable: Iterable[int]) -> None:
    """Set the caller's effective, permitted and inheritable sets (the kernel's rules apply)."""
    masks = [caps_to_mask(s) for s in (effective, permitted, inheritable)]
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in (0, 1):
        data[i].effective, data[i].permitted, data[i].inheritable = (
            (m >> (32 * i)) & 0xFFFFFFFF for m in masks
        )
    check(_libc.capset(ctypes.byref(header), data), "capset", "self")


@functools.cache
def last_cap() -> int:
    """The highest capability number the running kernel knows (read once per process)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(Capability)


def drop_capabilities(keep: Iterable[int]) -> frozenset[Capability]:
    """Leave the caller (and what it execs) with exactly `keep`, as far as it holds them.

    Returns the capabilities kept: `keep` minus those the caller did not hold, in permitted
    and bounding sets both, to begin with (a host may withhold some: the isolator layer
    reports the difference).
    """
    wanted = frozenset(Capability(c) for c in keep)
    current = capget()
    # A capability outside the bounding set cannot be inheritable or ambient, and no exec
    # brings it back: it is as good as gone.
    held = frozenset(c for c in current.permitted & wanted if capbset_read(c))
    if Capability.CAP_SETPCAP not in current.effective:
        # After setuid() with keepcaps the effective set is empty: raise it from permitted.
        capset(current.permitted, current.permitted, current.inheritable)
    for cap in range(last_cap() + 1):
        if cap not in wanted:
            try:
                capbset_drop(cap)
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: not a capability of this kernel
                    raise
    kept = held
    capset(kept, kept, kept)
    ambient_clear_all()
    for cap in sorted(kept):
        ambient_raise(cap)
    return kept


def read_status_capabilities(pid: int | str = "self") -> dict[str, frozenset[Capability]]:
    """The CapInh/CapPrm/CapEff/CapBnd/CapAmb lines of /proc/PID/status, decoded."""
    result: dict[str, frozenset[Capability]] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                result[key] = caps_from_mask(int(value.strip(), 16))
    return result
