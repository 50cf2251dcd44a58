"""References from holders (pods) to the images and rendered trees they use.

An image is deletable and a tree collectable only when no holder names it. A holder
registers before it uses anything and releases when it is destroyed; the runtime
reconciles stale holders after a restart via `holders()` and `release()`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ._atomic import write_atomic

_HOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Reference:
    """The images and rendered trees one holder uses."""

    holder: str
    images: frozenset[str]
    trees: frozenset[str]


class RefTable:
    """One JSON file per holder under `refs/`; read fresh each time (the table is small)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def _path(self, holder: str) -> Path:
        if not _HOLDER.match(holder):
            raise ValueError(f"invalid holder name {holder!r}")
        return self._dir / f"{holder}.json"

    def hold(self, holder: str, images: set[str], trees: set[str]) -> None:
        """Record (replacing any earlier record) what `holder` uses."""
        doc = {"images": sorted(images), "trees": sorted(trees)}
        write_atomic(self._path(holder), json.dumps(doc).encode())

    def release(self, holder: str) -> None:
        """Forget `holder`; releasing an unknown holder is not an error."""
        self._path(holder).unlink(missing_ok=True)

    def get(self, holder: str) -> Reference | None:
        """What `holder` uses, or None if it holds nothing."""
        try:
            doc = json.loads(self._path(holder).read_bytes())
        except FileNotFoundError:
            return None
        return Reference(holder, frozenset(doc.get("images", ())), frozenset(doc.get("trees", ())))

    def all(self) -> list[Reference]:
        """Every holder's reference."""
        refs = []
        for path in sorted(self._dir.glob("*.json")):
            doc = json.loads(path.read_bytes())
            refs.append(
                Reference(
                    path.stem, frozenset(doc.get("images", ())), frozenset(doc.get("trees", ()))
                )
            )
        return refs

    def holders_of_image(self, image_id: str) -> list[str]:
        return [r.holder for r in self.all() if image_id in r.images]

    def used_trees(self) -> set[str]:
        return {t for r in self.all() for t in r.trees}
