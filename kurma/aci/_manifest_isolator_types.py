"""The standard appc isolator types (ace.md, Linux / Resource / Unix Isolators) and their rules.

Where the spec text is silent, the reference implementation's rules are kept (cpu-shares in
2..262144, oom-score-adj in -1000..1000, a non-empty capabilities set, a SELinux context with
all four parts); where the spec says more (a retain set excludes the remove set, quantities are
amounts so never negative), the spec wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import ValidationError
from ._isolators import Isolator
from ._manifest_json import JSON, FrozenMap, Node, check_int, check_str, join, type_name
from ._manifest_quantity import Quantity

CAPABILITIES: tuple[str, ...] = tuple(
    "CAP_" + c
    for c in [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ]
)
"""Every Linux capability name; a name's index is its capability number."""

DEFAULT_CAPABILITIES: tuple[str, ...] = tuple(
    "CAP_" + c
    for c in [
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "KILL",
        "MKNOD",
        "NET_RAW",
        "NET_BIND_SERVICE",
        "SETUID",
        "SETGID",
        "SETPCAP",
        "SETFCAP",
        "SYS_CHROOT",
    ]
)
"""The bounding set of an app with no capabilities isolator (ace.md, capabilities-remove-set)."""

_SYSCALL = re.compile(r"[a-z_][a-z0-9_]*|@[a-z0-9][a-z0-9._~-]*(?:/[A-Za-z0-9._~-]+)+")
_ERRNO = re.compile(r"E[A-Z0-9]*")
_SYSCTL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*")


def _request_limit(node: Node) -> tuple[Quantity | None, Quantity | None]:
    request, limit = node.raw("request"), node.raw("limit")
    return (
        None if request is None else Quantity.parse(request, node.at("request")),
        None if limit is None else Quantity.parse(limit, node.at("limit")),
    )


@dataclass(frozen=True)
class _RequestLimit(Isolator):
    """resource/cpu and resource/memory: `request` (defaults to `limit`) and `limit`."""

    request: Quantity | None = None
    limit: Quantity | None = None

    @classmethod
    def from_value(cls, value: JSON, path: str) -> _RequestLimit:
        node = Node.of(value, path)
        request, limit = _request_limit(node)
        # A request is a guaranteed minimum, a limit the maximum: one above the other is a
        # contradiction no executor can honour.
        if request is not None and limit is not None and request.amount > limit.amount:
            raise ValidationError(
                node.at("request"), f"request {request} is greater than limit {limit}"
            )
        return cls(request, limit)

    @property
    def effective_request(self) -> Quantity | None:
        """The request, defaulting to the limit (ace.md, Resource Isolators)."""
        return self.request if self.request is not None else self.limit

    def value_json(self) -> JSON:
        out: dict[str, JSON] = {}
        if self.request is not None:
            out["request"] = self.request.to_json()
        if self.limit is not None:
            out["limit"] = self.limit.to_json()
        return out


@dataclass(frozen=True)
class CPUIsolator(_RequestLimit):
    """resource/cpu: cores requested and the throttling limit ("250m", "1")."""

    name: ClassVar[str] = "resource/cpu"


@dataclass(frozen=True)
class MemoryIsolator(_RequestLimit):
    """resource/memory: bytes requested and the out-of-memory limit ("1G", "128Mi")."""

    name: ClassVar[str] = "resource/memory"


@dataclass(frozen=True)
class _DefaultLimit(Isolator):
    """Bandwidth-like resources: `default` must be true, `limit` per second, no `request`."""

    limit: Quantity | None = None

    @classmethod
    def from_value(cls, value: JSON, path: str) -> _DefaultLimit:
        node = Node.of(value, path)
        if node.flag("default") is not True:
            raise ValidationError(node.at("default"), "must be set to true")
        request, limit = _request_limit(node)
        if request is not None:
            raise ValidationError(node.at("request"), f"is not a parameter of {cls.name}")
        return cls(limit)

    def value_json(self) -> JSON:
        out: dict[str, JSON] = {"default": True}
        if self.limit is not None:
            out["limit"] = self.limit.to_json()
        return out


@dataclass(frozen=True)
class BlockBandwidthIsolator(_DefaultLimit):
    """resource/block-bandwidth: read/write bytes per second on every block device."""

    name: ClassVar[str] = "resource/block-bandwidth"


@dataclass(frozen=True)
class BlockIOPSIsolator(_DefaultLimit):
    """resource/block-iops: read/write operations per second on every block device."""

    name: ClassVar[str] = "resource/block-iops"


@dataclass(frozen=True)
class NetworkBandwidthIsolator(_DefaultLimit):
    """resource/network-bandwidth: bytes per second on every interface but loopback."""

    name: ClassVar[str] = "resource/network-bandwidth"


def _name_set(node: Node, key: str, pattern: re.Pattern[str] | None, what: str) -> tuple[str, ...]:
    items = node.array(key, required=True)
    if not items:
        raise ValidationError(node.at(key), "must not be empty")
    names: list[str] = []
    for path, item in items:
        name = check_str(item, path)
        known = name in CAPABILITIES if pattern is None else pattern.fullmatch(name) is not None
        if not known:
            raise ValidationError(path, f"unknown {what} {name!r}")
        if name in names:
            raise ValidationError(path, f"duplicate {what} {name!r}")
        names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class _Capabilities(Isolator):
    capabilities: tuple[str, ...] = ()

    @classmethod
    def from_value(cls, value: JSON, path: str) -> _Capabilities:
        return cls(_name_set(Node.of(value, path), "set", None, "capability"))

    def value_json(self) -> JSON:
        return {"set": list(self.capabilities)}


@dataclass(frozen=True)
class CapabilitiesRetainSet(_Capabilities):
    """os/linux/capabilities-retain-set: the bounding set is exactly these capabilities."""

    name: ClassVar[str] = "os/linux/capabilities-retain-set"
    CONFLICTS: ClassVar[tuple[str, ...]] = ("os/linux/capabilities-remove-set",)


@dataclass(frozen=True)
class CapabilitiesRemoveSet(_Capabilities):
    """os/linux/capabilities-remove-set: the default bounding set minus these."""

    name: ClassVar[str] = "os/linux/capabilities-remove-set"
    CONFLICTS: ClassVar[tuple[str, ...]] = ("os/linux/capabilities-retain-set",)


@dataclass(frozen=True)
class _Seccomp(Isolator):
    MULTIPLE: ClassVar[bool] = False
    syscalls: tuple[str, ...] = ()
    errno: str | None = None
    """Errno name blocked calls return; None (or "") means they kill the app with SIGSYS."""

    @classmethod
    def from_value(cls, value: JSON, path: str) -> _Seccomp:
        node = Node.of(value, path)
        syscalls = _name_set(node, "set", _SYSCALL, "syscall")
        errno = node.text("errno") or None
        if errno is not None and _ERRNO.fullmatch(errno) is None:
            raise ValidationError(
                node.at("errno"), f"must be an all-uppercase errno name like EPERM, got {errno!r}"
            )
        return cls(syscalls, errno)

    def value_json(self) -> JSON:
        out: dict[str, JSON] = {"set": list(self.syscalls)}
        if self.errno is not None:
            out["errno"] = self.errno
        return out


@dataclass(frozen=True)
class SeccompRetainSet(_Seccomp):
    """os/linux/seccomp-retain-set: only these syscalls (plus a minimal set) are allowed."""

    name: ClassVar[str] = "os/linux/seccomp-retain-set"
    CONFLICTS: ClassVar[tuple[str, ...]] = ("os/linux/seccomp-remove-set",)


@dataclass(frozen=True)
class SeccompRemoveSet(_Seccomp):
    """os/linux/seccomp-remove-set: these syscalls (plus a default blacklist) are blocked."""

    name: ClassVar[str] = "os/linux/seccomp-remove-set"
    CONFLICTS: ClassVar[tuple[str, ...]] = ("os/linux/seccomp-retain-set",)


@dataclass(frozen=True)
class NoNewPrivilegesIsolator(Isolator):
    """os/linux/no-new-privileges: set `no_new_privs` on the app's processes."""

    name: ClassVar[str] = "os/linux/no-new-privileges"
    enabled: bool = False

    @classmethod
    def from_value(cls, value: JSON, path: str) -> NoNewPrivilegesIsolator:
        if not isinstance(value, bool):
            raise ValidationError(path, f"must be a boolean, got {type_name(value)}")
        return cls(value)

    def value_json(self) -> JSON:
        return self.enabled


@dataclass(frozen=True)
class OOMScoreAdjIsolator(Isolator):
    """os/linux/oom-score-adj: the app's /proc/PID/oom_score_adj, -1000..1000."""

    name: ClassVar[str] = "os/linux/oom-score-adj"
    MULTIPLE: ClassVar[bool] = False
    score: int = 0

    @classmethod
    def from_value(cls, value: JSON, path: str) -> OOMScoreAdjIsolator:
        score = check_int(value, path, -1000, 1000)
        if score is None:
            raise ValidationError(path, "is required")
        return cls(score)

    def value_json(self) -> JSON:
        return self.score


@dataclass(frozen=True)
class CPUSharesIsolator(Isolator):
    """os/linux/cpu-shares: the cgroup's relative CPU weight, 2..262144 as the kernel allows."""

    name: ClassVar[str] = "os/linux/cpu-shares"
    MULTIPLE: ClassVar[bool] = False
    shares: int = 1024

    @classmethod
    def from_value(cls, value: JSON, path: str) -> CPUSharesIsolator:
        shares = check_int(value, path, 2, 262144)
        if shares is None:
            raise ValidationError(path, "is required")
        return cls(shares)

    def value_json(self) -> JSON:
        return self.shares


@dataclass(frozen=True)
class SELinuxContextIsolator(Isolator):
    """os/linux/selinux-context: label the app or pod `user:role:type:level`."""

    name: ClassVar[str] = "os/linux/selinux-context"
    MULTIPLE: ClassVar[bool] = False
    user: str = ""
    role: str = ""
    type: str = ""
    level: str = ""

    @classmethod
    def from_value(cls, value: JSON, path: str) -> SELinuxContextIsolator:
        node = Node.of(value, path)
        parts: list[str] = []
        for key in ("user", "role", "type", "level"):
            part = node.text(key, required=True) or ""
            # Only the level may hold colons (an MLS range such as s0-s0:c0.c1023).
            if not part or (key != "level" and ":" in part):
                raise ValidationError(node.at(key), f"must be non-empty without ':', got {part!r}")
            parts.append(part)
        return cls(*parts)

    def value_json(self) -> JSON:
        return {"user": self.user, "role": self.role, "type": self.type, "level": self.level}


@dataclass(frozen=True)
class SysctlIsolator(Isolator):
    """os/unix/sysctl: kernel parameters to set for the pod, name -> value."""

    name: ClassVar[str] = "os/unix/sysctl"
    MULTIPLE: ClassVar[bool] = False
    parameters: FrozenMap = field(default_factory=FrozenMap)

    @classmethod
    def from_value(cls, value: JSON, path: str) -> SysctlIsolator:
        if not isinstance(value, Mapping):
            raise ValidationError(path, f"must be an object, got {type_name(value)}")
        params: dict[str, str] = {}
        for key, item in value.items():
            at = join(path, str(key))
            if not isinstance(key, str) or _SYSCTL.fullmatch(key) is None:
                raise ValidationError(at, f"is not a sysctl parameter name: {key!r}")
            params[key] = check_str(item, at)
        return cls(FrozenMap(params))

    def value_json(self) -> JSON:
        return dict(self.parameters)


STANDARD_ISOLATORS: tuple[type[Isolator], ...] = (
    CPUIsolator,
    MemoryIsolator,
    BlockBandwidthIsolator,
    BlockIOPSIsolator,
    NetworkBandwidthIsolator,
    CapabilitiesRetainSet,
    CapabilitiesRemoveSet,
    SeccompRetainSet,
    SeccompRemoveSet,
    NoNewPrivilegesIsolator,
    OOMScoreAdjIsolator,
    CPUSharesIsolator,
    SELinuxContextIsolator,
    SysctlIsolator,
)
