"""Red team (issue "Hardening"): what still got out after the hardening, one attack per
test, its contract in the docstring, each through a real kurmad (the metadata one through
the service kurmad runs, in network namespaces of its own).

Every pod a test creates is destroyed after it (the `kurma` fixtures), even on failure.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import build_aci
from kurma.client import (
    AlreadyExists,
    Client,
    PermissionDenied,
    ResourceExhausted,
    app_spec,
    run_spec,
)
from kurma.runtime.linux import CLONE_NEWNET, setns
from kurma.runtime.metadata import MetadataConfig, MetadataService
from kurma.services import parse_services, write_services_file
from tests.root.runtime_support import IMAGE_NAME, busybox_rootfs, image_manifest
from tests.root.test_kurmad import (
    Daemon,
    daemon_with_image,
    host_client,
    make_daemon,
)
from tests.root.test_metadata_netns import fetch_in
from tests.root.test_metadata_netns import make_netns as make_netns
from tests.root.test_services import sh as sh_service
from tests.security.test_operator import Site
from tests.security.test_operator import site as site
from tests.security.test_tenant import as_pod, pod_doc
from tests.unit.test_metadata_support import images, new_uuid, pod_manifest
from tests.waiting import wait_for

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def few_workers(busybox_aci: Path) -> Iterator[tuple[Daemon, str]]:
    """kurmad with 8 workers (a tree of pods may hold 2 calls at once: a quarter) and app
    logs rotated at 100 MiB (so that only a quota makes them rotate sooner)."""
    yield from daemon_with_image(busybox_aci, "--workers", "8", "--log-max-bytes", "104857600")


@pytest.fixture
def kurma(few_workers: tuple[Daemon, str]) -> Iterator[Client]:
    """A host client; every top-level pod the test leaves is destroyed (with its subtree)."""
    yield from host_client(few_workers[0])


def drain(stream: Any, refused: list[str]) -> None:
    """Read a stream to its end (in a thread); a RESOURCE_EXHAUSTED refusal is counted."""
    with contextlib.suppress(Exception):
        try:
            for _ in stream:
                pass
        except ResourceExhausted:
            refused.append("refused")


def test_a_subtree_cannot_take_every_worker_of_the_system_socket(
    few_workers: tuple[Daemon, str], kurma: Client
) -> None:
    """A pod's socket may hold a quarter of kurmad's workers, but the workers were one pool
    for every socket, the host's included, and a subtree pod makes as many sockets as it
    likes: its children with api-access subtree each get one. The top pod and three such
    children each open two Host.Events streams (they never end): every worker was held,
    and the host's own List on the system socket waited forever (as did every other
    tenant's call).

    Now the host's calls are answered while the streams run, and a subtree as a whole
    gets no more than a pod's share: the streams past it are RESOURCE_EXHAUSTED."""
    d, image_id = few_workers
    top = kurma.create_pod(
        manifest_json=pod_doc(image_id, api="subtree"), name="greedy", start=True
    ).uuid
    streams: list[Any] = []
    clients: list[Client] = []
    try:
        sockets = [top]
        with as_pod(d, top) as me:
            for i in range(3):
                child = me.create_pod(manifest_json=pod_doc(image_id, api="subtree"),
                                      name=f"greedy-{i}").uuid  # fmt: skip
                me.start(child)
                sockets.append(child)
        exhausted: list[str] = []
        for pod in sockets:
            client = Client.connect(str(d.work / "pods" / pod / "api" / "api.sock"))
            clients.append(client)
            for _ in range(2):
                stream = client.events()
                streams.append(stream)
                threading.Thread(target=drain, args=(stream, exhausted), daemon=True).start()
        answered = threading.Event()

        def host_list() -> None:
            with d.client() as host:
                host.list_pods()
            answered.set()

        threading.Thread(target=host_list, daemon=True).start()
        assert answered.wait(10.0), "the host's List waits behind the pods' streams"
        wait_for(lambda: len(exhausted) >= 8 - 2, "6 streams refused", 10.0)
    finally:
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.cancel()
        for client in clients:
            client.close()


class _Junk(io.RawIOBase):
    """`size` bytes of an upload that is no archive at all; `staged` is the most the
    daemon's staging directory held while they were read."""

    def __init__(self, size: int, staging: Path) -> None:
        self.left = size
        self.staging = staging
        self.staged = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        held = 0
        for entry in os.scandir(self.staging):
            with contextlib.suppress(OSError):
                held += entry.stat().st_size
        self.staged = max(self.staged, held)
        n = min(self.left, 1 << 20 if n < 0 else n)
        self.left -= n
        return b"\xa5" * n


def test_an_upload_stops_at_the_subtrees_image_quota(
    few_workers: tuple[Daemon, str], kurma: Client
) -> None:
    """A subtree pod with imageBytes 1M uploads 64 MiB to Images/Import on its socket. The
    quota was checked only once the whole upload was staged in kurmad's state directory: a
    pod could fill the state filesystem (to the import reserve, so that nobody else could
    import) whatever its quota, and hold it as long as it kept the upload open.

    Now the upload is RESOURCE_EXHAUSTED naming imageBytes as soon as it passes what the
    subtree may still import (or the largest image stored, which costs nothing again), and
    its staging is removed."""
    d, image_id = few_workers
    quota = {"scope": "subtree", "quota": {"imageBytes": "1M"}}
    doc = pod_doc(image_id, isolators=[{"name": "host/api-access", "value": quota}])
    top = kurma.create_pod(manifest_json=doc, name="uploader", start=True).uuid
    largest = max(i.size for i in kurma.list_images())
    staging = d.state / "tmp"
    before = sorted(os.listdir(staging))
    junk = _Junk(64 << 20, staging)
    with as_pod(d, top) as me, pytest.raises(ResourceExhausted, match="imageBytes"):
        me.import_image(junk)  # type: ignore[arg-type]
    assert junk.staged <= max(1 << 20, largest) + (4 << 20), (junk.staged, largest)
    assert sorted(os.listdir(staging)) == before


@pytest.fixture
def with_services(busybox_aci: Path) -> Iterator[tuple[Daemon, Client, str]]:
    """A kurmad of the test's own with a services file (written by the test): (daemon, host
    client, busybox's image ID); torn down with every pod."""
    for d in make_daemon():
        with d.start("--services-file", str(d.work / "services.yml")) as client:
            image_id = client.import_image(busybox_aci).image.id
            try:
                yield d, client, image_id
            finally:
                write_services_file(d.work / "services.yml", parse_services({"services": {}}))
                wait_for(lambda: not client.services(), "the services to go", 20)


def test_a_tenant_cannot_take_a_system_services_pod_name(
    with_services: tuple[Daemon, Client, str],
) -> None:
    """A system service restarts after it exits (backoff); while it waits its pod is gone
    and its name is free. A subtree pod created a child under that name: the supervisor
    then refused to start the service ("a pod named ... exists already") for as long as the
    tenant kept its pod, and `kurmactl exec crashy`, `logs crashy` reached the tenant's pod.

    Now a caller below the host (a pod, an operator) may not create a pod under a service's
    name, nor get one generated from its app's name: PERMISSION_DENIED naming it, whether
    the service's pod exists at that moment or not; the service keeps restarting."""
    d, host, image_id = with_services
    spec = sh_service("sleep 0.3; exit 1")
    write_services_file(d.work / "services.yml", parse_services({"services": {"crashy": spec}}))
    wait_for(lambda: any(s.restarts for s in host.services()), "crashy to restart", 30)
    top = host.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name="squatter",
                          start=True).uuid  # fmt: skip
    outcomes: list[str] = []
    with as_pod(d, top) as me:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not outcomes:
            try:
                me.create_pod(manifest_json=pod_doc(image_id), name="crashy")
                outcomes.append("created")
            except PermissionDenied as e:
                outcomes.append(f"denied: {e}")
            except AlreadyExists:
                time.sleep(0.02)  # the service's own pod holds it now
        generated = json.loads(pod_doc(image_id))
        generated["apps"][0]["name"] = "crashy"
        pod = me.create_pod(manifest_json=json.dumps(generated).encode())
        assert pod.name != "crashy", pod.name
    assert len(outcomes) == 1 and outcomes[0].startswith("denied"), outcomes
    assert "crashy" in outcomes[0], outcomes
    tenant = [p.name for p in host.list_pods() if top in p.parents]
    assert "crashy" not in tenant, tenant
    restarts = next(s.restarts for s in host.services() if s.name == "crashy")
    wait_for(
        lambda: next(s.restarts for s in host.services() if s.name == "crashy") > restarts,
        "crashy to restart again",
        20,
    )


def _connections_in(netns: str, url: str, n: int) -> list[socket.socket]:
    """`n` idle connections to the metadata listener of `url`, made inside `netns` (a thread
    of our own joins it: a namespace is per thread)."""
    address = urllib.parse.urlsplit(url)
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def connect() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            for _ in range(n):
                made.append(socket.create_connection((address.hostname, address.port), 5))
        except BaseException as e:
            failed.append(e)

    thread = threading.Thread(target=connect)
    thread.start()
    thread.join(30)
    assert not failed, failed
    return made


def test_a_tree_of_pods_cannot_take_every_metadata_connection(
    make_netns: Any,
) -> None:
    """The metadata service takes at most 64 connections per pod's listener and 1024 in
    all; past that, new connections are closed at once. A subtree pod's children each have
    a listener of their own (their own network namespace): 16 of them holding 64 idle
    connections each (re-opened as the 5 s deadline closes them) left no connection for any
    other pod on the host: its apps' metadata requests were closed unanswered.

    (Here with the caps at 4 and 8: two attacking namespaces, one victim.) Now a new
    connection past the total cap closes an older one of the listener holding the most,
    when that one holds more than the newcomer's: a pod with few connections is served."""
    config = MetadataConfig(
        host_port=0, max_connections=8, max_connections_per_listener=4, request_timeout=30
    )
    held: list[socket.socket] = []
    with MetadataService(config) as svc:
        svc.start()
        for _ in range(2):
            netns = make_netns()
            url = svc.register_pod(new_uuid(), pod_manifest(), images(), netns_path=netns)
            held += _connections_in(netns, url, 4)
        try:
            time.sleep(0.2)  # the loop has accepted them
            victim_ns, victim = make_netns(), new_uuid()
            url = svc.register_pod(victim, pod_manifest(), images(), netns_path=victim_ns)
            assert fetch_in(victim_ns, url, "pod/uuid")[::2] == (200, victim)
        finally:
            for sock in held:
                sock.close()


def test_a_subtree_pod_cannot_make_pods_without_end(
    few_workers: tuple[Daemon, str], kurma: Client
) -> None:
    """Each pod, even created and never started, costs kurmad a mount (its apps' tmpfs)
    and, with api-access, a gRPC server of its own (a thread and a socket), none of it
    charged to the pod's cgroup; a subtree pod given no quota had no limit on pods (~80
    creates a second on its socket): kurmad's descriptors and threads were the tenant's to
    exhaust.

    Now the subtree's pods quota has a default (128, like the image and log quotas): the
    top pod shows it, and the create past it is RESOURCE_EXHAUSTED naming it; kurmad holds
    no more servers or mounts than that."""
    d, image_id = few_workers
    top = kurma.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name="breeder",
                           start=True).uuid  # fmt: skip
    assert kurma.get(top).quota.pods.limit == 128
    made = 0
    with as_pod(d, top) as me, pytest.raises(ResourceExhausted, match="quota pods") as refused:
        for i in range(200):
            me.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name=f"b-{i}")
            made += 1
    assert made == 128, (made, refused.value)


def test_a_tenants_image_does_not_answer_the_hosts_image_name(
    few_workers: tuple[Daemon, str], kurma: Client, tmp_path: Path
) -> None:
    """Images are shared read-only, and a name is resolved to the highest version stored.
    A subtree pod imported `example.com/busybox` version 99 (its own rootfs, with a marker
    file); the host's next `kurmactl run example.com/busybox` (a RunSpec naming the image)
    ran the tenant's image, as root, with whatever the host gave the pod; so did every other
    tenant's. Only `kurma.io/` names and the services' images were kept from tenants.

    Now a name is resolved among the images the caller's own tree imported and those no
    subtree imported (the host's, an operator's): the host gets its own image, the tenant
    its own."""
    d, image_id = few_workers
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    (rootfs / "marker").write_text("TENANT\n")
    aci = tmp_path / "evil.aci"
    build_aci(rootfs, image_manifest(IMAGE_NAME, version="99.0.0"), aci, mtime=0, owner=(0, 0))
    top = kurma.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name="poisoner",
                           start=True).uuid  # fmt: skip
    with as_pod(d, top) as me:
        evil = me.import_image(aci).image.id
        made: list[str] = []
        try:
            mine = me.create_pod(spec=_cat_marker(), start=True)
            me.wait(mine.uuid, timeout=30)
            assert b"TENANT" in _logs(me, mine.uuid)  # the tenant resolves to its own
            pod = kurma.create_pod(spec=_cat_marker(), start=True)
            made.append(pod.uuid)
            kurma.wait(pod.uuid, timeout=30)
            assert _logs(kurma, pod.uuid) == b"HOST\n"
            assert kurma.get(pod.uuid).apps[0].image_id == image_id
        finally:
            for uuid in made:
                kurma.destroy(uuid, grace=1)
            kurma.destroy(top, grace=1)
            kurma.delete_image(evil)


def _cat_marker() -> Any:
    return run_spec(
        app_spec(IMAGE_NAME, exec=["/bin/sh", "-c", "cat /marker 2>/dev/null || echo HOST"])
    )


def _logs(client: Client, pod: str) -> bytes:
    return b"".join(chunk.data for chunk in client.logs(pod))


def test_a_tenants_image_does_not_answer_a_dependency_of_the_hosts_image(
    few_workers: tuple[Daemon, str], kurma: Client, tmp_path: Path
) -> None:
    """The host imports `example.com/base` (busybox) and `example.com/app`, which depends
    on `example.com/base` by name. A subtree pod imports `example.com/base` version 99 (with
    a marker file). The host's pod of `example.com/app` must be rendered on the host's
    base, not on the tenant's: it was on the tenant's (the highest version stored), so the
    tenant's files ran in the host's pod.

    Now a dependency's name resolves like the app's own image name (among the host's and
    the caller's tree's imports), and after a restart among the layers the pod holds."""
    d, image_id = few_workers
    base = busybox_rootfs(tmp_path / "base")
    build_aci(base, image_manifest("example.com/base"), tmp_path / "base.aci",
              mtime=0, owner=(0, 0))  # fmt: skip
    (base / "marker").write_text("TENANT\n")
    build_aci(base, image_manifest("example.com/base", version="99.0.0"),
              tmp_path / "evil.aci", mtime=0, owner=(0, 0))  # fmt: skip
    app_root = tmp_path / "app"
    (app_root / "etc").mkdir(parents=True)
    app_doc = json.loads(image_manifest("example.com/app"))
    app_doc["dependencies"] = [{"imageName": "example.com/base"}]
    build_aci(app_root, json.dumps(app_doc).encode(), tmp_path / "app.aci",
              mtime=0, owner=(0, 0))  # fmt: skip
    imported = [kurma.import_image(tmp_path / n).image.id for n in ("base.aci", "app.aci")]
    top = kurma.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name="deps",
                           start=True).uuid  # fmt: skip
    made: list[str] = []
    try:
        with as_pod(d, top) as me:
            imported.append(me.import_image(tmp_path / "evil.aci").image.id)
        script = "cat /marker 2>/dev/null || echo HOST"
        pod = kurma.create_pod(
            spec=run_spec(app_spec("example.com/app", exec=["/bin/sh", "-c", script])),
            start=True,
        )
        made.append(pod.uuid)
        kurma.wait(pod.uuid, timeout=30)
        assert _logs(kurma, pod.uuid) == b"HOST\n"
    finally:
        for uuid in [*made, top]:
            kurma.destroy(uuid, grace=1)
        for image in reversed(imported):
            with contextlib.suppress(Exception):
                kurma.delete_image(image)


def test_the_default_log_quota_holds_for_many_pods(
    few_workers: tuple[Daemon, str], kurma: Client
) -> None:
    """The default logBytes quota (256 MiB for a subtree) is split among the pods the
    subtree may hold; with no pods limit by default each pod's logs could grow to the
    whole 256 MiB (3 files of 85 MiB per app), so a subtree of N pods kept N x 256 MiB of
    logs (on the pods' tmpfs: RAM).

    Now a child's logs rotate at 256 MiB / 128 pods / 3 files at most: the subtree's logs
    stay within its quota however many pods it makes."""
    d, image_id = few_workers
    top = kurma.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name="chatty",
                           start=True).uuid  # fmt: skip
    script = "head -c 1000000 /dev/zero | tr '\\0' x; exec sleep 1000"
    with as_pod(d, top) as me:
        doc = pod_doc(image_id, argv=["/bin/sh", "-c", script])
        child = me.create_pod(manifest_json=doc, start=True).uuid
    logs = d.work / "pods" / child / "logs"
    wait_for(lambda: (logs / "a.log.1").exists(), "a rotation of the child's 1 MB log", 20)
    assert (logs / "a.log.1").stat().st_size <= (256 << 20) // 128 // 3


def test_a_tenant_cannot_import_the_image_of_a_service_named_with_labels(
    with_services: tuple[Daemon, Client, str], tmp_path: Path
) -> None:
    """Only the host may import an image under a name a system service runs (a service
    finds its image by name, highest version first). The names were taken from the
    services' image references by cutting at `:`, so a reference with labels
    (`example.com/busybox,os=linux`, as parse_image_ref allows) protected the name
    `example.com/busybox,os=linux`, which no image has: a subtree pod imported
    `example.com/busybox` version 99 and the service ran it at its next restart, with the
    service's privileges (the console's: host api-access).

    Now the name is the reference's parsed name: the import is PERMISSION_DENIED."""
    d, host, image_id = with_services
    spec = {**sh_service("exec sleep 1000"), "image": f"{IMAGE_NAME},os=linux"}
    write_services_file(d.work / "services.yml", parse_services({"services": {"labelled": spec}}))
    wait_for(lambda: [s.state for s in host.services()] == ["RUNNING"], "the service", 30)
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    aci = tmp_path / "evil.aci"
    build_aci(rootfs, image_manifest(IMAGE_NAME, version="99.0.0"), aci, mtime=0, owner=(0, 0))
    top = host.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name="usurper",
                          start=True).uuid  # fmt: skip
    try:
        with as_pod(d, top) as me, pytest.raises(PermissionDenied, match=IMAGE_NAME):
            me.import_image(aci)
    finally:
        host.destroy(top, grace=1)
        for image in host.list_images(IMAGE_NAME):
            if image.id != image_id:
                host.delete_image(image.id)


def test_a_tenants_image_does_not_become_a_service_defined_after_it(
    with_services: tuple[Daemon, Client, str], tmp_path: Path
) -> None:
    """A subtree pod imports `example.com/monitor` version 99 (a marker file in it) before
    any service runs that name, so the import check lets it in. The admin then imports
    `example.com/monitor` and makes it a service: the supervisor resolved the name to the
    highest version stored, the tenant's, which ran as the system service (with whatever
    the admin gave the service: host volumes, api-access, privileges).

    Now a service's image name resolves among the images no pod imported: the service
    runs the admin's image."""
    d, host, image_id = with_services
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    build_aci(rootfs, image_manifest("example.com/monitor"), tmp_path / "monitor.aci",
              mtime=0, owner=(0, 0))  # fmt: skip
    (rootfs / "marker").write_text("TENANT\n")
    build_aci(rootfs, image_manifest("example.com/monitor", version="99.0.0"),
              tmp_path / "evil.aci", mtime=0, owner=(0, 0))  # fmt: skip
    top = host.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name="planter",
                          start=True).uuid  # fmt: skip
    imported: list[str] = []
    try:
        with as_pod(d, top) as me:
            imported.append(me.import_image(tmp_path / "evil.aci").image.id)
        imported.append(host.import_image(tmp_path / "monitor.aci").image.id)
        script = "cat /marker 2>/dev/null || echo HOST; exec sleep 1000"
        spec = {**sh_service(script), "image": "example.com/monitor"}
        write_services_file(
            d.work / "services.yml", parse_services({"services": {"monitor": spec}})
        )
        service = wait_for(
            lambda: next((s for s in host.services() if s.state == "RUNNING"), None),
            "the monitor service running",
            30,
        )
        wait_for(lambda: _logs(host, service.pod), "the service's output", 20)
        assert _logs(host, service.pod) == b"HOST\n"
    finally:
        write_services_file(d.work / "services.yml", parse_services({"services": {}}))
        wait_for(lambda: not host.services(), "the service to go", 20)
        host.destroy(top, grace=1)
        for image in imported:
            with contextlib.suppress(Exception):
                host.delete_image(image)


def test_a_reader_certificate_cannot_take_every_worker_of_the_system_socket(
    site: Site,
) -> None:
    """kurmad's TCP listener (mutual TLS) was a port of the same gRPC server as the system
    socket, with one pool of workers and one cap on calls in flight. A `reader`
    certificate, the least role, opened as many Host.Events streams as kurmad has workers
    (64; streams never end): from then on every call on the system socket, root's own
    (`kurmactl ps` on the console), was refused RESOURCE_EXHAUSTED or waited.

    Now the TCP listener has a server and workers of its own: the host's List is answered
    while the reader's streams run."""
    streams: list[Any] = []
    with site.client("reader") as reader:
        try:
            for _ in range(64):
                streams.append(reader.events())
            answered = threading.Event()

            def host_list() -> None:
                with contextlib.suppress(Exception), site.daemon.client() as host:
                    host.list_pods()
                    answered.set()

            threading.Thread(target=host_list, daemon=True).start()
            assert answered.wait(10.0), "the host's List is refused or waits behind the reader"
        finally:
            for stream in streams:
                with contextlib.suppress(Exception):
                    stream.cancel()


def test_a_reader_certificate_cannot_take_every_worker_of_the_tcp_listener(
    site: Site,
) -> None:
    """The same attack on the TCP listener itself: a reader's 64 Host.Events streams held
    every worker of it, and an admin certificate's calls were refused RESOURCE_EXHAUSTED.

    Now one certificate holds a quarter of the workers at most (16 of 64): the reader's
    17th stream is RESOURCE_EXHAUSTED, and the admin's List is answered."""
    streams: list[Any] = []
    refused: list[str] = []
    with site.client("reader") as reader:
        try:
            for _ in range(64):
                stream = reader.events()
                streams.append(stream)
                threading.Thread(target=drain, args=(stream, refused), daemon=True).start()
            wait_for(lambda: len(refused) >= 64 - 16, "48 streams refused", 10.0)
            with site.client("admin") as admin:
                admin.list_pods()
        finally:
            for stream in streams:
                with contextlib.suppress(Exception):
                    stream.cancel()


def test_an_operators_image_does_not_answer_the_hosts_image_name(
    site: Site, tmp_path: Path
) -> None:
    """An operator certificate is not host root, but its import of `example.com/busybox`
    version 99 (a marker file in it) answered the host's next run of that name: root's
    `kurmactl run --privileged example.com/busybox` would run the operator's files with
    everything root gives its pods.

    Now an operator's imports are recorded as its own, like a pod's: the host's name
    resolves to the host's image, the operator's to its own."""
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    (rootfs / "marker").write_text("TENANT\n")
    aci = tmp_path / "evil.aci"
    build_aci(rootfs, image_manifest(IMAGE_NAME, version="99.0.0"), aci, mtime=0, owner=(0, 0))
    made: list[str] = []
    with site.client("operator") as operator, site.daemon.client() as host:
        evil = operator.import_image(aci).image.id
        try:
            mine = operator.create_pod(spec=_cat_marker(), start=True)
            made.append(mine.uuid)
            operator.wait(mine.uuid, timeout=30)
            assert _logs(operator, mine.uuid) == b"TENANT\n"
            pod = host.create_pod(spec=_cat_marker(), start=True)
            made.append(pod.uuid)
            host.wait(pod.uuid, timeout=30)
            assert _logs(host, pod.uuid) == b"HOST\n"
        finally:
            for uuid in made:
                host.destroy(uuid, grace=1)
            host.delete_image(evil)
