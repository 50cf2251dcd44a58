"""An attachment: one container on one network through one interface, and its CNI result.

It carries everything DEL needs later (the conflist bytes the ADD ran with, the runtime
arguments, the last result), so a teardown after a crash or after the configuration file
changed undoes exactly what was made. `result` is None while ADD has not finished.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._config import NetworkConfig, parse_network_config
from ._result import Result

FORMAT_VERSION = 1
PROTOCOLS = ("tcp", "udp", "sctp")

_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
_IFNAME_BAD = re.compile(r"[/:\s]")
_PORT_SPEC = re.compile(r"(?:(\[[0-9A-Fa-f:.]+\]|[0-9.]+):)?(\d+):(\d+)(?:/(\w+))?\Z")


def check_container_id(container_id: str) -> str:
    """`container_id` if the spec allows it (alphanumerics, `_`, `.`, `-`), else ValueError."""
    if not _CONTAINER_ID.match(container_id):
        raise ValueError(f"invalid CNI container ID {container_id!r}")
    return container_id


def check_ifname(ifname: str) -> str:
    """`ifname` if the spec allows it (1-15 chars, not . or .., no `/`, `:` or space)."""
    if not ifname or len(ifname) > 15 or ifname in (".", "..") or _IFNAME_BAD.search(ifname):
        raise ValueError(f"invalid interface name {ifname!r}")
    return ifname


@dataclass(frozen=True)
class PortMapping:
    """A published port: `host_ip:host_port` on the host to `container_port` in the pod."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def __post_init__(self) -> None:
        for name in ("host_port", "container_port"):
            port = getattr(self, name)
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise ValueError(f"{name} must be a port number (1-65535), got {port!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.host_ip:
            ipaddress.ip_address(self.host_ip)

    @classmethod
    def parse(cls, spec: str) -> PortMapping:
        """Parse docker's `[IP:]HOST:CONTAINER[/PROTO]` (an IPv6 IP in brackets)."""
        m = _PORT_SPEC.match(spec)
        if not m:
            raise ValueError(f"invalid port mapping {spec!r}: want [IP:]HOST:CONTAINER[/tcp|udp]")
        ip, host, container, proto = m.groups()
        return cls(int(host), int(container), proto or "tcp", (ip or "").strip("[]"))

    def to_json(self) -> dict[str, Any]:
        """The `portMappings` entry of portmap's runtimeConfig."""
        out: dict[str, Any] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        }
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PortMapping:
        """Inverse of to_json."""
        return cls(
            doc["hostPort"], doc["containerPort"], doc.get("protocol", "tcp"), doc.get("hostIP", "")
        )


def format_cni_args(args: Sequence[tuple[str, str]]) -> str:
    """`CNI_ARGS` text: `K=V;K2=V2`, with `IgnoreUnknown=1` first so that plugins that do not
    know a key ignore it (as containerd and cri-o do)."""
    if not args:
        return ""
    pairs = list(args)
    for k, v in pairs:
        if not k or any(c in k for c in "=;") or ";" in v:
            raise ValueError(f"invalid CNI argument {k!r}={v!r}")
    if all(k != "IgnoreUnknown" for k, _ in pairs):
        pairs.insert(0, ("IgnoreUnknown", "1"))
    return ";".join(f"{k}={v}" for k, v in pairs)


@dataclass(frozen=True)
class Attachment:
    """What ADD made for one (container, network, interface), and what DEL needs."""

    network: str
    config: bytes
    container_id: str
    netns: str
    ifname: str
    port_mappings: tuple[PortMapping, ...] = ()
    args: tuple[tuple[str, str], ...] = ()
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    result: Result | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """(container_id, network, ifname): what makes an attachment unique."""
        return (self.container_id, self.network, self.ifname)

    @property
    def complete(self) -> bool:
        """True once ADD finished (a record without a result is an ADD cut short)."""
        return self.result is not None

    def network_config(self) -> NetworkConfig:
        """The configuration the ADD ran with (from the stored bytes)."""
        return parse_network_config(self.config, f"attachment {'/'.join(self.key)}")

    def runtime_config(self) -> dict[str, Any]:
        """Every capability argument, by capability name (`portMappings`, `ips`, `mac`...)."""
        out = dict(self.capabilities)
        if self.port_mappings:
            out["portMappings"] = [p.to_json() for p in self.port_mappings]
        return out

    def to_json(self) -> dict[str, Any]:
        """The attachment as JSON data (the conflist as text: JSON is UTF-8)."""
        return {
            "version": FORMAT_VERSION,
            "network": self.network,
            "containerID": self.container_id,
            "netns": self.netns,
            "ifname": self.ifname,
            "portMappings": [p.to_json() for p in self.port_mappings],
            "args": [list(a) for a in self.args],
            "capabilities": dict(self.capabilities),
            "config": self.config.decode("utf-8"),
            "result": self.result.to_json() if self.result is not None else None,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Attachment:
        """Inverse of to_json; ValueError (or KeyError, TypeError) when malformed."""
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown attachment format {doc.get('version')!r}")
        result = doc.get("result")
        caps = doc.get("capabilities") or {}
        if not isinstance(caps, dict):
            raise TypeError("capabilities must be an object")
        return cls(
            network=str(doc["network"]),
            config=str(doc["config"]).encode("utf-8"),
            container_id=check_container_id(str(doc["containerID"])),
            netns=str(doc["netns"]),
            ifname=check_ifname(str(doc["ifname"])),
            port_mappings=tuple(PortMapping.from_json(p) for p in doc.get("portMappings") or ()),
            args=tuple((str(k), str(v)) for k, v in doc.get("args") or ()),
            capabilities=caps,
            result=Result.from_json(result) if result is not None else None,
        )
