"""Image archives into and out of the store: docker-archive and OCI layouts (a directory or
an oci-archive tar) are imported image by image; an OCI image is exported as either.

`archive_kind` tells an ACI from the others by its first tar member (`manifest` or
`rootfs/...`: what every ACI writer puts first), so an ACI import pays no extra pass over
the archive; anything else is opened with `kurma.oci.open_archive`, whose errors name what
it found. Every image of an archive goes through the same `ImageStore.import_oci` as a pull:
the blobs are read from the archive instead of a registry, and verified the same way.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from kurma.aci._compression import open_decompressed
from kurma.errors import OciError, ValidationError
from kurma.oci import (
    ArchiveImage,
    Descriptor,
    Platform,
    open_archive,
    parse_reference,
    write_docker_archive,
    write_oci_layout,
)
from kurma.store import ImageRecord, ImageStore, ImportResult, OciImport

from ._mapping import manifest_for

if TYPE_CHECKING:
    from kurma.aci import ImageManifest
    from kurma.store import LayerProgress

ACI = "aci"
EXPORT_FORMATS = ("oci-archive", "docker-archive", "oci-dir")


def archive_kind(path: str | os.PathLike[str]) -> str:
    """ACI for an .aci (its first member is `manifest` or under `rootfs/`), else "image
    archive" (a docker-archive or OCI layout, checked when it is opened)."""
    path = Path(path)
    if path.is_dir():
        return "image archive"
    with open(path, "rb") as raw:
        try:
            with tarfile.open(fileobj=open_decompressed(raw), mode="r|") as tar:
                first = tar.next()
        except (tarfile.TarError, EOFError, OSError):
            return ACI  # let the ACI reader give its error for what is not a tar at all
    if first is None:
        return ACI
    name = first.name.lstrip("./") or first.name
    return (
        ACI
        if name == "manifest" or name == "rootfs" or name.startswith("rootfs/")
        else ("image archive")
    )


@dataclass(frozen=True)
class ArchiveImport:
    """What one archive gave: each image's import result, in the archive's order."""

    results: tuple[ImportResult, ...]


def import_archive(
    store: ImageStore,
    path: str | os.PathLike[str],
    *,
    platform: Platform | None = None,
    admit: Callable[[ImageManifest], None] | None = None,
    progress: Callable[[LayerProgress], None] | None = None,
    budget: Callable[[int], None] | None = None,
    check_references: Callable[[tuple[str, ...]], None] | None = None,
) -> ArchiveImport:
    """Import every image of a docker-archive or OCI layout at `path` into `store`.
    Images already stored only gain the archive's references. `check_references` may
    refuse (raise) an image's references before anything of it is stored."""
    results: list[ImportResult] = []
    with open_archive(path) as archive:
        images = archive.images(platform) if platform is not None else archive.images()
        if not images:
            raise ValidationError("archive", f"{path} holds no image")
        spent = 0  # what the archive's earlier images took: one budget for the archive
        for image in images:
            references = tuple(str(r.with_default_tag()) for r in image.references)
            if check_references is not None:
                check_references(references)
            source = OciImport(
                manifest_bytes=image.manifest_bytes,
                manifest_media_type=image.manifest_media_type,
                fetch_blob=_blob_copier(image),
                references=references,
                manifest_digest=image.manifest_digest,
            )
            result = store.import_oci(
                source,
                make_manifest=manifest_for,
                admit=admit,
                progress=progress,
                budget=_after(budget, spent) if budget is not None else None,
                parallel=1,  # one archive, read in order: threads would only seek
            )
            results.append(result)
            spent += result.record.size if result.created else 0
    return ArchiveImport(tuple(results))


def _after(budget: Callable[[int], None], spent: int) -> Callable[[int], None]:
    """`budget` for the next image of an archive, counting the images before it."""
    return lambda total: budget(spent + total)


def _blob_copier(image: ArchiveImage):
    def fetch(descriptor: Descriptor, dest: BinaryIO, advanced: Callable[[int], None]) -> None:
        with image.open_blob(descriptor) as blob:
            while chunk := blob.read(1 << 20):
                dest.write(chunk)
                advanced(len(chunk))

    return fetch


# --- export ----------------------------------------------------------------------------------


def stored_archive_image(
    store: ImageStore, record: ImageRecord, references: tuple[str, ...] | None = None
) -> ArchiveImage:
    """A stored OCI image as the archive writers take it: its blobs from the store, named
    by `references` (None: all the image's tags)."""
    if record.oci is None:
        raise ValidationError(
            "format", f"{record.name} is an appc image: only OCI images export as archives"
        )
    blobs = store.layout.blobs

    def opener(descriptor: Descriptor) -> BinaryIO:
        d = descriptor.digest
        return open(blobs / d.algorithm / d.hex, "rb")

    manifest_bytes = (blobs / "/".join(record.oci.manifest_digest.split(":", 1))).read_bytes()
    config_bytes = (blobs / "/".join(record.oci.config_digest.split(":", 1))).read_bytes()
    names = record.oci.references if references is None else references
    references = [parse_reference(r) for r in names if "@" not in r]
    return ArchiveImage.build(manifest_bytes, config_bytes, opener, references=references)


def export_image(
    store: ImageStore,
    record: ImageRecord,
    dest: str | os.PathLike[str] | BinaryIO,
    fmt: str,
    asked_as: str | None = None,
) -> None:
    """Write `record` as `fmt` (oci-archive, docker-archive: a tar file or stream; oci-dir:
    a new directory) to `dest`. Asked for by one of its references (`asked_as`), only that
    one names it in the archive, as `docker save NAME:TAG` does; by ID, all its tags."""
    only = None
    if asked_as is not None and record.oci is not None:
        try:
            wanted = str(parse_reference(asked_as).with_default_tag())
        except OciError:
            wanted = ""
        if wanted in record.oci.references:
            only = (wanted,)
    image = stored_archive_image(store, record, only)
    if fmt == "oci-archive":
        write_oci_layout(dest, [image])
    elif fmt == "oci-dir":
        write_oci_layout(dest, [image], directory=True)
    elif fmt == "docker-archive":
        write_docker_archive(dest, [image])
    else:
        raise ValidationError("format", f"{fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
