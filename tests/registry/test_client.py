"""kurma.registry.RegistryClient against real docker-registry processes on loopback (TLS
with a test CA, htpasswd and token auth), images pushed by skopeo; faults come from a proxy
in front of the real registry (tests/registry/support.py). No root needed.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kurma.api._status import Code, status_of
from kurma.errors import (
    DigestMismatch,
    DownloadInterrupted,
    RegistryAuthFailed,
    RegistryNotFound,
    RegistryUnreachable,
)
from kurma.oci import OCI_MANIFEST, parse_manifest, parse_reference
from kurma.registry import Credentials, DockerConfig, RegistryClient

from .support import (
    CA,
    BlobStore,
    Layout,
    RegistryProcess,
    RegistryProxy,
    TokenIssuer,
    build_layout,
    free_port,
    push,
    write_htpasswd,
)

Client = Callable[..., RegistryClient]


def ref(host: str, rest: str = "test/app:v1"):
    return parse_reference(f"{host}/{rest}")


# --- manifests and blobs ---------------------------------------------------------------------


def test_manifest_by_tag(open_registry: RegistryProcess, client_for: Client, app_image: Layout):
    fetched = client_for().get_manifest(ref(open_registry.host))
    assert fetched.data == app_image.manifest
    assert fetched.media_type == OCI_MANIFEST
    assert fetched.digest == app_image.manifest_digest
    assert fetched.registry == open_registry.host
    manifest = parse_manifest(fetched.data, fetched.media_type)
    assert [str(layer.digest) for layer in manifest.layers] == [b.digest for b in app_image.layers]


def test_manifest_by_digest(open_registry: RegistryProcess, client_for: Client, app_image: Layout):
    by_digest = ref(open_registry.host, f"test/app@{app_image.manifest_digest}")
    fetched = client_for().get_manifest(by_digest)
    assert fetched.data == app_image.manifest
    assert fetched.digest == app_image.manifest_digest


def test_blob_streams_verified(
    open_registry: RegistryProcess, client_for: Client, app_image: Layout
):
    blob = app_image.layers[1]
    seen: list[tuple[int, int]] = []
    out = io.BytesIO(b"prefix")
    out.seek(0, io.SEEK_END)
    client_for().get_blob(
        ref(open_registry.host), blob.descriptor(), out, lambda d, t: seen.append((d, t))
    )
    assert out.getvalue() == b"prefix" + blob.data
    assert seen[-1] == (blob.size, blob.size)
    assert len(seen) > 1  # streamed in pieces, not read whole


def test_wrong_blob_digest_is_detected(
    open_registry: RegistryProcess, client_for: Client, app_image: Layout
):
    """The proxy flips a byte: the download fails as DigestMismatch, never as success."""
    blob = app_image.layers[0]
    with RegistryProxy(open_registry, corrupt=True) as proxy:
        client = client_for(insecure=frozenset({proxy.host}))
        with pytest.raises(DigestMismatch, match=blob.digest):
            client.get_blob(ref(proxy.host), blob.descriptor(), io.BytesIO())


def test_wrong_manifest_digest_is_detected(
    open_registry: RegistryProcess, client_for: Client, app_image: Layout
):
    """Bytes that differ from the registry's Docker-Content-Digest are refused."""
    with RegistryProxy(open_registry, corrupt_manifest=True) as proxy:
        client = client_for(insecure=frozenset({proxy.host}))
        with pytest.raises(DigestMismatch, match=app_image.manifest_digest):
            client.get_manifest(ref(proxy.host))


def test_blob_longer_than_its_descriptor_is_refused(
    open_registry: RegistryProcess, client_for: Client, app_image: Layout
):
    from dataclasses import replace

    blob = app_image.layers[0]
    short = replace(blob.descriptor(), size=blob.size - 1)
    with pytest.raises(DigestMismatch, match="more than the declared"):
        client_for().get_blob(ref(open_registry.host), short, io.BytesIO())


def test_unknown_repository(open_registry: RegistryProcess, client_for: Client):
    with pytest.raises(RegistryNotFound) as caught:
        client_for().get_manifest(ref(open_registry.host, "test/nope:v1"))
    assert str(caught.value) == f"registry {open_registry.host} has no repository test/nope"
    assert status_of(caught.value)[0] == Code.NOT_FOUND


def test_unknown_tag(open_registry: RegistryProcess, client_for: Client):
    with pytest.raises(RegistryNotFound) as caught:
        client_for().get_manifest(ref(open_registry.host, "test/app:v9"))
    assert str(caught.value) == f"no tag v9 in {open_registry.host}/test/app"


def test_unknown_blob(open_registry: RegistryProcess, client_for: Client, app_image: Layout):
    other = build_layout(open_registry.dir / "other", [{"x": b"not pushed"}]).layers[0]
    with pytest.raises(RegistryNotFound, match=f"no blob {other.digest} in "):
        client_for().get_blob(ref(open_registry.host), other.descriptor(), io.BytesIO())


# --- TLS and plain HTTP ---------------------------------------------------------------------


def test_tls_needs_the_ca_from_certs_d(
    open_registry: RegistryProcess, client_for: Client, tmp_path: Path, registry_ca: CA
):
    empty = tmp_path / "certs.d"
    empty.mkdir()
    with pytest.raises(RegistryUnreachable) as caught:
        client_for(certs_dir=str(empty)).get_manifest(ref(open_registry.host))
    message = str(caught.value)
    assert f"TLS to {open_registry.host} failed" in message
    assert "certificate" in message
    assert f"{empty}/{open_registry.host}/ca.crt" in message
    assert status_of(caught.value)[0] == Code.UNAVAILABLE

    registry_ca.certs_dir(empty, open_registry.host)
    fetched = client_for(certs_dir=str(empty)).get_manifest(ref(open_registry.host))
    assert fetched.registry == open_registry.host


def test_plain_http_only_when_insecure(tmp_path: Path, client_for: Client, app_image: Layout):
    with RegistryProcess.start(tmp_path / "plain") as plain:
        push(app_image, plain, "test/app:v1")
        with pytest.raises(RegistryUnreachable, match=rf"TLS to {plain.host} failed.*insecure"):
            client_for().get_manifest(ref(plain.host))
        client = client_for(insecure=frozenset({plain.host}))
        assert client.get_manifest(ref(plain.host)).data == app_image.manifest
        out = io.BytesIO()
        client.get_blob(ref(plain.host), app_image.layers[0].descriptor(), out)
        assert out.getvalue() == app_image.layers[0].data


# --- auth ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory, registry_ca: CA, app_image: Layout):
    root = tmp_path_factory.mktemp("basic")
    htpasswd = write_htpasswd(root / "htpasswd", {"alice": "s3cret"})
    with RegistryProcess.start(root / "reg", ca=registry_ca, htpasswd=htpasswd) as registry:
        push(app_image, registry, "test/app:v1", creds=("alice", "s3cret"))
        yield registry


def _certs(registry_ca: CA, tmp_path: Path, *hosts: str) -> str:
    return str(registry_ca.certs_dir(tmp_path / "certs.d", *hosts))


def test_basic_auth(
    basic_registry: RegistryProcess,
    client_for: Client,
    registry_ca: CA,
    tmp_path: Path,
    app_image: Layout,
):
    config = DockerConfig(tmp_path / "config.json")
    config.set(basic_registry.host, "alice", "s3cret")
    client = client_for(config, certs_dir=_certs(registry_ca, tmp_path, basic_registry.host))
    assert client.get_manifest(ref(basic_registry.host)).data == app_image.manifest
    out = io.BytesIO()
    client.get_blob(ref(basic_registry.host), app_image.layers[0].descriptor(), out)
    assert out.getvalue() == app_image.layers[0].data


def test_basic_auth_wrong_password(
    basic_registry: RegistryProcess, client_for: Client, registry_ca: CA, tmp_path: Path
):
    client = client_for(
        lambda registry: Credentials("alice", "wrong"),
        certs_dir=_certs(registry_ca, tmp_path, basic_registry.host),
    )
    with pytest.raises(RegistryAuthFailed) as caught:
        client.get_manifest(ref(basic_registry.host))
    assert f"registry {basic_registry.host} refused access (basic as alice)" in str(caught.value)
    assert status_of(caught.value)[0] == Code.PERMISSION_DENIED


def test_basic_auth_without_credentials(
    basic_registry: RegistryProcess, client_for: Client, registry_ca: CA, tmp_path: Path
):
    client = client_for(certs_dir=_certs(registry_ca, tmp_path, basic_registry.host))
    with pytest.raises(RegistryAuthFailed, match=r"refused access \(anonymous\)"):
        client.get_manifest(ref(basic_registry.host))


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory, registry_ca: CA, app_image: Layout):
    root = tmp_path_factory.mktemp("token")
    issuer = TokenIssuer(root / "issuer", registry_ca, users={"bob": "pw"})
    with issuer, RegistryProcess.start(root / "reg", ca=registry_ca, token=issuer) as registry:
        push(app_image, registry, "test/app:v1", creds=("bob", "pw"))
        yield registry, issuer


def test_token_auth_reuses_its_token(
    token_registry, client_for: Client, registry_ca: CA, tmp_path: Path, app_image: Layout
):
    registry, issuer = token_registry
    with issuer.lock:
        issuer.requests.clear()
    client = client_for(
        lambda name: Credentials("bob", "pw") if name == registry.host else None,
        certs_dir=_certs(registry_ca, tmp_path, registry.host),
    )
    fetched = client.get_manifest(ref(registry.host))
    assert fetched.data == app_image.manifest

    blobs = [app_image.config, *app_image.layers]
    outputs = [io.BytesIO() for _ in blobs]
    errors: list[BaseException] = []

    def fetch(i: int) -> None:
        try:
            client.get_blob(ref(registry.host), blobs[i].descriptor(), outputs[i])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(blobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert [o.getvalue() for o in outputs] == [b.data for b in blobs]
    assert issuer.requests == [
        {"scope": "repository:test/app:pull", "service": issuer.service, "user": "bob"}
    ]


def test_token_auth_refused(token_registry, client_for: Client, registry_ca: CA, tmp_path: Path):
    registry, issuer = token_registry
    client = client_for(
        lambda name: Credentials("bob", "nope"),
        certs_dir=_certs(registry_ca, tmp_path, registry.host),
    )
    with pytest.raises(RegistryAuthFailed) as caught:
        client.get_manifest(ref(registry.host))
    message = str(caught.value)
    assert f"registry {registry.host} refused access" in message
    assert f"bearer token from {issuer.realm} with scope repository:test/app:pull as bob" in message


# --- redirects, resumes, mirrors ----------------------------------------------------------------


def test_redirect_to_blob_storage_without_authorization(
    basic_registry: RegistryProcess,
    client_for: Client,
    registry_ca: CA,
    tmp_path: Path,
    app_image: Layout,
):
    blob = app_image.layers[1]
    with (
        BlobStore({blob.digest: blob.data}) as store,
        RegistryProxy(basic_registry, redirect_to=None) as proxy,
    ):
        proxy.redirect_to = store.url
        client = client_for(
            lambda name: Credentials("alice", "s3cret"),
            insecure=frozenset({proxy.host}),
            certs_dir=_certs(registry_ca, tmp_path, basic_registry.host),
        )
        assert client.get_manifest(ref(proxy.host)).data == app_image.manifest
        out = io.BytesIO()
        client.get_blob(ref(proxy.host), blob.descriptor(), out)
    assert out.getvalue() == blob.data
    blob_requests = [h for p, h in proxy.seen if "/blobs/" in p]
    assert blob_requests and "Authorization" in blob_requests[-1]  # the registry got it
    assert [p for p, _ in store.seen] == [f"/storage/{blob.digest}?sig=x"]
    assert "Authorization" not in store.seen[0][1]  # the storage host did not


def test_range_resume_after_a_drop(
    open_registry: RegistryProcess, client_for: Client, app_image: Layout
):
    blob = app_image.layers[1]
    with RegistryProxy(open_registry, drop_first=True) as proxy:
        client = client_for(insecure=frozenset({proxy.host}))
        out = io.BytesIO()
        client.get_blob(ref(proxy.host), blob.descriptor(), out)
    assert out.getvalue() == blob.data
    ranges = [h.get("Range") for p, h in proxy.seen if "/blobs/" in p]
    assert ranges[0] is None
    assert ranges[1] is not None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert [s for p, s in proxy.answers if "/blobs/" in p] == [200, 206]


def test_restart_when_the_server_ignores_range(
    open_registry: RegistryProcess, client_for: Client, app_image: Layout, tmp_path: Path
):
    blob = app_image.layers[1]
    with RegistryProxy(open_registry, drop_first=True, strip_range=True) as proxy:
        client = client_for(insecure=frozenset({proxy.host}))
        with open(tmp_path / "blob", "w+b") as out:
            client.get_blob(ref(proxy.host), blob.descriptor(), out)
        assert (tmp_path / "blob").read_bytes() == blob.data
    assert [s for p, s in proxy.answers if "/blobs/" in p] == [200, 200]


def test_download_interrupted_after_retries(
    open_registry: RegistryProcess, client_for: Client, app_image: Layout
):
    blob = app_image.layers[1]
    with RegistryProxy(open_registry, drop_always=True) as proxy:
        client = client_for(insecure=frozenset({proxy.host}))
        with pytest.raises(DownloadInterrupted) as caught:
            client.get_blob(ref(proxy.host), blob.descriptor(), io.BytesIO())
    assert f"download of blob {blob.digest} from {proxy.host} broke off 5 times" in str(
        caught.value
    )
    assert status_of(caught.value)[0] == Code.UNAVAILABLE


def test_mirrors_first_down_second_serves(
    open_registry: RegistryProcess, client_for: Client, app_image: Layout
):
    down, origin_down = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    client = client_for(mirrors=((origin_down, (down, open_registry.host)),))
    fetched = client.get_manifest(ref(origin_down))
    assert fetched.registry == open_registry.host
    assert fetched.data == app_image.manifest
    out = io.BytesIO()
    client.get_blob(ref(origin_down), app_image.layers[0].descriptor(), out)
    assert out.getvalue() == app_image.layers[0].data


def test_mirrors_all_down_reports_the_last_error(client_for: Client):
    first, second, origin = (f"127.0.0.1:{free_port()}" for _ in range(3))
    client = client_for(mirrors=((origin, (first, second)),))
    with pytest.raises(RegistryUnreachable, match=f"cannot connect to {origin}"):
        client.get_manifest(ref(origin))
