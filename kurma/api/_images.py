"""The Images service (import, list, inspect, delete) and Trust (a later issue).

Import takes the archive as a stream of chunks into a temporary file in the store's `tmp/`
(swept at start if kurmad dies mid-upload), reports progress about every MiB, then lets the
store unpack and validate it; the last message carries the image.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from ..aci import build_aci
from ..aci._ids import image_id_from_digest
from ..aci._stream import SizeLimitExceeded, hash_stream
from ..errors import ValidationError
from ..oci import parse_platform
from ..runtime import NotPermitted
from ..sources import (
    ACI,
    PullResult,
    archive_kind,
    export_image,
    import_archive,
    pull_image,
)
from ..store import ImageRecord, ImageStore, LayerProgress
from ..store._atomic import TEMP_PREFIX
from ._caller import BindsCaller, CallerView
from ._convert import image_to_proto
from ._events import EventHub
from ._logfmt import fields
from ._policy import TABLE, Policy, kind_of
from ._status import ApiError, Code, rpc, unimplemented
from .v1 import images_pb2, images_pb2_grpc

if TYPE_CHECKING:
    from ..store import ImportResult
    from ._quota import ImageRoom, Quotas
    from ._registries import Registries

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1 << 20
EXPORT_CHUNK = 1 << 20
PROGRESS_INTERVAL = 0.2  # seconds between a pull's progress messages, at most


class ImagesServicer(BindsCaller, images_pb2_grpc.ImagesServicer):
    def __init__(
        self,
        store: ImageStore,
        events: EventHub,
        quotas: Quotas | None = None,
        policy: Policy | None = None,
        registries: Registries | None = None,
    ) -> None:
        self.store = store
        self.registries = registries  # None: Fetch is unavailable (a servicer in a test)
        self.events = events
        self.quotas = quotas  # None: no subtree accounting (a servicer without kurmad)
        self.policy = policy or Policy()  # which names a caller may import (_policy)

    @rpc
    def Import(
        self, request_iterator: Iterator[images_pb2.ImportRequest], context: grpc.ServicerContext
    ):
        view = self._caller(context)
        room, limit = self._upload_limit(view)
        fd, tmp = tempfile.mkstemp(
            prefix=f"{TEMP_PREFIX}upload-", suffix=".aci", dir=self.store.layout.tmp
        )
        try:
            done = total = reported = 0
            with os.fdopen(fd, "wb") as f:
                for request in request_iterator:
                    if request.total_size and not total:
                        total = request.total_size
                    done += len(request.data)
                    if limit is not None and done > limit:  # never staged past the quota
                        assert room is not None
                        raise room.exceeded()
                    f.write(request.data)
                    if done - reported >= PROGRESS_EVERY:
                        reported = done
                        self.store.check_space()  # the upload stops short of a full disk
                        yield images_pb2.ImportProgress(bytes_done=done, bytes_total=total)
            if archive_kind(tmp) != ACI:
                yield from self._import_archive(view, tmp, done, total)
                return
            result = self._import(view, tmp)
        finally:
            os.unlink(tmp)
        record = result.record
        log.info(
            "image imported" if result.created else "image already stored",
            extra=fields(image=record.image_id[:39], name=record.name, bytes=done),
        )
        if result.created:
            self.events.image("image.imported", record.image_id, record.name)
        yield images_pb2.ImportProgress(
            bytes_done=done,
            bytes_total=total or done,
            image=image_to_proto(record, _manifest_text(record)),
            created=result.created,
        )

    def _import_archive(self, view: CallerView, path: str, done: int, total: int):
        """Every image of a docker-archive or OCI layout tar, within the caller's quota
        (counted as the layers are applied, as for a pull)."""
        with self._reserving(view) as budget:
            imported = import_archive(
                self.store,
                path,
                admit=functools.partial(self.policy.check_import, view),
                budget=budget,
                check_references=functools.partial(self._check_references, view),
            )
            for result in imported.results:
                if result.created and self.quotas is not None:
                    self.quotas.imported(view, result.record.image_id, result.record.size)
        images = []
        for result in imported.results:
            record = result.record
            if result.created:
                self.events.image("image.imported", record.image_id, record.name)
            log.info(
                "image imported" if result.created else "image already stored",
                extra=fields(image=record.image_id[:39], name=record.name, kind="oci"),
            )
            images.append(image_to_proto(record, _manifest_text(record)))
        first = imported.results[0]
        yield images_pb2.ImportProgress(
            bytes_done=done,
            bytes_total=total or done,
            image=images[0],
            created=first.created,
            images=images,
        )

    def _reserving(self, view: CallerView):
        """The budget of one pull or archive import (`Quotas.reserving`; none without)."""
        if self.quotas is None:
            return contextlib.nullcontext(lambda _total: None)
        return self.quotas.reserving(view)

    def _check_references(self, view: CallerView, references: tuple[str, ...]) -> None:
        """An archive's content is whatever its maker wrote: below the host, it may name
        only references that no image holds yet or that the caller's own tree imported, so
        a tenant cannot make the host's `alpine:latest` run its files (NotPermitted)."""
        if self.quotas is None or TABLE[kind_of(view)].system_images:
            return
        for reference in references:
            holder = self.store.find_oci(reference)
            if holder is not None and not self.quotas.own_import(view, holder.image_id):
                raise NotPermitted(
                    f"reference {reference} names image {holder.image_id[:19]}, which "
                    f"{view.name} did not import: an archive may not take it over (import it "
                    "under another name, or pull it from its registry)"
                )

    def _upload_limit(self, view: CallerView) -> tuple[ImageRoom | None, int | None]:
        """The tightest imageBytes room of `view`'s subtree and the most bytes an upload of
        it may stage: what is left, or the largest image stored (it costs nothing again)."""
        if self.quotas is None or view.subtree_of is None:
            return None, None
        room = self.quotas.image_room(view)
        if room is None:
            return None, None
        return room, max([room.left, *(r.size for r in self.store.list())])

    def _import(self, view: CallerView, path: str) -> ImportResult:
        """Import the archive at `path`, within the caller's imageBytes quota (the archive
        is hashed first, so a refused import leaves the store unchanged; the hashing stops
        as soon as it passes what the subtree has left, see `_quota`)."""
        admit = functools.partial(self.policy.check_import, view)
        if self.quotas is None:
            return self.store.import_image(path, admit)
        if view.subtree_of is None:  # no quota; an operator's import is recorded as its own
            result = self.store.import_image(path, admit)
            if result.created:
                self.quotas.imported(view, result.record.image_id, result.record.size)
            return result
        room, limit = self._upload_limit(view)  # an image already stored costs nothing
        try:
            with open(path, "rb") as f:
                digest, size = hash_stream(f, limit)
        except SizeLimitExceeded as e:
            assert room is not None
            raise room.exceeded() from e
        with self.quotas.importing(view, image_id_from_digest(digest), size):
            result = self.store.import_image(path, admit)
            if result.created:
                self.quotas.imported(view, result.record.image_id, result.record.size)
        return result

    @rpc
    def Fetch(self, request: images_pb2.FetchRequest, context: grpc.ServicerContext):
        """Pull an OCI image: the pull runs in a worker thread and reports each layer's
        state; this generator relays it (at most every PROGRESS_INTERVAL, and at every
        change of state), then the image. A client that goes away cancels the pull."""
        view = self._caller(context)
        if not request.name:
            raise ValidationError("name", "give an image reference, like alpine:3.19")
        if self.registries is None:
            raise unimplemented("this kurmad has no registry settings")
        ref = self.registries.qualify(request.name)
        platform = parse_platform(request.platform) if request.platform else None
        client = self.registries.client(view, ref, request.username, request.password)
        finished: queue.Queue[tuple[str, object]] = queue.Queue()
        latest: dict[int, LayerProgress] = {}  # each layer's last event, from the threads
        lock = threading.Lock()
        changed = threading.Event()  # a layer changed state: relay it now
        cancelled = threading.Event()
        context.add_callback(cancelled.set)

        def progress(event: LayerProgress) -> None:
            if cancelled.is_set():
                raise ApiError(Code.CANCELLED, "the client went away")
            with lock:
                before = latest.get(event.index)
                latest[event.index] = event
            if before is None or before.state != event.state:
                changed.set()

        def work() -> None:
            try:
                with contextlib.closing(client), self._reserving(view) as budget:
                    result = pull_image(
                        self.store,
                        client,
                        ref,
                        platform=platform,
                        admit=functools.partial(self.policy.check_import, view),
                        progress=progress,
                        budget=budget,
                    )
                    record = result.import_result.record
                    if result.import_result.created and self.quotas is not None:
                        self.quotas.imported(view, record.image_id, record.size)
            except BaseException as e:  # relayed to the caller's thread
                finished.put(("error", e))
            else:
                finished.put(("done", result))
            changed.set()

        threading.Thread(target=work, name=f"pull {ref}", daemon=True).start()
        sent: dict[int, LayerProgress] = {}
        while True:
            changed.wait(PROGRESS_INTERVAL)
            changed.clear()
            with lock:
                now = dict(latest)
            if now != sent:
                sent = now
                yield _pull_progress(now, "pulling")
            if not finished.empty():
                kind, item = finished.get()
                if kind == "error":
                    raise item  # type: ignore[misc]
                break
        pulled = item
        assert isinstance(pulled, PullResult)
        record = pulled.import_result.record
        log.info(
            "image pulled" if pulled.import_result.created else "image already stored",
            extra=fields(image=record.image_id[:39], ref=str(pulled.reference),
                         digest=pulled.manifest_digest),
        )  # fmt: skip
        if pulled.import_result.created:
            self.events.image("image.pulled", record.image_id, str(pulled.reference))
        final = _pull_progress(latest, "pulled")
        final.image.CopyFrom(image_to_proto(record, _manifest_text(record)))
        final.created = pulled.import_result.created
        yield final

    @rpc
    def List(self, request: images_pb2.ListImagesRequest, context: grpc.ServicerContext):
        images = [
            image_to_proto(r) for r in self.store.list() if r.name.startswith(request.name_prefix)
        ]
        return images_pb2.ListImagesResponse(images=images)

    @rpc
    def Inspect(self, request: images_pb2.ImageRef, context: grpc.ServicerContext):
        record = self.store.get(_ref(request.ref))
        return image_to_proto(record, _manifest_text(record))

    @rpc
    def Delete(self, request: images_pb2.ImageRef, context: grpc.ServicerContext):
        view = self._caller(context)
        record = self.store.get(_ref(request.ref))
        if self.quotas is not None:
            self.quotas.check_delete(view, record.image_id, record.name)
        record = self.store.delete(record.image_id)
        if self.quotas is not None:
            self.quotas.forget(record.image_id)
        log.info("image deleted", extra=fields(image=record.image_id[:39], name=record.name))
        self.events.image("image.deleted", record.image_id, record.name)
        return image_to_proto(record)

    @rpc
    def Export(self, request: images_pb2.ImageRef, context: grpc.ServicerContext):
        """An OCI image as an oci-archive (default) or docker-archive with the registry's
        blobs and digests; an appc image as an .aci packed again from the store (the same
        files and manifest; its ID differs from the imported archive's when that was packed
        differently). Written to `tmp/` first, so a failure sends no partial archive."""
        record = self.store.get(_ref(request.ref))
        fmt = request.format or ("oci-archive" if record.oci is not None else "aci")
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}export-", dir=self.store.layout.tmp)
        os.close(fd)
        try:
            if fmt == "aci":
                if record.oci is not None:
                    raise ValidationError("format", "an OCI image exports as oci-archive or "
                                          "docker-archive")  # fmt: skip
                build_aci(record.rootfs, (record.path / "manifest").read_bytes(), tmp)
            else:
                os.unlink(tmp)  # the writers make it (by rename) when done
                export_image(self.store, record, tmp, fmt, asked_as=request.ref)
            with open(tmp, "rb") as f:
                while chunk := f.read(EXPORT_CHUNK):
                    yield images_pb2.ExportChunk(data=chunk)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


class TrustServicer(images_pb2_grpc.TrustServicer):
    _LATER = (
        "trusted signing keys come with the later issue on remote fetch with discovery "
        "and signatures; imported images are not signature-checked until then"
    )

    @rpc
    def Add(self, request: images_pb2.AddKeyRequest, context: grpc.ServicerContext):
        raise unimplemented(self._LATER)

    @rpc
    def List(self, request: images_pb2.ListKeysRequest, context: grpc.ServicerContext):
        raise unimplemented(self._LATER)

    @rpc
    def Remove(self, request: images_pb2.RemoveKeyRequest, context: grpc.ServicerContext):
        raise unimplemented(self._LATER)


def _pull_progress(layers: dict[int, LayerProgress], status: str) -> images_pb2.ImportProgress:
    """One progress message: every layer's last state, and the bytes summed."""
    statuses = [
        images_pb2.LayerStatus(
            index=e.index, digest=e.digest, size=e.size, done=e.done, state=e.state
        )
        for _, e in sorted(layers.items())
        if e.index >= 0
    ]
    return images_pb2.ImportProgress(
        bytes_done=sum(s.done for s in statuses),
        bytes_total=sum(s.size for s in statuses),
        status=status,
        layers=statuses,
    )


def _ref(ref: str) -> str:
    if not ref:
        raise ValidationError("ref", "give an image name[:version] or an image ID")
    return ref


def _manifest_text(record: ImageRecord) -> str:
    return (record.path / "manifest").read_text(encoding="utf-8", errors="replace")
