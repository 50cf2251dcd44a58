"""Linux primitives Python 3.11 lacks: namespaces, mounts, pivot_root, prctl, capabilities, seccomp.

The lowest layer of the runtime: ctypes over libc (and pyseccomp over libseccomp), no policy.
Every failing call raises `OSError(errno, "<what> failed: <strerror>", target)`.

The capability and seccomp names load on first use (PEP 562 `__getattr__`): PID 1 mounts
and reboots with this package but never drops a capability or builds a filter, and their
imports (pyseccomp, ctypes.util's subprocess and shutil) are a tenth of its start.
"""

import importlib as _importlib

from ._prctl import ambient_clear_all as ambient_clear_all
from ._prctl import ambient_is_set as ambient_is_set
from ._prctl import ambient_raise as ambient_raise
from ._prctl import capbset_drop as capbset_drop
from ._prctl import capbset_read as capbset_read
from ._prctl import get_no_new_privs as get_no_new_privs
from ._prctl import is_child_subreaper as is_child_subreaper
from ._prctl import prctl as prctl
from ._prctl import set_child_subreaper as set_child_subreaper
from ._prctl import set_keepcaps as set_keepcaps
from ._prctl import set_no_new_privs as set_no_new_privs
from ._prctl import set_pdeathsig as set_pdeathsig
from ._syscalls import CLONE_NEWCGROUP as CLONE_NEWCGROUP
from ._syscalls import CLONE_NEWIPC as CLONE_NEWIPC
from ._syscalls import CLONE_NEWNET as CLONE_NEWNET
from ._syscalls import CLONE_NEWNS as CLONE_NEWNS
from ._syscalls import CLONE_NEWPID as CLONE_NEWPID
from ._syscalls import CLONE_NEWTIME as CLONE_NEWTIME
from ._syscalls import CLONE_NEWUSER as CLONE_NEWUSER
from ._syscalls import CLONE_NEWUTS as CLONE_NEWUTS
from ._syscalls import MNT_DETACH as MNT_DETACH
from ._syscalls import MNT_EXPIRE as MNT_EXPIRE
from ._syscalls import MNT_FORCE as MNT_FORCE
from ._syscalls import MS_BIND as MS_BIND
from ._syscalls import MS_MOVE as MS_MOVE
from ._syscalls import MS_NOATIME as MS_NOATIME
from ._syscalls import MS_NODEV as MS_NODEV
from ._syscalls import MS_NOEXEC as MS_NOEXEC
from ._syscalls import MS_NOSUID as MS_NOSUID
from ._syscalls import MS_PRIVATE as MS_PRIVATE
from ._syscalls import MS_RDONLY as MS_RDONLY
from ._syscalls import MS_REC as MS_REC
from ._syscalls import MS_RELATIME as MS_RELATIME
from ._syscalls import MS_REMOUNT as MS_REMOUNT
from ._syscalls import MS_SHARED as MS_SHARED
from ._syscalls import MS_SLAVE as MS_SLAVE
from ._syscalls import MS_STRICTATIME as MS_STRICTATIME
from ._syscalls import MS_UNBINDABLE as MS_UNBINDABLE
from ._syscalls import UMOUNT_NOFOLLOW as UMOUNT_NOFOLLOW
from ._syscalls import MountFlags as MountFlags
from ._syscalls import Namespace as Namespace
from ._syscalls import make_rprivate as make_rprivate
from ._syscalls import mount as mount
from ._syscalls import ns_path as ns_path
from ._syscalls import pivot_root as pivot_root
from ._syscalls import sethostname as sethostname
from ._syscalls import setns as setns
from ._syscalls import umount2 as umount2
from ._syscalls import unshare as unshare

_LAZY = {
    "Capability": "._caps",
    "CapSets": "._caps",
    "capget": "._caps",
    "caps_from_mask": "._caps",
    "caps_to_mask": "._caps",
    "capset": "._caps",
    "drop_capabilities": "._caps",
    "last_cap": "._caps",
    "read_status_capabilities": "._caps",
    "SeccompFilter": "._seccomp",
    "docker_default_blocked": "._seccomp",
    "load_bpf": "._seccomp",
    "resolve_syscall": "._seccomp",
}

TYPE_CHECKING = False  # (typing is not imported for this)
if TYPE_CHECKING:
    from ._caps import Capability as Capability
    from ._caps import CapSets as CapSets
    from ._caps import capget as capget
    from ._caps import caps_from_mask as caps_from_mask
    from ._caps import caps_to_mask as caps_to_mask
    from ._caps import capset as capset
    from ._caps import drop_capabilities as drop_capabilities
    from ._caps import last_cap as last_cap
    from ._caps import read_status_capabilities as read_status_capabilities
    from ._seccomp import SeccompFilter as SeccompFilter
    from ._seccomp import docker_default_blocked as docker_default_blocked
    from ._seccomp import load_bpf as load_bpf
    from ._seccomp import resolve_syscall as resolve_syscall


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value  # once: later lookups are plain
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


del TYPE_CHECKING
