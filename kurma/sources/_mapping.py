"""The appc manifest an OCI image runs with: `kurma.oci.appc_manifest` on the image's tree,
named after the first reference it was stored under."""

from __future__ import annotations

import os
from pathlib import Path

from kurma.oci import ImageConfig, appc_manifest, appc_name, appc_version, parse_reference
from kurma.store import OciImport

UNNAMED = "oci.image/unnamed"  # an archive image with no reference (a bare `docker save ID`)


def manifest_for(config: ImageConfig, source: OciImport, rootfs: Path) -> bytes:
    """The generated appc image manifest of an OCI image whose tree is at `rootfs`."""
    name, version = UNNAMED, None
    if source.references:
        ref = parse_reference(source.references[0])
        name, version = appc_name(ref.name), appc_version(ref)
    annotations = {}
    if source.manifest_digest is not None:
        annotations["kurma.io/oci-manifest-digest"] = str(source.manifest_digest)
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return appc_manifest(
            config, name=name, rootfs_fd=fd, version=version, annotations=annotations
        )
    finally:
        os.close(fd)
