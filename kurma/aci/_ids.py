"""Image IDs: `sha512-` + hex sha512 of an ACI's uncompressed tar, and their short form.

appc names an image by the hash of its *uncompressed* archive, so the same image keeps its
ID whatever compression it travels in. Users type short IDs (`sha512-` + at least 32 hex
digits, like rkt); the store resolves them with `image_id_matches`.
"""

from __future__ import annotations

import re

from kurma.errors import ValidationError

IMAGE_ID_PREFIX = "sha512-"
FULL_HEX_LENGTH = 128
SHORT_HEX_LENGTH = 32

_FULL_RE = re.compile(r"sha512-[0-9a-f]{128}")
# A reference may be typed in upper case; it is normalised before matching.
_REF_RE = re.compile(r"sha512-[0-9a-f]{32,128}", re.IGNORECASE)


def is_image_id(s: str) -> bool:
    """Whether `s` is a full, normalised image ID (`sha512-` + 128 lowercase hex)."""
    return _FULL_RE.fullmatch(s) is not None


def parse_image_id_ref(s: str) -> str:
    """Normalise a full or short image ID reference to lowercase; raise ValidationError."""
    if not isinstance(s, str) or _REF_RE.fullmatch(s) is None:
        raise ValidationError(
            "imageID",
            f"{s!r} is not an image ID: expected {IMAGE_ID_PREFIX!r} followed by "
            f"{SHORT_HEX_LENGTH} to {FULL_HEX_LENGTH} hex digits",
        )
    return s.lower()


def image_id_matches(full_id: str, ref: str) -> bool:
    """Whether the full ID `full_id` is named by `ref` (a full ID or a short prefix of it).

    A malformed `ref` matches nothing rather than raising: callers filtering a list of
    images validate the reference once, up front, with `parse_image_id_ref`.
    """
    if _REF_RE.fullmatch(ref) is None:
        return False
    return full_id.startswith(ref.lower())


def short_image_id(full_id: str) -> str:
    """The short form of a full image ID: `sha512-` + its first 32 hex digits."""
    if not is_image_id(full_id):
        raise ValidationError("imageID", f"{full_id!r} is not a full image ID")
    return full_id[: len(IMAGE_ID_PREFIX) + SHORT_HEX_LENGTH]


def image_id_from_digest(hexdigest: str) -> str:
    """The image ID for a sha512 hex digest of an uncompressed archive."""
    return IMAGE_ID_PREFIX + hexdigest
