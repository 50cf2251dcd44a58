"""Red team: the OCI image code (store, archives, pull, quotas), one attack per test.

Store-level attacks drive `ImageStore.import_oci` with blobs from memory (tests.oci_images),
as tests/root/test_store_oci.py does; the API attacks run a real kurmad (the `daemon`
fixture) and call it from a tenant pod. An attack that works today is marked
`xfail(strict=True)` with the bug in its reason, so the suite stays green and the test turns
red (XPASS) the day the bug is fixed without anyone noticing.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from kurma.aci import Compression
from kurma.errors import ArchiveError, DigestMismatch, KurmaError, ValidationError
from kurma.sources import import_archive, manifest_for
from kurma.store import ImageStore, OciImport
from tests.archives import TarBuilder
from tests.oci_images import OCI_CONFIG, OCI_MANIFEST, OciImage, build_image, sha256

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


@pytest.mark.xfail(
    strict=True,
    reason=(
        "BUG: layer trees copy every lower directory (hard links only work for files), so N "
        "directories under L thin layers take N*L directory inodes/blocks on disk while the "
        "image (and the imageBytes quota) counts only the uncompressed tar bytes; nothing "
        "bounds the layer count"
    ),
)
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
