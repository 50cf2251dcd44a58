"""Choosing an image by name and labels, the way appc discovery and rkt do.

A request names an image and some labels. Every label asked for must match exactly. When
the request leaves `version` open (or asks for `latest`), the highest version wins: an image
labelled `latest` outranks numbered ones, numbered versions compare piecewise (numbers as
numbers), and a tie goes to the image imported last.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_PIECE = re.compile(r"\d+|[^\d.+-]+")


@dataclass(frozen=True)
class Candidate:
    """What selection needs to know about one stored image."""

    image_id: str
    name: str
    labels: Mapping[str, str]
    imported_at: float


def version_key(version: str | None) -> tuple:
    """Sort key: no version < numbered versions (piecewise) < `latest`."""
    if version is None:
        return (0, ())
    if version == "latest":
        return (2, ())
    pieces = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _PIECE.findall(version))
    return (1, pieces)


def select_image(
    candidates: Iterable[Candidate], name: str, labels: Mapping[str, str]
) -> Candidate | None:
    """The best candidate called `name` whose labels include `labels`, or None."""
    wanted = dict(labels)
    if wanted.get("version") == "latest":
        del wanted["version"]
    matching = [
        c
        for c in candidates
        if c.name == name and all(c.labels.get(k) == v for k, v in wanted.items())
    ]
    if not matching:
        return None
    return max(matching, key=lambda c: (version_key(c.labels.get("version")), c.imported_at))
