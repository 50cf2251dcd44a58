"""Per-subtree quotas of `subtree` pods: live pods, bytes of imported images, log bytes.

A `subtree` pod's limits come from its host/api-access quota, field by field, else from
kurmad's defaults (`subtree_max_*`; None: unlimited). Every pod of a subtree counts against
the quota of each `subtree` pod above it, so a grandchild counts for its parent and for its
grandparent, and a child's own quota can never let it escape its ancestors'.

- pods: live (not destroyed) descendants. Checked when a pod is created on a subtree
  socket, under one lock held through the creation so two calls cannot both take the
  last slot.
- imageBytes: the uncompressed size of the images that pods of the subtree imported and
  that are still stored. Who imported what is kept here, in `<state_dir>/quota/imports.json`
  (the store stays the host's and knows no pods): for each image, the importer and its
  ancestors at import time. An image already in the store costs nothing and is not
  recorded (the subtree did not add it). The size is known before the store is touched
  (the archive is hashed once), so a refused import leaves the store unchanged. That
  hashing pass stops as soon as the uncompressed bytes pass what the subtree has left
  (`image_room`), or the largest stored image when that is more (so an image already
  stored is still recognised): a 4 MB gzip of 4 GiB of zeros is refused once the bytes
  it inflates to pass the room (1 GiB by default), none of them written.
- logBytes: not counted at write time; instead it caps each pod's rotating logs. A pod of
  a subtree with logBytes L (and pods N, when given) keeps at most L/N bytes of logs in
  all: each app's log file rotates at L/N / ((1 + log_keep) x apps), never below podinit's
  4 KiB floor. The use shown is the bytes the subtree's log files hold now.

Over a limit: RESOURCE_EXHAUSTED naming the pod whose quota it is, the quota, its limit
and the current use.

Defaults (kurmad.yml; `null` or '' for unlimited): a `subtree` pod whose host/api-access
quota leaves a field out gets `subtree_max_pods` (128) live pods, `subtree_max_image_bytes`
(1 GiB) of imported images and `subtree_max_log_bytes` (256 MiB) of logs for its whole
subtree (a pod, even never started, costs kurmad a mount and, with api-access, a server).
Every import, the host's included, also stops when it would leave less than
`state_min_free` (10%) of the state filesystem free (the store's `SpaceWatch`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..aci import ApiAccessIsolator, ApiScope, PodManifest, SubtreeQuota, parse_pod_manifest
from ..errors import ImageNotFound
from ..runtime import NotPermitted, PodNotFound, PodRecord, Runtime, check_quota_within
from ..store._atomic import write_atomic
from ._caller import CallerView
from ._config import DaemonConfig
from ._convert import TENANT_IMPORTS
from ._policy import TABLE, kind_of
from ._status import ApiError, Code

log = logging.getLogger(__name__)

LOG_FILE_MIN = 4096  # podinit's smallest rotation size


@dataclass(frozen=True)
class Usage:
    """What a subtree uses now."""

    pods: int
    image_bytes: int
    log_bytes: int


@dataclass(frozen=True)
class Imported:
    """Who imported an image: the importing pod and its ancestors, nearest first."""

    image_id: str
    chain: tuple[str, ...]
    size: int

    @property
    def imported_by(self) -> str:
        return self.chain[0]


@dataclass(frozen=True)
class ImageRoom:
    """What an imageBytes quota up the chain leaves: its holder, limit and use."""

    holder: PodRecord
    limit: int
    used: int

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)

    def exceeded(self) -> ApiError:
        """RESOURCE_EXHAUSTED for an import whose uncompressed bytes passed `left`."""
        return _exhausted(
            self.holder, "imageBytes", self.limit, self.used, "bytes", f"more than {self.left}"
        )


class Quotas:
    """The quota book of one kurmad: limits, use, admission and image ownership."""

    def __init__(self, runtime: Runtime, defaults: SubtreeQuota | None = None) -> None:
        self.runtime = runtime
        self.defaults = defaults or SubtreeQuota()
        self._lock = threading.RLock()
        self._own: dict[str, SubtreeQuota | None] = {}  # pod UUID -> its isolator's quota
        self._file = Path(runtime.state_dir, *TENANT_IMPORTS)  # read by services too
        self._imports = _load(self._file)
        self._inflight: dict[object, tuple[tuple[str, ...], int]] = {}  # see `reserving`

    # --- limits ----------------------------------------------------------------------

    def limits(self, record: PodRecord) -> SubtreeQuota | None:
        """A `subtree` pod's effective limits (own fields, else the defaults); None for
        a pod without `subtree` access (it has no subtree to limit)."""
        if record.api_access != ApiScope.SUBTREE.value:
            return None
        if record.uuid not in self._own:
            self._own[record.uuid] = _own_quota(record)
        own = self._own[record.uuid] or SubtreeQuota()
        return SubtreeQuota(
            *(
                getattr(own, attr)
                if getattr(own, attr) is not None
                else getattr(self.defaults, attr)
                for attr in SubtreeQuota.KEYS.values()
            )
        )

    def usage(self, uuid: str, records: list[PodRecord] | None = None) -> Usage:
        """What the subtree below pod `uuid` uses now."""
        records = self.runtime.list_pods() if records is None else records
        below = [r for r in records if uuid in r.ancestors]
        with self._lock:
            image_bytes = self._image_bytes(uuid)
        return Usage(len(below), image_bytes, sum(self._log_bytes(r) for r in below))

    def _image_bytes(self, uuid: str) -> int:
        """The bytes of the images the subtree imported, a layer that several of its OCI
        images share counted once (`ImageStore.usage_units`)."""
        store = self.runtime.store
        units: dict[str, int] = {}
        for i in self._imports.values():
            if uuid in i.chain and store.layout.image_dir(i.image_id).exists():
                try:
                    found = store.usage_units(i.image_id)
                except ImageNotFound:  # deleted meanwhile
                    continue
                if set(found) == {i.image_id}:  # an ACI is one unit: its size as booked
                    found = {i.image_id: i.size}
                units.update(found)
        return sum(units.values())

    def _log_bytes(self, record: PodRecord) -> int:
        total = 0
        for app in record.apps:
            try:
                directory = os.path.dirname(self.runtime.log_file(record.uuid, app.name))
                with os.scandir(directory) as entries:
                    total += sum(
                        e.stat().st_size
                        for e in entries
                        if e.name == f"{app.name}.log" or e.name.startswith(f"{app.name}.log.")
                    )
            except (OSError, PodNotFound):
                continue
        return total

    def _chain(self, view: CallerView) -> list[PodRecord]:
        """The caller and its ancestors, nearest first (the quotas a new pod counts for)."""
        assert view.subtree_of is not None
        by_uuid = {r.uuid: r for r in self.runtime.list_pods()}
        caller = by_uuid.get(view.subtree_of)
        if caller is None:
            raise PodNotFound(f"pod {view.subtree_of} was destroyed")
        return [caller, *(by_uuid[u] for u in caller.ancestors if u in by_uuid)]

    # --- pods ------------------------------------------------------------------------

    @contextmanager
    def admitting(self, view: CallerView, manifest: PodManifest) -> Iterator[None]:
        """Check, then hold the book while a pod is created for `view`: RESOURCE_EXHAUSTED
        when a pods quota up the chain is full, NotPermitted when the new pod asks for a
        quota larger than what is left. A caller with no subtree (the host, certificates)
        is not counted; a chain with no pods limit is not held (nothing to race for)."""
        if view.subtree_of is None:
            yield
            return
        self._lock.acquire()
        held = True
        try:
            chain = self._chain(view)
            room, counted = self._room(chain)
            api = next((i for i in manifest.isolators if isinstance(i, ApiAccessIsolator)), None)
            if api is not None and api.quota is not None:
                check_quota_within(api.quota, room, chain[0].name)
            if not counted:
                self._lock.release()
                held = False
            yield
        finally:
            if held:
                self._lock.release()

    def _room(self, chain: list[PodRecord]) -> tuple[SubtreeQuota, bool]:
        """What a new pod in the subtree of `chain[0]` leaves, the tightest of every quota
        up the chain (RESOURCE_EXHAUSTED if a pods quota is full), and whether any pods
        quota counted it."""
        records = self.runtime.list_pods()
        room: dict[str, int | None] = dict.fromkeys(SubtreeQuota.KEYS.values())
        counted = False
        for holder in chain:
            limits = self.limits(holder)
            if limits is None:
                continue
            left: dict[str, int | None] = {"log_bytes": limits.log_bytes}
            if limits.pods is not None:
                counted = True
                used = sum(1 for r in records if holder.uuid in r.ancestors)
                if used + 1 > limits.pods:
                    raise _exhausted(holder, "pods", limits.pods, used, "pods")
                left["pods"] = limits.pods - used - 1
            if limits.image_bytes is not None:
                used = self._image_bytes(holder.uuid)
                left["image_bytes"] = max(0, limits.image_bytes - used)
            for attr, value in left.items():
                old = room[attr]
                if value is not None and (old is None or value < old):
                    room[attr] = value
        return SubtreeQuota(**room), counted

    # --- images ----------------------------------------------------------------------

    def image_room(self, view: CallerView) -> ImageRoom | None:
        """The bytes `view`'s subtree may still import: the least left under any imageBytes
        quota up the chain, with whose it is (None: the host, or no such quota)."""
        if view.subtree_of is None:
            return None
        tightest: ImageRoom | None = None
        with self._lock:
            for holder in self._chain(view):
                limits = self.limits(holder)
                if limits is None or limits.image_bytes is None:
                    continue
                used = self._image_bytes(holder.uuid)
                room = ImageRoom(holder, limits.image_bytes, used)
                if tightest is None or room.left < tightest.left:
                    tightest = room
        return tightest

    @contextmanager
    def importing(self, view: CallerView, image_id: str, size: int) -> Iterator[None]:
        """Hold the book while the image is imported for `view`: RESOURCE_EXHAUSTED when it
        would take an imageBytes quota up the chain past its limit; the import is recorded
        as the subtree's when the block ends normally (see `imported`)."""
        if view.subtree_of is None:
            yield
            return
        with self._lock:
            if not self.runtime.store.layout.image_dir(image_id).exists():
                for holder in self._chain(view):
                    limits = self.limits(holder)
                    if limits is None or limits.image_bytes is None:
                        continue
                    used = self._image_bytes(holder.uuid)
                    if used + size > limits.image_bytes:
                        raise _exhausted(
                            holder, "imageBytes", limits.image_bytes, used, "bytes", size
                        )
            yield

    @contextmanager
    def reserving(self, view: CallerView) -> Iterator[Callable[[int], None]]:
        """A budget for one pull or archive import by `view`, whose size is only known as
        its layers are applied: `charge(total)` raises RESOURCE_EXHAUSTED when the recorded
        use, plus what other imports of the subtree have reserved meanwhile, plus `total`
        passes an imageBytes quota up the chain; else `total` stays reserved until the
        block ends (record the import with `imported` inside it: no moment counts it
        twice or not at all)."""
        if view.subtree_of is None:
            yield lambda _total: None
            return
        token = object()
        chain = self._chain(view)
        uuids = tuple(r.uuid for r in chain)

        def charge(total: int) -> None:
            with self._lock:
                for holder in chain:
                    limits = self.limits(holder)
                    if limits is None or limits.image_bytes is None:
                        continue
                    used = self._image_bytes(holder.uuid) + sum(
                        size
                        for other, (holders, size) in self._inflight.items()
                        if other is not token and holder.uuid in holders
                    )
                    if used + total > limits.image_bytes:
                        raise _exhausted(
                            holder, "imageBytes", limits.image_bytes, used, "bytes",
                            f"more than {total}",
                        )  # fmt: skip
                self._inflight[token] = (uuids, total)

        try:
            yield charge
        finally:
            with self._lock:
                self._inflight.pop(token, None)

    def _importer(self, view: CallerView) -> tuple[str, ...]:
        """Who an import of `view` is recorded for: its pod and the pod's ancestors, a
        certificate below admin (an operator's), or nobody (the host, an admin)."""
        if view.subtree_of is not None:
            return tuple(r.uuid for r in self._chain(view))
        if TABLE[kind_of(view)].system_images:
            return ()
        return (f"certificate {view.name}",)

    def imported(self, view: CallerView, image_id: str, size: int) -> None:
        """Record that `view`'s pod (or operator) imported a new image (nothing for the
        host)."""
        with self._lock:
            chain = self._importer(view)
            if not chain:
                return
            self._imports[image_id] = Imported(image_id, chain, size)
            self._save()

    def names_visible(self, view: CallerView) -> Callable[[str], bool]:
        """Which images a name resolves to for `view`: those the host imported and those its
        own tree (or its own certificate) imported. Names are not scoped, and a
        name means its highest version: another tenant's newer version must not answer it."""
        with self._lock:
            chain = set(self._importer(view))

        def visible(image_id: str) -> bool:
            with self._lock:
                record = self._imports.get(image_id)
            return record is None or not chain.isdisjoint(record.chain)

        return visible

    def own_import(self, view: CallerView, image_id: str) -> bool:
        """Whether `view`'s tree (or certificate) imported the image (never for the host's
        images: a tenant may not take over what others rely on)."""
        with self._lock:
            chain = set(self._importer(view))
            record = self._imports.get(image_id)
        return record is not None and not chain.isdisjoint(record.chain)

    def check_delete(self, view: CallerView, image_id: str, name: str) -> None:
        """NotPermitted unless the caller is the host or its subtree imported the image."""
        if view.subtree_of is None:
            return
        with self._lock:
            record = self._imports.get(image_id)
        if record is None or view.subtree_of not in record.chain:
            raise NotPermitted(
                f"image {name} ({image_id[:39]}) was not imported by pod {view.subtree_of}'s "
                f"subtree: a pod deletes only images its subtree imported"
            )

    def forget(self, image_id: str) -> None:
        """An image was deleted: it no longer counts for anyone."""
        with self._lock:
            if self._imports.pop(image_id, None) is not None:
                self._save()

    def _save(self) -> None:
        self._file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        doc = {
            "images": {
                i.image_id: {"importedBy": i.imported_by, "chain": list(i.chain), "size": i.size}
                for i in self._imports.values()
            }
        }
        write_atomic(self._file, json.dumps(doc, indent=1, sort_keys=True).encode(), 0o600)

    # --- logs ------------------------------------------------------------------------

    def log_cap(self, record: PodRecord) -> int | None:
        """The size at which each app log of `record` rotates, from the logBytes quotas of
        its ancestors (None: no quota applies). Runtime.log_cap calls it at each start."""
        keep = self.runtime.config.log_keep
        caps = []
        for uuid in record.ancestors:
            try:
                holder = self.runtime.get(uuid)
            except PodNotFound:
                continue
            limits = self.limits(holder)
            if limits is None or limits.log_bytes is None:
                continue
            per_pod = limits.log_bytes // limits.pods if limits.pods else limits.log_bytes
            caps.append(per_pod // ((1 + keep) * max(1, len(record.apps))))
        return max(LOG_FILE_MIN, min(caps)) if caps else None


def _own_quota(record: PodRecord) -> SubtreeQuota | None:
    """The quota in the pod's own host/api-access isolator (its manifest never changes)."""
    try:
        manifest = parse_pod_manifest(record.manifest)
    except ValueError:
        log.warning("pod %s: its manifest does not parse; no quota of its own", record.name)
        return None
    api = next((i for i in manifest.isolators if isinstance(i, ApiAccessIsolator)), None)
    return api.quota if api is not None else None


def _exhausted(
    holder: PodRecord, key: str, limit: int, used: int, unit: str, asked: int | str = 1
) -> ApiError:
    more = f" and this import needs {asked}" if key == "imageBytes" else ""
    return ApiError(
        Code.RESOURCE_EXHAUSTED,
        f"quota {key} of pod {holder.name}'s subtree exhausted: limit {limit} {unit}, "
        f"{used} in use{more}",
    )


def _load(path: Path) -> dict[str, Imported]:
    try:
        doc = json.loads(path.read_bytes())
        return {
            image_id: Imported(image_id, tuple(entry["chain"]), int(entry["size"]))
            for image_id, entry in doc["images"].items()
        }
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as e:
        log.error("%s is unreadable (%s): no image counts for any subtree until fixed", path, e)
        return {}


def subtree_defaults(config: DaemonConfig) -> SubtreeQuota:
    """kurmad's limits for a `subtree` pod whose host/api-access quota leaves them out."""
    return SubtreeQuota(
        config.subtree_max_pods, config.subtree_max_image_bytes, config.subtree_max_log_bytes
    )
