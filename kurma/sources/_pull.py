"""Pull: an image reference resolved at its registry, its manifest picked for the platform,
and its blobs fetched into the store.

An index (or Docker manifest list) is resolved to the entry for the wanted platform and that
manifest is fetched by digest; a single manifest pulled by tag or digest must have a config
for the wanted platform too (an arm64-only image is refused on amd64, naming what it has).
The stored image answers to the reference as given (`host/repo:tag`, or `host/repo@digest`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, BinaryIO

from kurma.oci import (
    DEFAULT_PLATFORM,
    Descriptor,
    Index,
    Platform,
    Reference,
    parse_digest,
    parse_manifest,
    parse_reference,
    select_manifest,
)
from kurma.store import ImageStore, ImportResult, OciImport

from ._mapping import manifest_for

if TYPE_CHECKING:
    from kurma.aci import ImageManifest
    from kurma.registry import RegistryClient
    from kurma.store import LayerProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullResult:
    """A pulled image and what it resolved to."""

    reference: Reference
    import_result: ImportResult
    manifest_digest: str
    platform: str


def pull_image(
    store: ImageStore,
    client: RegistryClient,
    reference: str | Reference,
    *,
    platform: Platform | None = None,
    admit: Callable[[ImageManifest], None] | None = None,
    progress: Callable[[LayerProgress], None] | None = None,
    budget: Callable[[int], None] | None = None,
) -> PullResult:
    """Pull `reference` (docker's grammar; `latest` when no tag) into `store`. `platform`
    (None: linux/amd64) picks an index's entry and must match a single manifest's config,
    except that a manifest named by its digest without a platform asked for is taken as
    named (the person pinned it)."""
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    ref = ref.with_default_tag()
    fetched = client.get_manifest(ref)
    document = parse_manifest(fetched.data, fetched.media_type)
    chosen = ""
    if isinstance(document, Index):
        entry = select_manifest(document.manifests, platform or DEFAULT_PLATFORM)
        chosen = str(entry.platform.normalized()) if entry.platform else ""
        log.info("pull %s: %s picked from the index (%s)", ref, entry.digest, chosen)
        fetched = client.get_manifest(replace(ref, tag=None, digest=entry.digest))
    digest = parse_digest(fetched.digest) if isinstance(fetched.digest, str) else fetched.digest
    stored_as = f"{ref.name}@{ref.digest}" if ref.digest is not None else str(ref)

    def fetch_blob(descriptor: Descriptor, dest: BinaryIO, advanced: Callable[[int], None]):
        seen = 0

        def report(done: int, _total: int) -> None:
            nonlocal seen
            if done > seen:
                advanced(done - seen)
                seen = done

        client.get_blob(ref, descriptor, dest, report)

    source = OciImport(
        manifest_bytes=fetched.data,
        manifest_media_type=fetched.media_type,
        fetch_blob=fetch_blob,
        references=(stored_as,),
        manifest_digest=digest,
        platform=platform or (None if ref.digest is not None else DEFAULT_PLATFORM),
    )
    result = store.import_oci(
        source, make_manifest=manifest_for, admit=admit, progress=progress, budget=budget
    )
    assert result.record.oci is not None
    return PullResult(ref, result, str(digest), result.record.oci.platform or chosen)
