"""Where the store keeps what, under its state directory (DESIGN.md: State and configuration).

images/<image-id>/{manifest,rootfs/,info.json}   imported images, named by full image ID
trees/<tree-key>/{rootfs/,info.json}             rendered trees of images with dependencies
blobs/<alg>/<hex>                OCI blobs as a registry serves them (manifests, configs, layers)
layers/<chain>/{rootfs/,info.json}  an OCI image's tree after its layers 0..n (see `_oci`)
refs/<holder>.json                               which images and trees a holder (a pod) uses
locks/                                           flock files
tmp/                                             staging; `sweep_temporaries()` clears what
                                                 crashed imports left (kurmad at start)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoreLayout:
    """Paths of one state directory's image store."""

    root: Path

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def trees(self) -> Path:
        return self.root / "trees"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def layers(self) -> Path:
        return self.root / "layers"

    @property
    def refs(self) -> Path:
        return self.root / "refs"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def image_dir(self, image_id: str) -> Path:
        return self.images / image_id

    def tree_dir(self, key: str) -> Path:
        return self.trees / key

    def layer_dir(self, chain: str) -> Path:
        return self.layers / chain

    def blob(self, algorithm: str, hexdigest: str) -> Path:
        return self.blobs / algorithm / hexdigest

    def lock(self, name: str) -> Path:
        return self.locks / f"{name}.lock"

    def create(self) -> None:
        """Create the directories (idempotent); the store is private to root."""
        self.root.mkdir(parents=True, exist_ok=True)
        dirs = (self.images, self.trees, self.blobs, self.layers, self.refs, self.locks, self.tmp)
        for d in dirs:
            d.mkdir(mode=0o700, exist_ok=True)
