"""Red team: the OCI image code (store, archives, pull, quotas), one attack per test.

Store-level attacks drive `ImageStore.import_oci` with blobs from memory (tests.oci_images),
as tests/root/test_store_oci.py does; the API attacks run a real kurmad (the `daemon`
fixture) and call it from a tenant pod. Three attacks worked when this file was written
(trees of a refused import left uncharged; directories copied by every thin layer but not
counted; the budget counting blobs and layers twice); each is fixed and stays a test here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kurma.aci import Compression
from kurma.client import Client, PermissionDenied, ResourceExhausted
from kurma.errors import ArchiveError, DigestMismatch, KurmaError, ValidationError
from kurma.oci import ArchiveImage, parse_reference, write_docker_archive, write_oci_layout
from kurma.sources import import_archive, manifest_for
from kurma.store import ImageStore, OciImport
from tests.archives import TarBuilder
from tests.oci_images import OCI_CONFIG, OCI_MANIFEST, OciImage, build_image, sha256
from tests.root.test_kurmad import Daemon
from tests.root.test_quotas import pod_doc

REF = "example.com/app:v1"


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "state")


def pull(store: ImageStore, img: OciImage, ref: str = REF):
    imp = OciImport(img.manifest, None, img.fetch_blob(), references=(ref,))
    return store.import_oci(imp, make_manifest=manifest_for)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path below `root` with its kind, mode, owner, mtime, inode, xattrs and content
    (not st_nlink: a tree above links to the same inodes, which is the design)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *dirnames, *filenames] if dirpath == str(root) else dirnames + filenames:
            p = Path(dirpath) / name if name else Path(dirpath)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                content: object = os.readlink(p)
                xattrs: object = ()
            else:
                content = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
                xattrs = tuple(
                    sorted((k, os.getxattr(p, k)) for k in os.listxattr(p) if k.startswith("user."))
                )
            out[str(p.relative_to(root))] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                st.st_ino,
                xattrs,
                content,
            )
    return out


def store_snapshot(store: ImageStore) -> dict[str, dict[str, tuple]]:
    layers = store.layout.layers
    return {key: snapshot(layers / key / "rootfs") for key in sorted(os.listdir(layers))}


# --- 2. shared-layer integrity --------------------------------------------------------------


def shared_base() -> TarBuilder:
    """The lower layer images A and B share: files with two names, setuid, owners, xattrs."""
    return (
        TarBuilder()
        .dir("./", mode=0o755)
        .dir("etc", mode=0o755, xattrs={"user.lower": b"1"})
        .file("etc/os", b"base", mode=0o644, uid=7, gid=8, xattrs={"user.f": b"x"})
        .hardlink("etc/hl", "etc/os")
        .file("etc/other", b"other", mode=0o600)
        .dir("bin")
        .file("bin/tool", b"t", mode=0o4755)
        .dir("d", mode=0o750, uid=5)
        .file("d/inner", b"inner")
        .symlink("s", "etc/os")
    )


# Each top layer is one attempt to write through an inode (or attributes) of the shared tree.
HOSTILE_TOPS: dict[str, TarBuilder] = {
    "file over a shared file": TarBuilder().file(
        "etc/os", b"EVIL", mode=0o777, uid=1, gid=1, xattrs={"user.f": b"EVIL"}
    ),
    "file over a file's second name": TarBuilder().file("etc/hl", b"EVIL", mode=0o777),
    "symlink over a shared file": TarBuilder().symlink("etc/os", "/etc/shadow"),
    "directory over a shared file": TarBuilder().dir("etc/os", mode=0o777),
    "hardlink to a shared file, then a file by that name": (
        TarBuilder().hardlink("etc/new", "etc/os").file("etc/new", b"EVIL")
    ),
    "hardlink to a shared file, then a file over the target": (
        TarBuilder().hardlink("etc/new", "etc/os").file("etc/os", b"EVIL")
    ),
    "shared name hardlinked to a new file": (
        TarBuilder().file("etc/mine", b"EVIL", mode=0o777).hardlink("etc/os", "etc/mine")
    ),
    "hardlink of a shared file to itself, then a file": (
        TarBuilder().hardlink("etc/os", "etc/os").file("etc/os", b"EVIL")
    ),
    "hardlink over a hardlink pair": TarBuilder().hardlink("etc/hl", "etc/other"),
    "directory attributes and xattrs over a lower directory": TarBuilder().dir(
        "etc", mode=0o700, uid=1, gid=1, xattrs={"user.upper": b"2"}
    ),
    "root entry attributes": TarBuilder().dir(
        "./", mode=0o700, uid=1, gid=1, xattrs={"user.root": b"r"}
    ),
    "opaque directory over the lower one": (
        TarBuilder().dir("etc").file("etc/.wh..wh..opq").file("etc/os", b"EVIL")
    ),
    "whiteout, then a file again": TarBuilder().file("etc/.wh.os").file("etc/os", b"EVIL"),
    "whiteout of a whole lower directory": TarBuilder().file(".wh.d").file("d", b"EVIL"),
    "file over a lower directory": TarBuilder().file("d", b"EVIL"),
    "file through the lower symlink": TarBuilder().file("s", b"EVIL"),
    "directory mode on a lower directory, file inside": (
        TarBuilder().dir("d", mode=0o777, uid=0).file("d/inner", b"EVIL", mode=0o6777)
    ),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_TOPS))
def test_a_layer_never_writes_through_a_shared_lower_tree(store: ImageStore, attack: str) -> None:
    """Contract: image B shares its lower layer with image A (the same ChainID tree,
    hard-linked into B's); whatever entry B's upper layer has (a file, symlink, directory
    or hardlink over a shared file or a name of it, directory or root attributes and
    xattrs, whiteouts and opaque markers), every tree already in `layers/` is afterwards
    the same byte for byte, mode for mode, inode for inode; B's layer applies or is
    refused, never half."""
    a = pull(
        store,
        build_image(
            [
                (shared_base(), Compression.GZIP),
                (TarBuilder().file("a-only", b"a"), Compression.NONE),
            ]
        ),
        "example.com/a:1",
    )
    before = store_snapshot(store)
    assert (a.record.rootfs / "etc/os").read_bytes() == b"base"
    b_img = build_image(
        [(shared_base(), Compression.GZIP), (HOSTILE_TOPS[attack], Compression.NONE)]
    )
    try:
        b = pull(store, b_img, "example.com/b:1").record
    except KurmaError:
        b = None
    after = store_snapshot(store)
    assert {k: after[k] for k in before} == before
    assert (a.record.rootfs / "etc/os").read_bytes() == b"base"
    assert (a.record.rootfs / "etc/hl").read_bytes() == b"base"
    if b is not None and attack.startswith("file over a shared"):
        assert (b.rootfs / "etc/os").read_bytes() == b"EVIL"  # the attack did apply to B


# --- 3. hostile archives and registries -----------------------------------------------------


def _manifest(config: bytes, layers: list[dict]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": layers,
        }
    ).encode()


def _config(diff_ids: list[str]) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/bin/x"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()


def assert_store_empty(store: ImageStore) -> None:
    assert store.list() == []
    assert sorted(os.listdir(store.layout.tmp)) == []
    store.collect_garbage()
    assert os.listdir(store.layout.layers) == []
    assert [p for p in store.layout.blobs.rglob("*") if p.is_file()] == []


def test_a_blob_larger_than_its_descriptor_stops_at_the_size(
    store: ImageStore, tmp_path: Path
) -> None:
    """Contract: an OCI layout whose manifest gives a layer 1 KiB while the blob file is
    32 MiB: the import reads no more than the descriptor's size (progress never passes it),
    fails with DigestMismatch or ValidationError, and leaves nothing in the store."""
    huge = TarBuilder().file("big", b"\0" * (32 << 20)).data()
    config = _config([sha256(huge)])
    layer = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": sha256(huge),
        "size": 1024,
    }
    manifest = _manifest(config, [layer])
    img = OciImage(
        manifest=manifest,
        config=config,
        blobs={sha256(huge): huge, sha256(config): config, sha256(manifest): manifest},
    )
    layout = img.write_layout(tmp_path / "layout", REF)
    seen: list[int] = []
    with pytest.raises((DigestMismatch, ValidationError, ArchiveError)):
        import_archive(store, layout, progress=lambda e: seen.append(e.done if e.index >= 0 else 0))
    assert max(seen, default=0) <= 1024
    assert_store_empty(store)


def test_diff_ids_that_do_not_match_the_layers_store_nothing(store: ImageStore) -> None:
    """Contract: a config whose diff_ids name other layers than the manifest's blobs:
    DigestMismatch, no image, and after garbage collection no tree and no blob."""
    good = build_image([(TarBuilder().file("x", b"1"), Compression.GZIP)])
    other = TarBuilder().file("x", b"2").data()
    config = _config([sha256(other)])
    manifest = _manifest(config, json.loads(good.manifest)["layers"])
    blobs = {**good.blobs, sha256(config): config, sha256(manifest): manifest}
    img = OciImage(manifest=manifest, config=config, blobs=blobs)
    with pytest.raises(DigestMismatch, match="diff_id"):
        pull(store, img)
    assert_store_empty(store)


def test_a_layer_whose_media_type_contradicts_its_bytes_is_refused(store: ImageStore) -> None:
    """Contract: a manifest calling a gzip layer a plain tar (and a plain tar zstd) is
    refused with ArchiveError naming both, and nothing stays."""
    for kind, claimed in (
        (Compression.GZIP, "application/vnd.oci.image.layer.v1.tar"),
        (Compression.NONE, "application/vnd.oci.image.layer.v1.tar+zstd"),
    ):
        good = build_image([(TarBuilder().file("x", b"1"), kind)])
        doc = json.loads(good.manifest)
        doc["layers"][0]["mediaType"] = claimed
        manifest = json.dumps(doc).encode()
        img = OciImage(
            manifest=manifest, config=good.config, blobs={**good.blobs, sha256(manifest): manifest}
        )
        with pytest.raises(ArchiveError, match="media type"):
            pull(store, img)
        assert_store_empty(store)


def test_an_index_where_a_manifest_belongs_is_refused(store: ImageStore) -> None:
    """Contract: an index handed to the store as the image manifest (an index naming
    itself, or an index selected from an index) is refused, not followed."""
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": "sha256:" + "0" * 64,
                    "size": 10,
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    img = OciImage(manifest=index, config=b"", blobs={sha256(index): index})
    with pytest.raises(ValidationError, match="index"):
        pull(store, img)
    assert_store_empty(store)


def _du(path: Path) -> int:
    """Bytes of disk blocks under `path`, each inode counted once."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def test_many_thin_layers_over_many_directories_cost_what_they_count(store: ImageStore) -> None:
    """Contract: the disk the layer trees of an image take is within a small factor (8x)
    of the size the store records for it (what quotas count). Attack: a base layer of
    2000 empty directories (about 1 MiB of tar, a few KiB gzipped) under 60 layers of one
    tiny file each: every tree copies the 2000 directories."""
    base = TarBuilder().dir("./")
    for i in range(2000):
        base.dir(f"d{i}")
    layers: list[tuple[TarBuilder | bytes, Compression]] = [(base, Compression.GZIP)]
    layers += [(TarBuilder().file(f"f{i}", b"x"), Compression.GZIP) for i in range(60)]
    record = pull(store, build_image(layers)).record
    disk = _du(store.layout.layers)
    assert disk <= 8 * record.size, f"{disk} bytes on disk for an image of {record.size}"


# --- API attacks: a tenant pod (subtree api-access) against the host's images --------------


def docker_archive(path: Path, img: OciImage, *references: str) -> Path:
    """`img` as a docker-archive tar whose RepoTags are `references`."""
    refs = [parse_reference(r) for r in references]
    archive = ArchiveImage.build(
        img.manifest, img.config, lambda d: io.BytesIO(img.blobs[str(d.digest)]), references=refs
    )
    write_docker_archive(path, [archive])
    return path


def oci_archive(path: Path, img: OciImage, reference: str) -> Path:
    """`img` as an oci-archive tar whose index names it `reference`."""
    archive = ArchiveImage.build(
        img.manifest,
        img.config,
        lambda d: io.BytesIO(img.blobs[str(d.digest)]),
        references=[parse_reference(reference)],
    )
    write_oci_layout(path, [archive])
    return path


def tenant(kurma: Client, image_id: str, name: str, quota: dict | None = None) -> str:
    """A started pod with subtree api-access (and `quota`): the tenant of the attacks."""
    return kurma.create_pod(manifest_json=pod_doc(image_id, quota), name=name, start=True).uuid


@contextlib.contextmanager
def as_pod(d: Daemon, pod: str) -> Iterator[Client]:
    """A client on the pod's own API socket (the socket makes the caller that pod)."""
    with Client.connect(str(d.work / "pods" / pod / "api" / "api.sock"), timeout=20) as c:
        yield c


def one_file_image(name: str, data: bytes, kind: Compression = Compression.GZIP) -> OciImage:
    return build_image(
        [(TarBuilder().dir("./").file(name, data), kind)], run={"Entrypoint": ["/" + name]}
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("form", ["docker-archive", "oci-archive"])
def test_a_tenant_archive_cannot_take_over_the_hosts_reference(
    kurma: Client, daemon: tuple[Daemon, str], tmp_path: Path, form: str
) -> None:
    """Contract: the host imported `example.com/<form>:v1`; a tenant pod's import of an
    archive (docker-archive RepoTags, oci-archive ref.name) naming the same reference (also
    spelled without the default registry's normalisation differences: the tag given
    explicitly) is PERMISSION_DENIED naming the reference, and the reference still resolves
    to the host's image; the tenant may import the same archive under a fresh reference,
    and the host may import the tenant's content under its own reference."""
    d, busybox = daemon
    ref = f"example.com/{form}:v1"
    write = docker_archive if form == "docker-archive" else oci_archive
    host_img = one_file_image("host", b"host " + form.encode())
    evil_img = one_file_image("evil", b"evil " + form.encode())
    host_id = kurma.import_image(write(tmp_path / "host.tar", host_img, ref)).image.id
    assert kurma.inspect_image(ref).id == host_id
    top = tenant(kurma, busybox, f"thief-{form}")
    with as_pod(d, top) as me:
        with pytest.raises(PermissionDenied, match=re.escape(ref)):
            me.import_image(write(tmp_path / "evil.tar", evil_img, ref))
        assert kurma.inspect_image(ref).id == host_id
        fresh = f"example.com/{form}-tenant:v1"
        mine = me.import_image(write(tmp_path / "mine.tar", evil_img, fresh)).image
        assert mine.id != host_id and kurma.inspect_image(fresh).id == mine.id
        # Its own reference it may move again (its tree imported the holder).
        again = one_file_image("evil", b"again")
        moved = me.import_image(write(tmp_path / "again.tar", again, fresh)).image
        assert kurma.inspect_image(fresh).id == moved.id
    assert kurma.inspect_image(ref).id == host_id
    host_takes = kurma.import_image(write(tmp_path / "host2.tar", evil_img, ref)).image
    assert kurma.inspect_image(ref).id == host_takes.id == mine.id


def _store(d: Daemon) -> ImageStore:
    return ImageStore(d.state)


def _contents(store: ImageStore) -> tuple[set[str], set[str], list[str]]:
    layout = store.layout
    blobs = {str(p.relative_to(layout.blobs)) for p in layout.blobs.rglob("*") if p.is_file()}
    return set(os.listdir(layout.layers)), blobs, sorted(os.listdir(layout.tmp))


@pytest.mark.timeout(300)
def test_a_tenants_images_share_layers_within_its_quota(
    kurma: Client, daemon: tuple[Daemon, str], tmp_path: Path
) -> None:
    """Contract: imageBytes 1Mi; the tenant imports image 1 (a 300 KB base and a 10 KB
    top) and image 2 (the same base, another 10 KB top): the second costs only its top
    layer in the quota's use."""
    d, busybox = daemon
    base = TarBuilder().dir("./").file("base", os.urandom(300_000))
    images = [
        build_image(
            [
                (base, Compression.GZIP),
                (TarBuilder().file(f"top{i}", os.urandom(10_000)), Compression.GZIP),
            ],
            run={"Entrypoint": ["/base"]},
        )
        for i in (1, 2)
    ]
    top_size = len(TarBuilder().file("top2", b"\0" * 10_000).data())
    top = tenant(kurma, busybox, "share-top", {"imageBytes": "1Mi"})
    with as_pod(d, top) as me:
        me.import_image(docker_archive(tmp_path / "1.tar", images[0], "example.com/s:1"))
        used1 = kurma.get(top).quota.image_bytes.used
        assert 310_000 < used1 < 330_000
        me.import_image(docker_archive(tmp_path / "2.tar", images[1], "example.com/s:2"))
        used2 = kurma.get(top).quota.image_bytes.used
        assert used2 - used1 == top_size


@pytest.mark.timeout(300)
def test_an_import_past_the_quota_leaves_nothing(
    kurma: Client, daemon: tuple[Daemon, str], tmp_path: Path
) -> None:
    """Contract: imageBytes 1Mi, 320 KB used; three archives of two 400 KB layers (new
    content every time: the first layer fits what is left, the second passes it) are each
    RESOURCE_EXHAUSTED, and the store holds the same images, layer trees and blobs as
    before and nothing in tmp/. (The first layer's tree is committed within the budget;
    the second layer's bytes pass it, and the import removes the tree it made.)"""
    d, busybox = daemon
    store = _store(d)
    top = tenant(kurma, busybox, "over-top", {"imageBytes": "1Mi"})
    with as_pod(d, top) as me:
        first = one_file_image("f", os.urandom(320_000))
        me.import_image(docker_archive(tmp_path / "first.tar", first, "example.com/o:1"))
        images_before = {i.id for i in kurma.list_images()}
        before = _contents(store)
        for n in range(3):
            big = build_image(
                [
                    (TarBuilder().dir("./").file("x", os.urandom(400_000)), Compression.GZIP),
                    (TarBuilder().file("y", os.urandom(400_000)), Compression.GZIP),
                ],
                run={"Entrypoint": ["/x"]},
            )
            with pytest.raises(ResourceExhausted, match="imageBytes"):
                me.import_image(docker_archive(tmp_path / f"big{n}.tar", big, f"example.com/b:{n}"))
        assert {i.id for i in kurma.list_images()} == images_before
        assert _contents(store) == before


@pytest.mark.timeout(300)
def test_an_image_that_fits_what_is_left_is_admitted(
    kurma: Client, daemon: tuple[Daemon, str], tmp_path: Path
) -> None:
    """Contract: imageBytes 1Mi and nothing used: an image whose layers take 600 KB (the
    size it is then charged) is admitted, whatever its layers' compression."""
    d, busybox = daemon
    top = tenant(kurma, busybox, "fit-top", {"imageBytes": "1Mi"})
    with as_pod(d, top) as me:
        img = one_file_image("p", os.urandom(600_000), Compression.NONE)
        me.import_image(docker_archive(tmp_path / "p.tar", img, "example.com/p:1"))
        assert 600_000 < kurma.get(top).quota.image_bytes.used < 620_000
