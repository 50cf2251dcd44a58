"""Property tests of the manifest parsers: only ValidationError escapes; round trips hold."""

from __future__ import annotations

import copy
import json
import string
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kurma.aci import ImageManifest, PodManifest, parse_manifest
from kurma.errors import ValidationError

CORPUS = Path(__file__).resolve().parent.parent / "data" / "manifests"
VALID = [json.loads(p.read_text()) for p in sorted(CORPUS.glob("good-*.json"))]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = [
    "acKind",
    "acVersion",
    "name",
    "labels",
    "app",
    "exec",
    "user",
    "group",
    "isolators",
    "value",
    "ports",
    "port",
    "count",
    "apps",
    "image",
    "id",
    "volumes",
    "kind",
    "mounts",
    "annotations",
    "dependencies",
    "pathWhitelist",
    "environment",
    "set",
    "limit",
]


def parse_or_reject(doc: Any) -> ImageManifest | PodManifest | None:
    """Parse `doc`; a ValidationError is fine (returns None), anything else fails the test."""
    try:
        return parse_manifest(doc)
    except ValidationError as e:
        assert isinstance(e.path, str) and e.message
        return None


def assert_round_trip(manifest: ImageManifest | PodManifest) -> None:
    """Serialising and parsing again gives the same object and the same bytes."""
    again = parse_manifest(manifest.to_bytes())
    assert again == manifest
    assert again.to_bytes() == manifest.to_bytes()
    assert parse_manifest(manifest.to_json()) == manifest


@SETTINGS
@given(json_values)
def test_arbitrary_json_only_raises_validation_error(value: Any) -> None:
    """Any JSON value, as a document or as its text, is parsed or rejected cleanly."""
    parse_or_reject(value) if isinstance(value, dict) else None
    parse_or_reject(json.dumps(value))


@SETTINGS
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_validation_error(data: bytes) -> None:
    """Any bytes are parsed or rejected cleanly."""
    parse_or_reject(data)


def _containers(doc: Any, out: list[Any]) -> list[Any]:
    """Every dict and list inside `doc`, `doc` included."""
    if isinstance(doc, dict | list):
        out.append(doc)
        for child in doc.values() if isinstance(doc, dict) else doc:
            _containers(child, out)
    return out


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A valid corpus manifest with a few random edits: replace, delete or add a member."""
    doc = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(_containers(doc, [])))
        if isinstance(target, dict):
            key = draw(st.sampled_from(sorted(target) + KEYS) if target else st.sampled_from(KEYS))
            if draw(st.booleans()) and key in target:
                del target[key]
            else:
                target[key] = draw(json_values)
        elif target and draw(st.booleans()):
            target[draw(st.integers(0, len(target) - 1))] = draw(json_values)
        else:
            target.append(draw(json_values))
    return doc


@SETTINGS
@given(mutated())
def test_mutated_manifests_parse_or_are_rejected(doc: Any) -> None:
    """Edited manifests never raise anything but ValidationError; if valid, they round-trip."""
    manifest = parse_or_reject(doc)
    if manifest is not None:
        assert_round_trip(manifest)


def test_corpus_manifests_round_trip() -> None:
    """Every valid corpus manifest survives serialise/parse unchanged."""
    for doc in VALID:
        manifest = parse_manifest(doc)
        assert_round_trip(manifest)


segments = st.text(alphabet="abcxyz0189", min_size=1, max_size=4)
names = st.lists(segments, min_size=1, max_size=3).map("-".join)
identifiers = st.tuples(
    segments, st.lists(st.tuples(st.sampled_from("-._~/"), segments), max_size=3)
).map(lambda t: t[0] + "".join(sep + seg for sep, seg in t[1]))
texts = st.text(alphabet=string.printable + "éß\u2603", max_size=10)
env_names = st.tuples(
    st.sampled_from(string.ascii_letters + "_"),
    st.text(alphabet=string.ascii_letters + string.digits + "_.-", max_size=6),
).map("".join)
quantities = st.tuples(
    st.integers(1, 999999), st.sampled_from(["", "Ki", "Mi", "Gi", "K", "M", "G", "m"])
).map(lambda t: f"{t[0]}{t[1]}")


@st.composite
def image_manifests(draw: st.DrawFn) -> dict[str, Any]:
    """Generated valid image manifests over the main field types."""
    label_names = draw(
        st.lists(
            identifiers.filter(lambda n: n not in ("name", "os", "arch")), unique=True, max_size=3
        )
    )
    env = draw(st.lists(env_names, unique=True, max_size=3))
    ports = draw(st.lists(names, unique=True, max_size=3))
    doc: dict[str, Any] = {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": draw(identifiers),
        "labels": [{"name": n, "value": draw(texts)} for n in label_names],
        "app": {
            "exec": draw(st.lists(texts, max_size=3)),
            "user": draw(texts.filter(bool)),
            "group": draw(texts.filter(bool)),
            "environment": [{"name": n, "value": draw(texts)} for n in env],
            "ports": [
                {
                    "name": n,
                    "protocol": "tcp",
                    "port": draw(st.integers(1, 60000)),
                    "count": draw(st.integers(1, 5000)),
                }
                for n in ports
            ],
            "isolators": [
                {
                    "name": "resource/memory",
                    "value": {
                        "limit": draw(
                            st.from_regex(r"[1-9][0-9]{0,5}(Ki|Mi|Gi|K|M|G|m)?", fullmatch=True)
                        )
                    },
                },
                {
                    "name": draw(identifiers.map(lambda s: "x/" + s)),
                    "value": draw(json_values.filter(lambda v: v is not None)),
                },
            ],
            "userLabels": draw(st.dictionaries(texts, texts, max_size=3)),
        },
        "pathWhitelist": draw(st.lists(texts.map(lambda s: "/" + s), unique=True, max_size=3)),
    }
    return doc


@SETTINGS
@given(image_manifests())
def test_generated_valid_manifests_round_trip(doc: dict[str, Any]) -> None:
    """Generated valid manifests parse and survive a round trip unchanged."""
    assert_round_trip(parse_manifest(doc))
