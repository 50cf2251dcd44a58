"""Pod networks as a person uses them: kurmactl and kurmad with Debian's CNI plugins.

kurmad runs in a network namespace the test makes (`nsenter --net`, which leaves the mount
namespace and its cgroups alone), so the bridge, the veths' host ends and portmap's iptables
rules live there, never on the machine's own network; subnets are 169.254.0.0/16 and
fdfe::/16 (DESIGN.md). The lab (tests/root/network_support.py) removes the namespace, and
with it everything in it, even when a test fails.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kurma.client import Client, PermissionDenied, app_spec, run_spec

from ..waiting import wait_for
from .network_support import Lab, run
from .runtime_support import IMAGE_NAME
from .test_kurmactl import failed, kurmactl, ok
from .test_kurmad import Daemon, make_daemon

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

SH = ["--", "/bin/sh", "-c"]
# The links of the pod's network namespace (/proc/net is per namespace; /sys is the sysfs
# mounted, which under nsenter --net is the machine's).
LINKS = "awk -F: 'NR > 2 {gsub(/ /, \"\", $1); print $1}' /proc/net/dev"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("net"))
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def netd(lab: Lab, busybox_aci: Path) -> Iterator[Daemon]:
    """kurmad in the lab's host namespace, with a bridge network (the default: portmap
    too) and a second one without portmap (the cycles)."""
    netd_dir = lab.dir / "net.d"
    netd_dir.mkdir()
    (netd_dir / "10-bridge.conflist").write_text(json.dumps(lab.bridge_doc("kt-bridge")))
    quick = lab.bridge_doc("kt-quick", v4="169.254.43.0/24", v6="fdfe:43::/64", portmap=False)
    quick["plugins"][0]["bridge"] = "kt-br1"
    (netd_dir / "20-quick.conflist").write_text(json.dumps(quick))
    tiny = lab.bridge_doc("kt-tiny", v4="169.254.44.0/24", v6=None, portmap=False,
                          range_end="169.254.44.9")  # fmt: skip
    tiny["plugins"][0]["bridge"] = "kt-br2"
    (netd_dir / "30-tiny.conflist").write_text(json.dumps(tiny))
    for daemon in make_daemon():
        daemon.argv = functools.partial(in_netns, lab.host, daemon.argv)  # type: ignore[method-assign]
        with daemon.start("--networks-dir", str(netd_dir), "--default-network", "kt-bridge",
                          "--warm-pods", "1") as client:  # fmt: skip
            client.import_image(busybox_aci)
        yield daemon


def in_netns(netns: str, argv: Callable[..., list[str]], *flags: str) -> list[str]:
    """kurmad's command line, run in the lab's host network namespace (only that one)."""
    return ["nsenter", f"--net=/run/netns/{netns}", *argv(*flags)]


def httpd(text: str) -> str:
    """A script serving `text` at /f on port 8000 (busybox httpd, in the foreground)."""
    return f"mkdir -p /www && echo {text} > /www/f && httpd -f -p 8000 -h /www"


def addresses(daemon: Daemon, pod: str) -> list[str]:
    """The pod's addresses as `kurmactl inspect` shows them (CIDR)."""
    doc = json.loads(ok(kurmactl(daemon, "inspect", pod)))
    return [a for n in doc.get("networks", []) for a in n.get("addresses", [])]


def nothing_left(lab: Lab) -> None:
    """No veth and no address allocation in the lab's host. The veth's host end goes with the
    pod's network namespace, which the kernel frees a moment after its last process."""
    wait_for(lambda: lab.veths() == [] and lab.allocations() == [], "no veth, no address", 10)


def ip(cidr: str) -> str:
    return cidr.split("/")[0]


def test_network_ls_and_inspect(netd: Daemon) -> None:
    rows = ok(kurmactl(netd, "network", "ls")).splitlines()
    assert rows[0].split() == ["NAME", "PLUGINS", "DEFAULT", "FILE"]
    bridge = next(r for r in rows if r.startswith("kt-bridge"))
    assert "bridge portmap" in bridge and " yes " in bridge
    doc = json.loads(ok(kurmactl(netd, "network", "inspect", "kt-quick")))
    assert doc["config"]["plugins"][0]["type"] == "bridge" and doc["default"] is False
    assert "no network 'nope'" in failed(kurmactl(netd, "network", "inspect", "nope"))


def test_two_pods_on_the_bridge_talk_tcp_in_both_families(netd: Daemon) -> None:
    server = ok(kurmactl(netd, "run", "-d", "--name", "srv", IMAGE_NAME, *SH, httpd("hello")))
    try:
        v4, v6 = sorted(addresses(netd, "srv"), key=lambda a: ":" in a)
        assert v4.startswith("169.254.42.") and v6.startswith("fdfe:42::")
        for target in (ip(v4), f"[{ip(v6)}]"):
            script = (f"for i in $(seq 50); do wget -qO- http://{target}:8000/f && exit 0; "
                      "sleep 0.1; done; exit 1")  # fmt: skip
            assert ok(kurmactl(netd, "run", "--rm", IMAGE_NAME, *SH, script)) == "hello\n"
    finally:
        kurmactl(netd, "rm", "-f", server.strip())


def test_published_port_reaches_the_pod_from_the_host(netd: Daemon, lab: Lab) -> None:
    uuid = ok(kurmactl(netd, "run", "-d", "--name", "pub", "-p", "18080:8000", IMAGE_NAME,
                       *SH, httpd("published")))  # fmt: skip
    try:
        doc = json.loads(ok(kurmactl(netd, "inspect", "pub")))
        (network,) = doc["networks"]
        assert network["ports"] == [{"host_port": 18080, "container_port": 8000,
                                     "protocol": "tcp", "host_ip": ""}]  # fmt: skip
        gateway = network["gateways"][0]  # the bridge's own address, in the lab's host
        wget = ["ip", "netns", "exec", lab.host, "busybox", "wget", "-qO-",
                f"http://{gateway}:18080/f"]  # fmt: skip
        got = wait_for(
            lambda: subprocess.run(wget, capture_output=True, text=True).stdout,
            "the published port",
            20,
            every=0.2,
        )
        assert got == "published\n"
    finally:
        kurmactl(netd, "rm", "-f", uuid.strip())
    assert lab.rules_mentioning(uuid.strip()) == []


def test_none_has_loopback_only_and_host_sees_the_hosts_links(netd: Daemon, lab: Lab) -> None:
    links = ok(kurmactl(netd, "run", "--rm", "--net", "none", IMAGE_NAME, *SH, LINKS))
    assert links.split() == ["lo"]
    hosts = ok(kurmactl(netd, "run", "--rm", "--net", "host", IMAGE_NAME, *SH, LINKS))
    assert "kt-br0" in hosts.split()  # the lab's host namespace: kurmad's
    assert sorted(hosts.split()) == sorted(lab.host_links())


def test_a_plugin_failure_names_it_and_leaves_nothing(netd: Daemon, lab: Lab) -> None:
    """kt-tiny has one address: the second pod's start fails naming the bridge plugin and
    its IPAM's message; no veth, allocation or stored attachment stays of it."""
    first = ok(kurmactl(netd, "run", "-d", "--net", "kt-tiny", IMAGE_NAME, *SH, "sleep 600"))
    try:
        veths, allocations = lab.veths(), lab.allocations()
        message = failed(kurmactl(netd, "run", "-d", "--net", "kt-tiny", IMAGE_NAME, *SH,
                                  "sleep 600"))  # fmt: skip
        assert "bridge" in message and "no IP addresses available" in message, message
        assert lab.veths() == veths and lab.allocations() == allocations
    finally:
        kurmactl(netd, "rm", "-f", first.strip())
        for pod in json.loads(ok(kurmactl(netd, "ps", "-a", "-o", "json"))):
            kurmactl(netd, "rm", "-f", pod["uuid"])
    nothing_left(lab)


def test_two_hundred_cycles_leave_nothing(netd: Daemon, lab: Lab) -> None:
    with Client.connect(str(netd.socket), timeout=20) as client:
        for _ in range(200):
            spec = run_spec(app_spec(IMAGE_NAME, exec=["/bin/true"]))
            spec.networks.append("kt-quick")
            pod = client.create_pod(spec=spec, start=True)
            client.wait(pod.uuid, timeout=30)
            client.destroy(pod.uuid)
    nothing_left(lab)
    state = netd.state / "networks"
    assert not state.exists() or os.listdir(state) == []


def test_kill_9_then_restart_cleans_up_or_keeps(netd: Daemon, lab: Lab) -> None:
    """kill -9 kurmad with a pod on the bridge: the next kurmad adopts the pod with its
    network (its address still answers); destroying it then releases everything."""
    uuid = ok(kurmactl(netd, "run", "-d", "--name", "survivor", IMAGE_NAME, *SH, httpd("alive")))
    uuid = uuid.strip()
    v4 = ip(sorted(addresses(netd, "survivor"), key=lambda a: ":" in a)[0])
    netd.signal(signal.SIGKILL)
    netd.wait()
    netd.start("--networks-dir", str(lab.dir / "net.d"), "--default-network", "kt-bridge")
    assert addresses(netd, "survivor")[0].startswith(v4)
    out = run("ip", "netns", "exec", lab.host, "busybox", "wget", "-qO-", f"http://{v4}:8000/f")
    assert out == "alive\n"
    ok(kurmactl(netd, "rm", "-f", uuid))
    nothing_left(lab)


@contextlib.contextmanager
def tenant_on_bridge(netd: Daemon, name: str) -> Iterator[Client]:
    """A client on the API socket of a `subtree` pod on kt-bridge (destroyed afterwards)."""
    from .test_quotas import pod_doc

    with Client.connect(str(netd.socket), timeout=20) as host:
        (image,) = [i.id for i in host.list_images() if i.name == IMAGE_NAME]
        networks = {"name": "os/linux/networks", "value": [{"name": "kt-bridge"}]}
        parent = host.create_pod(manifest_json=pod_doc(image, isolators=(networks,)),
                                 name=name, start=True)  # fmt: skip
        try:
            socket = netd.work / "pods" / parent.uuid / "api" / "api.sock"
            wait_for(socket.exists, "the pod's API socket", 20)
            with Client.connect(str(socket), timeout=20) as me:
                yield me
        finally:
            host.destroy(parent.uuid)


def test_a_pod_attaches_its_children_only_to_its_own_networks(netd: Daemon) -> None:
    """Recursion: a `subtree` pod on kt-bridge may put its children on kt-bridge (its
    default too), not on kt-quick; PERMISSION_DENIED names the network and what it holds."""
    with tenant_on_bridge(netd, "net-parent") as me:
        spec = run_spec(app_spec(IMAGE_NAME, exec=["/bin/true"]))
        spec.networks.append("kt-quick")
        with pytest.raises(PermissionDenied, match=r"network kt-quick.*\(kt-bridge\)"):
            me.create_pod(spec=spec)
        child = me.create_pod(spec=run_spec(app_spec(IMAGE_NAME, exec=["/bin/true"])))
        doc = json.loads(child.manifest_json)
        (iso,) = [i for i in doc["isolators"] if i["name"] == "os/linux/networks"]
        assert iso["value"] == [{"name": "kt-bridge"}]  # the default, which it holds


def test_below_the_host_published_ports_stay_in_the_tenants_range(netd: Daemon) -> None:
    """A pod's child may not publish a host port outside kurmad's tenant_publish_ports
    (none here): portmap would take the host's own connections to, say, port 22."""
    with tenant_on_bridge(netd, "port-parent") as me:
        spec = run_spec(app_spec(IMAGE_NAME, exec=["/bin/true"]))
        spec.ports.add(host_port=22, container_port=22)
        with pytest.raises(PermissionDenied, match=r"host port 22.*\(none\)"):
            me.create_pod(spec=spec)


def test_the_metadata_service_answers_a_pod_on_a_network(netd: Daemon) -> None:
    """The metadata listener is in the pod's own netns, so eth0 and a default route do not
    take it away: the pod still learns its UUID."""
    uuid_and_links = ok(kurmactl(netd, "run", "--rm", "--name", "meta", IMAGE_NAME, *SH,
                                 "wget -qO- --header 'Metadata-Flavor: AppContainer' "
                                 "$AC_METADATA_URL/acMetadata/v1/pod/uuid; echo; "
                                 + LINKS))  # fmt: skip
    uuid, *links = uuid_and_links.split()
    assert len(uuid) == 36 and sorted(links) == ["eth0", "lo"]
