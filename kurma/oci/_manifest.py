"""OCI image manifests and indexes, and their Docker v2 schema 2 twins, as frozen data.

One parser takes all four kinds, because a registry may answer a tag with any of them: the
media type (the document's own `mediaType`, else the Content-Type the caller passes, else
the shape of the document) picks the kind. Docker schema 1 is refused outright: it cannot
be verified by digest the same way, has been deprecated since 2017, and docker itself no
longer pulls it. Errors are ValidationError with the JSON path of the field (`layers[2].size`),
decoded as Go does (case-insensitive keys, unknown keys ignored) through the appc parser's
`Node`, since registries and tools write these documents with Go's encoding/json.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from kurma.aci import FrozenMap
from kurma.aci._manifest_json import JSON, Node, decode_document
from kurma.errors import InvalidDigest, UnsupportedManifest, ValidationError

from . import _mediatypes as mt
from ._digest import Digest, digest_of, parse_digest
from ._platform import Platform

# RFC 6838 media type, as the OCI descriptor schema restricts it.
_MEDIA_TYPE_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
MAX_SIZE = 2**63 - 1  # descriptors carry int64 sizes


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: what it is, its digest and size, where else to find it."""

    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: FrozenMap = field(default_factory=FrozenMap)
    platform: Platform | None = None
    artifact_type: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI or Docker v2 schema 2): one config and its ordered layers."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: FrozenMap = field(default_factory=FrozenMap)
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @property
    def is_docker(self) -> bool:
        return self.media_type == mt.DOCKER_MANIFEST

    def check_runnable(self) -> None:
        """Raise unless this is a container image Kurma can unpack (not an artifact such as
        a signature or an SBOM): an image config and only filesystem layers."""
        if self.config.media_type not in mt.CONFIG_TYPES:
            raise UnsupportedManifest(
                f"config.mediaType {self.config.media_type!r} is not an image config: "
                "this manifest is an artifact, not a runnable image"
            )
        for i, layer in enumerate(self.layers):
            if not mt.is_layer(layer.media_type):
                raise UnsupportedManifest(
                    f"layers[{i}].mediaType {layer.media_type!r} is not a layer type Kurma "
                    "can unpack"
                )


@dataclass(frozen=True)
class Index:
    """An image index (OCI) or manifest list (Docker): manifests, usually one per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: FrozenMap = field(default_factory=FrozenMap)
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @property
    def is_docker(self) -> bool:
        return self.media_type == mt.DOCKER_MANIFEST_LIST


def _media_type(node: Node, key: str, required: bool) -> str | None:
    value = node.text(key, required)
    if value is not None and not _MEDIA_TYPE_RE.fullmatch(value):
        raise ValidationError(node.at(key), f"{value!r} is not a media type (type/subtype)")
    return value


def _digest(node: Node, key: str) -> Digest:
    text = node.text(key, required=True)
    assert text is not None
    try:
        return parse_digest(text)
    except InvalidDigest as e:
        raise ValidationError(node.at(key), e.reason) from e


def _platform(node: Node | None) -> Platform | None:
    if node is None:
        return None
    return Platform(
        os=node.text("os", required=True) or "",
        architecture=node.text("architecture", required=True) or "",
        variant=node.text("variant") or "",
        os_version=node.text("os.version") or "",
        os_features=node.strings("os.features"),
    )


def _embedded(node: Node, digest: Digest, size: int) -> bytes | None:
    text = node.text("data")
    if text is None:
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValidationError(node.at("data"), "is not valid base64") from e
    if len(data) != size or digest_of(data, digest.algorithm) != digest:
        raise ValidationError(node.at("data"), "does not match the descriptor's digest and size")
    return data


def parse_descriptor(value: JSON, path: str) -> Descriptor:
    """Parse and validate one descriptor at JSON path `path`."""
    node = Node.of(value, path)
    media_type = _media_type(node, "mediaType", required=True)
    assert media_type is not None
    digest = _digest(node, "digest")
    size = node.integer("size", 0, MAX_SIZE, required=True)
    assert size is not None
    urls = node.strings("urls")
    for i, url in enumerate(urls):
        if not url.startswith(("http://", "https://")):
            raise ValidationError(f"{node.at('urls')}[{i}]", f"{url!r} is not an http(s) URL")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        urls=urls,
        annotations=FrozenMap(node.string_map("annotations")),
        platform=_platform(node.obj("platform")),
        artifact_type=_media_type(node, "artifactType", required=False),
        data=_embedded(node, digest, size),
    )


def _kind(root: Node, content_type: str | None) -> str:
    """The document's media type: its own field, the transport's, or its shape."""
    declared = _media_type(root, "mediaType", required=False)
    if content_type is not None:  # an HTTP header may carry parameters: "...+json; charset=x"
        content_type = content_type.partition(";")[0].strip()
    version = root.raw("schemaVersion")
    if (type(version) is int and version == 1) or (declared or content_type) in mt.SCHEMA1_TYPES:
        raise UnsupportedManifest(
            "Docker image manifest schema 1 is not supported (deprecated since 2017 and "
            "refused by current docker); push the image again with a current client"
        )
    known = mt.MANIFEST_TYPES | mt.INDEX_TYPES
    if declared is not None and content_type in known and declared != content_type:
        raise ValidationError(
            root.at("mediaType"), f"is {declared!r}, but the registry sent {content_type!r}"
        )
    kind = declared or (content_type if content_type in known else None)
    if kind is None:  # OCI 1.0 made mediaType optional: tell them apart by their members
        kind = mt.OCI_INDEX if root.raw("manifests") is not None else mt.OCI_MANIFEST
    if kind not in known:
        raise UnsupportedManifest(f"manifest media type {kind!r} is not supported")
    return kind


def parse_manifest(
    data: bytes | str | Mapping[str, JSON], content_type: str | None = None
) -> Manifest | Index:
    """Parse a manifest or index as a registry serves it; `content_type` is the HTTP
    Content-Type, if any. ValidationError names the field; UnsupportedManifest the kind."""
    root = Node.of(decode_document(data), "")
    kind = _kind(root, content_type)
    version = root.integer("schemaVersion", 0, required=True)
    if version != 2:
        raise ValidationError("schemaVersion", f"must be 2, got {version}")
    if kind in mt.INDEX_TYPES and root.raw("config") is not None:
        raise ValidationError("config", f"is not allowed in {kind}")
    if kind in mt.MANIFEST_TYPES and root.raw("manifests") is not None:
        raise ValidationError("manifests", f"is not allowed in {kind}")
    annotations = FrozenMap(root.string_map("annotations"))
    subject_value = root.raw("subject")
    subject = None if subject_value is None else parse_descriptor(subject_value, "subject")
    artifact_type = _media_type(root, "artifactType", required=False)
    if kind in mt.INDEX_TYPES:
        root.array("manifests", required=True)  # present, even if empty
        manifests = tuple(parse_descriptor(v, p) for p, v in root.array("manifests"))
        return Index(kind, manifests, annotations, subject, artifact_type)
    config = parse_descriptor(root.raw("config", required=True), "config")
    root.array("layers", required=True)
    layers = tuple(parse_descriptor(v, p) for p, v in root.array("layers"))
    return Manifest(kind, config, layers, annotations, subject, artifact_type)
