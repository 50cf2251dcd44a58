"""The host network at boot, with pyroute2: loopback, then each configured interface.

An interface takes the settings of the config entry with its exact name, else of the first
glob pattern (in config order) that matches it; loopback only ever by its exact name. Static
interfaces get their MTU, are brought up, and get their addresses and routes; DHCP interfaces
are only brought up (with their MTU): the `dhcp` service pod leases addresses later, and the
names are handed on for it. /etc/resolv.conf is written (atomically) when the config names
DNS servers or search domains; otherwise it is left for the DHCP client.

Adding what is already there (EEXIST) is no error, so the step can run again.
"""

from __future__ import annotations

import errno
import fnmatch
import importlib.util
import ipaddress
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..atomic import write_atomic
from .config import Dns, Interface, Network, Route

log = logging.getLogger(__name__)

RESOLV_CONF = "/etc/resolv.conf"
LOOPBACK = "lo"


def match_interfaces(
    names: Iterable[str], configured: Mapping[str, Interface]
) -> dict[str, Interface]:
    """name -> its settings, for every name that an entry matches (exact name wins)."""
    patterns = [p for p in configured if any(c in p for c in "*?[")]
    found: dict[str, Interface] = {}
    for name in names:
        if name in configured:
            found[name] = configured[name]
            continue
        if name == LOOPBACK:
            continue
        pattern = next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)
        if pattern is not None:
            found[name] = configured[pattern]
    return found


def render_resolv_conf(dns: Dns) -> str:
    lines = ["# written by kurma-init from the boot config"]
    if dns.search:
        lines.append("search " + " ".join(dns.search))
    lines += [f"nameserver {server}" for server in dns.servers]
    return "\n".join(lines) + "\n"


def write_resolv_conf(dns: Dns, path: str = RESOLV_CONF) -> bool:
    """Write `path` from `dns` (temp name, then rename); False when there is nothing to say."""
    if not dns.servers and not dns.search:
        return False
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_atomic(path, render_resolv_conf(dns), 0o644, sync=False)
    return True


@dataclass
class NetworkReport:
    """What the step did: interfaces configured statically, left to DHCP, and failures."""

    static: list[str] = field(default_factory=list)
    dhcp: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    resolv_conf: bool = False

    def summary(self) -> str:
        text = (
            f"lo up; static: {', '.join(self.static) or '-'}; dhcp: {', '.join(self.dhcp) or '-'}"
        )
        if self.resolv_conf:
            text += "; resolv.conf written"
        if self.errors:
            text += "; failed: " + ", ".join(f"{n} ({why})" for n, why in self.errors.items())
        return text


def import_without_package_init(package: str = "pyroute2") -> None:
    """Let `package`'s submodules be imported without running its __init__.py. pyroute2's
    imports every part of the library (conntrack, ipdb, ndb, nftables, ...: ~190 ms natively,
    about three seconds under qemu without KVM), where IPRoute needs half of that. Only for
    PID 1 of the machine, where nothing else imports pyroute2: code that later does
    `from pyroute2 import X` in the same process would find the names missing."""
    if package in sys.modules:
        return
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        return  # not installed, or not a package: the real import reports it
    sys.modules[package] = importlib.util.module_from_spec(spec)  # __path__ set, not run


def _ignore_exists(call: Any, *args: Any, **kwargs: Any) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        call(*args, **kwargs)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise


def _route_args(route: Route, index: int) -> dict[str, Any]:
    args: dict[str, Any] = {"oif": index}
    if route.to == "default":
        family = 6 if route.via and ipaddress.ip_address(route.via).version == 6 else 4
        args["dst"] = "::/0" if family == 6 else "0.0.0.0/0"
    else:
        args["dst"] = str(ipaddress.ip_network(route.to, strict=False))
        family = ipaddress.ip_network(route.to, strict=False).version
    args["family"] = 10 if family == 6 else 2
    if route.via is not None:
        args["gateway"] = route.via
    if route.metric:
        args["priority"] = route.metric
    return args


def configure_interface(ipr: Any, index: int, iface: Interface) -> None:
    """MTU, up, then (unless DHCP) addresses and routes."""
    if iface.mtu is not None:
        ipr.link("set", index=index, mtu=iface.mtu)
    ipr.link("set", index=index, state="up")
    if iface.dhcp:
        return
    for cidr in iface.addresses:
        addr = ipaddress.ip_interface(cidr)
        _ignore_exists(
            ipr.addr, "add", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen
        )
    for route in iface.routes:
        _ignore_exists(ipr.route, "add", **_route_args(route, index))


def setup_network(network: Network, resolv_conf: str | None = RESOLV_CONF) -> NetworkReport:
    """Loopback up, every matching interface configured, resolv.conf; in this netns."""
    from pyroute2.iproute.linux import IPRoute

    report = NetworkReport()
    with IPRoute() as ipr:
        links = {link.get("ifname"): link["index"] for link in ipr.get_links()}
        if LOOPBACK in links:
            ipr.link("set", index=links[LOOPBACK], state="up")
        for name, iface in match_interfaces(links, network.interfaces).items():
            try:
                configure_interface(ipr, links[name], iface)
            except Exception as e:  # netlink errors: one interface, not the whole step
                report.errors[name] = str(e)
                log.error("interface %s: %s", name, e)
                continue
            (report.dhcp if iface.dhcp else report.static).append(name)
    if resolv_conf is not None:
        report.resolv_conf = write_resolv_conf(network.dns, resolv_conf)
    return report
