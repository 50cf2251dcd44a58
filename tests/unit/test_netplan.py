"""Which networks a pod joins and the ports it publishes (`kurma.runtime._netplan`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kurma.aci import parse_pod_manifest
from kurma.errors import ValidationError
from kurma.network import PortMapping
from kurma.runtime._netplan import PodNetwork, plan_networks

IMAGE = "sha512-" + "a" * 128


def manifest(networks: Any, ports: list[Any] | None = None, host_net: bool = False) -> Any:
    app = {"exec": ["/bin/true"], "user": "0", "group": "0",
           "ports": [{"name": "http", "protocol": "tcp", "port": 80},
                     {"name": "dns", "protocol": "udp", "port": 53, "count": 2}]}  # fmt: skip
    isolators = [{"name": "os/linux/networks", "value": networks}] if networks is not None else []
    if host_net:
        isolators.append({"name": "os/linux/namespaces", "value": {"net": "host"}})
    doc = {"acKind": "PodManifest", "acVersion": "0.8.11", "isolators": isolators,
           "apps": [{"name": "web", "image": {"id": IMAGE}, "app": app}],
           "ports": ports or []}  # fmt: skip
    pod = parse_pod_manifest(json.dumps(doc).encode())
    return pod, [(a, a.app) for a in pod.apps]


def test_networks_in_order_with_the_manifest_ports_on_the_first() -> None:
    pod, apps = manifest(
        [{"name": "a", "ports": [{"hostPort": 8080, "containerPort": 80}]}, {"name": "b"}],
        ports=[{"name": "http", "hostPort": 9090}, {"name": "dns", "hostPort": 5353}],
    )
    assert plan_networks(pod, apps, frozenset()) == (
        PodNetwork("a", "eth0", (PortMapping(8080, 80), PortMapping(9090, 80),
                                 PortMapping(5353, 53, "udp"), PortMapping(5354, 54, "udp"))),
        PodNetwork("b", "eth1"),
    )  # fmt: skip


def test_no_isolator_or_an_empty_list_is_loopback_only() -> None:
    for value in (None, []):
        pod, apps = manifest(value, ports=[{"name": "http", "hostPort": 9090}])
        assert plan_networks(pod, apps, frozenset()) == ()


def test_the_hosts_netns_and_an_unknown_port_name_are_refused() -> None:
    pod, apps = manifest([{"name": "a"}], host_net=True)
    with pytest.raises(ValidationError, match=r"os/linux/networks.*os/linux/namespaces"):
        plan_networks(pod, apps, frozenset({"net"}))
    pod, apps = manifest([{"name": "a"}], ports=[{"name": "nope", "hostPort": 1}])
    with pytest.raises(ValidationError, match=r"'nope'.*known: dns, http"):
        plan_networks(pod, apps, frozenset())
