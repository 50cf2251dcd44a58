"""Image IDs: full and short forms, reference parsing and prefix matching."""

from __future__ import annotations

import hashlib

import pytest

import kurma.aci
from kurma.aci import (
    IMAGE_ID_PREFIX,
    image_id_matches,
    is_image_id,
    parse_image_id_ref,
    short_image_id,
)
from kurma.errors import ValidationError

FULL = IMAGE_ID_PREFIX + hashlib.sha512(b"image").hexdigest()
OTHER = IMAGE_ID_PREFIX + hashlib.sha512(b"other").hexdigest()


def test_public_names_of_ids_and_archives() -> None:
    """The names the store is written against are exported by kurma.aci."""
    for name in (
        "Compression", "detect_compression", "open_decompressed", "IMAGE_ID_PREFIX",
        "is_image_id", "parse_image_id_ref", "image_id_matches", "short_image_id",
        "UnpackLimits", "UnpackResult", "unpack_aci", "image_id_of", "build_aci",
    ):  # fmt: skip
        assert hasattr(kurma.aci, name), name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (FULL, True),
        (FULL.upper().replace("SHA512-", "sha512-"), False),  # upper-case hex is not normal
        (FULL[:-1], False),
        (FULL + "0", False),
        ("sha256-" + "0" * 128, False),
        ("sha512-" + "g" * 128, False),
        ("", False),
    ],
)
def test_is_image_id(value: str, expected: bool) -> None:
    """Only `sha512-` + exactly 128 lowercase hex digits is a full image ID."""
    assert is_image_id(value) is expected


def test_short_image_id_is_prefix_plus_32_hex() -> None:
    """The short form keeps 32 hex digits, like rkt's."""
    short = short_image_id(FULL)
    assert short == FULL[:39] and len(short) == len("sha512-") + 32


def test_short_image_id_rejects_non_ids() -> None:
    with pytest.raises(ValidationError):
        short_image_id("sha512-abc")


@pytest.mark.parametrize("ref", [FULL, FULL[:39], FULL[:60], FULL[:39].upper()])
def test_parse_image_id_ref_accepts_and_normalises(ref: str) -> None:
    """Full or short (>= 32 hex) references are accepted and lowercased."""
    parsed = parse_image_id_ref(ref)
    assert parsed == ref.lower() and FULL.startswith(parsed)


@pytest.mark.parametrize(
    "ref", [FULL[:38], "sha512-", "sha256-" + "a" * 64, FULL + "a", FULL[:39] + "z", "abc"]
)
def test_parse_image_id_ref_rejects_bad_forms(ref: str) -> None:
    """Too short, too long, wrong algorithm or non-hex: ValidationError on field imageID."""
    with pytest.raises(ValidationError) as err:
        parse_image_id_ref(ref)
    assert err.value.path == "imageID"
    assert isinstance(err.value, ValueError)


def test_image_id_matches_full_and_short() -> None:
    """A full ID matches itself and its prefixes of 32+ hex digits, in any case."""
    assert image_id_matches(FULL, FULL)
    assert image_id_matches(FULL, short_image_id(FULL))
    assert image_id_matches(FULL, FULL[:50].upper().replace("SHA512-", "sha512-"))
    assert not image_id_matches(OTHER, short_image_id(FULL))


def test_image_id_matches_refuses_too_short_refs() -> None:
    """A prefix shorter than 32 hex digits matches nothing (it would be ambiguous by design)."""
    assert not image_id_matches(FULL, FULL[:20])
    assert not image_id_matches(FULL, "")
