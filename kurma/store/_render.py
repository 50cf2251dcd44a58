"""Rendering: an image and its dependencies flattened into one tree for overlay's lowerdir.

Dependencies render depth-first in list order, each dependency's own dependencies first,
the image itself last; later layers overwrite earlier ones. Files are hard-linked from the
stored images (overlay never writes to a lower dir, so sharing inodes is safe and rendering
copies no data). We walk each layer top-down and make every directory we descend into a
real directory first, so a symlink planted by an earlier layer is replaced, never followed.
An image without dependencies or path whitelist needs no rendering: its own rootfs is the
tree. Rendered trees are cached under a key of the image IDs in render order.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kurma.errors import DependencyError, ImageNotFound, StoreError

from ._atomic import make_temp_name, write_atomic
from ._layout import StoreLayout
from ._locks import file_lock
from ._records import ImageRecord

MAX_DEPENDENCY_DEPTH = 32
TREE_INFO = "info.json"


@dataclass(frozen=True)
class RenderedTree:
    """A ready rootfs for an image: `layers` are image IDs in render order, top last."""

    image_id: str
    layers: tuple[str, ...]
    rootfs: Path
    key: str | None  # None when the image's own rootfs serves as the tree


def tree_key(layers: tuple[str, ...]) -> str:
    """Cache key of a rendering: a hash of the layer IDs in order."""
    return hashlib.sha512("\n".join(layers).encode()).hexdigest()[:64]


def resolve_layers(
    store, record: ImageRecord, depth: int = 0, visible: Callable[[str], bool] | None = None
) -> list[ImageRecord]:
    """Every layer of `record` in render order (depth-first, list order, the image last); a
    dependency's name resolves among the images whose ID `visible` accepts (all without)."""
    if depth > MAX_DEPENDENCY_DEPTH:
        raise DependencyError(
            f"{record.name}: dependencies nest deeper than {MAX_DEPENDENCY_DEPTH}"
        )
    layers: list[ImageRecord] = []
    for index, dep in enumerate(record.manifest.dependencies):
        where = f"{record.name}: dependencies[{index}] ({dep.image_name})"
        found = _resolve_dependency(store, dep, where, visible)
        layers += resolve_layers(store, found, depth + 1, visible)
    layers.append(record)
    return layers


def _resolve_dependency(
    store, dep, where: str, visible: Callable[[str], bool] | None = None
) -> ImageRecord:
    """The stored image a dependency names; a pinned ID must match name and labels."""
    if dep.image_id:
        try:
            found = store.get_by_id(dep.image_id)
        except ImageNotFound as e:
            raise DependencyError(f"{where}: image {dep.image_id} is not in the store") from e
        if found.name != dep.image_name:
            raise DependencyError(f"{where}: pinned image {dep.image_id} is named {found.name}")
        wrong = {k: v for k, v in dep.labels.items() if found.labels.get(k) != v}
        if wrong:
            raise DependencyError(f"{where}: pinned image {dep.image_id} lacks labels {wrong}")
        return found
    found = store.find(dep.image_name, dict(dep.labels), visible)
    if found is None:
        labels = "".join(f",{k}={v}" for k, v in dep.labels.items())
        raise DependencyError(f"{where}: no image {dep.image_name}{labels} in the store")
    return found


def render(store, record: ImageRecord, layers: list[ImageRecord] | None = None) -> RenderedTree:
    """The rendered tree of `record`, from the cache or built now (`layers` if resolved)."""
    layers = layers if layers is not None else resolve_layers(store, record)
    ids = tuple(layer.image_id for layer in layers)
    whitelist = record.manifest.path_whitelist
    if len(layers) == 1 and not whitelist:
        return RenderedTree(record.image_id, ids, record.rootfs, None)
    key = tree_key(ids)
    final = store.layout.tree_dir(key)
    with file_lock(store.layout.lock(f"tree-{key}")):
        if not (final / TREE_INFO).exists():
            _build_tree(store.layout, layers, whitelist, key, final)
    return RenderedTree(record.image_id, ids, final / "rootfs", key)


def _build_tree(
    layout: StoreLayout, layers: list[ImageRecord], whitelist, key: str, final: Path
) -> None:
    staging = make_temp_name(layout.tmp, "render")
    try:
        rootfs = staging / "rootfs"
        os.makedirs(rootfs)
        for layer in layers:
            apply_layer(layer.rootfs, rootfs)
        if whitelist:
            prune_to_whitelist(rootfs, whitelist)
        info = {"key": key, "image": layers[-1].image_id, "layers": [x.image_id for x in layers]}
        write_atomic(staging / TREE_INFO, json.dumps(info).encode())
        if final.exists():  # a stale tree without info: left by an interrupted render
            shutil.rmtree(final)
        os.rename(staging, final)
    finally:
        if os.path.lexists(staging):
            shutil.rmtree(staging)


def apply_layer(src: Path, dst: Path) -> int:
    """Overlay the tree `src` onto `dst`: replace what differs, descend into real directories.
    Returns how many directories below `dst` it placed (files are links; these are new)."""
    directories: list[tuple[str | Path, str | Path]] = [(src, dst)]
    for src_dir, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(src_dir, src)
        dst_dir = os.path.normpath(os.path.join(dst, rel))
        for name in dirnames + filenames:  # os.walk lists directory symlinks under dirnames
            s, d = os.path.join(src_dir, name), os.path.join(dst_dir, name)
            if _place_entry(s, d):
                directories.append((s, d))
    for s, d in reversed(directories):  # children first: creating them touched the mtimes
        _copy_metadata(s, d)
    return len(directories) - 1


def _place_entry(src: str, dst: str) -> bool:
    """Put one entry of a layer at `dst`; True when it is a directory (metadata comes later)."""
    st = os.lstat(src)
    try:
        existing = os.lstat(dst)
    except FileNotFoundError:
        existing = None
    if stat.S_ISDIR(st.st_mode):
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            os.unlink(dst)  # a file or a symlink (even to a directory) gives way to the directory
            existing = None
        if existing is None:
            os.mkdir(dst, 0o700)
        return True
    if existing is not None:
        shutil.rmtree(dst) if stat.S_ISDIR(existing.st_mode) else os.unlink(dst)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        if os.geteuid() == 0:
            os.lchown(dst, st.st_uid, st.st_gid)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    elif stat.S_ISREG(st.st_mode):
        _link_or_copy(src, dst, st)
    else:
        raise StoreError(f"unexpected file type in a stored image: {src}")
    return False


def _link_or_copy(src: str, dst: str, st: os.stat_result) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EMLINK):  # another filesystem; too many links
            raise
        shutil.copy2(src, dst, follow_symlinks=False)
        if os.geteuid() == 0:
            os.chown(dst, st.st_uid, st.st_gid)
        os.chmod(dst, stat.S_IMODE(st.st_mode))


def _copy_metadata(src: str | Path, dst: str | Path) -> None:
    """Owner, mode, times and xattrs of a directory, from one layer to the tree."""
    st = os.lstat(src)
    if os.geteuid() == 0:
        os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    for attr in _listxattr(src):
        os.setxattr(dst, attr, os.getxattr(src, attr, follow_symlinks=False), follow_symlinks=False)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _listxattr(path: str | Path) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []


def prune_to_whitelist(rootfs: Path, whitelist: tuple[str, ...]) -> None:
    """Remove every path not whitelisted and not a directory leading to a whitelisted path."""
    keep = {"."}
    for path in whitelist:
        parts = Path(path.lstrip("/")).parts
        keep.update(os.path.join(*parts[: i + 1]) for i in range(len(parts)))
    for current, dirnames, filenames in os.walk(rootfs, topdown=True):
        rel = os.path.relpath(current, rootfs)
        for name in list(dirnames) + filenames:
            relpath = os.path.normpath(os.path.join(rel, name))
            full = os.path.join(current, name)
            if relpath in keep:
                continue
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
                dirnames.remove(name)
            else:
                os.unlink(full)


def trees_using(layout: StoreLayout, image_id: str) -> Iterator[Path]:
    """Rendered trees that have `image_id` among their layers."""
    for tree in layout.trees.iterdir():
        try:
            info = json.loads((tree / TREE_INFO).read_bytes())
        except (FileNotFoundError, ValueError):
            continue
        if image_id in info.get("layers", ()):
            yield tree


def collect_garbage(store) -> list[str]:
    """Remove rendered trees that no holder uses (or that an interrupted render left)."""
    used = store.refs.used_trees()
    removed = []
    for tree in sorted(store.layout.trees.iterdir()):
        if tree.name in used and (tree / TREE_INFO).exists():
            continue
        store.remove_dir(tree)
        removed.append(tree.name)
    return removed
