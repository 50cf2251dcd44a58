"""Isolators (ace.md, Isolators): typed values for every known type, raw JSON for the rest.

An isolator is `{"name": <AC Identifier>, "value": <any JSON>}`. The spec lets an executor
ignore isolators it does not understand ("An executor MAY ignore isolators that it does not
understand and run the pod without them"), so an unknown name is not an error here: it parses
to `UnknownIsolator`, which keeps the raw value for the runtime to report as ignored.

Known types validate their value and carry class-level rules the list check enforces: whether
several may appear in one list (`MULTIPLE`) and which types they exclude (`CONFLICTS`, e.g. a
capabilities retain set with a remove set). The standard types' classes live in
`_manifest_isolator_types`; this module holds the base class, Kurma's own types, the registry
and the list parser.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from ..errors import ValidationError
from ._manifest_json import JSON, Node, check_str, join, type_name
from ._manifest_quantity import Quantity
from ._names import AC_IDENTIFIER_RULE, is_ac_identifier


class Isolator:
    """Base of all isolators: a name, a JSON value, and the list rules of the type."""

    name: ClassVar[str]
    MULTIPLE: ClassVar[bool] = True
    CONFLICTS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_value(cls, value: JSON, path: str) -> Isolator:
        """Build the isolator from its JSON `value` found at `path`."""
        raise NotImplementedError

    def value_json(self) -> JSON:
        """The JSON `value` of this isolator."""
        raise NotImplementedError

    def to_json(self) -> dict[str, JSON]:
        """The isolator object `{"name": ..., "value": ...}`."""
        return {"name": self.name, "value": self.value_json()}


@dataclass(frozen=True)
class UnknownIsolator(Isolator):
    """An isolator of a type we do not know; the executor ignores it and says so."""

    name: str  # type: ignore[misc]
    raw_value: str
    """The value as canonical JSON text (a string keeps the object immutable and hashable)."""

    @property
    def value(self) -> JSON:
        """The value as decoded JSON."""
        return json.loads(self.raw_value)

    def value_json(self) -> JSON:
        return self.value


def _flag(value: JSON, path: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(path, f"must be a boolean, got {type_name(value)}")
    return value


@dataclass(frozen=True)
class PrivilegedIsolator(Isolator):
    """Kurma: run the pod privileged (all capabilities, host devices, no seccomp)."""

    name: ClassVar[str] = "os/linux/privileged"
    MULTIPLE: ClassVar[bool] = False
    privileged: bool = True

    @classmethod
    def from_value(cls, value: JSON, path: str) -> PrivilegedIsolator:
        return cls(_flag(value, path))

    def value_json(self) -> JSON:
        return self.privileged


NAMESPACES = ("net", "ipc", "uts", "pid")
"""The namespaces a pod may share with the host, in canonical order."""


@dataclass(frozen=True)
class NamespacesIsolator(Isolator):
    """Kurma: which of net/ipc/uts/pid the pod shares with the host (`{"net": "host"}`)."""

    name: ClassVar[str] = "os/linux/namespaces"
    MULTIPLE: ClassVar[bool] = False
    host: tuple[str, ...] = ()

    @classmethod
    def from_value(cls, value: JSON, path: str) -> NamespacesIsolator:
        node = Node.of(value, path)
        host = []
        for key, mode in node.items():
            at = node.at(key)
            if key not in NAMESPACES:
                raise ValidationError(at, f"unknown namespace {key!r} (one of {NAMESPACES})")
            if mode not in ("host", "pod"):
                raise ValidationError(at, f"must be 'host' or 'pod', got {mode!r}")
            if mode == "host":
                host.append(key)
        return cls(tuple(ns for ns in NAMESPACES if ns in host))

    def value_json(self) -> JSON:
        return {ns: "host" for ns in self.host}


@dataclass(frozen=True)
class DevicesIsolator(Isolator):
    """Kurma: host device nodes bound into the pod, e.g. `["/dev/ttyS0", "/dev/kmsg"]`."""

    name: ClassVar[str] = "os/linux/devices"
    MULTIPLE: ClassVar[bool] = False
    devices: tuple[str, ...] = ()

    @classmethod
    def from_value(cls, value: JSON, path: str) -> DevicesIsolator:
        if not isinstance(value, list | tuple):
            raise ValidationError(path, f"must be an array, got {type_name(value)}")
        devices: list[str] = []
        for i, item in enumerate(value):
            at = join(path, i)
            device = check_str(item, at)
            # A device path is matched against the host's /dev: no "..", no "//", no "/." tricks.
            if not device.startswith("/dev/") or posixpath.normpath(device) != device:
                raise ValidationError(at, f"must be a normalised path under /dev/, got {device!r}")
            if device in devices:
                raise ValidationError(at, f"duplicate device {device!r}")
            devices.append(device)
        return cls(tuple(devices))

    def value_json(self) -> JSON:
        return list(self.devices)


@dataclass(frozen=True)
class NetworkPort:
    """A port published on the host for one network: docker's `-p [IP:]HOST:CONTAINER`."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    @classmethod
    def parse(cls, value: JSON, path: str) -> NetworkPort:
        node = Node.of(value, path)
        ports = [
            node.integer(key, 1, 65535, required=True) for key in ("hostPort", "containerPort")
        ]
        protocol = node.text("protocol") or "tcp"
        if protocol not in ("tcp", "udp", "sctp"):
            raise ValidationError(
                node.at("protocol"), f"must be tcp, udp or sctp, got {protocol!r}"
            )
        host_ip = node.text("hostIP") or ""
        if host_ip:
            import ipaddress

            try:
                ipaddress.ip_address(host_ip)
            except ValueError:
                raise ValidationError(
                    node.at("hostIP"), f"not an IP address: {host_ip!r}"
                ) from None
        return cls(ports[0], ports[1], protocol, host_ip)

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"hostPort": self.host_port, "containerPort": self.container_port,
                                "protocol": self.protocol}  # fmt: skip
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out


@dataclass(frozen=True)
class NetworkAttachmentSpec:
    """One CNI network a pod joins (a `.conflist` of kurmad's networks dir, by name)."""

    name: str
    ports: tuple[NetworkPort, ...] = ()


@dataclass(frozen=True)
class NetworksIsolator(Isolator):
    """Kurma: the CNI networks the pod joins, in order (interfaces eth0, eth1, ...):
    `[{"name": "bridge", "ports": [{"hostPort": 8080, "containerPort": 80}]}]`; an empty
    list is loopback only. Without it a pod has loopback only too (kurmad gives a pod made
    from a run spec its default network). Sharing the host's network excludes it."""

    name: ClassVar[str] = "os/linux/networks"
    MULTIPLE: ClassVar[bool] = False
    networks: tuple[NetworkAttachmentSpec, ...] = ()

    @classmethod
    def from_value(cls, value: JSON, path: str) -> NetworksIsolator:
        if not isinstance(value, list | tuple):
            raise ValidationError(path, f"must be an array, got {type_name(value)}")
        networks: list[NetworkAttachmentSpec] = []
        for i, item in enumerate(value):
            node = Node.of(item, join(path, i))
            name = node.text("name") or ""
            if not name or not all(c.isalnum() or c in "-_." for c in name):
                raise ValidationError(node.at("name"), f"must be a network name, got {name!r}")
            if any(n.name == name for n in networks):
                raise ValidationError(node.at("name"), f"network {name!r} given twice")
            ports = tuple(NetworkPort.parse(port, at) for at, port in node.array("ports"))
            networks.append(NetworkAttachmentSpec(name, ports))
        return cls(tuple(networks))

    def value_json(self) -> JSON:
        return [
            {"name": n.name, **({"ports": [p.to_json() for p in n.ports]} if n.ports else {})}
            for n in self.networks
        ]


class ApiScope(StrEnum):
    """How much of the Kurma API a pod's own socket reaches (DESIGN.md, recursion model)."""

    SUBTREE = "subtree"
    HOST_READ = "host-read"
    HOST = "host"


MAX_QUOTA_PODS = 1_000_000


@dataclass(frozen=True)
class SubtreeQuota:
    """What a `subtree` pod's whole subtree may use: live pods, bytes of images it imported,
    and log bytes; None means "not given here" (kurmad's default applies, else unlimited)."""

    pods: int | None = None
    image_bytes: int | None = None
    log_bytes: int | None = None

    # JSON key -> field; kept in one place so parsing, printing and messages agree.
    KEYS: ClassVar[dict[str, str]] = {
        "pods": "pods",
        "imageBytes": "image_bytes",
        "logBytes": "log_bytes",
    }

    @classmethod
    def from_value(cls, value: JSON, path: str) -> SubtreeQuota:
        """Parse `{"pods": 10, "imageBytes": "1G", "logBytes": "64M"}`; every key optional.

        Unknown keys are errors (unlike appc's ignored fields): a misspelt limit must not
        silently leave a subtree unlimited."""
        node = Node.of(value, path)
        known = {k.lower(): k for k in cls.KEYS}
        for key, _ in node.items():
            if key.lower() not in known:
                raise ValidationError(
                    node.at(key), f"unknown quota {key!r} (known: {', '.join(cls.KEYS)})"
                )
        pods = node.integer("pods", 0, MAX_QUOTA_PODS)
        sizes = {}
        for key in ("imageBytes", "logBytes"):
            raw = node.raw(key)
            sizes[key] = None if raw is None else Quantity.parse(raw, node.at(key)).value
        return cls(pods, sizes["imageBytes"], sizes["logBytes"])

    def value_json(self) -> dict[str, JSON]:
        return {
            key: getattr(self, attr)
            for key, attr in self.KEYS.items()
            if getattr(self, attr) is not None
        }


@dataclass(frozen=True)
class ApiAccessIsolator(Isolator):
    """Kurma: give the pod an API socket with a scope (`{"scope": "subtree"}` by default),
    and for `subtree` optionally a quota (`{"quota": {"pods": 10, "imageBytes": "1G"}}`)."""

    name: ClassVar[str] = "host/api-access"
    MULTIPLE: ClassVar[bool] = False
    scope: ApiScope = ApiScope.SUBTREE
    quota: SubtreeQuota | None = None

    @classmethod
    def from_value(cls, value: JSON, path: str) -> ApiAccessIsolator:
        node = Node.of(value, path)
        scope = node.text("scope") or ApiScope.SUBTREE.value
        try:
            parsed = ApiScope(scope)
        except ValueError:
            scopes = ", ".join(s.value for s in ApiScope)
            raise ValidationError(
                node.at("scope"), f"unknown scope {scope!r} (one of {scopes})"
            ) from None
        raw = node.raw("quota")
        quota = None if raw is None else SubtreeQuota.from_value(raw, node.at("quota"))
        if quota is not None and parsed is not ApiScope.SUBTREE:
            raise ValidationError(
                node.at("quota"),
                f"a quota applies to scope subtree only (a {parsed.value} pod has no subtree)",
            )
        return cls(parsed, quota)

    def value_json(self) -> JSON:
        value: dict[str, JSON] = {"scope": self.scope.value}
        if self.quota is not None:
            value["quota"] = self.quota.value_json()
        return value


KURMA_ISOLATORS: tuple[type[Isolator], ...] = (
    PrivilegedIsolator,
    NamespacesIsolator,
    DevicesIsolator,
    ApiAccessIsolator,
    NetworksIsolator,
)


def _registry() -> dict[str, type[Isolator]]:
    from ._manifest_isolator_types import STANDARD_ISOLATORS

    return {cls.name: cls for cls in (*STANDARD_ISOLATORS, *KURMA_ISOLATORS)}


_REGISTRY: dict[str, type[Isolator]] = {}


def isolator_types() -> dict[str, type[Isolator]]:
    """Every known isolator name -> its class."""
    if not _REGISTRY:
        _REGISTRY.update(_registry())
    return dict(_REGISTRY)


def parse_isolator(value: JSON, path: str) -> Isolator:
    """Parse one isolator object; unknown names give an `UnknownIsolator`."""
    node = Node.of(value, path)
    name = node.text("name", required=True)
    assert name is not None
    if not is_ac_identifier(name):
        raise ValidationError(
            node.at("name"), f"must be an AC Identifier ({AC_IDENTIFIER_RULE}), got {name!r}"
        )
    raw = node.raw("value", required=True)
    cls = isolator_types().get(name)
    if cls is None:
        try:
            text = json.dumps(raw, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:  # only from a non-JSON Mapping
            raise ValidationError(node.at("value"), f"is not a JSON value: {e}") from e
        return UnknownIsolator(name, text)
    return cls.from_value(raw, node.at("value"))


def parse_isolators(items: list[tuple[str, JSON]]) -> tuple[Isolator, ...]:
    """Parse an isolator list, enforcing each type's multiplicity and conflicts."""
    parsed: list[Isolator] = []
    first: dict[str, str] = {}  # isolator name -> path of its first occurrence
    for path, item in items:
        isolator = parse_isolator(item, path)
        name = isolator.name
        if name in first and not isolator.MULTIPLE:
            raise ValidationError(
                join(path, "name"), f"only one {name} isolator is allowed (also at {first[name]})"
            )
        for other in isolator.CONFLICTS:
            if other in first:
                raise ValidationError(
                    join(path, "name"),
                    f"{name} cannot be used together with {other} (at {first[other]})",
                )
        first.setdefault(name, path)
        parsed.append(isolator)
    return tuple(parsed)
