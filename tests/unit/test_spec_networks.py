"""A RunSpec's networks and ports as the pod's isolators (what `kurmactl run --net -p` asks)."""

from __future__ import annotations

import pytest

from kurma.aci import NamespacesIsolator, NetworksIsolator
from kurma.api._convert import spec_networks
from kurma.api.v1 import pods_pb2
from kurma.errors import ValidationError


def spec(*networks: str, ports: tuple[tuple[int, int], ...] = ()) -> pods_pb2.RunSpec:
    out = pods_pb2.RunSpec(networks=list(networks))
    for host, container in ports:
        out.ports.add(host_port=host, container_port=container)
    return out


def networks(isolators) -> list[tuple[str, list[tuple[int, int]]]]:  # type: ignore[no-untyped-def]
    (iso,) = [i for i in isolators if isinstance(i, NetworksIsolator)]
    return [(n.name, [(p.host_port, p.container_port) for p in n.ports]) for n in iso.networks]


def test_names_in_order_ports_on_the_first() -> None:
    got = spec_networks(spec("front", "back", ports=((8080, 80),)), (), "dflt")
    assert networks(got) == [("front", [(8080, 80)]), ("back", [])]


def test_the_default_network_unless_asked_otherwise() -> None:
    assert networks(spec_networks(spec(ports=((1, 2),)), (), "dflt")) == [("dflt", [(1, 2)])]
    assert spec_networks(spec(), (), None) == ()  # no default: loopback only, as before
    assert networks(spec_networks(spec("none"), (), "dflt")) == []  # loopback only
    shared = (NamespacesIsolator(("net",)),)
    assert spec_networks(spec(), shared, "dflt") == shared  # on the host's network: none


def test_host_is_the_hosts_namespace() -> None:
    (iso,) = spec_networks(spec("host"), (NamespacesIsolator(("uts",)),), "dflt")
    assert isinstance(iso, NamespacesIsolator) and iso.host == ("net", "uts")


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (spec("host", "front"), "no other"),
        (spec("host", ports=((1, 2),)), "publishes none"),
        (spec("none", "front"), "loopback only"),
        (spec("none", ports=((1, 2),)), "need a network"),
        (spec("front", ports=((0, 2),)), "1..65535"),
    ],
)
def test_what_makes_no_sense_is_refused(bad: pods_pb2.RunSpec, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        spec_networks(bad, (), "dflt")
