"""The metadata service inside pods' network namespaces, reached from processes in them.

Each namespace is held by an `unshare --net sleep` child (its `lo` starts down, as a pod's
does) and is gone once the child is killed and the service closes its listener; the
fixture kills the children even when a test fails.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from kurma.runtime.metadata import DEFAULT_PORT, MetadataConfig, MetadataService
from tests.unit.test_metadata_support import TEXT, images, new_uuid, pod_manifest, request

from ..waiting import wait_for

pytestmark = pytest.mark.root

_CLIENT = """
import json, sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Metadata-Flavor": "AppContainer"})
try:
    with urllib.request.urlopen(req, timeout=5) as resp:
        out = [resp.status, resp.headers["Content-Type"], resp.read().decode()]
except urllib.error.HTTPError as e:
    out = [e.code, e.headers["Content-Type"], e.read().decode()]
except OSError as e:
    out = [0, None, type(e).__name__ + ": " + str(e)]
print(json.dumps(out))
"""


def fetch_in(netns: str, url: str, path: str) -> tuple[int, str | None, str]:
    """GET url/acMetadata/v1/path from a process inside the network namespace `netns`."""
    cmd = [
        "nsenter",
        f"--net={netns}",
        sys.executable,
        "-c",
        _CLIENT,
        f"{url}/acMetadata/v1/{path}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
    status, ctype, body = json.loads(done.stdout)
    return status, ctype, body


def _ns_inode(path: str) -> int:
    return os.stat(path).st_ino


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Makes network namespaces; returns their /proc/PID/ns/net paths; kills holders after."""
    holders: list[subprocess.Popen[bytes]] = []
    own = _ns_inode("/proc/self/ns/net")

    def make() -> str:
        proc = subprocess.Popen(["unshare", "--net", "sleep", "600"])
        holders.append(proc)
        path = f"/proc/{proc.pid}/ns/net"
        # until unshare has exec'd sleep in the new namespace
        wait_for(lambda: _ns_inode(path) != own, "unshare --net to start", every=0.005)
        return path

    try:
        yield make
    finally:
        for proc in holders:
            proc.kill()
        for proc in holders:
            proc.wait()


@pytest.fixture
def service() -> Iterator[MetadataService]:
    svc = MetadataService(MetadataConfig(host_port=0))
    svc.start()
    try:
        yield svc
    finally:
        svc.close()


def free_host_port() -> int:
    """A port nobody listens on in the host namespace (checked by binding it)."""
    while True:
        port = random.randint(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def test_pod_reads_its_uuid_over_its_own_loopback(
    service: MetadataService, make_netns: Callable[[], str]
) -> None:
    """Default scheme: http://127.0.0.1:8775/TOKEN, reachable from inside the pod's netns."""
    netns, pod = make_netns(), new_uuid()
    url = service.register_pod(pod, pod_manifest(), images(), netns_path=netns)
    assert url.startswith(f"http://127.0.0.1:{DEFAULT_PORT}/")
    assert fetch_in(netns, url, "pod/uuid") == (200, TEXT, pod)


def test_the_host_namespace_has_no_such_listener(make_netns: Callable[[], str]) -> None:
    port = free_host_port()
    with MetadataService(MetadataConfig(pod_port=port, host_port=0)) as svc:
        svc.start()
        netns, pod = make_netns(), new_uuid()
        url = svc.register_pod(pod, pod_manifest(), images(), netns_path=netns)
        assert url.startswith(f"http://127.0.0.1:{port}/")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert fetch_in(netns, url, "pod/uuid") == (200, TEXT, pod)


def test_a_token_works_only_in_its_own_namespace(
    service: MetadataService, make_netns: Callable[[], str]
) -> None:
    """Pod B's token sent to pod A's listener finds nothing, though B is registered."""
    ns_a, ns_b = make_netns(), make_netns()
    url_a = service.register_pod(new_uuid(), pod_manifest(), images(), netns_path=ns_a)
    url_b = service.register_pod(new_uuid(), pod_manifest(), images(), netns_path=ns_b)
    assert url_a.rsplit("/", 1)[0] == url_b.rsplit("/", 1)[0]  # same address, other netns
    assert fetch_in(ns_a, url_b, "pod/uuid")[0] == 404
    assert fetch_in(ns_b, url_b, "pod/uuid")[0] == 200


def test_unregister_closes_the_listener_in_the_pod(
    service: MetadataService, make_netns: Callable[[], str]
) -> None:
    netns, pod = make_netns(), new_uuid()
    url = service.register_pod(pod, pod_manifest(), images(), netns_path=netns)
    service.unregister_pod(pod)
    status, _, body = fetch_in(netns, url, "pod/uuid")
    assert status == 0 and "Connection refused" in body


def test_pods_sharing_a_namespace_share_its_listener(
    service: MetadataService, make_netns: Callable[[], str]
) -> None:
    netns, first, second = make_netns(), new_uuid(), new_uuid()
    url_1 = service.register_pod(first, pod_manifest(), images(), netns_path=netns)
    url_2 = service.register_pod(second, pod_manifest(), images(), netns_path=netns)
    service.unregister_pod(first)
    assert fetch_in(netns, url_1, "pod/uuid")[0] == 404
    assert fetch_in(netns, url_2, "pod/uuid") == (200, TEXT, second)


def test_host_network_pods_use_the_host_listener(service: MetadataService) -> None:
    """A pod in the daemon's own namespace gets the shared 127.0.0.1 listener."""
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images(), netns_path="/proc/self/ns/net")
    assert url.rsplit("/", 1)[0] == service.url_of(pod).rsplit("/", 1)[0]  # type: ignore[union-attr]
    assert request(url, "pod/uuid").body == pod.encode()


def test_two_hundred_pods_in_their_own_namespaces_one_thread(
    make_netns: Callable[[], str],
) -> None:
    """200 namespaces, 200 listeners, one serving thread; a few pods check their answers."""
    before = threading.active_count()
    with MetadataService(MetadataConfig(host_port=0)) as svc:
        svc.start()
        pods = {}
        for _ in range(200):
            netns, pod = make_netns(), new_uuid()
            pods[pod] = (netns, svc.register_pod(pod, pod_manifest(), images(), netns_path=netns))
        assert threading.active_count() == before + 1
        for pod in random.sample(sorted(pods), 4):
            netns, url = pods[pod]
            assert fetch_in(netns, url, "pod/uuid") == (200, TEXT, pod)
            assert fetch_in(netns, url, "apps/web/annotations") == (200, "application/json", "[]")
    assert threading.active_count() == before
