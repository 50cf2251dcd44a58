"""The ImageManifest (aci.md, Image Manifest Schema) and the header both manifests share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import ValidationError
from ._manifest_json import JSON, FrozenMap, Node, canonical_bytes, decode_document
from ._manifest_types import (
    App,
    check_absolute,
    check_identifier,
    pairs_json,
    parse_annotations,
    parse_labels,
    required_text,
)
from ._names import SPEC_VERSION, is_image_id, semver_core

SPEC_VERSION_TEXT = ".".join(map(str, SPEC_VERSION))


def check_header(node: Node, kind: str) -> str:
    """Check `acKind` is `kind` and `acVersion` a version we comply with; return acVersion."""
    ac_kind = required_text(node, "acKind")
    if ac_kind != kind:
        raise ValidationError(node.at("acKind"), f"must be {kind!r}, got {ac_kind!r}")
    version = required_text(node, "acVersion")
    core = semver_core(version)
    if core is None:
        raise ValidationError(
            node.at("acVersion"),
            f"must be a SemVer 2.0.0 version such as '0.8.11', got {version!r}",
        )
    # types.md: "An AC Version must reference a tagged version of the App Container
    # specification, not exceeding the version of its greatest compliance" and must be
    # "compatible on major AC version series": tags start at 0.1.0 and we comply with 0.8.11.
    if core == (0, 0, 0) or core > SPEC_VERSION or core[0] != SPEC_VERSION[0]:
        raise ValidationError(
            node.at("acVersion"),
            f"must be an appc version from 0.1.0 to {SPEC_VERSION_TEXT}, got {version!r}",
        )
    return version


def check_image_id(value: str, path: str) -> str:
    """`value`, which must be a full Image ID (`sha512-` and 128 hex digits)."""
    if not is_image_id(value):
        raise ValidationError(
            path, f"must be an image ID: 'sha512-' and 128 lowercase hex digits, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Dependency:
    """An image to lay down before this one; matched by name and labels, pinned by ID."""

    image_name: str
    image_id: str | None = None
    labels: FrozenMap = field(default_factory=FrozenMap)
    size: int | None = None

    @classmethod
    def parse(cls, value: JSON, path: str) -> Dependency:
        node = Node.of(value, path)
        image_id = node.text("imageID")
        return cls(
            image_name=check_identifier(required_text(node, "imageName"), node.at("imageName")),
            image_id=None if image_id is None else check_image_id(image_id, node.at("imageID")),
            labels=parse_labels(node),
            size=node.integer("size", 0),
        )

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"imageName": self.image_name}
        if self.image_id is not None:
            out["imageID"] = self.image_id
        if self.labels:
            out["labels"] = pairs_json(self.labels)
        if self.size is not None:
            out["size"] = self.size
        return out


def _path_whitelist(node: Node) -> tuple[str, ...]:
    paths: list[str] = []
    for path, item in node.array("pathWhitelist"):
        if not isinstance(item, str):
            raise ValidationError(path, "must be a string")
        check_absolute(item, path)
        if item in paths:
            raise ValidationError(path, f"duplicate path {item!r}")
        paths.append(item)
    return tuple(paths)


@dataclass(frozen=True)
class ImageManifest:
    """An image's manifest: its name and labels, how to run it, what it is built on."""

    name: str
    ac_version: str = SPEC_VERSION_TEXT
    labels: FrozenMap = field(default_factory=FrozenMap)
    app: App | None = None
    dependencies: tuple[Dependency, ...] = ()
    path_whitelist: tuple[str, ...] = ()
    annotations: FrozenMap = field(default_factory=FrozenMap)

    ac_kind: ClassVar[str] = "ImageManifest"

    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, JSON]) -> ImageManifest:
        """Parse and validate a manifest; raises ValidationError naming the bad field."""
        node = Node(decode_document(data), "")
        version = check_header(node, cls.ac_kind)
        app = node.raw("app")
        return cls(
            name=check_identifier(required_text(node, "name"), "name"),
            ac_version=version,
            labels=parse_labels(node),
            app=None if app is None else App.parse(app, "app"),
            dependencies=tuple(Dependency.parse(v, p) for p, v in node.array("dependencies")),
            path_whitelist=_path_whitelist(node),
            annotations=parse_annotations(node),
        )

    @property
    def version(self) -> str | None:
        """The `version` label, if any."""
        return self.labels.get("version")

    def to_json(self) -> dict[str, JSON]:
        """The manifest as a JSON object; empty optional fields are left out."""
        out: dict[str, JSON] = {
            "acKind": self.ac_kind,
            "acVersion": self.ac_version,
            "name": self.name,
        }
        if self.labels:
            out["labels"] = pairs_json(self.labels)
        if self.app is not None:
            out["app"] = self.app.to_json()
        if self.dependencies:
            out["dependencies"] = [d.to_json() for d in self.dependencies]
        if self.path_whitelist:
            out["pathWhitelist"] = list(self.path_whitelist)
        if self.annotations:
            out["annotations"] = pairs_json(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        """The manifest as canonical JSON bytes."""
        return canonical_bytes(self.to_json())


def parse_image_manifest(data: bytes | str | Mapping[str, JSON]) -> ImageManifest:
    """Parse and validate an ImageManifest."""
    return ImageManifest.from_json(data)
