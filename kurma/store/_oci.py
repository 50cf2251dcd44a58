"""OCI images in the store: blobs by digest, layers as a chain of trees, one record per image.

    blobs/<alg>/<hex>                   the registry's bytes: manifests, configs, layer blobs
    layers/<chain>/{rootfs/,info.json}  the tree after layers 0..n, named by docker's ChainID
    images/<id>/{manifest,info.json}    the generated appc manifest and the record

Why a chain of trees: a pod's rootfs must be one ready directory (overlay's lower dir), as an
ACI's is, so an OCI pod starts exactly as fast. Layer n's tree starts as hard links to layer
n-1's tree (no data copied) and has layer n applied on top; applying never writes into an
existing file (an entry replaces its path: unlink, then create), so the lower tree's inodes
stay as they were. Images that share lower layers (a base image) share those trees, and a
pull of the second image downloads and applies only its own layers. The ChainID covers every
layer below, so a tree is only ever shared by images with the same layers beneath it.

Measured alternative: stacking the layers as several overlay lower dirs saves the hard-link
pass at pull time, but needs whiteouts as 0:0 device nodes (refused by the devices cgroup
inside a pod that runs a nested kurma) and grows every pod start with the layer count.

The image ID is `sha512-` + the sha512 of the config blob: the config names every layer's
diff_id, so the same config is the same image, whatever registry or compression it came by;
it is also a valid appc image ID, so pod manifests name OCI images as they name ACIs.

Nothing half-made is visible: blobs and trees are staged under `tmp/` and renamed in; a
failed pull leaves the store as it was (trees already completed for lower layers stay, as
a cache, and are collected with the next garbage collection if no image claims them). A
pull holds the `gc` lock shared from its first tree until its record is written; garbage
collection takes it exclusively and skips a round rather than wait.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from kurma.errors import ArchiveError, DigestMismatch, PlatformNotFound, StoreError, ValidationError
from kurma.oci import (
    Descriptor,
    Digest,
    ImageConfig,
    Manifest,
    Platform,
    apply_layer,
    discard_tree,
    expand_layer,
    parse_digest,
    parse_image_config,
    parse_manifest,
    platform_matches,
    verify_bytes,
)

from ._atomic import make_temp_name, write_atomic
from ._layout import StoreLayout
from ._locks import file_lock, try_file_lock
from ._records import INFO_FILE, ImageRecord, OciFacts
from ._render import apply_layer as link_tree

if TYPE_CHECKING:
    from kurma.aci import ImageManifest

    from ._images import ImageStore

log = logging.getLogger(__name__)

LAYER_INFO = "info.json"
GC_LOCK = "gc"
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 8 << 20
MAX_LAYERS = 127  # docker's limit: overlay's lower dirs, and each tree copies the directories
DIRECTORY_COST = 4096  # what a directory a layer tree copies takes on disk (one block)
DEFAULT_PARALLEL = 4
CHECK_EVERY = 1 << 20  # downloads check the free-space reserve about every MiB
EXPAND_AHEAD = 2  # upper layers decompressed ahead while a lower one is applied (measured:
# 2 is the best of 0-3 on two cores, 11% off a pull of bench/pull.py's image)
PLAIN_LAYER = "application/vnd.oci.image.layer.v1.tar"
EMPTY_CHAIN = "sha256-" + hashlib.sha256(b"").hexdigest()  # an image with no layers


# --- what a pull reports --------------------------------------------------------------------


@dataclass(frozen=True)
class LayerProgress:
    """One step of one blob of an import, for progress bars (index -1: manifest, config)."""

    index: int
    digest: str
    size: int
    done: int
    state: str  # "waiting", "exists", "downloading", "downloaded", "applying", "done"


Progress = Callable[[LayerProgress], None]
FetchBlob = Callable[[Descriptor, BinaryIO, Callable[[int], None]], None]


class Cancelled(StoreError):
    """Another layer of the same import failed first; this download stopped."""


# --- chain IDs -------------------------------------------------------------------------------


def chain_keys(diff_ids: Sequence[Digest]) -> list[str]:
    """Directory names of the trees after each layer: docker's ChainID,
    chain(0) = diff_id(0), chain(n) = sha256(chain(n-1) + " " + diff_id(n))."""
    keys: list[str] = []
    chain: str | None = None
    for diff_id in diff_ids:
        chain = (
            str(diff_id)
            if chain is None
            else ("sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest())
        )
        keys.append(chain.replace(":", "-", 1))
    return keys


def image_id_of_config(config_bytes: bytes) -> str:
    """The store's ID of an OCI image: appc's form, over the config blob."""
    return "sha512-" + hashlib.sha512(config_bytes).hexdigest()


# --- blobs ---------------------------------------------------------------------------------


class BlobStore:
    """Blobs by digest under `blobs/`; a blob appears only whole and verified."""

    def __init__(self, layout: StoreLayout) -> None:
        self.layout = layout

    def path(self, digest: Digest | str) -> Path:
        d = parse_digest(digest) if isinstance(digest, str) else digest
        return self.layout.blob(d.algorithm, d.hex)

    def has(self, digest: Digest | str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: Digest | str) -> bytes:
        return self.path(digest).read_bytes()

    def put_bytes(self, digest: Digest, data: bytes, what: str) -> None:
        """Store small verified content (a manifest, a config)."""
        verify_bytes(data, digest, what)
        target = self.path(digest)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        if not target.exists():
            write_atomic(target, data)

    def commit(self, staged: Path, digest: Digest) -> None:
        """Rename a verified staged file into place."""
        target = self.path(digest)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(staged, 0o600)
        os.replace(staged, target)

    def staging_file(self) -> Path:
        return make_temp_name(self.layout.tmp, "blob")


def hash_file(path: Path, digest: Digest) -> None:
    """Verify a staged blob that no layer application read (DigestMismatch)."""
    h = digest.new_hash()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    if h.hexdigest() != digest.hex:
        raise DigestMismatch(str(digest), f"{digest.algorithm}:{h.hexdigest()}", "blob")


# --- the import ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OciImport:
    """What an import needs from its source: the manifest bytes, a way to fetch a blob into
    a file (verified by the store), and the references the image will answer to."""

    manifest_bytes: bytes
    manifest_media_type: str | None
    fetch_blob: FetchBlob
    references: tuple[str, ...] = ()
    manifest_digest: Digest | None = None  # as named by the reference, if by digest
    platform: Platform | None = None  # the config must run here (checked before any layer)


@dataclass(frozen=True)
class LayerDone:
    chain: str
    size: int
    skipped: tuple[str, ...]


@dataclass(frozen=True)
class LayerInput:
    """What a layer's tree is made from: `open()` gives the bytes to apply (the blob, or
    with `plain` its tar decompressed ahead, the blob checked then); `whole_blob()` the
    blob's path (to say a corrupt download is one). (Applying the first layer while it
    still downloads was measured too: on two cores it lost 8%, the threads' contention
    for the GIL costing more than the overlap gained.)"""

    open: Callable[[], Any]
    whole_blob: Callable[[], Path]
    plain: bool = False

    @classmethod
    def of_file(cls, path: Path, *, plain: bool = False) -> LayerInput:
        return cls(functools.partial(open, path, "rb"), functools.partial(Path, path), plain)


class OciImporter:
    """One import of one OCI image into `store` (see the module docstring)."""

    def __init__(
        self,
        store: ImageStore,
        source: OciImport,
        *,
        make_manifest: Callable[[ImageConfig, OciImport, Path], bytes],
        admit: Callable[[ImageManifest], None] | None = None,
        progress: Progress | None = None,
        budget: Callable[[int], None] | None = None,
        parallel: int = DEFAULT_PARALLEL,
    ) -> None:
        self.store = store
        self.layout = store.layout
        self.blobs = BlobStore(store.layout)
        self.source = source
        self.make_manifest = make_manifest
        self.admit = admit
        self.progress = progress or (lambda _event: None)
        self.budget = budget  # raises once the new bytes pass a quota
        self.parallel = max(1, parallel)
        self._new_bytes = 0
        self._unchecked = 0  # downloaded bytes since the last free-space check
        self._bytes_lock = threading.Lock()
        self._cancel = threading.Event()
        self.created: list[str] = []  # layer trees this import made (removed if it fails)
        # Shared locks on the layer trees this import stands on, held until its record is
        # written: a failed import of someone else removes only trees nobody holds.
        self.holds = contextlib.ExitStack()
        self.committed: list[str] = []  # ... and the blobs it stored

    # -- accounting --

    def _add_bytes(self, n: int, *, charged: bool) -> None:
        """`n` more bytes written: the free-space reserve is checked for all of them; the
        budget (a quota) counts only what the image will be charged (its layers' sizes)."""
        with self._bytes_lock:
            if charged:
                self._new_bytes += n
            total = self._new_bytes
            self._unchecked += n
            check = charged or self._unchecked >= CHECK_EVERY  # statvfs about every MiB
            if check:
                self._unchecked = 0
        if self._cancel.is_set():
            raise Cancelled("import cancelled: another layer failed")
        if check:
            self.store.check_space(0)
        if charged and self.budget is not None:
            self.budget(total)

    # -- steps --

    def run(self) -> tuple[ImageRecord, bool]:
        manifest_digest = self._manifest_digest()
        manifest = parse_manifest(self.source.manifest_bytes, self.source.manifest_media_type)
        if not isinstance(manifest, Manifest):
            raise ValidationError("manifest", "is an index: select a platform's manifest first")
        manifest.check_runnable()
        config_bytes = self._config(manifest.config)
        config = parse_image_config(config_bytes)
        wanted = self.source.platform
        if wanted is not None and not platform_matches(config.platform, wanted):
            raise PlatformNotFound(str(wanted.normalized()), (str(config.platform.normalized()),))
        if len(config.diff_ids) != len(manifest.layers):
            raise ValidationError(
                "rootfs.diff_ids",
                f"the config lists {len(config.diff_ids)} layers, the manifest "
                f"{len(manifest.layers)}",
            )
        if len(manifest.layers) > MAX_LAYERS:
            raise ValidationError(
                "layers", f"{len(manifest.layers)} layers: at most {MAX_LAYERS} are accepted"
            )
        image_id = image_id_of_config(config_bytes)
        keys = chain_keys(config.diff_ids) or [EMPTY_CHAIN]
        with file_lock(self.layout.lock(GC_LOCK), shared=True), self.holds:
            try:
                layers = self._layers(manifest, config, keys)
            except BaseException:
                self.holds.close()  # our own holds must not keep our trees from going
                self._discard_created()
                raise
            self.blobs.put_bytes(manifest_digest, self.source.manifest_bytes, "manifest")
            self.blobs.put_bytes(manifest.config.digest, config_bytes, "config")
            facts = OciFacts(
                references=self.source.references,
                manifest_digest=str(manifest_digest),
                manifest_media_type=manifest.media_type,
                config_digest=str(manifest.config.digest),
                layers=tuple(keys),
                layer_sizes=tuple(layer.size for layer in layers),
                blobs=(
                    str(manifest_digest),
                    str(manifest.config.digest),
                    *(str(d.digest) for d in manifest.layers),
                ),
                platform=str(config.platform),
            )
            return self._commit(image_id, config, facts, layers)

    def _discard_created(self) -> None:
        """Remove the layer trees and blobs this failed import made and no image claims:
        nobody was charged for them (a quota refusal must not leave a tenant's bytes
        behind). A tree another pull is linking from at this moment is kept (its lock is
        held shared); garbage collection takes it later."""
        records = [r.oci for r in self.store.list() if r.oci is not None]
        claimed = {k for oci in records for k in oci.layers}
        needed = {b for oci in records for b in oci.blobs}
        for digest in self.committed:
            if digest not in needed:
                self.blobs.path(digest).unlink(missing_ok=True)
        self.committed.clear()
        for key in reversed(self.created):
            if key in claimed:  # another import's image stands on it already
                continue
            with try_file_lock(self.layout.lock(f"layer-{key}")) as got:
                if not got:
                    continue
                doomed = make_temp_name(self.layout.tmp, "delete")
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.layout.layer_dir(key), doomed)
                    discard_tree(doomed)
        self.created.clear()

    def _manifest_digest(self) -> Digest:
        data = self.source.manifest_bytes
        if len(data) > MAX_MANIFEST_BYTES:
            raise ValidationError("manifest", f"is larger than {MAX_MANIFEST_BYTES} bytes")
        expected = self.source.manifest_digest
        if expected is not None:
            verify_bytes(data, expected, "manifest")
            return expected
        return Digest("sha256", hashlib.sha256(data).hexdigest())

    def _config(self, descriptor: Descriptor) -> bytes:
        if self.blobs.has(descriptor.digest):
            return self.blobs.read(descriptor.digest)
        if descriptor.size > MAX_CONFIG_BYTES:
            raise ValidationError("config.size", f"{descriptor.size} bytes is too large")
        if descriptor.data is not None:
            data = descriptor.data
        else:
            staged = self.blobs.staging_file()
            try:
                with open(staged, "w+b") as f:
                    self.source.fetch_blob(descriptor, f, lambda _n: None)
                data = staged.read_bytes()
            finally:
                staged.unlink(missing_ok=True)
        if len(data) != descriptor.size:
            raise ValidationError(
                "config", f"is {len(data)} bytes where the manifest says {descriptor.size}"
            )
        verify_bytes(data, descriptor.digest, "config")
        return data

    def _layers(self, manifest: Manifest, config: ImageConfig, keys: list[str]) -> list[LayerDone]:
        """Every layer's tree, downloading what is missing in parallel and applying in order."""
        if not manifest.layers:
            return [self._empty_chain()]
        done: list[LayerDone] = []
        for key in keys:  # the trees already here, bottom up, each held until the commit
            info = self._hold(key)
            if info is None:
                break
            done.append(LayerDone(key, int(info["size"]), tuple(info.get("skipped", ()))))
        first_missing = len(done)
        for i in range(first_missing):
            d = manifest.layers[i]
            self.progress(LayerProgress(i, str(d.digest), d.size, d.size, "exists"))
        staged: dict[int, Path] = {}
        futures: dict[int, Future[Path]] = {}
        expanded: dict[int, Future[Path]] = {}  # upper layers decompressed ahead, plain tars
        pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="pull")
        expander = ThreadPoolExecutor(EXPAND_AHEAD, thread_name_prefix="expand")

        def blob_of(i: int) -> Path:
            return (
                futures[i].result() if i in futures else self.blobs.path(manifest.layers[i].digest)
            )

        def expand_ahead(i: int) -> None:
            """Layers i+1..i+EXPAND_AHEAD start decompressing while layer i is applied."""
            for j in range(i + 1, min(i + 1 + EXPAND_AHEAD, len(keys))):
                if j not in expanded:
                    expanded[j] = expander.submit(
                        self._expand, blob_of, j, manifest.layers[j], config.diff_ids[j]
                    )

        try:
            for i in range(first_missing, len(keys)):
                d = manifest.layers[i]
                if self.blobs.has(d.digest):
                    continue
                self.progress(LayerProgress(i, str(d.digest), d.size, 0, "waiting"))
                futures[i] = pool.submit(self._download, i, d)
            for i in range(first_missing, len(keys)):
                d = manifest.layers[i]
                expand_ahead(i)
                plain = expanded.pop(i).result() if i in expanded else None
                if plain is not None:
                    layer = LayerInput.of_file(plain, plain=True)
                elif i in futures:
                    layer = LayerInput.of_file(futures[i].result())
                else:
                    layer = LayerInput.of_file(self.blobs.path(d.digest))
                self.progress(LayerProgress(i, str(d.digest), d.size, d.size, "applying"))
                try:
                    done.append(
                        self._build_chain(keys[i - 1] if i else None, keys[i], layer, d,
                                          config.diff_ids[i])
                    )  # fmt: skip
                finally:
                    if plain is not None:
                        plain.unlink(missing_ok=True)
                if i in futures:
                    staged[i] = futures[i].result()
                if i in staged:  # verified by the application: keep it for export
                    self.blobs.commit(staged.pop(i), d.digest)
                    self.committed.append(str(d.digest))
                self.progress(LayerProgress(i, str(d.digest), d.size, d.size, "done"))
            for i, d in enumerate(manifest.layers[:first_missing]):
                # The trees were here, the blob maybe not (another compression of the same
                # layer): fetch it so export can give the registry's bytes back.
                if not self.blobs.has(d.digest):
                    path = self._download(i, d)
                    staged[i] = path
                    hash_file(path, d.digest)
                    self.blobs.commit(staged.pop(i), d.digest)
        except BaseException:
            self._cancel.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            expander.shutdown(wait=True, cancel_futures=True)
            leftovers = list(staged.values())
            for future in (*futures.values(), *expanded.values()):
                if future.done() and not future.cancelled() and future.exception() is None:
                    leftovers.append(future.result())
            for path in leftovers:  # committed ones were renamed away already
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return done

    def _expand(
        self, blob_of: Callable[[int], Path], index: int, descriptor: Descriptor, diff_id: Digest
    ) -> Path:
        """Layer `index` decompressed into a plain tar in `tmp/` (its blob's digest checked
        on the way; the diff_id is checked when the tar is applied)."""
        blob = blob_of(index)  # waits for its download
        plain = make_temp_name(self.layout.tmp, "expand")

        def watch(_total: int) -> None:
            if self._cancel.is_set():
                raise Cancelled("import cancelled: another layer failed")
            self.store.check_space(0)

        try:
            with open(blob, "rb") as src, open(plain, "xb") as dest:
                expand_layer(
                    src, dest, media_type=descriptor.media_type, limits=self.store.limits,
                    expected_digest=str(descriptor.digest), diff_algorithm=diff_id.algorithm,
                    watch=watch,
                )  # fmt: skip
        except ArchiveError as e:
            plain.unlink(missing_ok=True)
            hash_file(blob, descriptor.digest)  # a corrupt download says so first
            e.add_note(f"in layer {descriptor.digest}")
            raise
        except BaseException:
            plain.unlink(missing_ok=True)
            raise
        return plain

    def _download(self, index: int, descriptor: Descriptor) -> Path:
        staged = self.blobs.staging_file()
        got = 0

        def advanced(n: int) -> None:
            nonlocal got
            got += n
            self._add_bytes(n, charged=False)
            self.progress(
                LayerProgress(index, str(descriptor.digest), descriptor.size, got, "downloading")
            )

        try:
            with open(staged, "w+b") as f:
                self.source.fetch_blob(descriptor, f, advanced)
                size = f.tell()
            if size != descriptor.size:
                raise DigestMismatch(
                    str(descriptor.digest), f"{size} bytes, not {descriptor.size}", "layer size"
                )
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        self.progress(
            LayerProgress(index, str(descriptor.digest), descriptor.size, size, "downloaded")
        )
        return staged

    def _watch_layer(self, total: int) -> None:
        """While a layer streams: the free-space reserve and the budget (a quota) see its
        bytes so far, on top of what the import was charged already."""
        if self._cancel.is_set():
            raise Cancelled("import cancelled: another layer failed")
        self.store.check_space(0)
        if self.budget is not None:
            with self._bytes_lock:
                charged = self._new_bytes
            self.budget(charged + total)

    def _hold(self, key: str) -> dict | None:
        """Hold the tree `key` (a shared lock, until the commit) and return its info; None,
        holding nothing, when it is not (or no longer) there."""
        hold = contextlib.ExitStack()
        hold.enter_context(file_lock(self.layout.lock(f"layer-{key}"), shared=True))
        info = _layer_info(self.layout, key)  # looked at under the hold: it stays
        if info is None:
            hold.close()  # not ours to hold: building it takes the lock exclusively
            return None
        self.holds.enter_context(hold)
        return info

    def _build_chain(
        self, parent: str | None, key: str, layer: LayerInput, descriptor: Descriptor,
        diff_id: Digest,
    ) -> LayerDone:  # fmt: skip
        """Layer `key`'s tree from `layer`, and held until the commit."""
        done = self._make_chain(parent, key, layer, descriptor, diff_id)
        if self._hold(key) is None:  # made by another pull that failed, and removed, since
            raise StoreError(f"layer {key} was removed while this import used it; try again")
        return done

    def _make_chain(
        self, parent: str | None, key: str, layer: LayerInput, descriptor: Descriptor,
        diff_id: Digest,
    ) -> LayerDone:  # fmt: skip
        final = self.layout.layer_dir(key)
        with file_lock(self.layout.lock(f"layer-{key}")):
            info = _layer_info(self.layout, key)
            if info is not None:  # another pull made it meanwhile
                if not layer.plain:  # (a plain tar's blob was checked as it was expanded)
                    hash_file(layer.whole_blob(), descriptor.digest)
                return LayerDone(key, int(info["size"]), tuple(info.get("skipped", ())))
            self.store.check_space(0)
            staging = make_temp_name(self.layout.tmp, "layer")
            try:
                rootfs = staging / "rootfs"
                os.makedirs(rootfs)
                os.chmod(rootfs, 0o755)  # a layer without `./` leaves the root as images expect
                directories = 0
                if parent is not None:
                    with file_lock(self.layout.lock(f"layer-{parent}"), shared=True):
                        directories = link_tree(self.layout.layer_dir(parent) / "rootfs", rootfs)
                try:
                    with layer.open() as f:
                        result = apply_layer(
                            f,
                            rootfs,
                            media_type=PLAIN_LAYER if layer.plain else descriptor.media_type,
                            limits=self.store.limits,
                            expected_digest=None if layer.plain else str(descriptor.digest),
                            expected_diff_id=str(diff_id),
                            watch=self._watch_layer,
                        )
                except ArchiveError as e:
                    if not layer.plain:  # a corrupt download says so first
                        hash_file(layer.whole_blob(), descriptor.digest)
                    e.add_note(f"in layer {descriptor.digest}")
                    raise
                # What the tree costs: the layer's bytes, and the directories it copied
                # from below (thin layers over many directories are not free).
                size = result.total_bytes + directories * DIRECTORY_COST
                self._add_bytes(size, charged=True)
                doc = {
                    "chain": key,
                    "parent": parent,
                    "diffId": str(diff_id),
                    "digest": str(descriptor.digest),
                    "size": size,
                    "entries": result.entries,
                    "skipped": list(result.skipped),
                }
                write_atomic(staging / LAYER_INFO, json.dumps(doc).encode())
                if os.path.lexists(final):  # left by a crash between mkdir and info
                    discard_tree(final)
                os.rename(staging, final)
                self.created.append(key)
            finally:
                if os.path.lexists(staging):
                    discard_tree(staging)
        log.info("layer %s applied (%d bytes)", key[:19], size)
        return LayerDone(key, size, result.skipped)

    def _empty_chain(self) -> LayerDone:
        final = self.layout.layer_dir(EMPTY_CHAIN)
        with file_lock(self.layout.lock(f"layer-{EMPTY_CHAIN}")):
            if _layer_info(self.layout, EMPTY_CHAIN) is None:
                staging = make_temp_name(self.layout.tmp, "layer")
                os.makedirs(staging / "rootfs")
                os.chmod(staging / "rootfs", 0o755)
                doc = {"chain": EMPTY_CHAIN, "parent": None, "size": 0, "skipped": []}
                write_atomic(staging / LAYER_INFO, json.dumps(doc).encode())
                if os.path.lexists(final):
                    discard_tree(final)
                os.rename(staging, final)
        return LayerDone(EMPTY_CHAIN, 0, ())

    def _commit(
        self, image_id: str, config: ImageConfig, facts: OciFacts, layers: list[LayerDone]
    ) -> tuple[ImageRecord, bool]:
        from kurma.aci import parse_image_manifest

        path = self.layout.image_dir(image_id)
        rootfs = self.layout.layer_dir(facts.layers[-1]) / "rootfs"
        manifest_bytes = self.make_manifest(config, self.source, rootfs)
        manifest = parse_image_manifest(manifest_bytes)
        if self.admit is not None:
            self.admit(manifest)
        staging = make_temp_name(self.layout.tmp, "import")
        try:
            with file_lock(self.layout.lock(f"image-{image_id}")):
                if (path / INFO_FILE).exists():
                    record = ImageRecord.load(path)
                    created = False
                else:
                    staging.mkdir(mode=0o700)
                    write_atomic(staging / "manifest", manifest_bytes)
                    record = ImageRecord(
                        image_id=image_id,
                        path=path,
                        name=manifest.name,
                        labels=dict(manifest.labels),
                        size=sum(layer.size for layer in layers),
                        imported_at=self.store.clock(),
                        skipped=tuple(s for layer in layers for s in layer.skipped),
                        oci=facts,
                    )
                    write_atomic(staging / INFO_FILE, record.info_json())
                    os.rename(staging, path)
                    created = True
            record = claim_references(self.store, record, self.source.references)
        finally:
            if os.path.lexists(staging):
                shutil.rmtree(staging)
        return record, created


def _layer_info(layout: StoreLayout, key: str) -> dict | None:
    try:
        return json.loads((layout.layer_dir(key) / LAYER_INFO).read_bytes())
    except FileNotFoundError:
        return None


# --- references ----------------------------------------------------------------------------


def claim_references(
    store: ImageStore, record: ImageRecord, references: Iterable[str]
) -> ImageRecord:
    """Give `references` to `record`, taking them from any other image (a tag names one
    image at a time, as in docker: the image it named before keeps its other names)."""
    wanted = tuple(references)
    if not wanted or record.oci is None:
        return record
    with file_lock(store.layout.lock("references")):
        for other in store.list():
            if other.image_id == record.image_id or other.oci is None:
                continue
            kept = tuple(r for r in other.oci.references if r not in wanted or "@" in r)
            if kept != other.oci.references:
                _rewrite(store, other, kept)
        current = ImageRecord.load(record.path)
        assert current.oci is not None
        merged = tuple(dict.fromkeys((*current.oci.references, *wanted)))
        if merged != current.oci.references:
            current = _rewrite(store, current, merged)
        return current


def _rewrite(store: ImageStore, record: ImageRecord, references: tuple[str, ...]) -> ImageRecord:
    from dataclasses import replace

    assert record.oci is not None
    updated = replace(record, oci=replace(record.oci, references=references))
    with file_lock(store.layout.lock(f"image-{record.image_id}")):
        if (record.path / INFO_FILE).exists():
            write_atomic(record.path / INFO_FILE, updated.info_json())
    return updated


# --- garbage ---------------------------------------------------------------------------------


def collect_layers(store: ImageStore) -> tuple[list[str], list[str]]:
    """Remove layer trees and blobs no stored image names (and what crashed pulls left);
    returns (layers, blobs) removed. Skips the round while a pull runs."""
    removed_layers: list[str] = []
    removed_blobs: list[str] = []
    with try_file_lock(store.layout.lock(GC_LOCK)) as got:
        if not got:
            log.info("garbage collection of layers skipped: a pull is running")
            return removed_layers, removed_blobs
        layers: set[str] = set()
        blobs: set[str] = set()
        for record in store.list():
            if record.oci is not None:
                layers.update(record.oci.layers)
                blobs.update(record.oci.blobs)
        for tree in sorted(store.layout.layers.iterdir()):
            if tree.name not in layers:
                doomed = make_temp_name(store.layout.tmp, "delete")
                os.rename(tree, doomed)
                discard_tree(doomed)
                removed_layers.append(tree.name)
        for algorithm_dir in store.layout.blobs.iterdir():
            for blob in algorithm_dir.iterdir():
                if f"{algorithm_dir.name}:{blob.name}" not in blobs:
                    blob.unlink()
                    removed_blobs.append(f"{algorithm_dir.name}:{blob.name}")
    if removed_layers or removed_blobs:
        log.info("collected %d layers and %d blobs", len(removed_layers), len(removed_blobs))
    return removed_layers, removed_blobs


def usage_units(record: ImageRecord) -> dict[str, int]:
    """What an image occupies, by shareable unit: an ACI is one unit, an OCI image one per
    layer (quotas sum the units of a subtree's images, so a shared layer counts once)."""
    if record.oci is None:
        return {record.image_id: record.size}
    return dict(zip(record.oci.layers, record.oci.layer_sizes, strict=False))
