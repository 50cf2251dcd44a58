"""Pods on CNI networks: the Runtime attaches them behind the network gate and cleans up.

Isolation: the Runtime runs in a subprocess (tests/root/netns_runtime_driver.py) that joins
a "host" network namespace the test made (`Lab`, tests/root/network_support.py) with
`nsenter --net`, so the bridge, the veths' host ends and portmap's iptables rules live
there; the fixture destroys the pods, deletes the namespace (and everything in it), the
directories and the runtime's cgroup, also when a test fails. Subnets: 169.254.0.0/16 and
fdfe::/16; host-local's dataDir is the lab's; `ipMasq` off (see network_support.py).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.runtime.cgroups import CgroupSystem

from ..waiting import wait_for
from .network_support import Lab
from .runtime_support import busybox_aci  # noqa: F401  (a fixture)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="no CNI plugins"),
]

DRIVER = Path(__file__).with_name("netns_runtime_driver.py")
REPO = Path(__file__).resolve().parents[2]
NET = "kt-bridge"


class DriverError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


class Driver:
    """A Runtime in a subprocess inside the lab's host namespace."""

    def __init__(self, lab: Lab, opts: dict[str, Any]) -> None:
        self.stderr = open(lab.dir / "driver.log", "ab")  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{lab.host}", sys.executable, str(DRIVER),
             json.dumps(opts)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
            env=env,
        )  # fmt: skip
        self.image = self._answer()

    def _answer(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"driver ended: {self.log()[-3000:]}")
        doc = json.loads(line)
        if "error" in doc:
            raise DriverError(doc["error"], doc["message"])
        return doc["ok"]

    def call(self, *request: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def log(self) -> str:
        self.stderr.flush()
        return Path(self.stderr.name).read_text(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.stderr.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            for pod in self.call("list"):
                self.call("destroy", pod["uuid"])
            self.call("close")
            self.proc.wait(30)
        self.stderr.close()


class NetEnv:
    def __init__(self, lab: Lab, aci: Path) -> None:
        self.lab = lab
        self.state = lab.dir / "state"
        self.netd = lab.dir / "net.d"
        self.netd.mkdir()
        self.parent = f"kurma-test-{lab.tag}"
        self.opts = {"state": str(self.state), "cgroup_parent": self.parent,
                     "networks_dir": str(self.netd), "aci": str(aci)}  # fmt: skip
        self.drivers: list[Driver] = []
        self.network(lab.bridge_doc(NET, v4="169.254.42.0/24", v6="fdfe:42::/64"))

    def network(self, doc: dict[str, Any]) -> None:
        (self.netd / f"{doc['name']}.conflist").write_text(json.dumps(doc))

    def driver(self) -> Driver:
        d = Driver(self.lab, self.opts)
        self.drivers.append(d)
        return d

    def manifest(self, image: str, script: str, networks: list[Any] | None, **extra: Any) -> str:
        doc: dict[str, Any] = {
            "acKind": "PodManifest",
            "acVersion": "0.8.11",
            "apps": [{"name": "sh", "image": {"id": image},
                      "app": {"exec": ["/bin/sh", "-c", script], "user": "0", "group": "0"}}],
        }  # fmt: skip
        if networks is not None:
            doc["isolators"] = [{"name": "os/linux/networks", "value": networks}]
        doc.update(extra)
        return json.dumps(doc)

    def log(self, uuid: str) -> str:
        path = self.state / "pods" / uuid / "logs" / "sh.log"
        return path.read_text() if path.exists() else ""

    def stored(self) -> list[str]:
        d = self.state / "networks"
        return sorted(os.listdir(d)) if d.exists() else []

    def assert_clean(self) -> None:
        """No veth, IP allocation, per-pod iptables chain or attachment record is left."""
        wait_for(lambda: self.lab.veths() == [], "the veths to go", timeout=15)
        assert self.lab.allocations() == []
        assert self.lab.rules_mentioning("CNI-DN-") == []
        assert self.stored() == []

    def close(self) -> None:
        problems = []
        try:
            for d in self.drivers:
                try:
                    d.close()
                except Exception as e:
                    problems.append(str(e))
            if any(self.state.joinpath("pods").glob("*")):
                try:
                    self.driver().close()  # a new runtime reconciles and destroys the rest
                except Exception as e:
                    problems.append(str(e))
        finally:
            parent = CgroupSystem.detect().open(self.parent)
            if any(os.path.isdir(d) for _, d in parent.directories()):
                parent.kill_all()
                parent.remove()
            self.lab.close()
        if problems:
            pytest.fail("; ".join(problems))


@pytest.fixture
def net(tmp_path: Path, busybox_aci: Path) -> Iterator[NetEnv]:  # noqa: F811
    env = NetEnv(Lab(tmp_path), busybox_aci)
    try:
        yield env
    finally:
        env.close()


SERVER = "ip -o addr; cat /etc/hosts; echo ready; while true; do echo pong | nc -l -p 7000; done"


def test_two_pods_on_a_bridge_reach_each_other_and_the_gateway(net: NetEnv) -> None:
    rt = net.driver()
    a = rt.call("create", net.manifest(rt.image, SERVER, [{"name": NET}]), "pod-a")
    started = rt.call("start", a)
    assert started["apps"][0]["error"] is None
    (eth0,) = rt.call("networks", a)
    assert eth0["network"] == NET and eth0["ifname"] == "eth0"
    v4 = next(ip.split("/")[0] for ip in eth0["ips"] if ip.startswith("169.254.42."))
    v6 = next(ip.split("/")[0] for ip in eth0["ips"] if ip.startswith("fdfe:42::"))
    wait_for(lambda: "ready" in net.log(a), "pod a's server")
    log = net.log(a)
    assert f"inet {v4}/24" in log and f"inet6 {v6}/64" in log  # the app saw eth0 at once
    assert f"{v4}\tpod-a" in log and f"{v6}\tpod-a" in log  # /etc/hosts from the result
    client = (  # the server's nc restarts between two clients: retry
        "get() { for i in $(seq 50); do r=$(echo x | nc -w 3 $1 7000 2>/dev/null); "
        '[ -n "$r" ] && { echo $r; return; }; sleep 0.1; done; echo failed; }; '
        f"ping -c1 -W3 169.254.42.1 >/dev/null && echo gateway-ok; get {v4}; get {v6}; echo done"
    )
    b = rt.call("create", net.manifest(rt.image, client, [{"name": NET}]), "pod-b")
    rt.call("start", b)
    final = rt.call("wait", b, 30)
    assert final["apps"][0]["exit_code"] == 0, net.log(b)
    assert net.log(b).split() == ["gateway-ok", "pong", "pong", "done"]
    assert rt.call("networks", b) == []  # exited: detached at its end
    assert len(net.lab.veths()) >= 1
    rt.call("destroy", b)
    rt.call("destroy", a)
    net.assert_clean()


def test_the_empty_list_is_loopback_only(net: NetEnv) -> None:
    rt = net.driver()
    uuid = rt.call("create", net.manifest(rt.image, "ip -o link", []), "lonely")
    rt.call("start", uuid)
    assert rt.call("wait", uuid, 30)["apps"][0]["exit_code"] == 0
    links = [line.split(":")[1].strip() for line in net.log(uuid).splitlines()]
    assert links == ["lo"]
    assert rt.call("networks", uuid) == []
    rt.call("destroy", uuid)
    net.assert_clean()


def test_a_missing_network_or_the_hosts_netns_fails_at_create(net: NetEnv) -> None:
    rt = net.driver()
    with pytest.raises(DriverError) as e:
        rt.call("create", net.manifest(rt.image, "true", [{"name": "nope"}]), "missing")
    assert e.value.kind == "NetworkNotFound"
    assert "'nope'" in e.value.message and NET in e.value.message
    host = [{"name": "os/linux/namespaces", "value": {"net": "host"}}]
    doc = json.loads(net.manifest(rt.image, "true", [{"name": NET}]))
    doc["isolators"] += host
    with pytest.raises(DriverError) as e:
        rt.call("create", json.dumps(doc), "hostnet")
    assert e.value.kind == "ValidationError"
    assert "os/linux/networks" in e.value.message and "os/linux/namespaces" in e.value.message
    assert rt.call("list") == []


def test_a_plugin_failure_fails_the_start_naming_it_and_leaves_nothing(net: NetEnv) -> None:
    one = net.lab.bridge_doc("kt-one", v4="169.254.43.0/24", v6=None, range_end="169.254.43.9")
    one["plugins"][0]["bridge"] = "kt-br1"  # a bridge of its own (kt-br0 is kt-bridge's)
    net.network(one)
    net.network({"cniVersion": "1.0.0", "name": "kt-bogus",
                 "plugins": [{"type": "no-such-plugin"}]})  # fmt: skip
    rt = net.driver()
    first = rt.call("create", net.manifest(rt.image, "sleep 100", [{"name": "kt-one"}]), "one")
    rt.call("start", first)
    veths, allocations = net.lab.veths(), net.lab.allocations()
    assert len(veths) == 1 and len(allocations) == 1
    second = rt.call("create", net.manifest(rt.image, "echo ran", [{"name": "kt-one"}]), "two")
    with pytest.raises(DriverError) as e:
        rt.call("start", second)
    assert e.value.kind == "PluginError"  # bridge, which ran host-local for its addresses
    assert "'bridge'" in e.value.message and "no IP addresses available" in e.value.message
    assert rt.call("get", second)["state"] == "created"
    assert net.log(second) == ""  # the app never ran
    assert net.lab.veths() == veths and net.lab.allocations() == allocations
    assert [f for f in net.stored() if f.startswith(second)] == []
    # a bogus plugin after a good network: the good one is detached again
    third = rt.call(
        "create", net.manifest(rt.image, "echo ran", [{"name": NET}, {"name": "kt-bogus"}]), "3"
    )
    with pytest.raises(DriverError) as e:
        rt.call("start", third)
    assert "no-such-plugin" in e.value.message
    wait_for(lambda: net.lab.veths() == veths, "only the first pod's veth")
    assert net.lab.allocations() == allocations
    assert [f for f in net.stored() if not f.startswith(first)] == []
    for uuid in (first, second, third):
        rt.call("destroy", uuid)
    net.assert_clean()


def test_create_start_destroy_cycles_leave_nothing_and_what_a_network_costs(
    net: NetEnv,
) -> None:
    rt = net.driver()
    ports = [{"name": NET, "ports": [{"hostPort": 18080, "containerPort": 80}]}]
    timings: dict[str, list[float]] = {"bridge": [], "none": []}
    for i in range(20):
        kind = "bridge" if i % 2 == 0 else "none"
        networks = ports if kind == "bridge" else []
        uuid = rt.call("create", net.manifest(rt.image, "sleep 100", networks), f"c{i}")
        timings[kind].append(rt.call("start", uuid)["seconds"])
        if kind == "bridge":
            assert net.lab.rules_mentioning(uuid)  # portmap's rules name the pod
        rt.call("destroy", uuid)
    net.assert_clean()
    p50 = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    print(f"pod start p50: bridge+portmap {p50['bridge']:.1f} ms, loopback {p50['none']:.1f} ms")


def test_a_killed_runtimes_pods_are_checked_or_detached_by_the_next(net: NetEnv) -> None:
    rt = net.driver()
    kept = rt.call("create", net.manifest(rt.image, SERVER, [{"name": NET}]), "kept")
    gone = rt.call("create", net.manifest(rt.image, "sleep 100", [{"name": NET}]), "gone")
    rt.call("start", kept)
    rt.call("start", gone)
    wait_for(lambda: "ready" in net.log(kept), "the server")
    rt.kill()
    (net.state / "pods" / gone / "pod.json").unlink()  # its record lost with the crash
    rt2 = net.driver()
    assert [p["name"] for p in rt2.call("list")] == ["kept"]
    assert [n["ifname"] for n in rt2.call("networks", kept)] == ["eth0"]
    log = rt2.log()
    assert "network kt-bridge (eth0) checked" in log or "CHECK failed" in log
    assert "detaching its 1 network(s)" in log
    assert [f.split("@")[0] for f in net.stored()] == [kept]
    assert len(net.lab.allocations()) == 2  # kept's IPv4 and IPv6
    wait_for(lambda: len(net.lab.veths()) == 1, "the lost pod's veth to go")
    rt2.call("destroy", kept)
    net.assert_clean()
