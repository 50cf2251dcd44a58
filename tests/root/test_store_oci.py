"""OCI images in the store: layer trees shared by digest, references, garbage, failures.

The blobs are served from memory (tests.oci_images), so these tests need no registry; the
pull tests drive the same store through a real docker-registry. Root: layer owners.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from kurma.aci import Compression
from kurma.errors import DigestMismatch, ImageInUse, ImageNotFound, PlatformNotFound, StoreError
from kurma.oci import DEFAULT_PLATFORM
from kurma.sources import manifest_for
from kurma.store import ImageStore, OciImport, StoreFull
from tests.archives import TarBuilder
from tests.bombs import zero_bomb_layer
from tests.oci_images import LAYER_MEDIA, OciImage, build_image
from tests.root.test_oci_layers import tree

pytestmark = pytest.mark.root

REF = "127.0.0.1:5000/test/app:v1"


def base() -> TarBuilder:
    return (TarBuilder().dir("./").dir("etc").file("etc/os", b"base").file("etc/gone", b"g")
            .dir("opt").file("opt/old", b"o")
            .dir("bin").file("bin/tool", b"t", mode=0o4755))  # fmt: skip


def middle() -> TarBuilder:
    return (TarBuilder().file("etc/.wh.gone").dir("opt").file("opt/.wh..wh..opq")
            .file("opt/new", b"n").hardlink("etc/os-link", "etc/os"))  # fmt: skip


def image(top: bytes = b"top", **kw: object) -> OciImage:
    return build_image(
        [(base(), Compression.GZIP), (middle(), Compression.ZSTD),
         (TarBuilder().file("etc/os", top), Compression.NONE)],
        run={"Entrypoint": ["/bin/tool"]}, **kw,
    )  # fmt: skip


class Counting:
    """A memory source that counts fetches and can corrupt one blob."""

    def __init__(self, img: OciImage, corrupt: str | None = None) -> None:
        self.img = img
        self.fetched: list[str] = []
        self.corrupt = corrupt

    def __call__(self, descriptor, dest, advanced) -> None:
        digest = str(descriptor.digest)
        self.fetched.append(digest)
        data = self.img.blobs[digest]
        if digest == self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        dest.write(data)
        advanced(len(data))


def pull(store: ImageStore, img: OciImage, ref: str = REF, **kw: object):
    source = Counting(img, kw.pop("corrupt", None))  # type: ignore[arg-type]
    imp = OciImport(img.manifest, None, source, references=(ref,), **kw)  # type: ignore[arg-type]
    return store.import_oci(imp, make_manifest=manifest_for), source


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "state")


def leftovers(store: ImageStore) -> list[str]:
    return sorted(os.listdir(store.layout.tmp))


def test_layers_apply_in_order_and_the_image_answers_to_its_reference(store: ImageStore) -> None:
    result, _ = pull(store, image())
    record = result.record
    assert result.created and record.kind == "oci" and record.image_id.startswith("sha512-")
    assert tree(record.rootfs) == {
        "etc": "d", "etc/os": "f:top", "etc/os-link": "f:base", "opt": "d", "opt/new": "f:n",
        "bin": "d", "bin/tool": "f:t",
    }  # fmt: skip
    assert os.stat(record.rootfs / "bin/tool").st_mode & 0o7777 == 0o4755
    assert store.get(REF).image_id == record.image_id
    assert store.get(record.oci.config_digest[:19]).image_id == record.image_id
    assert store.get(f"127.0.0.1:5000/test/app@{record.oci.manifest_digest}").image_id == (
        record.image_id
    )
    with pytest.raises(ImageNotFound):
        store.get("127.0.0.1:5000/test/app:v2")
    assert record.manifest.app is not None and record.manifest.app.exec == ("/bin/tool",)
    again, source = pull(store, image())
    assert not again.created and source.fetched == []  # nothing fetched twice
    assert leftovers(store) == []


def test_images_share_lower_layers_and_never_write_into_them(store: ImageStore) -> None:
    first, _ = pull(store, image(b"one"), "example.com/a:1")
    second, source = pull(store, image(b"two"), "example.com/b:1")
    a, b = first.record, second.record
    assert a.oci.layers[:2] == b.oci.layers[:2] and a.oci.layers[2] != b.oci.layers[2]
    layer_blobs = set(a.oci.blobs[2:4])
    assert layer_blobs.isdisjoint(source.fetched)  # only the top layer and config came
    assert (a.rootfs / "etc/os").read_bytes() == b"one"
    assert (b.rootfs / "etc/os").read_bytes() == b"two"
    shared = store.layout.layer_dir(a.oci.layers[1]) / "rootfs/etc/os"
    assert shared.read_bytes() == b"base"  # the lower tree kept its file
    assert sorted(os.listdir(store.layout.layers)) == sorted({*a.oci.layers, *b.oci.layers})
    assert store.usage_units(a.image_id).keys() & store.usage_units(b.image_id).keys() == set(
        a.oci.layers[:2]
    )


def test_delete_keeps_shared_layers_until_the_last_image_goes(store: ImageStore) -> None:
    a = pull(store, image(b"one"), "example.com/a:1")[0].record
    b = pull(store, image(b"two"), "example.com/b:1")[0].record
    store.delete(a.image_id)
    assert sorted(os.listdir(store.layout.layers)) == sorted(b.oci.layers)
    assert (b.rootfs / "etc/os-link").read_bytes() == b"base"
    store.acquire("pod-1", b.image_id)
    with pytest.raises(ImageInUse):
        store.delete("example.com/b:1")
    store.release("pod-1")
    store.delete("example.com/b:1")
    assert os.listdir(store.layout.layers) == []
    assert [p for p in store.layout.blobs.rglob("*") if p.is_file()] == []


def test_a_tag_moves_to_the_image_pulled_last(store: ImageStore) -> None:
    a = pull(store, image(b"one"))[0].record
    b = pull(store, image(b"two"))[0].record
    assert store.get(REF).image_id == b.image_id
    assert store.get_by_id(a.image_id).oci.references == ()


@pytest.mark.parametrize("which", [1, 2])
def test_a_corrupt_layer_leaves_no_image_and_no_blob(store: ImageStore, which: int) -> None:
    img = image()
    layers = [str(d) for d in _layer_digests(img)]
    with pytest.raises(DigestMismatch):
        pull(store, img, corrupt=layers[which])
    with pytest.raises(ImageNotFound):
        store.get(REF)
    assert leftovers(store) == []
    assert store.list() == []
    store.collect_garbage()  # lower layers applied before the failure are a cache only
    assert os.listdir(store.layout.layers) == []
    assert [p for p in store.layout.blobs.rglob("*") if p.is_file()] == []


def test_budget_stops_the_import_and_leaves_nothing(store: ImageStore) -> None:
    def budget(total: int) -> None:
        if total > 10:
            raise StoreError(f"over budget at {total}")

    imp = OciImport(image().manifest, None, image().fetch_blob(), references=(REF,))
    with pytest.raises(StoreError, match="over budget"):
        store.import_oci(imp, make_manifest=manifest_for, budget=budget)
    assert store.list() == [] and leftovers(store) == []


def test_wrong_platform_is_refused_before_any_layer(store: ImageStore) -> None:
    img = image(architecture="arm64")
    source = Counting(img)
    imp = OciImport(img.manifest, None, source, references=(REF,), platform=DEFAULT_PLATFORM)
    with pytest.raises(PlatformNotFound, match="linux/arm64"):
        store.import_oci(imp, make_manifest=manifest_for)
    assert source.fetched == [json.loads(img.manifest)["config"]["digest"]]
    assert store.list() == [] and os.listdir(store.layout.layers) == []


def _layer_digests(img: OciImage):
    return [layer["digest"] for layer in json.loads(img.manifest)["layers"]]


def test_short_names_resolve_on_the_default_registry(store: ImageStore) -> None:
    """With kurmad's `registries.default` set, `test/app:v1` names what a pull of it stored
    (`127.0.0.1:5000/test/app:v1`), as podman's unqualified names do."""
    from kurma.registry import RegistrySettings

    record = pull(store, image())[0].record
    with pytest.raises(ImageNotFound):
        store.get("test/app:v1")  # docker's rule: docker.io/test/app:v1
    store.qualify = RegistrySettings(default="127.0.0.1:5000").qualify
    assert store.get("test/app:v1").image_id == record.image_id


def bomb_image(zero_bytes: int) -> OciImage:
    """One gzip layer of `zero_bytes` zeros (4 MB for 4 GiB); its diff_id is made up: the
    import must stop long before the end, where it would be checked."""
    blob = zero_bomb_layer(zero_bytes)
    img = build_image([(TarBuilder().file("x"), Compression.NONE)], run={"Cmd": ["/x"]})
    manifest, config = json.loads(img.manifest), json.loads(img.config)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    manifest["layers"] = [{"mediaType": LAYER_MEDIA[Compression.GZIP], "digest": digest,
                           "size": len(blob)}]  # fmt: skip
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    config_bytes = json.dumps(config).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest["config"].update(digest=config_digest, size=len(config_bytes))
    manifest_bytes = json.dumps(manifest).encode()
    blobs = {digest: blob, config_digest: config_bytes}
    return OciImage(manifest=manifest_bytes, config=config_bytes, blobs=blobs)


def test_a_layer_bomb_stops_at_the_budget_while_it_streams(store: ImageStore) -> None:
    """A 4 MB layer of 4 GiB zeros against a 64 MiB budget (a quota): refused once about
    64 MiB are decompressed, not after 4 GiB; nothing left behind."""
    seen: list[int] = []

    def budget(total: int) -> None:
        seen.append(total)
        if total > 64 << 20:
            raise StoreError(f"over budget at {total}")

    img = bomb_image(4 << 30)
    started = time.monotonic()
    with pytest.raises(StoreError, match="over budget"):
        store.import_oci(OciImport(img.manifest, None, img.fetch_blob(), references=(REF,)),
                         make_manifest=manifest_for, budget=budget)  # fmt: skip
    assert max(seen) < 80 << 20 and time.monotonic() - started < 30
    assert store.list() == [] and leftovers(store) == []
    assert os.listdir(store.layout.layers) == []


def test_a_layer_bomb_stops_short_of_a_full_disk(tmp_path: Path) -> None:
    """The same bomb into a store on a 48 MiB tmpfs with a 10% reserve: StoreFull while
    it streams, the filesystem left with its room."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "kurma-test-oci", str(state)],
                   check=True)  # fmt: skip
    try:
        small = ImageStore(state, min_free=0.10)
        img = bomb_image(4 << 30)
        with pytest.raises(StoreFull, match="less than 10% of the state filesystem free"):
            small.import_oci(OciImport(img.manifest, None, img.fetch_blob()),
                             make_manifest=manifest_for)  # fmt: skip
        st = os.statvfs(state)
        assert st.f_bavail * st.f_frsize > 40 << 20  # everything written was removed
        assert small.list() == [] and os.listdir(small.layout.layers) == []
    finally:
        subprocess.run(["umount", str(state)], check=False)
