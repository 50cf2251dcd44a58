"""What the store knows of one image, and how image references are written.

A reference is a full or short image ID (`sha512-` + at least 32 hex), or an image name
with optional labels: `example.com/app:1.0` (the version label) or
`example.com/app,os=linux,arch=amd64` (rkt's syntax; names contain neither `:` nor `,`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from kurma.aci import ImageManifest, is_ac_identifier, parse_image_id_ref, parse_image_manifest
from kurma.errors import ValidationError

INFO_FILE = "info.json"


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: either an ID (full or short) or a name with labels."""

    image_id: str | None = None
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.image_id:
            return self.image_id
        extra = "".join(f",{k}={v}" for k, v in self.labels.items())
        return f"{self.name}{extra}"


def parse_image_ref(text: str) -> ImageRef:
    """Parse a reference as typed by a person; raises ValidationError naming the fault."""
    if text.startswith("sha512-"):
        return ImageRef(image_id=parse_image_id_ref(text))
    name, *pairs = text.split(",")
    labels: dict[str, str] = {}
    if ":" in name:
        name, version = name.rsplit(":", 1)
        labels["version"] = version
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ValidationError("image", f"label {pair!r} in {text!r} is not KEY=VALUE")
        labels[key] = value
    if not is_ac_identifier(name):
        raise ValidationError("image", f"{name!r} is neither an image ID nor a valid image name")
    return ImageRef(name=name, labels=labels)


@functools.lru_cache(maxsize=512)
def _parsed_manifest(image_id: str, path: Path) -> ImageManifest:
    return parse_image_manifest((path / "manifest").read_bytes())


@dataclass(frozen=True)
class OciFacts:
    """What the store keeps of an OCI image beside its generated appc manifest: the
    references it answers to, the registry's digests, and its layer chain (bottom first)."""

    references: tuple[str, ...]  # normalised: `registry/repo:tag` or `registry/repo@digest`
    manifest_digest: str
    manifest_media_type: str
    config_digest: str
    layers: tuple[str, ...]  # chain keys under layers/, bottom first; the last is the tree
    layer_sizes: tuple[int, ...]  # uncompressed bytes each layer added
    blobs: tuple[str, ...]  # every blob digest the image needs (manifest, config, layers)
    platform: str = ""

    def to_json(self) -> dict:
        return {
            "references": list(self.references),
            "manifestDigest": self.manifest_digest,
            "manifestMediaType": self.manifest_media_type,
            "configDigest": self.config_digest,
            "layers": list(self.layers),
            "layerSizes": list(self.layer_sizes),
            "blobs": list(self.blobs),
            "platform": self.platform,
        }

    @classmethod
    def from_json(cls, doc: dict) -> OciFacts:
        return cls(
            references=tuple(doc["references"]),
            manifest_digest=doc["manifestDigest"],
            manifest_media_type=doc["manifestMediaType"],
            config_digest=doc["configDigest"],
            layers=tuple(doc["layers"]),
            layer_sizes=tuple(int(n) for n in doc["layerSizes"]),
            blobs=tuple(doc["blobs"]),
            platform=doc.get("platform", ""),
        )


@dataclass(frozen=True)
class ImageRecord:
    """One stored image: its ID, where it lives, and the facts recorded at import. An OCI
    image (`oci` set) has a generated appc manifest and its tree in the layer chain."""

    image_id: str
    path: Path
    name: str
    labels: dict[str, str]
    size: int
    imported_at: float
    skipped: tuple[str, ...] = ()
    oci: OciFacts | None = None

    @property
    def kind(self) -> str:
        return "oci" if self.oci is not None else "appc"

    @property
    def rootfs(self) -> Path:
        if self.oci is not None:  # images/<id> -> layers/<top chain>/rootfs
            return self.path.parent.parent / "layers" / self.oci.layers[-1] / "rootfs"
        return self.path / "rootfs"

    @property
    def version(self) -> str | None:
        return self.labels.get("version")

    @property
    def manifest(self) -> ImageManifest:
        """The parsed manifest; parsed once per image ID and process (an ID names its
        content, so the parse never goes stale; every pod start asks for it)."""
        return _parsed_manifest(self.image_id, self.path)

    def info_json(self) -> bytes:
        """The record as written to `info.json` beside the image."""
        doc = {
            "id": self.image_id,
            "name": self.name,
            "labels": self.labels,
            "size": self.size,
            "importedAt": self.imported_at,
            "skipped": list(self.skipped),
        }
        if self.oci is not None:
            doc["oci"] = self.oci.to_json()
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def load(cls, path: Path) -> ImageRecord:
        """Read the record of the image stored at `path`."""
        doc = json.loads((path / INFO_FILE).read_bytes())
        return cls(
            image_id=doc["id"],
            path=path,
            name=doc["name"],
            labels=dict(doc["labels"]),
            size=int(doc["size"]),
            imported_at=float(doc["importedAt"]),
            skipped=tuple(doc.get("skipped", ())),
            oci=OciFacts.from_json(doc["oci"]) if "oci" in doc else None,
        )
