"""Parse either kind of manifest, dispatching on `acKind`."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ValidationError
from ._manifest_image import ImageManifest
from ._manifest_json import JSON, Node, decode_document
from ._manifest_pod import PodManifest

_KINDS: dict[str, type[ImageManifest] | type[PodManifest]] = {
    "ImageManifest": ImageManifest,
    "PodManifest": PodManifest,
}


def parse_manifest(data: bytes | str | Mapping[str, JSON]) -> ImageManifest | PodManifest:
    """Parse an ImageManifest or a PodManifest, whichever `acKind` says it is."""
    document = decode_document(data)
    kind = Node(document, "").text("acKind", required=True)
    cls = _KINDS.get(kind or "")
    if cls is None:
        raise ValidationError("acKind", f"must be 'ImageManifest' or 'PodManifest', got {kind!r}")
    return cls.from_json(document)
