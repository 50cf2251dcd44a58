"""Rendering images with dependencies into cached trees, and collecting unused trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kurma.errors import DependencyError
from kurma.store import ImageStore
from tests.images import make_aci

pytestmark = pytest.mark.root


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "state")


def _dep(name: str, **extra: object) -> dict:
    return {"imageName": name, **extra}


def test_image_without_dependencies_renders_to_its_own_rootfs(
    store: ImageStore, tmp_path: Path
) -> None:
    """No copying at all for the common case: the stored rootfs is the overlay lower dir."""
    rec = store.import_image(make_aci(tmp_path, "example.com/solo", {"f": "1"})).record
    tree = store.render(rec.image_id)
    assert tree.rootfs == rec.rootfs
    assert tree.key is None
    assert os.listdir(store.layout.trees) == []


def test_dependencies_render_depth_first_later_layers_win(
    store: ImageStore, tmp_path: Path
) -> None:
    """base <- [lib <- base] <- app: order base, base, lib, app; each later file wins."""
    base = {"etc/who": "base", "etc/base-only": "b", "bin/sh": "sh"}
    store.import_image(make_aci(tmp_path, "example.com/base", base, version="1"))
    lib = {"etc/who": "lib", "usr/lib/libx.so": "x"}
    store.import_image(
        make_aci(tmp_path, "example.com/lib", lib, dependencies=[_dep("example.com/base")])
    )
    app = {"etc/who": "app", "app": "main"}
    deps = [_dep("example.com/base"), _dep("example.com/lib")]
    rec = store.import_image(make_aci(tmp_path, "example.com/app", app, dependencies=deps)).record
    tree = store.render(rec.image_id)
    names = [store.get_by_id(i).name for i in tree.layers]
    assert names == ["example.com/base", "example.com/base", "example.com/lib", "example.com/app"]
    root = tree.rootfs
    assert (root / "etc/who").read_text() == "app"
    assert (root / "etc/base-only").read_text() == "b"
    assert (root / "usr/lib/libx.so").read_text() == "x"
    assert (root / "bin/sh").read_text() == "sh"


def test_rendering_copies_no_file_data(store: ImageStore, tmp_path: Path) -> None:
    """Files of the rendered tree share inodes with the stored image (hard links)."""
    base = store.import_image(make_aci(tmp_path, "example.com/base", {"big": "x" * 100000})).record
    rec = store.import_image(
        make_aci(tmp_path, "example.com/app", {"a": "1"}, dependencies=[_dep("example.com/base")])
    ).record
    tree = store.render(rec.image_id)
    assert (tree.rootfs / "big").stat().st_ino == (base.rootfs / "big").stat().st_ino


def test_directory_symlink_in_place_is_replaced_not_followed(
    store: ImageStore, tmp_path: Path
) -> None:
    """A lower layer's `lib -> /victim` symlink gives way to the upper layer's real lib/."""
    victim = tmp_path / "victim"
    victim.mkdir()
    lower = {"lib": ("symlink", str(victim)), "rel": ("symlink", "../../../victim")}
    store.import_image(make_aci(tmp_path, "example.com/lower", lower))
    upper = {"lib/libc.so": "libc", "rel/x": "x"}
    rec = store.import_image(
        make_aci(tmp_path, "example.com/upper", upper, dependencies=[_dep("example.com/lower")])
    ).record
    tree = store.render(rec.image_id)
    assert os.listdir(victim) == []
    assert not (tree.rootfs / "lib").is_symlink()
    assert (tree.rootfs / "lib/libc.so").read_text() == "libc"
    assert (tree.rootfs / "rel/x").read_text() == "x"


def test_symlink_in_upper_layer_replaces_lower_directory(store: ImageStore, tmp_path: Path) -> None:
    store.import_image(make_aci(tmp_path, "example.com/lower", {"lib/a": "a"}))
    rec = store.import_image(
        make_aci(
            tmp_path,
            "example.com/upper",
            {"lib": ("symlink", "usr/lib")},
            dependencies=[_dep("example.com/lower")],
        )
    ).record
    tree = store.render(rec.image_id)
    assert os.readlink(tree.rootfs / "lib") == "usr/lib"


def test_path_whitelist_prunes_everything_else(store: ImageStore, tmp_path: Path) -> None:
    base = {"bin/sh": "sh", "bin/ls": "ls", "etc/passwd": "root", "usr/share/doc/x": "doc"}
    store.import_image(make_aci(tmp_path, "example.com/base", base))
    rec = store.import_image(
        make_aci(
            tmp_path,
            "example.com/app",
            {"app": "main"},
            dependencies=[_dep("example.com/base")],
            path_whitelist=["/bin/sh", "/etc/passwd", "/app"],
        )
    ).record
    root = store.render(rec.image_id).rootfs
    found = sorted(
        os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs
    )
    assert found == ["app", "bin", "bin/sh", "etc", "etc/passwd"]


def test_rendered_tree_is_cached(store: ImageStore, tmp_path: Path) -> None:
    store.import_image(make_aci(tmp_path, "example.com/base", {"a": "1"}))
    rec = store.import_image(
        make_aci(tmp_path, "example.com/app", {"b": "2"}, dependencies=[_dep("example.com/base")])
    ).record
    first = store.render(rec.image_id)
    marker = first.rootfs / "b"
    inode = marker.stat().st_ino
    second = store.render(rec.image_id)
    assert second == first
    assert marker.stat().st_ino == inode
    assert os.listdir(store.layout.trees) == [first.key]


def test_pinned_dependency_must_match(store: ImageStore, tmp_path: Path) -> None:
    other = store.import_image(make_aci(tmp_path, "example.com/other", {"a": "1"})).record
    rec = store.import_image(
        make_aci(
            tmp_path,
            "example.com/app",
            {"b": "2"},
            dependencies=[_dep("example.com/base", imageID=other.image_id)],
        )
    ).record
    with pytest.raises(DependencyError, match=r"named example\.com/other"):
        store.render(rec.image_id)


def test_missing_dependency_is_named(store: ImageStore, tmp_path: Path) -> None:
    dep = _dep("example.com/base", labels=[{"name": "version", "value": "3"}])
    rec = store.import_image(
        make_aci(tmp_path, "example.com/app", {"b": "2"}, dependencies=[dep])
    ).record
    with pytest.raises(DependencyError, match=r"dependencies\[0\].*example.com/base,version=3"):
        store.render(rec.image_id)
    assert os.listdir(store.layout.trees) == []
    assert os.listdir(store.layout.tmp) == []


def test_gc_removes_only_unused_trees(store: ImageStore, tmp_path: Path) -> None:
    store.import_image(make_aci(tmp_path, "example.com/base", {"a": "1"}))
    dep = [_dep("example.com/base")]
    one = store.import_image(make_aci(tmp_path, "example.com/one", {"1": "1"}, dependencies=dep))
    two = store.import_image(make_aci(tmp_path, "example.com/two", {"2": "2"}, dependencies=dep))
    used = store.acquire("pod-a", one.record.image_id)
    unused = store.render(two.record.image_id)
    assert store.collect_garbage() == [unused.key]
    assert used.rootfs.exists()
    assert not unused.rootfs.exists()


def test_delete_removes_unused_trees_built_on_the_image(store: ImageStore, tmp_path: Path) -> None:
    base = store.import_image(make_aci(tmp_path, "example.com/base", {"a": "1"})).record
    dep = [_dep("example.com/base")]
    app = store.import_image(make_aci(tmp_path, "example.com/app", {"b": "2"}, dependencies=dep))
    tree = store.acquire("pod-a", app.record.image_id)
    from kurma.errors import ImageInUse

    with pytest.raises(ImageInUse):
        store.delete(base.image_id)
    store.release("pod-a")
    store.delete(base.image_id)
    assert not tree.rootfs.exists()
