"""The content-addressed image store: import, look up, list, delete.

Imports unpack into `tmp/`, are validated there, and are renamed into `images/<id>` under
that image's lock, so a failed or concurrent import never leaves a half-written image and
two imports of the same archive end with one copy. Deletes rename the image out of
`images/` first, so readers see it whole or not at all.

Free space: with `min_free` (a share of the state filesystem, kurmad's `state_min_free`,
10% by default there; 0 here, for offline builds) an import stops as soon as what it has
decompressed would leave less than that share free, or the filesystem already has less
(another writer): checked after each decompressed MiB, while the archive streams, so a
small archive that inflates to gigabytes stops near the line, not at the disk's end. The
staging is removed and StoreFull says how much was free.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kurma.aci import (
    ImageManifest,
    UnpackLimits,
    image_id_matches,
    is_image_id,
    parse_image_manifest,
    unpack_aci,
)
from kurma.errors import (
    AmbiguousImage,
    ImageInUse,
    ImageNotFound,
    OciError,
    StoreError,
    ValidationError,
)
from kurma.oci import ImageConfig, Reference, parse_reference

from ._atomic import TEMP_PREFIX, make_temp_name, write_atomic
from ._layout import StoreLayout
from ._locks import file_lock
from ._oci import (
    DEFAULT_PARALLEL,
    OciImport,
    OciImporter,
    Progress,
    collect_layers,
    usage_units,
)
from ._records import INFO_FILE, ImageRecord, ImageRef, parse_image_ref
from ._refs import RefTable
from ._render import RenderedTree, collect_garbage, render, resolve_layers, trees_using
from ._select import Candidate, select_image

log = logging.getLogger(__name__)


class StoreFull(StoreError):
    """An import would leave less than the store's free-space reserve (RESOURCE_EXHAUSTED)."""


class SpaceWatch:
    """Raises StoreFull once `total` bytes more would leave less than `share` of the
    filesystem at `path` free, or less is free already."""

    def __init__(self, path: os.PathLike | str, share: float) -> None:
        self.path = os.fspath(path)
        st = os.statvfs(self.path)
        self.size = st.f_blocks * st.f_frsize
        self.reserve = int(self.size * share)
        self.share = share
        self.free_at_start = st.f_bavail * st.f_frsize

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def __call__(self, total: int) -> None:
        free = self.free()
        left = min(self.free_at_start - total, free)
        if left < self.reserve:
            raise StoreFull(
                f"import stopped: it would leave less than {self.share:.0%} of the state "
                f"filesystem free ({_mib(free)} of {_mib(self.size)} free, "
                f"{_mib(total)} unpacked so far; kurmad's state_min_free); its staging "
                f"was removed"
            )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@dataclass(frozen=True)
class ImportResult:
    """The outcome of an import: the record, and whether the image was new to the store."""

    record: ImageRecord
    created: bool


class ImageStore:
    """Images under one state directory. Safe to use from several processes at once."""

    def __init__(
        self,
        state_dir: os.PathLike | str,
        limits: UnpackLimits | None = None,
        clock: Callable[[], float] = time.time,
        min_free: float = 0.0,
    ) -> None:
        """`clock` stamps imports; a build that must be reproducible passes a fixed one.
        `min_free`: the share of the state filesystem an import must leave free (0: none)."""
        self.clock = clock
        self.min_free = min_free
        self.layout = StoreLayout(Path(state_dir))
        self.layout.create()
        self.limits = limits or UnpackLimits()
        self.refs = RefTable(self.layout.refs)
        # How a typed OCI reference is completed: docker's rule (docker.io/library/...),
        # or kurmad's `registries.default` (`Registries.qualify`).
        self.qualify: Callable[[str], Reference] = parse_reference

    # --- import -------------------------------------------------------------------------

    def import_image(
        self,
        source: BinaryIO | os.PathLike | str,
        admit: Callable[[ImageManifest], None] | None = None,
    ) -> ImportResult:
        """Unpack, validate and store an ACI; the store is unchanged if anything fails.
        `admit(manifest)` may refuse it (raise) before it is stored (the API's policy)."""
        staging = make_temp_name(self.layout.tmp, "import")
        watch = self.space_watch()
        try:
            unpacked = unpack_aci(source, staging, self.limits, watch)
            manifest = parse_image_manifest(unpacked.manifest_bytes)
            if admit is not None:
                admit(manifest)
            record = ImageRecord(
                image_id=unpacked.image_id,
                path=self.layout.image_dir(unpacked.image_id),
                name=manifest.name,
                labels=dict(manifest.labels),
                size=unpacked.total_bytes,
                imported_at=self.clock(),
                skipped=tuple(unpacked.skipped),
            )
            with self._image_lock(record.image_id):
                if record.path.exists():
                    log.info(
                        "image %s (%s) already in the store", record.image_id[:39], record.name
                    )
                    return ImportResult(ImageRecord.load(record.path), created=False)
                write_atomic(staging / INFO_FILE, record.info_json())
                os.rename(staging, record.path)
            log.info("imported image %s (%s)", record.image_id[:39], record.name)
            return ImportResult(record, created=True)
        finally:
            if os.path.lexists(staging):
                shutil.rmtree(staging)

    def space_watch(self) -> SpaceWatch | None:
        """What stops an import short of the free-space reserve (None: no reserve)."""
        return SpaceWatch(self.layout.tmp, self.min_free) if self.min_free > 0 else None

    def check_space(self, pending: int = 0) -> None:
        """StoreFull if `pending` bytes more would leave less than the reserve free (kurmad
        calls it while an upload streams into `tmp/`)."""
        watch = self.space_watch()
        if watch is not None:
            watch(pending)

    def import_oci(
        self,
        source: OciImport,
        *,
        make_manifest: Callable[[ImageConfig, OciImport, Path], bytes],
        admit: Callable[[ImageManifest], None] | None = None,
        progress: Progress | None = None,
        budget: Callable[[int], None] | None = None,
        parallel: int = DEFAULT_PARALLEL,
    ) -> ImportResult:
        """Store an OCI image (from a registry or an archive, see `_oci`): its blobs and
        layer trees, and a record with the appc manifest `make_manifest(config, source,
        rootfs)` gives. `budget(new_bytes)` may stop it (a quota); the store is left as it
        was if anything fails, but for completed lower layers, which garbage collection
        removes unless an image claims them."""
        importer = OciImporter(
            self,
            source,
            make_manifest=make_manifest,
            admit=admit,
            progress=progress,
            budget=budget,
            parallel=parallel,
        )
        record, created = importer.run()
        log.info(
            "%s OCI image %s (%s)",
            "imported" if created else "already stored:",
            record.image_id[:39],
            ", ".join(record.oci.references) if record.oci else record.name,
        )
        return ImportResult(record, created)

    # --- look-up ------------------------------------------------------------------------

    def list(self) -> list[ImageRecord]:
        """Every stored image, by name then version."""
        records = []
        for path in self._image_dirs():
            try:
                records.append(ImageRecord.load(path))
            except FileNotFoundError:  # deleted while we looked
                continue
        return sorted(records, key=lambda r: (r.name, r.version or "", r.image_id))

    def get(self, ref: str | ImageRef, visible: Callable[[str], bool] | None = None) -> ImageRecord:
        """The image a reference names; raises ImageNotFound or AmbiguousImage. A name is
        resolved among the images whose ID `visible` accepts (all without it)."""
        records = None
        if isinstance(ref, str) and not ref.startswith("sha512-"):
            records = self.list()  # read once for both kinds of name (a pod start asks)
            oci = self.find_oci(ref, visible, records)
            if oci is not None:
                return oci
        parsed = _parse_either(ref) if isinstance(ref, str) else ref
        if parsed.image_id:
            return self.get_by_id(parsed.image_id)
        assert parsed.name is not None
        found = self.find(parsed.name, parsed.labels, visible, records)
        if found is None:
            raise ImageNotFound(f"no image {parsed} in the store")
        return found

    def get_by_id(self, image_id: str) -> ImageRecord:
        """The image with this full or short ID."""
        if is_image_id(image_id):
            path = self.layout.image_dir(image_id)
            if (path / INFO_FILE).exists():
                return ImageRecord.load(path)
            raise ImageNotFound(f"no image {image_id} in the store")
        matches = [p for p in self._image_dirs() if image_id_matches(p.name, image_id)]
        if not matches:
            raise ImageNotFound(f"no image {image_id} in the store")
        if len(matches) > 1:
            raise AmbiguousImage(f"{image_id} matches {len(matches)} images; give more digits")
        return ImageRecord.load(matches[0])

    def find_oci(
        self,
        text: str,
        visible: Callable[[str], bool] | None = None,
        records: list[ImageRecord] | None = None,
    ) -> ImageRecord | None:
        """The OCI image a docker-style reference names (`alpine`, `host:5000/app:v1`,
        `repo@sha256:...`, a config digest `sha256:HEX` or its 12+ digit prefix), or None.
        `records`: the store's list, when the caller has read it already."""
        if text.startswith("sha512-"):
            return None
        records = [
            r
            for r in (self.list() if records is None else records)
            if r.oci is not None and (visible is None or visible(r.image_id))
        ]
        if not records:
            return None
        short = text.removeprefix("sha256:")
        if len(short) >= 12 and all(c in "0123456789abcdef" for c in short):
            hits = [r for r in records if r.oci.config_digest.startswith("sha256:" + short)]
            if len(hits) > 1:
                raise AmbiguousImage(f"{text} matches {len(hits)} images; give more digits")
            if hits:
                return hits[0]
        try:
            parsed = self.qualify(text).with_default_tag()
        except OciError:
            return None
        for record in records:
            assert record.oci is not None
            if parsed.digest is not None:
                names = {_repository(r) for r in record.oci.references}
                if record.oci.manifest_digest == str(parsed.digest) and parsed.name in names:
                    return record
            elif str(parsed) in record.oci.references:
                return record
        return None

    def find(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        visible: Callable[[str], bool] | None = None,
        records: list[ImageRecord] | None = None,
    ) -> ImageRecord | None:
        """The best image called `name` with these labels (highest version), or None.
        `records`: the store's list, when the caller has read it already."""
        chosen = {
            r.image_id: r
            for r in (self.list() if records is None else records)
            if r.name == name and (visible is None or visible(r.image_id))
        }
        candidates = [
            Candidate(r.image_id, r.name, r.labels, r.imported_at) for r in chosen.values()
        ]
        best = select_image(candidates, name, labels or {})
        return chosen[best.image_id] if best else None

    def _image_dirs(self) -> Iterator[Path]:
        with os.scandir(self.layout.images) as entries:
            for entry in entries:
                if is_image_id(entry.name) and os.path.exists(os.path.join(entry.path, INFO_FILE)):
                    yield Path(entry.path)

    # --- rendering and use -------------------------------------------------------------

    def render(self, ref: str | ImageRef) -> RenderedTree:
        """The rendered tree of an image (cached), without recording a user of it."""
        return render(self, self.get(ref))

    def acquire(
        self, holder: str, ref: str | ImageRef, visible: Callable[[str], bool] | None = None
    ) -> RenderedTree:
        """Render an image for `holder` and record the use, so nothing it needs is deleted.
        Its dependencies' names resolve among the images `visible` accepts (all without)."""
        record = self.get(ref)
        layers = resolve_layers(self, record, visible=visible)
        with ExitStack() as stack:
            for image_id in sorted({layer.image_id for layer in layers}):  # no lock-order deadlock
                stack.enter_context(self._image_lock(image_id, shared=True))
            for layer in layers:  # deleted between resolving and locking? ImageNotFound
                self.get_by_id(layer.image_id)
            tree = render(self, record, layers)
            previous = self.refs.get(holder)
            images = set(tree.layers) | (previous.images if previous else set())
            trees = ({tree.key} if tree.key else set()) | (previous.trees if previous else set())
            self.refs.hold(holder, images, trees)
        return tree

    def release(self, holder: str) -> None:
        """Forget everything `holder` used."""
        self.refs.release(holder)

    def collect_garbage(self) -> list[str]:
        """Remove rendered trees that no holder uses, and OCI layers and blobs that no image
        names; returns the trees' keys."""
        removed = collect_garbage(self)
        collect_layers(self)
        return removed

    def usage_units(self, image_id: str) -> dict[str, int]:
        """The shareable units an image occupies and their sizes (`_oci.usage_units`)."""
        return usage_units(self.get_by_id(image_id))

    # --- delete -------------------------------------------------------------------------

    def delete(self, ref: str | ImageRef) -> ImageRecord:
        """Remove an image that no holder uses, with the unused rendered trees built on it."""
        record = self.get(ref)
        with self._image_lock(record.image_id):
            holders = self.refs.holders_of_image(record.image_id)
            if holders:
                raise ImageInUse(f"image {record.image_id[:39]} is used by {', '.join(holders)}")
            in_use = self.refs.used_trees()
            for tree in trees_using(self.layout, record.image_id):
                if tree.name in in_use:
                    raise ImageInUse(f"image {record.image_id[:39]} is a layer of a tree in use")
                self.remove_dir(tree)
            self.remove_dir(record.path)
        if record.oci is not None:
            collect_layers(self)  # its layers and blobs, unless another image shares them
        log.info("deleted image %s (%s)", record.image_id[:39], record.name)
        return record

    def remove_dir(self, path: Path) -> None:
        """Rename out of sight first, then remove: readers never see half a directory."""
        doomed = make_temp_name(self.layout.tmp, "delete")
        os.rename(path, doomed)
        shutil.rmtree(doomed)

    def sweep_temporaries(self) -> int:
        """Remove staging left by crashed imports and renders; call when no import runs."""
        count = 0
        for entry in self.layout.tmp.iterdir():
            if entry.name.startswith(TEMP_PREFIX):
                shutil.rmtree(
                    entry
                ) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                count += 1
        return count

    def _image_lock(self, image_id: str, *, shared: bool = False):
        return file_lock(self.layout.lock(f"image-{image_id}"), shared=shared)


def _repository(reference: str) -> str:
    """`host/repo` of a stored `host/repo:tag` or `host/repo@digest`."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def _parse_either(text: str) -> ImageRef:
    """An appc reference; a docker-style one that is not appc (`host:5000/app:v1`) and was
    not found among the OCI images names no stored image (ImageNotFound, not a syntax
    error); text neither grammar accepts gets the appc grammar's error."""
    try:
        return parse_image_ref(text)
    except ValidationError as appc_error:
        if text.startswith("sha512-"):
            raise
        try:
            parse_reference(text)
        except OciError:
            raise appc_error from None
        raise ImageNotFound(f"no image {text} in the store") from None
