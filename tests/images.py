"""Builders of small, valid test images: a rootfs from a dict, a manifest from keywords."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from kurma.aci import build_aci


def manifest_json(
    name: str,
    *,
    version: str | None = None,
    labels: dict[str, str] | None = None,
    dependencies: list[dict] | None = None,
    path_whitelist: list[str] | None = None,
) -> bytes:
    """An ImageManifest for linux/amd64 with the given name, version and extras."""
    all_labels = {"os": "linux", "arch": "amd64", **(labels or {})}
    if version is not None:
        all_labels["version"] = version
    doc: dict = {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": name,
        "labels": [{"name": k, "value": v} for k, v in all_labels.items()],
    }
    if dependencies:
        doc["dependencies"] = dependencies
    if path_whitelist:
        doc["pathWhitelist"] = path_whitelist
    return json.dumps(doc).encode()


def write_tree(root: Path, files: dict[str, str | tuple[str, str] | None]) -> Path:
    """Create files (str content), directories (None) and symlinks (("symlink", target))."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in sorted(files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        elif isinstance(content, tuple):
            os.symlink(content[1], path)
        else:
            path.write_text(content)
    return root


def make_aci(
    directory: Path,
    name: str,
    files: dict[str, str | tuple[str, str] | None],
    **manifest: object,
) -> Path:
    """Build a fresh `.aci` under `directory` holding `files`, reproducibly; returns its path."""
    work = Path(tempfile.mkdtemp(prefix=name.replace("/", "_") + "-", dir=directory))
    rootfs = write_tree(work / "rootfs", files)
    out = work.parent / f"{work.name}.aci"
    build_aci(rootfs, manifest_json(name, **manifest), out, mtime=0, owner=(0, 0))  # type: ignore[arg-type]
    return out
