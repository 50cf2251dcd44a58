"""kurma.network with Debian's real CNI plugins, inside a "host" namespace of the test's own.

See tests/root/network_support.py for the isolation: every plugin runs under
`ip netns exec kurma-test-XXXXXX`, pods are named namespaces, subnets are 169.254/16 and
fdfe::/16, and the fixture removes namespaces, servers and files even when a test fails.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kurma.network import (
    AttachmentStore,
    PluginError,
    PluginNotFound,
    Plugins,
    PortMapping,
    attach,
    check,
    detach,
    hosts_entries,
)

from .network_support import Lab, run

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="no CNI plugins"),
]

FAILING_PLUGIN = """#!/bin/sh
# A plugin that fails ADD with a spec error object and succeeds DEL and CHECK.
cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
    printf '{"cniVersion":"1.0.0","code":7,"msg":"refusing %s","details":"a test plugin"}' \\
        "$CNI_CONTAINERID"
    exit 1
fi
exit 0
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A fresh host namespace with its pods, removed afterwards."""
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def test_two_pods_on_a_bridge_reach_each_other_in_both_families(lab: Lab) -> None:
    net = lab.network(lab.bridge_doc(portmap=False))
    a_ns, b_ns = lab.pod(), lab.pod()
    a = attach(net, "kt-a", a_ns, "eth0", plugins=lab.plugins)
    b = attach(net, "kt-b", b_ns, "eth0", plugins=lab.plugins)
    assert a.result is not None and b.result is not None
    a4, a6 = a.result.first_ip(4), a.result.first_ip(6)
    assert a4 is not None and a4 in ipaddress.ip_network("169.254.42.0/24")
    assert a6 is not None and str(a6).startswith("fdfe:42::")
    assert hosts_entries(a.result, "pod-a") == [f"{a4}\tpod-a", f"{a6}\tpod-a"]
    lab.serve(a_ns, "::", 7000, "a")  # dual-stack listener
    assert lab.connect(b_ns, str(a4), 7000) == "pong a"
    assert lab.connect(b_ns, str(a6), 7000) == "pong a"
    check(a, plugins=lab.plugins)
    detach(a, plugins=lab.plugins)
    detach(b, plugins=lab.plugins)
    assert lab.veths() == []
    assert lab.allocations() == []


def test_a_published_port_reaches_the_pod_from_the_host(lab: Lab) -> None:
    net = lab.network(lab.bridge_doc())
    pod = lab.pod()
    att = attach(
        net, "kt-pub", pod, "eth0", port_mappings=[PortMapping(18080, 80)], plugins=lab.plugins
    )
    assert lab.rules_mentioning('id: \\"kt-pub\\"')  # portmap's DNAT rules, both families
    lab.serve(pod, "::", 80, "published")
    # from the host namespace, to its own address on the bridge (the OUTPUT DNAT path)
    assert lab.connect(lab.host, "169.254.42.1", 18080) == "pong published"
    assert lab.connect(lab.host, "fdfe:42::1", 18080) == "pong published"
    detach(att, plugins=lab.plugins)
    assert lab.rules_mentioning("kt-pub") == []
    assert lab.connect(lab.host, "169.254.42.1", 18080, wait=0.5).startswith("error")


def test_ptp_reaches_the_host_side_and_loopback_brings_lo_up(lab: Lab) -> None:
    ptp = lab.network(
        {
            "cniVersion": "1.0.0",
            "name": "kt-ptp",
            "plugins": [
                {
                    "type": "ptp",
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(lab.ipam),
                        "ranges": [[{"subnet": "169.254.43.0/24"}]],
                        "routes": [{"dst": "169.254.0.0/16"}],
                    },
                }
            ],
        }
    )
    lo = lab.network(
        {"cniVersion": "1.0.0", "name": "kt-lo", "plugins": [{"type": "loopback"}]}, "lo.conflist"
    )
    pod = lab.pod()
    run("ip", "-n", os.path.basename(pod), "link", "set", "lo", "down")
    lo_att = attach(lo, "kt-ptp1", pod, "lo", plugins=lab.plugins)
    assert "UP" in run("ip", "-n", os.path.basename(pod), "-br", "link", "show", "lo")
    att = attach(ptp, "kt-ptp1", pod, "eth0", plugins=lab.plugins)
    assert att.result is not None
    gateway = att.result.ips[0].gateway
    lab.serve(lab.host, "0.0.0.0", 7001, "host")
    assert lab.connect(pod, str(gateway), 7001) == "pong host"
    detach(att, plugins=lab.plugins)
    detach(lo_att, plugins=lab.plugins)
    assert lab.veths() == []
    assert lab.allocations() == []


def _nothing_left_of(lab: Lab, container_id: str) -> None:
    assert lab.rules_mentioning(f'id: \\"{container_id}\\"') == []
    assert not [a for a in lab.allocations() if _alloc_owner(lab, a) == container_id]


def _alloc_owner(lab: Lab, rel: str) -> str:
    return (lab.ipam / rel).read_text().splitlines()[0].strip()


def test_an_exhausted_range_fails_naming_the_plugin_and_leaves_nothing(lab: Lab) -> None:
    net = lab.network(lab.bridge_doc(v6=None, range_end="169.254.42.9"))
    first = attach(net, "kt-ok", lab.pod(), "eth0", plugins=lab.plugins)
    before = (lab.veths(), lab.allocations())
    with pytest.raises(PluginError) as info:
        attach(
            net,
            "kt-full",
            lab.pod(),
            "eth0",
            port_mappings=[PortMapping(18081, 80)],
            plugins=lab.plugins,
        )
    assert info.value.plugin == "bridge"
    assert "no IP addresses available" in str(info.value), info.value
    assert "'bridge'" in str(info.value)
    assert info.value.cleanup_errors == ()
    assert (lab.veths(), lab.allocations()) == before
    _nothing_left_of(lab, "kt-full")
    detach(first, plugins=lab.plugins)


def test_a_failing_plugin_late_in_the_chain_undoes_the_others(lab: Lab) -> None:
    bindir = lab.dir / "bin"
    bindir.mkdir()
    fake = bindir / "kurma-test-fail"
    fake.write_text(FAILING_PLUGIN)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    plugins = Plugins((str(bindir), "/usr/lib/cni"), exec_prefix=lab.plugins.exec_prefix)
    doc = lab.bridge_doc()
    doc["plugins"].append({"type": "kurma-test-fail"})
    net = lab.network(doc)
    store = AttachmentStore(lab.dir / "attachments")
    with pytest.raises(PluginError) as info:
        attach(
            net,
            "kt-late",
            lab.pod(),
            "eth0",
            port_mappings=[PortMapping(18082, 80)],
            plugins=plugins,
            store=store,
        )
    e = info.value
    assert (e.plugin, e.code, e.msg, e.details) == (
        "kurma-test-fail",
        7,
        "refusing kt-late",
        "a test plugin",
    )
    assert "kurma-test-fail" in str(e) and "refusing kt-late" in str(e)
    assert lab.veths() == []
    assert lab.allocations() == []
    _nothing_left_of(lab, "kt-late")
    assert store.list() == []  # undone completely: no record for the reconcile


def test_a_bogus_plugin_type_is_not_found_and_leaves_nothing(lab: Lab) -> None:
    doc = lab.bridge_doc()
    doc["plugins"].insert(1, {"type": "kurma-no-such-plugin"})
    net = lab.network(doc)
    with pytest.raises(PluginNotFound) as info:
        attach(net, "kt-bogus", lab.pod(), "eth0", plugins=lab.plugins)
    assert info.value.plugin == "kurma-no-such-plugin"
    assert "kurma-no-such-plugin" in str(info.value)
    assert info.value.cleanup_errors == ()
    assert lab.veths() == []
    assert lab.allocations() == []


def test_detach_twice_is_fine_and_check_finds_a_missing_interface(lab: Lab) -> None:
    net = lab.network(lab.bridge_doc(portmap=False))
    pod = lab.pod()
    att = attach(net, "kt-twice", pod, "eth0", plugins=lab.plugins)
    check(att, plugins=lab.plugins)
    run("ip", "-n", os.path.basename(pod), "link", "del", "eth0")
    with pytest.raises(PluginError) as info:
        check(att, plugins=lab.plugins)
    assert info.value.plugin == "bridge"
    detach(att, plugins=lab.plugins)
    detach(att, plugins=lab.plugins)
    lab.drop_pod(pod)
    detach(att, plugins=lab.plugins)  # the namespace is gone too: CNI_NETNS is empty
    assert lab.veths() == []
    assert lab.allocations() == []


def test_fifty_cycles_leave_no_veth_allocation_or_rule(lab: Lab) -> None:
    net = lab.network(lab.bridge_doc())
    ids = [f"kt-cycle{i}" for i in range(50)]
    for i, cid in enumerate(ids):
        pod = lab.pod()
        att = attach(
            net,
            cid,
            pod,
            "eth0",
            port_mappings=[PortMapping(19000 + i, 80)],
            plugins=lab.plugins,
        )
        assert len(lab.veths()) == 1
        detach(att, plugins=lab.plugins)
        lab.drop_pod(pod)
    assert lab.veths() == []
    assert lab.allocations() == []
    assert lab.rules_mentioning(*(f'id: \\"{c}\\"' for c in ids)) == []
    assert set(lab.host_links()) <= {"lo", "kt-br0"}


def test_a_stored_attachment_is_deleted_after_its_conflist_is_gone(lab: Lab) -> None:
    net = lab.network(lab.bridge_doc())
    store = AttachmentStore(lab.dir / "attachments")
    pod = lab.pod()
    att = attach(
        net,
        "kt-stored",
        pod,
        "eth0",
        port_mappings=[PortMapping(18083, 80, "tcp")],
        args=[("K8S_POD_NAME", "x")],
        plugins=lab.plugins,
        store=store,
    )
    Path(net.source).unlink()
    (again,) = store.list()
    assert again == att and again.result is not None
    assert again.result.to_json() == att.result.to_json()  # type: ignore[union-attr]
    assert store.get("kt-stored", net.name, "eth0") == att
    detach(again, plugins=lab.plugins, store=store)
    assert store.list() == []
    assert lab.veths() == []
    assert lab.allocations() == []
    _nothing_left_of(lab, "kt-stored")
