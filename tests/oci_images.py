"""Test OCI images built in memory: layers from TarBuilder, a config, a manifest; written
out as an OCI layout when a real tool (skopeo, umoci) or a registry push needs one.

`OciImage.blobs` maps digest strings to bytes, so a test can also serve the blobs itself
(`fetch_blob`) without any registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kurma.aci import Compression
from kurma.oci import Descriptor
from tests.archives import TarBuilder, compress

LAYER_MEDIA = {
    Compression.NONE: "application/vnd.oci.image.layer.v1.tar",
    Compression.GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
    Compression.ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class OciImage:
    """One image: its blobs by digest, manifest bytes and digest."""

    manifest: bytes
    config: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    def fetch_blob(self) -> Callable[[Descriptor, BinaryIO, Callable[[int], None]], None]:
        """A blob fetcher for `kurma.store.OciImport` that serves from memory."""

        def fetch(descriptor: Descriptor, dest: BinaryIO, advanced: Callable[[int], None]) -> None:
            data = self.blobs[str(descriptor.digest)]
            dest.write(data)
            advanced(len(data))

        return fetch

    def write_layout(self, layout: Path, tag: str = "latest") -> Path:
        """An OCI image layout holding this image under `tag` (added to an existing one)."""
        (layout / "blobs/sha256").mkdir(parents=True, exist_ok=True)
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        for digest, data in self.blobs.items():
            (layout / "blobs/sha256" / digest.split(":")[1]).write_bytes(data)
        index_path = layout / "index.json"
        index = (
            json.loads(index_path.read_text())
            if index_path.exists()
            else {"schemaVersion": 2, "manifests": []}
        )
        index["manifests"].append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": self.digest,
                "size": len(self.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        )
        index_path.write_text(json.dumps(index))
        return layout


def build_image(
    layers: list[tuple[TarBuilder | bytes, Compression]],
    *,
    run: dict | None = None,
    architecture: str = "amd64",
) -> OciImage:
    """An image of `layers` (each a TarBuilder or tar bytes, and its compression) whose
    config's `config` section is `run` (Entrypoint, Cmd, Env, User, WorkingDir ...)."""
    blobs: dict[str, bytes] = {}
    diff_ids, descriptors = [], []
    for layer, kind in layers:
        tar = layer.data() if isinstance(layer, TarBuilder) else layer
        blob = compress(tar, kind)
        blobs[sha256(blob)] = blob
        diff_ids.append(sha256(tar))
        descriptors.append({"mediaType": LAYER_MEDIA[kind], "digest": sha256(blob),
                            "size": len(blob)})  # fmt: skip
    config = json.dumps({
        "architecture": architecture, "os": "linux", "config": run or {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()  # fmt: skip
    blobs[sha256(config)] = config
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": descriptors,
    }).encode()  # fmt: skip
    blobs[sha256(manifest)] = manifest
    return OciImage(manifest=manifest, config=config, blobs=blobs)


def busybox_layer(busybox: Path) -> TarBuilder:
    """A layer with a static busybox at /bin/busybox and /bin/sh (the runtime tests' shell)."""
    data = busybox.read_bytes()
    return (TarBuilder().dir("./").dir("bin").file("bin/busybox", data, mode=0o755)
            .hardlink("bin/sh", "bin/busybox").dir("etc").dir("tmp", mode=0o1777))  # fmt: skip


def rootfs_tar(root: Path) -> bytes:
    """The tree at `root` as a layer tar (owners, modes and links as they are)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return out.getvalue()
