"""CNI results: interfaces, IPs, routes and DNS, as plugins print them on ADD.

`Result.raw` keeps the exact JSON the last plugin printed: it is what the next plugin gets as
`prevResult` and what DEL and CHECK get later, so fields Kurma does not model (`mtu`,
`socketPath`, a vendor's extras) pass through untouched. `to_json()` returns it; a Result
built by hand (no `raw`) is rendered from its fields.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ResultFormatError(ValueError):
    """A plugin's result does not have the spec's shape (the caller wraps it)."""


@dataclass(frozen=True)
class Interface:
    """An interface a plugin made: `sandbox` is the netns path when it is inside the pod."""

    name: str
    mac: str = ""
    sandbox: str = ""


@dataclass(frozen=True)
class IPConfig:
    """An address with its prefix, its gateway and the index of its interface."""

    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None


@dataclass(frozen=True)
class Route:
    """A route: destination network and optional gateway."""

    dst: IPNetwork
    gw: IPAddress | None = None


@dataclass(frozen=True)
class DNS:
    """Resolver settings from a result."""

    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True if the result said nothing about DNS."""
        return not (self.nameservers or self.domain or self.search or self.options)


@dataclass(frozen=True)
class Result:
    """A CNI result (spec 1.0 and 0.4.0)."""

    cni_version: str
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Result:
        """Parse a result object; raises ResultFormatError when it is malformed."""
        try:
            return _parse(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ResultFormatError(f"malformed CNI result: {e}") from None

    def to_json(self) -> dict[str, Any]:
        """The result as JSON data: the plugin's own output if there is one."""
        if self.raw is not None:
            return dict(self.raw)
        return _render(self)

    def sandbox_ips(self) -> tuple[IPConfig, ...]:
        """The IPs on interfaces inside the pod (or on no interface named)."""
        out = []
        for ip in self.ips:
            idx = ip.interface
            if idx is None or not (0 <= idx < len(self.interfaces)) or self.interfaces[idx].sandbox:
                out.append(ip)
        return tuple(out)

    def first_ip(self, version: int) -> IPAddress | None:
        """The pod's first IPv4 (version 4) or IPv6 (version 6) address, if any."""
        for ip in self.sandbox_ips():
            if ip.address.version == version:
                return ip.address.ip
        return None


def _opt_addr(value: Any) -> IPAddress | None:
    return ipaddress.ip_address(value) if value else None


def _strs(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _parse(doc: Mapping[str, Any]) -> Result:
    if not isinstance(doc, Mapping):
        raise TypeError("a result must be a JSON object")
    interfaces = tuple(
        Interface(str(i["name"]), str(i.get("mac", "")), str(i.get("sandbox", "")))
        for i in doc.get("interfaces") or ()
    )
    ips = []
    for ip in doc.get("ips") or ():
        idx = ip.get("interface")
        if idx is not None and (not isinstance(idx, int) or isinstance(idx, bool)):
            raise TypeError(f"ips[].interface must be an integer, got {idx!r}")
        ips.append(
            IPConfig(ipaddress.ip_interface(ip["address"]), _opt_addr(ip.get("gateway")), idx)
        )
    routes = tuple(
        Route(ipaddress.ip_network(r["dst"], strict=False), _opt_addr(r.get("gw")))
        for r in doc.get("routes") or ()
    )
    d = doc.get("dns") or {}
    dns = DNS(
        _strs(d.get("nameservers")),
        str(d.get("domain") or ""),
        _strs(d.get("search")),
        _strs(d.get("options")),
    )
    version = doc.get("cniVersion", "")
    if not isinstance(version, str):
        raise TypeError("cniVersion must be a string")
    return Result(version, interfaces, tuple(ips), routes, dns, dict(doc))


def _render(r: Result) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": r.cni_version}
    if r.interfaces:
        out["interfaces"] = [
            {k: v for k, v in (("name", i.name), ("mac", i.mac), ("sandbox", i.sandbox)) if v}
            for i in r.interfaces
        ]
    if r.ips:
        ips = []
        for ip in r.ips:
            one: dict[str, Any] = {"address": str(ip.address)}
            if r.cni_version.startswith("0."):
                one["version"] = str(ip.address.version)
            if ip.gateway is not None:
                one["gateway"] = str(ip.gateway)
            if ip.interface is not None:
                one["interface"] = ip.interface
            ips.append(one)
        out["ips"] = ips
    if r.routes:
        out["routes"] = [
            {"dst": str(x.dst), **({"gw": str(x.gw)} if x.gw is not None else {})} for x in r.routes
        ]
    if not r.dns.is_empty:
        dns: dict[str, Any] = {}
        if r.dns.nameservers:
            dns["nameservers"] = list(r.dns.nameservers)
        if r.dns.domain:
            dns["domain"] = r.dns.domain
        if r.dns.search:
            dns["search"] = list(r.dns.search)
        if r.dns.options:
            dns["options"] = list(r.dns.options)
        out["dns"] = dns
    return out


def render_resolv_conf(dns: DNS) -> str:
    """`/etc/resolv.conf` text for `dns` (search wins over domain, as in the resolver)."""
    lines = [f"nameserver {ns}" for ns in dns.nameservers]
    if dns.search:
        lines.append("search " + " ".join(dns.search))
    elif dns.domain:
        lines.append(f"domain {dns.domain}")
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "".join(line + "\n" for line in lines)


def hosts_entries(result: Result, hostname: str, aliases: Sequence[str] = ()) -> list[str]:
    """`/etc/hosts` lines naming the pod: its first IPv4 and first IPv6 address."""
    names = " ".join([hostname, *aliases])
    lines = []
    for version in (4, 6):
        ip = result.first_ip(version)
        if ip is not None:
            lines.append(f"{ip}\t{names}")
    return lines
