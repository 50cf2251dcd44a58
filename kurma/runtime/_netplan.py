"""Which CNI networks a pod joins, and the ports it publishes on them (judged at create).

A pod joins the networks its pod-level `os/linux/networks` isolator lists, in order: the
first is `eth0`, the next `eth1`, and so on. Without the isolator (or with its empty list)
the pod has loopback only. The isolator needs the pod's own network namespace: with the
host's shared (`os/linux/namespaces` net) it is refused, naming both isolators.

Published ports: each entry's own `ports` (docker's `-p`), and the appc pod manifest's
`ports` (`{name, hostPort[, hostIP][, podPort]}`): `name` refers to a port of one of the
pod's apps (the pod manifest's `app.ports`, else the image's) and gives the container port
and protocol (a `count` of n maps n consecutive ports); a `podPort` given in the entry
wins. The manifest's ports go to the FIRST network (the one its `eth0` is on). A pod
without networks publishes nothing (its ports are ignored, as with loopback only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..aci import App, Isolator, NetworksIsolator, PodManifest, RuntimeApp
from ..errors import ValidationError
from ..network import PortMapping

ISOLATOR = NetworksIsolator.name
GATE_NAME = "network-gate"  # the FIFO in the pod's directory P1 reads `ok` from
PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class PodNetwork:
    """One network of a pod: its name (a conflist's), interface, published ports."""

    name: str
    ifname: str
    ports: tuple[PortMapping, ...] = ()


def networks_isolator(isolators: Iterable[Isolator]) -> NetworksIsolator | None:
    """The last `os/linux/networks` isolator of a list (pod level), or None."""
    found = None
    for iso in isolators:
        if isinstance(iso, NetworksIsolator):
            found = iso
    return found


def plan_networks(
    pod: PodManifest,
    apps: Sequence[tuple[RuntimeApp, App | None]],
    host_ns: frozenset[str],
) -> tuple[PodNetwork, ...]:
    """The pod's networks and ports; ValidationError for a host-netns pod asking for any,
    an app-level networks isolator, or a manifest port naming no app port."""
    for runtime_app, app in apps:
        own = (*(runtime_app.app.isolators if runtime_app.app else ()),
               *(app.isolators if app else ()))  # fmt: skip
        if networks_isolator(own) is not None:
            raise ValidationError(
                f"app {runtime_app.name!r} isolator {ISOLATOR}",
                "networks are the pod's: give the isolator in the pod's isolators",
            )
    iso = networks_isolator(pod.isolators)
    if iso is None:
        return ()
    if "net" in host_ns:
        raise ValidationError(
            f"pod isolator {ISOLATOR}",
            "a pod sharing the host's network namespace (os/linux/namespaces: net) "
            "cannot join networks",
        )
    networks = [
        PodNetwork(
            spec.name,
            f"eth{i}",
            tuple(
                PortMapping(p.host_port, p.container_port, p.protocol, p.host_ip)
                for p in spec.ports
            ),
        )
        for i, spec in enumerate(iso.networks)
    ]
    if networks and pod.ports:
        first = networks[0]
        extra = _manifest_ports(pod, apps)
        networks[0] = PodNetwork(first.name, first.ifname, first.ports + extra)
    return tuple(networks)


def _manifest_ports(
    pod: PodManifest, apps: Sequence[tuple[RuntimeApp, App | None]]
) -> tuple[PortMapping, ...]:
    by_name = {}
    for _, app in apps:
        for port in app.ports if app else ():
            by_name.setdefault(port.name, port)
    out: list[PortMapping] = []
    for i, exposed in enumerate(pod.ports):
        where = f"ports[{i}]"
        port = exposed.pod_port or by_name.get(exposed.name)
        if port is None:
            known = ", ".join(sorted(by_name)) or "none"
            message = f"no app of the pod has a port named {exposed.name!r} (known: {known})"
            raise ValidationError(f"{where}.name", message)
        protocol = port.protocol.lower()
        if protocol not in PROTOCOLS:
            message = f"port {port.name!r}: protocol {port.protocol!r} cannot be published"
            raise ValidationError(f"{where}.name", message + " (tcp, udp or sctp)")
        if exposed.host_port + port.count - 1 > 65535:
            raise ValidationError(f"{where}.hostPort", f"range of {port.count} ends beyond 65535")
        for k in range(port.count):
            out.append(PortMapping(exposed.host_port + k, port.port + k, protocol,
                                     exposed.host_ip or ""))  # fmt: skip
    return tuple(out)


def app_sections(
    pod: PodManifest, image_app: Callable[[RuntimeApp], App | None]
) -> list[tuple[RuntimeApp, App | None]]:
    """Each app with its effective `app` section (the pod's, else the image's)."""
    return [(a, a.app or image_app(a)) for a in pod.apps]
