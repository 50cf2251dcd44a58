"""Pull from a real registry and run: kurmactl and kurmad against Debian's docker-registry.

One TLS registry (a CA the test makes) for the module, holding images pushed with skopeo
from OCI layouts built here (tests.oci_images): a busybox image whose config sets
Entrypoint, Cmd, Env, WorkingDir; a multi-arch index; an arm64-only image. One kurmad whose
kurmad.yml `registries.certs_dir` trusts the CA. What a person checks: the pull's output,
`image ls`, the pod's output, and the errors' words.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from kurma.aci import Compression
from kurma.registry import RegistryClient, RegistrySettings
from kurma.sources import pull_image
from kurma.store import ImageStore
from tests.archives import TarBuilder
from tests.oci_images import OciImage, build_image
from tests.registry.support import CA, RegistryProcess, push, require_tools, write_htpasswd

from ..waiting import wait_for
from .runtime_support import busybox_layer
from .test_kurmactl import failed, kurmactl, ok
from .test_kurmad import Daemon, make_daemon

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

RUN = {
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo $GREETING from $(pwd) as $(id -u)"],
    "Env": ["PATH=/bin", "GREETING=hello"],
    "WorkingDir": "/tmp",
}




@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pull")


@pytest.fixture(scope="module")
def base_tar(work: Path) -> bytes:
    return busybox_layer(work)


def busybox_image(base_tar: bytes, **kw: object) -> OciImage:
    top = TarBuilder().dir("etc").file("etc/motd", b"pulled\n")
    return build_image(
        [(base_tar, Compression.GZIP), (top, Compression.ZSTD)], run=kw.pop("run", RUN), **kw
    )  # type: ignore[arg-type]


def publish(img: OciImage, registry: RegistryProcess, target: str, work: Path, **kw) -> None:
    layout = img.write_layout(work / f"layout-{target.replace('/', '-').replace(':', '-')}", "t")
    push(SimpleNamespace(path=layout, tag="t"), registry, target, **kw)  # type: ignore[arg-type]


def publish_index(images: dict[str, OciImage], registry: RegistryProcess, target: str,
                  work: Path) -> None:  # fmt: skip
    """A multi-arch index of `images` (arch -> image) under `target`."""
    layout = work / f"index-{target.replace('/', '-').replace(':', '-')}"
    for img in images.values():
        img.write_layout(layout, "unused")
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.digest,
             "size": len(img.manifest), "platform": {"os": "linux", "architecture": arch}}
            for arch, img in images.items()
        ],
    }  # fmt: skip
    data = json.dumps(index).encode()
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    entry = {"mediaType": "application/vnd.oci.image.index.v1+json",
             "digest": f"sha256:{digest}", "size": len(data),
             "annotations": {"org.opencontainers.image.ref.name": "t"}}  # fmt: skip
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    push(SimpleNamespace(path=layout, tag="t"), registry, target)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ca(work: Path) -> CA:
    return CA(work / "ca")


@pytest.fixture(scope="module")
def registry(work: Path, ca: CA, base_tar: bytes) -> Iterator[RegistryProcess]:
    require_tools("docker-registry", "skopeo")
    with RegistryProcess.start(work / "registry", ca=ca) as reg:
        publish(busybox_image(base_tar), reg, "test/busybox:v1", work)
        publish_index(
            {"amd64": busybox_image(base_tar),
             "arm64": busybox_image(base_tar, architecture="arm64", run={"Cmd": ["/bin/arm"]})},
            reg, "test/multi:v1", work,
        )  # fmt: skip
        publish(busybox_image(base_tar, architecture="arm64"), reg, "test/armonly:v1", work)
        yield reg


@pytest.fixture(scope="module")
def daemon(work: Path, ca: CA, registry: RegistryProcess) -> Iterator[Daemon]:
    certs = ca.certs_dir(work / "certs.d", registry.host)
    settings = json.dumps({"certs_dir": str(certs)})
    for daemon in make_daemon():
        daemon.start("--registries", settings, "--registry-auth-file", "")
        yield daemon


def test_pull_lists_and_runs_with_the_image_config(daemon: Daemon, registry: RegistryProcess,
                                                   tmp_path: Path) -> None:  # fmt: skip
    ref = f"{registry.host}/test/busybox:v1"
    out = ok(kurmactl(daemon, "pull", ref, "--progress", "plain"))
    image_id, shown = out.split()[:2]
    assert image_id.startswith("sha512-") and shown == ref
    again = ok(kurmactl(daemon, "image", "pull", ref, "-q"))
    assert again.strip() == image_id
    listing = ok(kurmactl(daemon, "image", "ls"))
    row = next(line for line in listing.splitlines() if line.startswith(image_id[:39]))
    assert f"{registry.host}/test/busybox" in row and " v1 " in row
    run = kurmactl(daemon, "run", "--rm", ref)
    assert ok(run).strip() == "hello from /tmp as 0"
    overridden = ok(kurmactl(daemon, "run", "--rm", ref, "--", "/bin/cat", "/etc/motd"))
    assert overridden == "pulled\n"
    inspected = json.loads(ok(kurmactl(daemon, "image", "inspect", ref)))
    assert inspected["kind"] == "oci" and inspected["platform"] == "linux/amd64"
    assert inspected["references"] == [ref] and len(inspected["layers"]) == 2


def test_pull_by_digest_and_platform_from_an_index(daemon: Daemon,
                                                   registry: RegistryProcess) -> None:  # fmt: skip
    out = ok(kurmactl(daemon, "pull", f"{registry.host}/test/multi:v1", "--platform",
                      "linux/arm64"))  # fmt: skip
    image_id = out.split()[0]
    doc = json.loads(ok(kurmactl(daemon, "image", "inspect", image_id)))
    assert doc["platform"] == "linux/arm64"
    by_digest = f"{registry.host}/test/multi@{doc['digest']}"
    assert ok(kurmactl(daemon, "pull", by_digest, "-q")).strip() == image_id
    amd = ok(kurmactl(daemon, "pull", f"{registry.host}/test/multi:v1", "-q")).strip()
    assert amd != image_id


def test_errors_name_what_is_wrong(daemon: Daemon, registry: RegistryProcess) -> None:
    host = registry.host
    message = failed(kurmactl(daemon, "pull", f"{host}/test/armonly:v1"))
    assert "linux/amd64" in message and "linux/arm64" in message
    message = failed(kurmactl(daemon, "pull", f"{host}/test/busybox:v9"))
    assert "v9" in message and "test/busybox" in message
    message = failed(kurmactl(daemon, "pull", f"{host}/test/nothing:v1"))
    assert "test/nothing" in message
    assert "invalid reference format" in failed(kurmactl(daemon, "pull", f"{host}/test/UPPER"))
    listing = ok(kurmactl(daemon, "image", "ls", "-q"))
    assert all(line.startswith("sha512-") for line in listing.split())


def test_basic_auth_through_login(daemon: Daemon, work: Path, ca: CA, base_tar: bytes,
                                  tmp_path: Path) -> None:  # fmt: skip
    htpasswd = write_htpasswd(work / "htpasswd", {"alice": "s3cret"})
    with RegistryProcess.start(work / "auth-registry", ca=ca, htpasswd=htpasswd) as reg:
        publish(busybox_image(base_tar), reg, "private/app:v1", work, creds=("alice", "s3cret"))
        # kurmad trusts the CA for this registry too: same certs.d, one more host
        ca.certs_dir(work / "certs.d", reg.host)
        ref = f"{reg.host}/private/app:v1"
        authfile = tmp_path / "auth.json"
        message = failed(kurmactl(daemon, "pull", ref, "--authfile", authfile))
        assert reg.host in message and "anonymous" in message
        bad = kurmactl(daemon, "login", reg.host, "-u", "alice", "--password-stdin",
                       "--authfile", authfile, "--check-with", ref, input="wrong\n")  # fmt: skip
        assert reg.host in failed(bad) and not authfile.exists()
        ok(kurmactl(daemon, "login", reg.host, "-u", "alice", "--password-stdin",
                    "--authfile", authfile, "--check-with", ref, input="s3cret\n"))  # fmt: skip
        assert authfile.stat().st_mode & 0o777 == 0o600
        out = ok(kurmactl(daemon, "pull", ref, "--authfile", authfile))
        assert out.split()[1] == ref
        ok(kurmactl(daemon, "logout", reg.host, "--authfile", authfile))
        assert reg.host not in authfile.read_text()


def podman(root: Path, runroot: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Debian's podman with a store of its own under the test's directory (vfs: no mounts)."""
    return subprocess.run(
        ["podman", "--root", str(root), "--runroot", str(runroot), "--storage-driver", "vfs",
         *args], capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_export_podman_save_import_and_run(daemon: Daemon, registry: RegistryProcess,
                                           tmp_path: Path) -> None:  # fmt: skip
    """Our docker-archive loads into podman; what `podman save` writes imports back as the
    same image (its ID is its config's) and runs; our oci-archive is what skopeo reads."""
    require_tools("podman")
    ref = f"{registry.host}/test/busybox:v1"
    image_id = ok(kurmactl(daemon, "pull", ref, "-q")).strip()
    ours, saved, oci = tmp_path / "ours.tar", tmp_path / "saved.tar", tmp_path / "oci.tar"
    ok(kurmactl(daemon, "image", "export", ref, "--format", "docker-archive", "-o", ours))
    runroot = Path(tempfile.mkdtemp(prefix="kurma-podman-"))  # a short path: podman's limit
    try:
        loaded = podman(tmp_path / "proot", runroot, "load", "-i", str(ours))
        assert loaded.returncode == 0, loaded.stderr
        result = podman(tmp_path / "proot", runroot, "save", "--format", "docker-archive",
                        "-o", str(saved), ref)  # fmt: skip
        assert result.returncode == 0, result.stderr
    finally:
        podman(tmp_path / "proot", runroot, "rmi", "-a", "-f")
        shutil.rmtree(runroot, ignore_errors=True)
    ok(kurmactl(daemon, "image", "export", ref, "-o", oci))
    inspected = subprocess.run(["skopeo", "inspect", f"oci-archive:{oci}"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    pulled = json.loads(ok(kurmactl(daemon, "image", "inspect", ref)))
    assert json.loads(inspected)["Digest"] == pulled["digest"]  # the registry's bytes
    ok(kurmactl(daemon, "image", "rm", ref))
    out = ok(kurmactl(daemon, "image", "import", saved))
    assert out.split()[:2] == [image_id, ref]
    assert ok(kurmactl(daemon, "run", "--rm", ref)).strip() == "hello from /tmp as 0"


# --- the differential: Kurma's tree of a pulled image against umoci's -------------------------


def feature_layers(kind: Compression) -> list[tuple[TarBuilder, Compression]]:
    """Several layers with whiteouts, an opaque directory, hardlinks (within a layer and to
    a lower one), symlinks, set-id bits, owners and xattrs; the upper two in `kind`."""
    return [
        (TarBuilder().dir("./").dir("etc").file("etc/keep", b"keep").file("etc/gone", b"g")
         .dir("a").dir("a/b").file("a/b/old", b"old").file("a/top", b"t")
         .dir("sbin").file("sbin/su", b"su", mode=0o4755).file("sbin/wall", b"w", mode=0o2755,
                                                              gid=5)
         .file("owned", b"o", mode=0o600, uid=1000, gid=1000)
         .file("x", b"x", xattrs={"user.a": b"1", "trusted.b": b"2"})
         .dir("xd", xattrs={"user.a": b"1"}).symlink("abs", "/etc/keep")
         .symlink("rel", "etc/keep").hardlink("etc/keep-link", "etc/keep")
         .dir("usr").dir("usr/lib").file("usr/lib/libx", b"x"), Compression.GZIP),
        (TarBuilder().file("etc/.wh.gone").dir("a").file("a/.wh..wh..opq").dir("a/n")
         .file("a/n/new", b"n", mode=0o600, uid=7, gid=8).hardlink("etc/keep2", "etc/keep")
         .symlink("usr/lib", "../lib").dir("lib").file("lib/libx", b"x2")
         .file("opt", b"file"), kind),
        (TarBuilder().file(".wh.x").dir("tmp", mode=0o1777).file("a/.wh.n")
         .dir("sbin", mode=0o750, uid=3, gid=4).dir("xd", xattrs={"user.b": b"3"})
         .file("etc/keep", b"replaced"), kind),
    ]  # fmt: skip


def tree_facts(root: Path) -> dict[str, tuple[object, ...]]:
    """`facts` with hard links compared as groups of paths inside the tree: Kurma's layer
    trees share inodes with the layers below (so their link counts are higher), what
    matters is which paths of this tree are one file."""
    from tests.root.test_oci_layers import facts

    found = facts(root)
    groups: dict[int, list[str]] = {}
    for rel in found:
        st = os.lstat(root / rel)
        if stat.S_ISREG(st.st_mode):
            groups.setdefault(st.st_ino, []).append(rel)
    out = {}
    for rel, fact in found.items():
        st = os.lstat(root / rel)
        group = tuple(sorted(groups[st.st_ino])) if stat.S_ISREG(st.st_mode) else None
        out[rel] = (*fact[:-1], group)
    return out


@pytest.fixture(scope="module")
def client(work: Path, ca: CA, registry: RegistryProcess) -> Iterator[RegistryClient]:
    settings = RegistrySettings(certs_dir=str(ca.certs_dir(work / "certs.d", registry.host)))
    with RegistryClient(settings) as registry_client:
        yield registry_client


def umoci_tree(work: Path, registry: RegistryProcess, name: str, tmp_path: Path) -> dict:
    """`tree_facts` of what `skopeo copy docker://...` + `umoci unpack` give for `name`."""
    layout, bundle = tmp_path / f"layout-{name}", tmp_path / f"bundle-{name}"
    certs = work / "certs.d" / registry.host
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-cert-dir",
                    str(certs), f"docker://{registry.host}/test/{name}:v1",
                    f"oci:{layout}:t"], check=True, capture_output=True)  # fmt: skip
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:t", str(bundle)],
                   check=True, capture_output=True)  # fmt: skip
    try:
        return tree_facts(bundle / "rootfs")
    finally:
        shutil.rmtree(bundle)
        shutil.rmtree(layout)


def test_pulled_trees_equal_umocis(work: Path, registry: RegistryProcess, base_tar: bytes,
                                   client: RegistryClient, tmp_path: Path) -> None:  # fmt: skip
    """For every test image in gzip (Debian's umoci 0.4.7 refuses zstd layers): the tree
    Kurma renders equals what `skopeo copy` + `umoci unpack` give; the zstd variant of the
    feature image gives the same tree again."""
    require_tools("umoci")
    for kind in (Compression.GZIP, Compression.ZSTD):
        name = f"test/features-{kind.name.lower()}:v1"
        publish(build_image(feature_layers(kind), run={"Cmd": ["/x"]}), registry, name, work)  # type: ignore[arg-type]
    top = TarBuilder().dir("etc").file("etc/motd", b"pulled\n")
    busybox = build_image([(base_tar, Compression.GZIP), (top, Compression.GZIP)], run=RUN)
    publish(busybox, registry, "test/busybox-gzip:v1", work)
    store = ImageStore(tmp_path / "state")
    trees = {}
    for name in ("features-gzip", "features-zstd", "busybox-gzip"):
        pulled = pull_image(store, client, f"{registry.host}/test/{name}:v1")
        trees[name] = tree_facts(pulled.import_result.record.rootfs)
    theirs = umoci_tree(work, registry, "features-gzip", tmp_path)
    assert trees["features-gzip"] == theirs
    assert trees["features-zstd"] == theirs
    assert {"etc/keep2", "sbin/su", "a", "rel"} <= set(theirs)  # not vacuous
    assert "etc/gone" not in theirs and "a/b" not in theirs and "x" not in theirs
    assert trees["busybox-gzip"] == umoci_tree(work, registry, "busybox-gzip", tmp_path)


def test_user_volume_exec_and_logs(daemon: Daemon, registry: RegistryProcess,
                                   base_tar: bytes, work: Path) -> None:  # fmt: skip
    """User by name (resolved in the image's /etc/passwd), a VOLUME (an empty volume of the
    app's own), Env; `run -d`, `logs`, `exec` as a person uses them."""
    run = {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["id -u; id -g; echo $GREETING > /data/f; cat /data/f; exec sleep 300"],
        "Env": ["PATH=/bin", "GREETING=kept"],
        "User": "app",
        "Volumes": {"/data": {}},
    }
    data = TarBuilder().dir("data", mode=0o750, uid=1000, gid=1000)  # the image's VOLUME dir
    img = build_image([(base_tar, Compression.GZIP), (data, Compression.GZIP)], run=run)
    publish(img, registry, "test/user:v1", work)
    ref = f"{registry.host}/test/user:v1"
    ok(kurmactl(daemon, "pull", ref, "-q"))
    uuid = ok(kurmactl(daemon, "run", "-d", "--name", "userland", ref)).strip()
    try:
        wait_for(lambda: "kept" in ok(kurmactl(daemon, "logs", "userland")), "the log", 20)
        assert ok(kurmactl(daemon, "logs", "userland")).split() == ["1000", "1000", "kept"]
        out = ok(kurmactl(daemon, "exec", "userland", "--", "/bin/sh", "-c",
                          "cat /data/f; stat -c %u /data; echo $GREETING"))  # fmt: skip
        assert out.split() == ["kept", "1000", "kept"]  # the volume is owned as the image's dir
    finally:
        kurmactl(daemon, "rm", "-f", uuid)


def test_an_oci_layout_directory_imports(daemon: Daemon, registry: RegistryProcess,
                                         work: Path, tmp_path: Path) -> None:  # fmt: skip
    """`skopeo copy docker://... oci:DIR:NAME` then `kurmactl image import DIR`: the same
    image as the pull (its ID is its config's), under the name the layout gives it."""
    ref = f"{registry.host}/test/busybox:v1"
    image_id = ok(kurmactl(daemon, "pull", ref, "-q")).strip()
    layout = tmp_path / "layout"
    certs = work / "certs.d" / registry.host
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-cert-dir",
                    str(certs), f"docker://{ref}", f"oci:{layout}:example.com/copied:v2"],
                   check=True, capture_output=True)  # fmt: skip
    out = ok(kurmactl(daemon, "image", "import", layout))
    assert out.split()[:3] == [image_id, "example.com/copied:v2", "(already"]
    assert ok(kurmactl(daemon, "run", "--rm", "example.com/copied:v2", "--", "/bin/cat",
                       "/etc/motd")) == "pulled\n"  # fmt: skip


def test_stop_signal_of_the_image(daemon: Daemon, registry: RegistryProcess,
                                  base_tar: bytes, work: Path) -> None:  # fmt: skip
    """An image's StopSignal (SIGUSR1 here) is what `kurmactl stop` sends the app: the app
    traps it and exits 0 at once, long before the grace period ends."""
    run = {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["trap 'echo got usr1; exit 0' USR1; trap 'echo got term; exit 3' TERM; "
                "echo ready; while true; do sleep 0.1; done"],
        "StopSignal": "SIGUSR1",
    }  # fmt: skip
    publish(busybox_image(base_tar, run=run), registry, "test/stopsig:v1", work)
    ref = f"{registry.host}/test/stopsig:v1"
    ok(kurmactl(daemon, "pull", ref, "-q"))
    uuid = ok(kurmactl(daemon, "run", "-d", "--name", "stopsig", ref)).strip()
    try:
        wait_for(lambda: "ready" in ok(kurmactl(daemon, "logs", "stopsig")), "ready", 20)
        started = time.monotonic()
        ok(kurmactl(daemon, "stop", "--time", "20", "stopsig"))
        assert time.monotonic() - started < 10
        assert ok(kurmactl(daemon, "logs", "stopsig")).split() == ["ready", "got", "usr1"]
        (doc,) = [p for p in json.loads(ok(kurmactl(daemon, "ps", "-a", "-o", "json")))
                  if p["uuid"] == uuid]  # fmt: skip
        assert doc["apps"][0]["exit_code"] == 0
    finally:
        kurmactl(daemon, "rm", "-f", uuid)
