"""The media types of OCI and Docker v2 images, and what each means to Kurma.

A registry says what a document is by its media type (the Content-Type header and the
`mediaType` field), never by its file name: these tables are the one place that knows the
names. Docker's types are accepted wherever the OCI equivalent is, because most images in
the field are still pushed as Docker v2 schema 2.
"""

from __future__ import annotations

from kurma.aci import Compression
from kurma.errors import UnsupportedManifest

# --- manifests and indexes ----------------------------------------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

# What a registry client sends as Accept, most wanted first (schema 1 deliberately absent:
# a registry that can only offer schema 1 then answers 404 or converts, and either is clearer
# than a manifest Kurma would refuse after downloading it).
ACCEPT = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)

# --- configs ----------------------------------------------------------------------------------
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

# --- layers -----------------------------------------------------------------------------------
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# Every layer type Kurma can apply, with its compression. The "nondistributable" OCI types
# are deprecated (image-spec 1.1) but still found; like Docker's "foreign" layers they may
# have to be fetched from their descriptor's `urls`.
LAYER_COMPRESSION: dict[str, Compression] = {
    OCI_LAYER: Compression.NONE,
    OCI_LAYER_GZIP: Compression.GZIP,
    OCI_LAYER_ZSTD: Compression.ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar": Compression.NONE,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": Compression.GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": Compression.ZSTD,
    DOCKER_LAYER: Compression.NONE,
    DOCKER_LAYER_GZIP: Compression.GZIP,
    DOCKER_LAYER_ZSTD: Compression.ZSTD,
    "application/vnd.docker.image.rootfs.foreign.diff.tar": Compression.NONE,
    DOCKER_FOREIGN_LAYER_GZIP: Compression.GZIP,
}


def layer_compression(media_type: str) -> Compression:
    """How a layer of `media_type` is compressed; UnsupportedManifest for a type that is
    not a filesystem layer (an artifact's blob, an encrypted layer)."""
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise UnsupportedManifest(f"layer media type {media_type!r} is not supported") from None


def is_layer(media_type: str) -> bool:
    """Whether `media_type` is a filesystem layer Kurma can apply."""
    return media_type in LAYER_COMPRESSION
