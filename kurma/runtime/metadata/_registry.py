"""Pod records for the metadata service: every response body, computed once at registration.

A record is immutable and holds bytes ready to send, so the serving loop does no JSON work
and a request can never see a half-registered pod. Pods are found by their URL token: a
random string of at least 128 bits that only the pod's apps receive (in AC_METADATA_URL).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...aci import ImageManifest, PodManifest, parse_image_manifest, parse_pod_manifest
from ...errors import ValidationError
from ._hmac import canonical_uuid

TOKEN_BYTES = 24  # 192 bits; base64url makes 32 characters
# At least 22 base64url characters carry 132 bits: the floor for a token we accept back
# (a restarted daemon re-registers pods with the tokens their apps already hold).
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{22,128}")

ImageManifestInput = ImageManifest | bytes | str


def new_token() -> str:
    """A fresh URL token: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_token(value: str) -> bool:
    """Whether `value` has the shape of a token (URL-safe, at least 128 bits)."""
    return _TOKEN_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class AppRecord:
    """What `apps/NAME/...` serves for one app of a pod."""

    name: str
    image_id: bytes
    image_manifest: bytes
    annotations: bytes


@dataclass(frozen=True)
class PodRecord:
    """What `pod/...` serves for one pod, and its apps by name."""

    uuid: str
    token: str
    manifest: bytes
    annotations: bytes
    apps: Mapping[str, AppRecord]


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def raw_pod_annotations(manifest: bytes) -> bytes:
    """The manifest's own top-level `annotations` value as JSON, `null` when it has none.

    The ACE validator decodes this body and the served manifest's `annotations` with Go's
    encoding/json and compares them with reflect.DeepEqual, where `[]` (an empty slice) and
    an absent or null field (a nil slice) differ. So the value is passed through as written,
    and an absent field is served as `null`. Go matches keys case-insensitively and the last
    matching key wins; so does this.
    """
    objects: list[list[tuple[str, Any]]] = []

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        objects.append(pairs)
        return dict(pairs)

    json.loads(manifest, object_pairs_hook=keep_pairs)
    top = objects[-1]  # the outermost object is completed last
    value = None
    for key, item in top:
        if key.lower() == "annotations":
            value = item
    return _json_bytes(value)


def merged_app_annotations(image: ImageManifest, pod_app_annotations: Mapping[str, str]) -> bytes:
    """The image's annotations in order; the pod app's replace same-named ones, others append.

    This is the ACE validator's `expectedAnnots.Set(...)` loop; a dict update keeps the
    position of a replaced key and appends new ones, which is exactly that order.
    """
    merged = dict(image.annotations)
    merged.update(pod_app_annotations)
    return _json_bytes([{"name": k, "value": v} for k, v in merged.items()])


def _image_input(value: ImageManifestInput, app: str) -> tuple[ImageManifest, bytes]:
    if isinstance(value, ImageManifest):
        return value, value.to_bytes()
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    try:
        return parse_image_manifest(raw), raw
    except ValidationError as e:
        raise ValidationError(f"imageManifests[{app}].{e.path}".rstrip("."), e.message) from e


def build_pod_record(
    pod_uuid: str,
    pod_manifest: bytes | str | PodManifest,
    image_manifests: Mapping[str, ImageManifestInput],
    token: str | None = None,
) -> PodRecord:
    """Validate a pod's documents and precompute every response; raises ValueError.

    `pod_manifest` is served byte for byte (the runtime's record, with full image IDs);
    `image_manifests` maps each app name of the pod to its image's manifest.
    """
    uuid = canonical_uuid(pod_uuid)
    if token is None:
        token = new_token()
    elif not is_token(token):
        raise ValueError("token must be 22-128 URL-safe base64 characters (>= 128 bits)")
    if isinstance(pod_manifest, PodManifest):
        manifest, raw = pod_manifest, pod_manifest.to_bytes()
    else:
        raw = pod_manifest.encode("utf-8") if isinstance(pod_manifest, str) else pod_manifest
        manifest = parse_pod_manifest(raw)
    names = {a.name for a in manifest.apps}
    missing, extra = names - image_manifests.keys(), image_manifests.keys() - names
    if missing or extra:
        raise ValueError(
            f"pod {uuid}: image manifests must match the apps: "
            f"missing {sorted(missing)}, unknown {sorted(extra)}"
        )
    apps: dict[str, AppRecord] = {}
    for app in manifest.apps:
        image, image_raw = _image_input(image_manifests[app.name], app.name)
        apps[app.name] = AppRecord(
            name=app.name,
            image_id=app.image.id.encode("ascii"),
            image_manifest=image_raw,
            annotations=merged_app_annotations(image, app.annotations),
        )
    return PodRecord(uuid, token, bytes(raw), raw_pod_annotations(raw), apps)


class Registry:
    """The registered pods, by token and by UUID; safe to use from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_token: dict[str, PodRecord] = {}
        self._by_uuid: dict[str, PodRecord] = {}

    def add(self, record: PodRecord) -> None:
        """Register a pod; raises ValueError if its UUID or token is already taken."""
        with self._lock:
            if record.uuid in self._by_uuid:
                raise ValueError(f"pod {record.uuid} is already registered")
            if record.token in self._by_token:
                raise ValueError(f"pod {record.uuid}: token is already in use")
            self._by_token[record.token] = record
            self._by_uuid[record.uuid] = record

    def remove(self, pod_uuid: str) -> PodRecord | None:
        """Forget a pod; its token stops working at once. Returns its record, if any."""
        with self._lock:
            record = self._by_uuid.pop(canonical_uuid(pod_uuid), None)
            if record is not None:
                del self._by_token[record.token]
            return record

    def by_token(self, token: str) -> PodRecord | None:
        """The pod a token names (a dict lookup: no per-character timing to learn from)."""
        return self._by_token.get(token)

    def by_uuid(self, pod_uuid: str) -> PodRecord | None:
        """The pod with this UUID, if registered."""
        return self._by_uuid.get(canonical_uuid(pod_uuid))

    def __len__(self) -> int:
        return len(self._by_uuid)
