"""The image store: import, look-up, concurrency, deletion and references."""

from __future__ import annotations

import json
import multiprocessing
import os
import tarfile
from pathlib import Path

import pytest

from kurma.errors import ArchiveError, ImageInUse, ImageNotFound, ValidationError
from kurma.store import ImageStore, parse_image_ref
from tests.images import make_aci, manifest_json

pytestmark = pytest.mark.root


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "state")


def _store_contents(store: ImageStore) -> dict[str, list[str]]:
    layout = store.layout
    return {d.name: sorted(os.listdir(d)) for d in (layout.images, layout.trees, layout.tmp)}


def test_import_stores_image_under_its_id(store: ImageStore, tmp_path: Path) -> None:
    """An imported image sits at images/<id> with its manifest and rootfs, listed by name."""
    aci = make_aci(tmp_path, "example.com/hello", {"bin/hello": "hi\n"}, version="1.0")
    result = store.import_image(aci)
    assert result.created
    rec = result.record
    assert rec.path == store.layout.images / rec.image_id
    assert (rec.rootfs / "bin/hello").read_text() == "hi\n"
    assert rec.manifest.name == "example.com/hello"
    assert [(r.name, r.version) for r in store.list()] == [("example.com/hello", "1.0")]


def test_import_twice_keeps_one_copy(store: ImageStore, tmp_path: Path) -> None:
    aci = make_aci(tmp_path, "example.com/hello", {"a": "1"})
    first = store.import_image(aci)
    second = store.import_image(aci)
    assert not second.created
    assert second.record.image_id == first.record.image_id
    assert len(store.list()) == 1
    assert os.listdir(store.layout.tmp) == []


def test_invalid_manifest_leaves_store_unchanged(store: ImageStore, tmp_path: Path) -> None:
    """A manifest that breaks a rule is refused with its path, and nothing is kept."""
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    bad = json.loads(manifest_json("example.com/bad"))
    bad["name"] = "Not A Name"
    aci = tmp_path / "bad.aci"
    with tarfile.open(aci, "w") as tar:
        tar.add(rootfs, "rootfs")
        manifest = tmp_path / "manifest"
        manifest.write_text(json.dumps(bad))
        tar.add(manifest, "manifest")
    before = _store_contents(store)
    with pytest.raises(ValidationError) as err:
        store.import_image(aci)
    assert err.value.path == "name"
    assert _store_contents(store) == before


def test_hostile_archive_leaves_store_unchanged(store: ImageStore, tmp_path: Path) -> None:
    aci = tmp_path / "evil.aci"
    manifest = tmp_path / "manifest"
    manifest.write_bytes(manifest_json("example.com/evil"))
    payload = tmp_path / "payload"
    payload.write_text("owned")
    with tarfile.open(aci, "w") as tar:
        tar.add(manifest, "manifest")
        tar.add(payload, "rootfs/../../escaped")
    before = _store_contents(store)
    with pytest.raises(ArchiveError):
        store.import_image(aci)
    assert _store_contents(store) == before
    assert not (store.layout.root / "escaped").exists()
    assert not (store.layout.root.parent / "escaped").exists()


def _import_in_child(state_dir: str, aci: str, queue: multiprocessing.Queue) -> None:
    result = ImageStore(state_dir).import_image(aci)
    queue.put(result.record.image_id)


@pytest.mark.parametrize("distinct", [False, True], ids=["same-image", "different-images"])
def test_concurrent_imports(tmp_path: Path, distinct: bool) -> None:
    """Six processes importing at once: every import succeeds, each image is stored once."""
    state = tmp_path / "state"
    files = {f"data/{i}": str(i) * 5000 for i in range(50)}
    acis = [make_aci(tmp_path, f"example.com/app{i if distinct else ''}", files) for i in range(6)]
    queue: multiprocessing.Queue = multiprocessing.Queue()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_import_in_child, args=(str(state), str(a), queue)) for a in acis]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    ids = {queue.get(timeout=5) for _ in procs}
    store = ImageStore(state)
    assert len(ids) == (6 if distinct else 1)
    assert {r.image_id for r in store.list()} == ids
    assert os.listdir(store.layout.tmp) == []


def test_lookup_by_name_picks_highest_version(store: ImageStore, tmp_path: Path) -> None:
    for version in ("1.2.0", "1.10.0", "1.9.3"):
        store.import_image(make_aci(tmp_path, "example.com/app", {"v": version}, version=version))
    assert store.get("example.com/app").version == "1.10.0"
    assert store.get("example.com/app:latest").version == "1.10.0"
    assert store.get("example.com/app:1.2.0").version == "1.2.0"
    assert store.get("example.com/app,version=1.9.3,os=linux").version == "1.9.3"
    with pytest.raises(ImageNotFound, match=r"example\.com/app,version=2\.0"):
        store.get("example.com/app:2.0")
    with pytest.raises(ImageNotFound):
        store.get("example.com/app,arch=aarch64")


def test_latest_label_outranks_numbered_versions(store: ImageStore, tmp_path: Path) -> None:
    store.import_image(make_aci(tmp_path, "example.com/app", {"v": "9"}, version="9.0"))
    store.import_image(make_aci(tmp_path, "example.com/app", {"v": "l"}, version="latest"))
    assert store.get("example.com/app").version == "latest"


def test_lookup_by_short_and_full_id(store: ImageStore, tmp_path: Path) -> None:
    rec = store.import_image(make_aci(tmp_path, "example.com/app", {"x": "y"})).record
    assert store.get(rec.image_id[: len("sha512-") + 32]).image_id == rec.image_id
    assert store.get(rec.image_id.upper().replace("SHA512-", "sha512-")).image_id == rec.image_id
    with pytest.raises(ValidationError):
        store.get("sha512-abc")
    with pytest.raises(ImageNotFound):
        store.get("sha512-" + "0" * 128)


def test_bad_reference_names_the_fault() -> None:
    with pytest.raises(ValidationError, match="KEY=VALUE"):
        parse_image_ref("example.com/app,os")
    with pytest.raises(ValidationError, match="valid image name"):
        parse_image_ref("Example.com/App")


def test_delete_refused_while_held(store: ImageStore, tmp_path: Path) -> None:
    rec = store.import_image(make_aci(tmp_path, "example.com/app", {"x": "y"})).record
    store.acquire("pod-1", rec.image_id)
    with pytest.raises(ImageInUse, match="pod-1"):
        store.delete(rec.image_id)
    assert rec.path.exists()
    store.release("pod-1")
    store.delete("example.com/app")
    assert store.list() == []
    assert os.listdir(store.layout.images) == []
    assert os.listdir(store.layout.tmp) == []


def test_sweep_removes_what_a_crashed_import_left(store: ImageStore, tmp_path: Path) -> None:
    """Staging left by a killed import is cleared; stored images are untouched."""
    rec = store.import_image(make_aci(tmp_path, "example.com/app", {"x": "y"})).record
    stale = store.layout.tmp / ".tmp-import-crashed"
    (stale / "rootfs").mkdir(parents=True)
    assert store.sweep_temporaries() == 1
    assert os.listdir(store.layout.tmp) == []
    assert store.get(rec.image_id).rootfs.exists()
