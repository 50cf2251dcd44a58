"""Platforms (`linux/amd64`, `linux/arm64/v8`) and picking an index's manifest for one.

Indexes name architectures the way Go does (GOARCH), but people and tools type `x86_64`,
`aarch64`, `armhf`; and `arm64` with no variant is the same as `arm64/v8`. Everything is
normalised as containerd does before it is compared, so `--platform linux/aarch64` finds the
`arm64` manifest. Selection prefers an exact match; for 32-bit arm and the amd64 levels an
older variant runs on a newer CPU, so it is the fallback, newest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from kurma.errors import PlatformNotFound, ValidationError

if TYPE_CHECKING:
    from ._manifest import Descriptor

DEFAULT_OS = "linux"
DEFAULT_ARCHITECTURE = "amd64"

# Variants a CPU of the key's variant also runs, best first (after an exact match).
_COMPATIBLE: dict[tuple[str, str], tuple[str, ...]] = {
    ("arm", "v8"): ("v7", "v6", "v5"),
    ("arm", "v7"): ("v6", "v5"),
    ("arm", "v6"): ("v5",),
    ("amd64", "v4"): ("v3", "v2", ""),
    ("amd64", "v3"): ("v2", ""),
    ("amd64", "v2"): ("",),
}


@dataclass(frozen=True)
class Platform:
    """An OS and CPU an image runs on, as in an index entry or an image config."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def normalized(self) -> Platform:
        """The same platform with containerd's spelling of architecture and variant."""
        arch, variant = _normalize_arch(self.architecture, self.variant)
        return replace(self, os=self.os.lower(), architecture=arch, variant=variant)

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


DEFAULT_PLATFORM = Platform(DEFAULT_OS, DEFAULT_ARCHITECTURE)


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            variant = ""  # arm64 means v8: an index may write it either way
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
        return "arm", variant
    return arch, variant


def parse_platform(text: str) -> Platform:
    """Parse `os/arch[/variant]` (the `--platform` flag); the OS may be left out (`arm64`)."""
    parts = text.split("/") if isinstance(text, str) else []
    if len(parts) == 1 and parts[0]:
        parts = [DEFAULT_OS, parts[0]]
    if not 2 <= len(parts) <= 3 or not all(parts) or any(p != p.strip() for p in parts):
        raise ValidationError("platform", f"{text!r} is not os/arch[/variant], e.g. linux/arm64")
    for part in parts:
        if not all(c.isascii() and (c.isalnum() or c in "._-") for c in part):
            raise ValidationError("platform", f"{text!r}: {part!r} has a character not allowed")
    variant = parts[2] if len(parts) == 3 else ""
    return Platform(parts[0], parts[1], variant).normalized()


def _rank(offered: Platform | None, wanted: Platform) -> int | None:
    """0 for an exact match, 1.. for a compatible older variant, None if it does not run."""
    if offered is None:
        return None
    have = offered.normalized()
    if have.os != wanted.os or have.architecture != wanted.architecture:
        return None
    if have.variant == wanted.variant:
        return 0
    fallbacks = _COMPATIBLE.get((wanted.architecture, wanted.variant), ())
    return fallbacks.index(have.variant) + 1 if have.variant in fallbacks else None


def platform_matches(offered: Platform, wanted: Platform = DEFAULT_PLATFORM) -> bool:
    """Whether an image built for `offered` runs on `wanted` (exactly or as an older
    variant). A pull by digest skips the index, so the config's platform is checked here."""
    return _rank(offered, wanted.normalized()) is not None


def select_manifest(
    manifests: Sequence[Descriptor], wanted: Platform = DEFAULT_PLATFORM
) -> Descriptor:
    """The entry of an index to run on `wanted`: the best-ranked match, the first in index
    order among equals. PlatformNotFound lists what the index offers when nothing fits.

    Entries without a platform (attestations, signatures; or the single manifest of an OCI
    layout) match nothing here: the caller checks such an image's config instead.
    """
    wanted = wanted.normalized()
    best: tuple[int, int] | None = None
    for position, descriptor in enumerate(manifests):
        rank = _rank(descriptor.platform, wanted)
        if rank is not None and (best is None or (rank, position) < best):
            best = (rank, position)
    if best is None:
        raise PlatformNotFound(str(wanted), offered_platforms(manifests))
    return manifests[best[1]]


def offered_platforms(manifests: Iterable[Descriptor]) -> tuple[str, ...]:
    """The distinct platforms of an index's entries, in order, for messages and `inspect`."""
    seen: dict[str, None] = {}
    for descriptor in manifests:
        if descriptor.platform is not None and descriptor.platform.os != "unknown":
            seen[str(descriptor.platform.normalized())] = None
    return tuple(seen)
