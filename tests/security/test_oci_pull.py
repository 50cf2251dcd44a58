"""Red team, second round: pulls through kurmad (Fetch) from real registries, one attack
per test, the contract in the docstring.

The registries are Debian's docker-registry (tests/registry/support.py): a plain-HTTP one
with the images the attacks pull, a TLS one with htpasswd auth whose credentials only
kurmad's own `registry_auth_file` holds, and a "mirror" of the TLS one that records what it
is sent. `StallProxy` sits in front of the plain registry and holds chosen blobs half-sent
until the test lets them go, so a crash or a second pull lands at a known point. kurmad
lists the plain registry, the proxy and the mirror as insecure (plain HTTP).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from kurma.aci import Compression
from kurma.api.v1 import images_pb2
from kurma.client import Client, PermissionDenied, ResourceExhausted
from kurma.client._errors import from_rpc_error
from kurma.registry import DockerConfig
from kurma.store import ImageStore
from tests.archives import TarBuilder
from tests.oci_images import OciImage, build_image
from tests.registry.support import (
    CA,
    HttpServer,
    QuietHandler,
    RegistryProcess,
    push,
    require_tools,
    write_htpasswd,
)
from tests.root.runtime_support import busybox_layer
from tests.root.test_kurmactl import kurmactl, ok
from tests.root.test_kurmad import Daemon, daemon_with_image, host_client, make_daemon

from .test_oci import as_pod, tenant

pytestmark = pytest.mark.timeout(300)

USER, PASSWORD = "alice", "s3cret"


# --- helpers ----------------------------------------------------------------------------------


def fetch(client: Client, name: str, username: str = "", password: str = "") -> Any:
    """One Fetch through `client`; the last progress message (it carries the image)."""
    request = images_pb2.FetchRequest(name=name, username=username, password=password)
    last = None
    try:
        for message in client._images.Fetch(request, timeout=120):
            last = message
    except grpc.RpcError as e:
        raise from_rpc_error(e) from None
    assert last is not None and last.HasField("image")
    return last




def with_marker(base: bytes, name: str, data: bytes) -> bytes:
    """The layer tar `base` with one more file (a new diff_id: a layer no store has yet)."""
    buf = io.BytesIO(base)
    with tarfile.open(fileobj=buf, mode="a", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def publish(img: OciImage, registry: RegistryProcess, target: str, work: Path, **kw: Any) -> str:
    layout = img.write_layout(work / f"layout-{target.replace('/', '-').replace(':', '-')}", "t")
    push(SimpleNamespace(path=layout, tag="t"), registry, target, **kw)  # type: ignore[arg-type]
    return f"{registry.host}/{target}"


def layer_digests(img: OciImage) -> list[str]:
    return [d["digest"] for d in json.loads(img.manifest)["layers"]]


def contents(store: ImageStore) -> tuple[set[str], set[str], list[str]]:
    layout = store.layout
    blobs = {str(p.relative_to(layout.blobs)) for p in layout.blobs.rglob("*") if p.is_file()}
    return set(os.listdir(layout.layers)), blobs, sorted(os.listdir(layout.tmp))


def assert_store_consistent(store: ImageStore) -> None:
    """Every layers/ entry is whole (info.json), every images/ entry is a record, and every
    layer tree and blob an OCI image names is there."""
    layout = store.layout
    for entry in os.listdir(layout.layers):
        assert (layout.layer_dir(entry) / "info.json").is_file(), f"layers/{entry} has no info"
    for entry in os.listdir(layout.images):
        assert (layout.images / entry / "info.json").is_file(), f"images/{entry} is half made"
    for record in store.list():
        if record.oci is None:
            continue
        for key in record.oci.layers:
            assert (layout.layer_dir(key) / "info.json").is_file(), (
                f"image {record.image_id[:19]} names layer {key[:19]}, which is gone"
            )
        for digest in record.oci.blobs:
            alg, hex_ = digest.split(":")
            assert layout.blob(alg, hex_).is_file(), f"image names blob {digest}, which is gone"


# --- a proxy that holds blobs half-sent ----------------------------------------------------


class _StallHandler(QuietHandler):
    def _forward(self, method: str) -> None:
        proxy: StallProxy = self.server.state["proxy"]  # type: ignore[attr-defined]
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        with proxy.lock:
            proxy.seen.append(self.path)
        conn = http.client.HTTPConnection(proxy.upstream.host, timeout=30)
        conn.request(method, self.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        digest = self.path.rsplit("/", 1)[1] if "/blobs/" in self.path else ""
        with proxy.lock:
            hold = proxy.hold.get(digest) if resp.status in (200, 206) else None
        self.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method == "HEAD":
            return
        if hold is None:
            self.wfile.write(body)
            return
        reached, release = hold
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        reached.set()
        release.wait(120)
        with contextlib.suppress(OSError):
            self.wfile.write(body[half:])

    def do_GET(self) -> None:
        self._forward("GET")

    def do_HEAD(self) -> None:
        self._forward("HEAD")


class StallProxy:
    """Plain HTTP in front of `upstream`; `stall(digest)` makes the next answers with that
    blob stop after half the body until `release(digest)`; `reached(digest)` waits for it."""

    def __init__(self, upstream: RegistryProcess) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.seen: list[str] = []
        self.hold: dict[str, tuple[threading.Event, threading.Event]] = {}
        self._http = HttpServer(_StallHandler, {"proxy": self})
        self.host = self._http.host

    def stall(self, digest: str) -> None:
        with self.lock:
            self.hold[digest] = (threading.Event(), threading.Event())

    def reached(self, digest: str, timeout: float = 60) -> None:
        assert self.hold[digest][0].wait(timeout), f"blob {digest} was never asked for"

    def release(self, digest: str) -> None:
        with self.lock:
            _, release = self.hold.pop(digest)
        release.set()

    def release_all(self) -> None:
        with self.lock:
            held, self.hold = list(self.hold.values()), {}
        for _, release in held:
            release.set()

    def close(self) -> None:
        self.release_all()
        self._http.close()


class _MirrorHandler(QuietHandler):
    """A mirror that asks for basic auth on everything (to tempt a client to send the
    registry's credentials) and records every request's headers."""

    def do_GET(self) -> None:
        seen: list = self.server.state["seen"]  # type: ignore[attr-defined]
        seen.append((self.path, dict(self.headers.items())))
        self.send_body(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                       WWW_Authenticate='Basic realm="mirror"')  # fmt: skip

    do_HEAD = do_GET


# --- module fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools("docker-registry", "skopeo")
    return tmp_path_factory.mktemp("oci-pull")


@pytest.fixture(scope="module")
def base_tar(work: Path) -> bytes:
    return busybox_layer(work)


@pytest.fixture(scope="module")
def ca(work: Path) -> CA:
    return CA(work / "ca")


@pytest.fixture(scope="module")
def plain(work: Path) -> Iterator[RegistryProcess]:
    with RegistryProcess.start(work / "plain") as reg:
        yield reg


@pytest.fixture(scope="module")
def private(work: Path, ca: CA) -> Iterator[RegistryProcess]:
    htpasswd = write_htpasswd(work / "htpasswd", {USER: PASSWORD})
    with RegistryProcess.start(work / "private", ca=ca, htpasswd=htpasswd) as reg:
        yield reg


@pytest.fixture(scope="module")
def mirror() -> Iterator[SimpleNamespace]:
    seen: list = []
    server = HttpServer(_MirrorHandler, {"seen": seen})
    yield SimpleNamespace(host=server.host, seen=seen)
    server.close()


@pytest.fixture(scope="module")
def proxy(plain: RegistryProcess) -> Iterator[StallProxy]:
    p = StallProxy(plain)
    yield p
    p.close()


def registry_flags(work: Path, ca: CA, private: RegistryProcess, insecure: list[str],
                   mirrors: dict[str, list[str]] | None = None) -> list[str]:  # fmt: skip
    certs = ca.certs_dir(work / "certs.d", private.host)
    settings = {"certs_dir": str(certs), "insecure": insecure, "mirrors": mirrors or {}}
    authfile = work / "kurmad-auth.json"
    DockerConfig(authfile).set(private.host, USER, PASSWORD)
    return ["--registries", json.dumps(settings), "--registry-auth-file", str(authfile)]


@pytest.fixture(scope="module")
def pulld(
    busybox_aci: Path,
    work: Path,
    ca: CA,
    plain: RegistryProcess,
    private: RegistryProcess,
    mirror: SimpleNamespace,
    proxy: StallProxy,
) -> Iterator[tuple[Daemon, str]]:
    """One kurmad for the module: (daemon, busybox image ID); the private registry's
    credentials in its own auth file; the mirror tried first for the private registry."""
    flags = registry_flags(
        work, ca, private, [plain.host, proxy.host, mirror.host], {private.host: [mirror.host]}
    )
    yield from daemon_with_image(busybox_aci, *flags)


@pytest.fixture
def kurma(pulld: tuple[Daemon, str]) -> Iterator[Client]:
    yield from host_client(pulld[0])


def small_image(name: str, size: int, kind: Compression = Compression.GZIP) -> OciImage:
    return build_image(
        [(TarBuilder().dir("./").file(name, os.urandom(size)), kind)],
        run={"Entrypoint": ["/" + name]},
    )


# --- 1. credentials --------------------------------------------------------------------------


def test_kurmads_own_credentials_serve_the_host_only(
    kurma: Client,
    pulld: tuple[Daemon, str],
    private: RegistryProcess,
    mirror: SimpleNamespace,
    work: Path,
) -> None:
    """Contract: kurmad's own auth file holds the credentials of an htpasswd registry. The
    host's Fetch without credentials succeeds; a tenant pod's (api-access subtree) without
    credentials is PERMISSION_DENIED naming the registry and "anonymous", and so is one with
    a wrong password; with its own right credentials in the request it succeeds. The
    registry's mirror (tried first, asking for basic auth) never receives an Authorization
    header: neither the host file's credentials nor the tenant's."""
    d, busybox = pulld
    host_ref = publish(small_image("h", 1000), private, "private/host:v1", work,
                       creds=(USER, PASSWORD))  # fmt: skip
    tenant_ref = publish(small_image("t", 1000), private, "private/tenant:v1", work,
                         creds=(USER, PASSWORD))  # fmt: skip
    assert fetch(kurma, host_ref).image.references == [host_ref]
    top = tenant(kurma, busybox, "creds-top")
    with as_pod(d, top) as me:
        for ref in (tenant_ref, host_ref):
            with pytest.raises(PermissionDenied) as denied:
                fetch(me, ref)
            assert private.host in str(denied.value) and "anonymous" in str(denied.value)
        with pytest.raises(PermissionDenied, match=private.host):
            fetch(me, tenant_ref, USER, "wrong")
        got = fetch(me, tenant_ref, USER, PASSWORD)
        assert tenant_ref in got.image.references
    assert mirror.seen, "the mirror was never tried"
    sent = [(p, h) for p, h in mirror.seen if any(k.lower() == "authorization" for k in h)]
    assert not sent, f"credentials sent to the mirror: {sent}"


# --- 2. quota ------------------------------------------------------------------------------


def test_a_tenant_pull_is_charged_and_one_past_the_quota_leaves_nothing(
    kurma: Client, pulld: tuple[Daemon, str], plain: RegistryProcess, work: Path
) -> None:
    """Contract: imageBytes 1Mi. A tenant pod pulls a 300 KB image: it works and the
    quota's use grows by the image's size. Then images past what is left (one layer of
    900 KB; two layers of 400 KB, the first fitting) are each RESOURCE_EXHAUSTED naming
    imageBytes, and `image ls`, layers/, blobs/ and tmp/ are as before."""
    d, busybox = pulld
    store = ImageStore(d.state)
    fits = publish(small_image("fits", 300_000), plain, "quota/fits:v1", work)
    one = publish(small_image("one", 900_000, Compression.NONE), plain, "quota/one:v1", work)
    two_img = build_image(
        [
            (TarBuilder().dir("./").file("x", os.urandom(400_000)), Compression.GZIP),
            (TarBuilder().file("y", os.urandom(400_000)), Compression.GZIP),
        ],
        run={"Entrypoint": ["/x"]},
    )
    two = publish(two_img, plain, "quota/two:v1", work)
    top = tenant(kurma, busybox, "quota-top", {"imageBytes": "1Mi"})
    with as_pod(d, top) as me:
        before_used = kurma.get(top).quota.image_bytes.used
        image = fetch(me, fits).image
        used = kurma.get(top).quota.image_bytes.used
        assert used - before_used == image.size and 300_000 <= image.size < 320_000
        images_before = {i.id for i in kurma.list_images()}
        before = contents(store)
        for ref in (one, two):
            with pytest.raises(ResourceExhausted, match="imageBytes"):
                fetch(me, ref)
            assert {i.id for i in kurma.list_images()} == images_before, ref
            assert contents(store) == before, ref
        assert kurma.get(top).quota.image_bytes.used == used


# --- 3. crash in the middle of a blob --------------------------------------------------------


def test_kill_9_in_the_middle_of_a_blob_then_restart(
    work: Path,
    ca: CA,
    base_tar: bytes,
    plain: RegistryProcess,
    private: RegistryProcess,
    proxy: StallProxy,
) -> None:
    """Contract: kurmad is killed with SIGKILL while a pull (through the proxy) has its
    base layer's tree made and its top layer's blob half-downloaded. Started again on the
    same state dir: every layers/ entry has its info.json, tmp/ is empty, no image of the
    pull is recorded (not listed, no half images/ entry); a new pull of the same reference
    completes and the image runs."""
    marker = os.urandom(16).hex().encode()
    img = build_image(
        [
            (with_marker(base_tar, "crash-marker", marker), Compression.GZIP),
            (TarBuilder().file("big", os.urandom(1_000_000)), Compression.NONE),
        ],
        run={"Entrypoint": ["/bin/cat", "/crash-marker"]},
    )
    publish(img, plain, "crash/app:v1", work)
    ref = f"{proxy.host}/crash/app:v1"
    top_digest = layer_digests(img)[1]
    flags = registry_flags(work, ca, private, [plain.host, proxy.host])
    for d in make_daemon():
        store = ImageStore(d.state)
        with d.start(*flags) as host:
            images_before = {i.id for i in host.list_images()}
            proxy.stall(top_digest)
            errors: list[BaseException] = []

            def pull(host: Client = host, errors: list[BaseException] = errors) -> None:
                try:
                    fetch(host, ref)
                except BaseException as e:
                    errors.append(e)

            puller = threading.Thread(target=pull, daemon=True)
            puller.start()
            proxy.reached(top_digest)
            deadline = time.monotonic() + 60
            while not any(
                (store.layout.layer_dir(k) / "info.json").exists()
                for k in os.listdir(store.layout.layers)
            ):
                assert time.monotonic() < deadline, "the base layer's tree never appeared"
                time.sleep(0.05)
            staged = os.listdir(store.layout.tmp)
            d.signal(signal.SIGKILL)
            d.wait(10)
            proxy.release(top_digest)
            puller.join(30)
            assert errors, "the pull finished before the kill"
        assert staged, "nothing was staged in tmp/ when kurmad was killed"
        with d.start(*flags) as host:
            assert os.listdir(store.layout.tmp) == []
            assert_store_consistent(store)
            assert {i.id for i in host.list_images()} == images_before
            assert all(ref not in r.oci.references for r in store.list() if r.oci is not None)
            pulled = fetch(host, ref)
            assert ref in pulled.image.references
            assert ok(kurmactl(d, "run", "--rm", ref)).strip() == marker.decode()
            assert_store_consistent(store)


# --- 4. a refused tenant pull and the host's, sharing a new base layer -----------------------


def test_a_refused_tenant_pull_does_not_pull_the_base_from_under_the_hosts(
    kurma: Client,
    pulld: tuple[Daemon, str],
    base_tar: bytes,
    plain: RegistryProcess,
    proxy: StallProxy,
    work: Path,
) -> None:
    """Contract: images T (tenant) and H (host) share a base layer no store has yet. The
    tenant's pull makes the base tree, then its 600 KB top passes its imageBytes quota
    (RESOURCE_EXHAUSTED); meanwhile the host's pull of H, which found the base tree already
    there, is downloading its own top. The host's pull completes, its image has the base's
    files and runs, and afterwards (and after garbage collection) every layer tree and blob
    an image names is there and nothing else is."""
    d, busybox = pulld
    store = ImageStore(d.state)
    marker = os.urandom(16).hex().encode()
    base = with_marker(base_tar, "shared-marker", marker)
    t_img = build_image(
        [(base, Compression.GZIP),
         (TarBuilder().file("tenant-top", os.urandom(600_000)), Compression.NONE)],
        run={"Entrypoint": ["/bin/true"]},
    )  # fmt: skip
    h_img = build_image(
        [
            (base, Compression.GZIP),
            (TarBuilder().file("host-top", b"h" * 50_000), Compression.GZIP),
        ],
        run={"Entrypoint": ["/bin/cat", "/shared-marker"]},
    )
    publish(t_img, plain, "race/tenant:v1", work)
    publish(h_img, plain, "race/host:v1", work)
    t_ref, h_ref = f"{proxy.host}/race/tenant:v1", f"{proxy.host}/race/host:v1"
    base_digest, t_top = layer_digests(t_img)
    _, h_top = layer_digests(h_img)
    top = tenant(kurma, busybox, "race-top", {"imageBytes": str(len(base) + 300_000)})
    results: dict[str, object] = {}

    def run(name: str, client: Client, ref: str) -> None:
        try:
            results[name] = fetch(client, ref)
        except BaseException as e:
            results[name] = e

    try:
        with as_pod(d, top) as me:
            proxy.stall(t_top)
            t_thread = threading.Thread(target=run, args=("tenant", me, t_ref), daemon=True)
            t_thread.start()
            proxy.reached(t_top)
            deadline = time.monotonic() + 60
            while not any(
                (store.layout.layer_dir(k) / "info.json").exists()
                and json.loads((store.layout.layer_dir(k) / "info.json").read_text())["digest"]
                == base_digest
                for k in os.listdir(store.layout.layers)
            ):
                assert time.monotonic() < deadline, "the tenant's base tree never appeared"
                time.sleep(0.05)
            proxy.stall(h_top)
            h_thread = threading.Thread(target=run, args=("host", kurma, h_ref), daemon=True)
            h_thread.start()
            proxy.reached(h_top)
            proxy.release(t_top)
            t_thread.join(60)
            assert isinstance(results.get("tenant"), ResourceExhausted), results.get("tenant")
            proxy.release(h_top)
            h_thread.join(60)
    finally:
        proxy.release_all()
    host = results.get("host")
    assert not isinstance(host, BaseException), f"the host's pull failed: {host!r}"
    assert_store_consistent(store)
    assert ok(kurmactl(d, "run", "--rm", h_ref)).strip() == marker.decode()
    store.collect_garbage()
    assert_store_consistent(store)
    named_layers = {k for r in store.list() if r.oci is not None for k in r.oci.layers}
    assert set(os.listdir(store.layout.layers)) == named_layers


# --- 5. two pulls of one tenant at once ------------------------------------------------------


def test_two_concurrent_tenant_pulls_cannot_pass_the_quota_together(
    kurma: Client, pulld: tuple[Daemon, str], plain: RegistryProcess, proxy: StallProxy,
    work: Path,
) -> None:  # fmt: skip
    """Contract: imageBytes 1Mi and nothing used; the tenant pulls two new images of 600 KB
    at once (each fits alone, not both): at most one is admitted, the other is
    RESOURCE_EXHAUSTED, and the quota's use stays within 1Mi."""
    d, busybox = pulld
    imgs = [small_image(f"c{i}", 600_000, Compression.NONE) for i in (1, 2)]
    refs = []
    for i, img in enumerate(imgs):
        publish(img, plain, f"concurrent/c{i}:v1", work)
        refs.append(f"{proxy.host}/concurrent/c{i}:v1")
    digests = [layer_digests(img)[0] for img in imgs]
    top = tenant(kurma, busybox, "twice-top", {"imageBytes": "1Mi"})
    results: dict[int, object] = {}

    def run(i: int, client: Client) -> None:
        try:
            results[i] = fetch(client, refs[i])
        except BaseException as e:
            results[i] = e

    try:
        with as_pod(d, top) as me:
            threads = []
            for i, digest in enumerate(digests):
                proxy.stall(digest)
                threads.append(threading.Thread(target=run, args=(i, me), daemon=True))
                threads[-1].start()
            for digest in digests:
                proxy.reached(digest)
            for digest in digests:
                proxy.release(digest)
            for t in threads:
                t.join(60)
    finally:
        proxy.release_all()
    used = kurma.get(top).quota.image_bytes.used
    refused = [r for r in results.values() if isinstance(r, ResourceExhausted)]
    assert used <= 1 << 20, f"imageBytes 1Mi, used {used}: {results}"
    assert len(refused) == 1, results
